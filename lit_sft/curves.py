"""A run's scalar curves, read from its TensorBoard events and plotted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tensorboard.backend.event_processing import event_accumulator

from lit_sft.run_dir import RunDir, natural_key


def read_scalar(run_dir: Path, tag: str = "val/loss") -> list[tuple[int, float]]:
    """(step, value) pairs of a scalar from every event file under `run_dir/tb`, sorted by step."""
    points: dict[int, float] = {}
    # Event file names start with the creation time, so name order is write order.
    files = sorted(
        RunDir(run_dir).tb.rglob("events.out.tfevents.*"), key=lambda p: natural_key(p.name)
    )
    for file in files:
        acc = event_accumulator.EventAccumulator(str(file), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            # A resumed run logs the same steps again in a newer file; the newer value wins.
            points.update({e.step: e.value for e in acc.Scalars(tag)})
    return sorted(points.items())


@dataclass(frozen=True)
class Curve:
    """One run's scalar curve, labelled for a plot legend."""

    label: str
    points: list[tuple[int, float]]
    finished: bool = True


def plot_val_loss(curves: Sequence[Curve], path: Path) -> Path:
    """Draw one labelled val-loss line per run into a PNG (dashed for runs that did not finish)."""
    # Figure + Agg canvas rather than pyplot: no global backend or figure registry to leak.
    fig = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for curve in curves:
        steps, values = zip(*curve.points, strict=True)
        style = "-" if curve.finished else "--"
        ax.plot(steps, values, style, marker="o", markersize=3, label=curve.label)
    ax.set_xlabel("step")
    ax.set_ylabel("val loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    return path
