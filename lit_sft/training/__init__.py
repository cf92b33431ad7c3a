"""Training: a base LightningModule (base.py) with one small module per method on it (sft.py,
dpo.py), pure losses, the step's pieces, schedules, callbacks and strategies."""
