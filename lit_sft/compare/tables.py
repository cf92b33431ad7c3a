"""Markdown tables for the comparison reports (compare.md, judges.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def number(value: float | None, spec: str) -> str:
    """`value` formatted by `spec`, or `-` when there is none."""
    return "-" if value is None else format(value, spec)


def table(columns: Sequence[str], align: str, rows: Iterable[Sequence[object]]) -> list[str]:
    """The header, the alignment row (`l` or `r` a column) and one line per row of cells."""
    return [
        _row(columns),
        _row("---:" if a == "r" else "---" for a in align),
        *(_row(cells) for cells in rows),
    ]


def _row(cells: Iterable[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"
