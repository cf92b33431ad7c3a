"""Instruction finetuning of GPT-2 with PyTorch Lightning and Hydra."""
