"""The summary of a scoring: counts, the mean with its intervals, and how to print and log it."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from lit_sft.evaluation.statistics import (
    BOOTSTRAP_METHOD,
    NORMAL_METHOD,
    WILSON_METHOD,
    bootstrap_ci,
    normal_ci,
    wilson_ci,
)

CI95_METHOD = NORMAL_METHOD


def summarize(
    metric: str, scores: Sequence[float | None], val_loss: float | None
) -> dict[str, Any]:
    """Counts, mean, sample std and the 95 % intervals of the scores that exist.

    Every mean gets the normal and the bootstrap interval; exact match (a share of hits) also the
    Wilson interval, which holds for small n and for shares near 0 or 100 %.
    """
    scored = [s for s in scores if s is not None]
    summary = {
        "metric": metric,
        "entries": len(scores),
        "scored": len(scored),
        "failures": len(scores) - len(scored),
        "mean": statistics.fmean(scored) if scored else None,
        "std": statistics.stdev(scored) if len(scored) > 1 else None,
        "ci95": normal_ci(scored),
        "ci95_method": NORMAL_METHOD,
        "bootstrap_ci95": bootstrap_ci(scored),
        "bootstrap_method": BOOTSTRAP_METHOD,
        "val_loss": val_loss,
    }
    if metric == "exact_match":
        summary["wilson_ci95"] = wilson_ci(sum(s == 100.0 for s in scored), len(scored))
        summary["wilson_method"] = WILSON_METHOD
    return summary


def _number(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _interval(ci: Sequence[float] | None, method: str) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]  ({method})" if ci else "-"


def describe_scorer(scorer: dict[str, Any]) -> str:
    """One line naming the scorer: `exact_match`, or the judge's api, model, prompt and server."""
    if scorer["scorer"] != "judge":
        return scorer["scorer"]
    repeats = f", {scorer['repeats']} repeats" if scorer.get("repeats", 1) > 1 else ""
    return (
        f"judge {scorer['api']} {scorer['model']} at {scorer['url']}, prompt {scorer['prompt']}, "
        f"temperature {scorer['temperature']:g}, seed {scorer['seed']}{repeats}"
    )


def describe_answers(answers: dict[str, Any]) -> str:
    """One line naming what made the answers: the weights and generation, or the file."""
    if answers["source"] == "file":
        return f"{answers['file']}, field {answers['response_field']!r}"
    g = answers["generation"]
    how = "greedy" if g["temperature"] <= 0 else f"temperature {g['temperature']:g}"
    if g["temperature"] > 0:
        how += f", top_k {g['top_k']}, seed {g['seed']}, batch {g['batch_size']}"
    return (
        f"weights {answers['weights_sha256'][:12]}, prompt {answers['prompt_style']}, {how}, "
        f"max_new_tokens {g['max_new_tokens']}"
    )


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a short two-column table."""
    rows = [
        ("result", summary.get("result", "-")),
        ("scorer", describe_scorer(summary["scorer"]) if "scorer" in summary else "-"),
        ("answers", describe_answers(summary["answers"]) if "answers" in summary else "-"),
        ("metric", summary["metric"]),
        ("entries", str(summary["entries"])),
        ("scored", str(summary["scored"])),
        ("failures", str(summary["failures"])),
        ("mean", _number(summary["mean"])),
        ("std", _number(summary["std"])),
        ("ci95", _interval(summary["ci95"], summary["ci95_method"])),
        ("bootstrap", _interval(summary["bootstrap_ci95"], summary["bootstrap_method"])),
    ]
    if "wilson_ci95" in summary:
        rows.append(("wilson", _interval(summary["wilson_ci95"], summary["wilson_method"])))
    if summary.get("self_consistency"):
        sc = summary["self_consistency"]
        means = ", ".join(f"{m:.2f}" for m in sc.get("means", []))
        rows.append(
            (
                "repeats",
                f"{sc['repeats']} (means {means}; per entry std {_number(sc.get('mean_entry_std'))}"
                f", {sc.get('entries_differing', 0)} of {sc['entries']} entries differ)",
            )
        )
    rows.append(("val_loss", _number(summary["val_loss"], ".4f")))
    return "\n".join(f"{name:<10}{value}" for name, value in rows)


def summary_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """The mean, its intervals and the counts as the loggers get them (None left out).

    Tagged `eval/<answers>/<scorer>/...`, the result's folder under eval/: each judge and each
    set of answers apart.
    """
    prefix = f"eval/{summary['result']}"
    pairs = {
        "mean": summary["mean"],
        "ci95_low": (summary["ci95"] or [None])[0],
        "ci95_high": (summary["ci95"] or [None, None])[1],
        "bootstrap_low": (summary["bootstrap_ci95"] or [None])[0],
        "bootstrap_high": (summary["bootstrap_ci95"] or [None, None])[1],
        "scored": summary["scored"],
        "failures": summary["failures"],
    }
    return {f"{prefix}/{k}": float(v) for k, v in pairs.items() if v is not None}
