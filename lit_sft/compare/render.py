"""A comparison (`compare_models`) as files people read: compare.md, compare.json, compare.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lit_sft.compare.tables import table
from lit_sft.evaluation.flags import FLAGS
from lit_sft.files import write_json_atomic

MAX_CELL_CHARS = 160


def _cell(text: str) -> str:
    """Text that fits in one Markdown table cell."""
    flat = " ".join(str(text).split()).replace("|", "\\|")
    if not flat:
        return "*(empty)*"
    return flat if len(flat) <= MAX_CELL_CHARS else flat[: MAX_CELL_CHARS - 1] + "…"


STAT_COLUMNS = ["n", "mean A", "mean B", "B − A", "95 % interval", "wins / ties / losses", "p"]


def _stat_cells(stats: dict[str, Any]) -> list[Any]:
    """One paired comparison's STAT_COLUMNS cells."""
    return [
        stats["n"],
        f"{stats['mean_a']:.2f}",
        f"{stats['mean_b']:.2f}",
        f"{stats['diff']:+.2f}",
        "[{:+.2f}, {:+.2f}]".format(*stats["ci95"]),
        f"{stats['wins']} / {stats['ties']} / {stats['losses']}",
        f"{stats['p_value']:.3g}",
    ]


def pairs_table(comparison: dict[str, Any]) -> list[str]:
    """One row per pair and metric: means, B - A with its interval, wins/ties/losses, p."""
    rows = [[p["a"], p["b"], p["metric"], *_stat_cells(p)] for p in comparison["pairs"]]
    return table(["A", "B", "metric", *STAT_COLUMNS], "lllrrrrllr", rows)


def task_pairs_table(comparison: dict[str, Any]) -> list[str]:
    """Per pair, metric and task (where the data has tasks): the same columns within the task."""
    rows = [
        [p["a"], p["b"], p["metric"], task, *_stat_cells(stats)]
        for p in comparison["pairs"]
        for task, stats in p.get("by_task", {}).items()
    ]
    if not rows:
        return []
    return table(["A", "B", "metric", "task", *STAT_COLUMNS], "llllrrrrllr", rows)


def flags_table(comparison: dict[str, Any]) -> list[str]:
    """One row per model: the count (share) of answers with each flag."""
    rows = [
        [name, model["flags"]["answers"]]
        + [f"{flag['count']} ({flag['share']:.0%})" for flag in _by_flag(model["flags"])]
        for name, model in comparison["models"].items()
    ]
    return table(["model", "answers", *FLAGS], "lr" + "r" * len(FLAGS), rows)


def task_flags_table(comparison: dict[str, Any]) -> list[str]:
    """Per model and task (where the data has tasks): answers and the share of each flag."""
    rows = [
        [name, task, counts["answers"]] + [f"{flag['share']:.0%}" for flag in _by_flag(counts)]
        for name, model in comparison["models"].items()
        for task, counts in model["flags"].get("by_task", {}).items()
    ]
    if not rows:
        return []
    return table(["model", "task", "answers", *FLAGS], "llr" + "r" * len(FLAGS), rows)


def _by_flag(counts: dict[str, Any]) -> list[dict[str, Any]]:
    return [counts["flags"][flag] for flag in FLAGS]


def worst_section(pair: dict[str, Any]) -> list[str]:
    """The entries a pair differs most on, with both answers and the reference."""
    rows = [
        [
            _cell(row["instruction"] + (f" — {row['input']}" if row["input"] else "")),
            *(_cell(row[key]) for key in ("reference", "answer_a", "answer_b")),
            f"{row['diff']:+.0f}",
        ]
        for row in pair["worst"]
    ]
    columns = ["instruction", "reference", pair["a"], pair["b"], "B − A"]
    return [
        f"### {pair['a']} vs {pair['b']}, {pair['metric']}: the entries they differ most on",
        "",
        *table(columns, "llllr", rows),
        "",
    ]


def markdown(comparison: dict[str, Any], plot_name: str = "compare.png") -> str:
    """compare.md: the paired table, the error flags, and the entries each pair differs most on."""
    methods = comparison["methods"]
    lines = [
        "# Did it help?",
        "",
        "## Paired statistics (B against A, on the entries both were scored on)",
        "",
        *pairs_table(comparison),
        "",
        f"- B − A: {methods['diff']}; wins: {methods['wins']}.",
        f"- 95 % interval: {methods['ci95']}. An interval that holds 0 is no evidence of a "
        "difference.",
        f"- p: {methods['p_value']}.",
        "",
    ]
    if by_task := task_pairs_table(comparison):
        lines += ["### Per task (the same statistics within each task)", "", *by_task, ""]
    lines += [
        "## Error flags (count and share of answers)",
        "",
        *flags_table(comparison),
        "",
    ]
    definitions = next(iter(comparison["models"].values()))["flags"]["definitions"]
    lines += [f"- {name}: {text}" for name, text in definitions.items()] + [""]
    if by_task := task_flags_table(comparison):
        lines += ["### Share of answers flagged, per task", "", *by_task, ""]
    if pairwise := comparison.get("pairwise"):
        lines += ["## Pairwise judge (both orders; orders that disagree count as a tie)", ""]
        lines += pairwise_table(pairwise) + [""]
    lines += [f"![score differences and error flags]({plot_name})", ""]
    for pair in comparison["pairs"]:
        if pair["worst"]:
            lines += worst_section(pair)
    return "\n".join(lines)


def pairwise_table(pairwise: list[dict[str, Any]]) -> list[str]:
    """One row per pair judged head to head: B's wins / ties / losses and its win rate."""
    columns = ["A", "B", "judged", "B wins / ties / losses", "B win rate", "95 % interval"]
    rows = [
        [
            *(p[key] for key in ("a", "b", "n")),
            f"{p['wins']} / {p['ties']} / {p['losses']}",
            f"{p['win_rate']:.3f}",
            "[{:.3f}, {:.3f}]".format(*p["ci95"]),
            p["failed"],
        ]
        for p in pairwise
    ]
    return table([*columns, "failed"], "llrlrlr", rows)


def plot(comparison: dict[str, Any], path: Path) -> None:
    """Per pair and metric the sorted per-entry differences B − A; per model the flag shares."""
    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for pair in comparison["pairs"]:
        differences = sorted(pair["entry_differences"].values())
        label = f"{pair['b']} − {pair['a']} ({pair['metric']})"
        left.plot(range(len(differences)), differences, label=label)
    left.axhline(0, color="grey", linewidth=0.8)
    left.set(xlabel="entries, sorted", ylabel="score B − A", title="Per-entry score differences")
    left.legend(fontsize="small")
    names = list(comparison["models"])
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        flags = comparison["models"][name]["flags"]["flags"]
        positions = [i + index * width for i in range(len(FLAGS))]
        right.bar(positions, [flags[f]["share"] for f in FLAGS], width, label=name)
    right.set_xticks([i + 0.4 - width / 2 for i in range(len(FLAGS))], FLAGS, rotation=30)
    right.set(ylabel="share of answers", title="Error flags", ylim=(0, 1))
    right.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_outputs(comparison: dict[str, Any], out: Path) -> dict[str, Path]:
    """compare.json, compare.md and compare.png into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compare.json", "md": out / "compare.md", "png": out / "compare.png"}
    write_json_atomic(paths["json"], comparison)
    plot(comparison, paths["png"])
    paths["md"].write_text(markdown(comparison, paths["png"].name), encoding="utf-8")
    return paths
