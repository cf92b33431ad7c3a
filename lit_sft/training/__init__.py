"""Training: one LightningModule per method, their losses, schedules, callbacks and strategies."""
