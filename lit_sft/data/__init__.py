"""Datasets: entries (read, validate, split), the synthetic set, and one module per data format.

`lit_sft.data.InstructionDataModule` stays importable from here: run folders written before the
data formats became a package name it as their `data._target_`.
"""

from lit_sft.data.sft import InstructionDataModule

__all__ = ["InstructionDataModule"]
