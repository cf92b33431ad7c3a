"""How far judges agree on the same answers: every pair's correlations, mean |Δ| and the entries
they score far apart, and each judge's self-consistency over repeats."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_sft.compare.tables import number, table
from lit_sft.evaluation.results import ScoredResult
from lit_sft.evaluation.statistics import agreement
from lit_sft.run_dir import read_json

# Scores further apart than this (on 0-100) are listed entry by entry.
FAR_APART = 20.0
SHOWN_CHARS = 80


def _judges_by_answers(results: Sequence[ScoredResult]) -> dict[Path, list[ScoredResult]]:
    """The judge results of each set of answers (exact match is not a judge)."""
    groups: dict[Path, list[ScoredResult]] = defaultdict(list)
    for result in results:
        if result.scorer.get("scorer") == "judge":
            groups[result.answers.path].append(result)
    return groups


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def pair_agreement(
    a: ScoredResult, b: ScoredResult, entries: Sequence[dict[str, Any] | None]
) -> dict[str, Any]:
    """Agreement of two judges on the entries both scored, and those > FAR_APART apart."""
    common = sorted(set(a.scores) & set(b.scores))
    x, y = [a.scores[i] for i in common], [b.scores[i] for i in common]
    apart = []
    for i, sa, sb in zip(common, x, y, strict=True):
        if abs(sa - sb) > FAR_APART:
            entry = entries[i] if i < len(entries) and entries[i] else {}
            apart.append(
                {
                    "index": i,
                    "a": sa,
                    "b": sb,
                    "instruction": entry.get("instruction", ""),
                    "model_response": entry.get("model_response", ""),
                }
            )
    return {
        "answers": a.answers.path.name,
        "a": a.scores_dir.path.name,
        "b": b.scores_dir.path.name,
        **agreement(x, y).as_dict(),
        "far_apart": apart,
    }


def _pair_rows(pairs: Sequence[dict[str, Any]]) -> list[str]:
    columns = ["answers", "judge A", "judge B", "n", "Pearson", "Spearman", "Kendall τ"]
    columns += ["mean abs Δ", f"> {FAR_APART:g} apart"]
    rows = [
        [
            *(p[key] for key in ("answers", "a", "b", "n")),
            *(number(p[key], ".3f") for key in ("pearson", "spearman", "kendall_tau")),
            number(p["mean_abs_diff"], ".2f"),
            len(p["far_apart"]),
        ]
        for p in pairs
    ]
    return table(columns, "lllrrrrrr", rows)


def _apart_rows(pair: dict[str, Any]) -> list[str]:
    title = (
        f"\n### {pair['a']} (A) vs {pair['b']} (B): entries more than {FAR_APART:g} points apart\n"
    )
    rows = [
        [
            e["index"],
            f"{e['a']:g}",
            f"{e['b']:g}",
            _short(e["instruction"]),
            _short(e["model_response"]),
        ]
        for e in pair["far_apart"]
    ]
    return [title, *table(["entry", "A", "B", "instruction", "response"], "rrrll", rows)]


def _consistency_rows(results: Sequence[ScoredResult]) -> tuple[list[str], list[dict[str, Any]]]:
    found = [
        (r, r.summary["self_consistency"])
        for r in results
        if r.summary and r.summary.get("self_consistency")
    ]
    if not found:
        return [], []
    columns = ["result", "repeats", "n", "means", "range of means", "mean entry std"]
    rows = [
        [
            r.name,
            sc["repeats"],
            sc["entries"],
            ", ".join(f"{m:.2f}" for m in sc.get("means", [])),
            number(sc.get("range_of_means"), ".2f"),
            number(sc.get("mean_entry_std"), ".2f"),
            sc.get("entries_differing", 0),
        ]
        for r, sc in found
    ]
    lines = table([*columns, "entries differing"], "lrrlrrr", rows)
    lines.insert(0, "\n## Self-consistency (one judge, repeated)\n")
    return lines, [{"result": r.name, **sc} for r, sc in found]


def judges_report(results: Sequence[ScoredResult]) -> tuple[str, dict[str, Any]]:
    """For every pair of judges that scored the same answers: n, Pearson, Spearman, Kendall's τ
    (scipy), mean |Δ| and the entries more than FAR_APART points apart."""
    pairs = []
    for judges in _judges_by_answers(results).values():
        entries = read_json(judges[0].answers.answers) or []
        for a, b in itertools.combinations(judges, 2):
            pairs.append(pair_agreement(a, b, entries))  # type: ignore[arg-type]
    lines = ["# Judges' agreement", ""]
    if pairs:
        lines += _pair_rows(pairs)
        for pair in pairs:
            if pair["far_apart"]:
                lines += _apart_rows(pair)
    else:
        lines.append("No two judges scored the same answers: score them with a second judge.")
    consistency_lines, consistency = _consistency_rows(results)
    lines += consistency_lines
    return "\n".join(lines), {"pairs": pairs, "self_consistency": consistency}
