"""The Hydra edge of lit_sft: what composes or reads configs and turns them into library calls.

Only this package (and the entry-point scripts) imports hydra or omegaconf; the rest of lit_sft
takes plain values. Importing it registers `${run_path:<name>}`, with which `conf/` names a path of
the run folder through `lit_sft.run_dir.RunDir` (`${run_path:last_checkpoint}`) instead of
spelling it again.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from lit_sft.run_dir import RunDir


def run_path(name: str, *, _root_: Any) -> str:
    """The path `RunDir(run_dir).<name>` of the config's own run folder."""
    return str(getattr(RunDir(_root_.run_dir), name))


OmegaConf.register_new_resolver("run_path", run_path, replace=True)
