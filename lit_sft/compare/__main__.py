"""`python -m lit_sft.compare <run or folder> [...] --out <folder>`: compare.md, compare.json and
compare.png."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from lit_sft.compare import Report, load_results
from lit_sft.compare.judges import judges_report
from lit_sft.compare.loading import models_report
from lit_sft.compare.models import WORST_ENTRIES
from lit_sft.compare.render import plot
from lit_sft.errors import UserError, one_line
from lit_sft.files import write_json_atomic

# Each report reads the same loaded results; a new kind of comparison is one more entry.
REPORTS: Mapping[str, Report] = {"models": models_report, "judges": judges_report}
# The reports that draw a figure from their data, and its file name.
FIGURES: Mapping[str, tuple[Callable[[dict[str, Any], Path], None], str]] = {
    "models": (plot, "compare.png")
}


def write_reports(
    folders: Sequence[Path],
    names: Sequence[str],
    out: Path,
    reports: Mapping[str, Report] = REPORTS,
) -> list[Path]:
    """Runs the named reports on the folders' results; writes out/compare.md, .json and figures."""
    results = load_results(folders)
    sections, data = [], {"folders": [str(f) for f in folders]}
    for name in names:
        markdown, values = reports[name](results)
        if markdown:
            sections.append(markdown)
        data[name] = values
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "compare.md", out / "compare.json"]
    for name, (draw, file_name) in FIGURES.items():
        if data.get(name):
            draw(data[name], out / file_name)
            written.append(out / file_name)
    (out / "compare.md").write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    write_json_atomic(out / "compare.json", data)
    return written


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lit_sft.compare",
        description="Compare evaluation results: models on the same test entries (paired "
        "statistics, error flags, the entries they differ most on, --pairwise), and how far "
        "judges agree.",
    )
    parser.add_argument("folders", nargs="+", type=Path, help="run folders or out= folders")
    parser.add_argument("--out", type=Path, required=True, help="where compare.md/.json go")
    parser.add_argument(
        "--report",
        action="append",
        choices=list(REPORTS),
        help="a report to write (repeatable; default: all)",
    )
    parser.add_argument(
        "--worst",
        type=int,
        default=WORST_ENTRIES,
        help=f"entries listed where two models differ most ({WORST_ENTRIES})",
    )
    parser.add_argument(
        "--pairwise",
        action="store_true",
        help="also ask the judge which of two models' answers is better, in both orders",
    )
    parser.add_argument("--judge-model", help="--pairwise: this judge model, not the scorers'")
    parser.add_argument("--judge-url", help="--pairwise: this judge server, not the scorers'")
    parser.add_argument("--judge-api", help="--pairwise: ollama or openai")
    return parser.parse_args(argv)


def reports_for(args: argparse.Namespace) -> dict[str, Report]:
    """The reports with this command line's options."""
    judge = {"model": args.judge_model, "url": args.judge_url, "api": args.judge_api}
    models = partial(
        models_report,
        worst=args.worst,
        pairwise=judge if args.pairwise else None,
        verdicts=args.out / "pairwise.jsonl",
    )
    return {**REPORTS, "models": models}


def main(argv: Sequence[str] | None = None) -> int:
    """Writes the reports; a user's mistake is one `error:` line and exit status 1."""
    args = parse_args(argv)
    try:
        names = args.report or list(REPORTS)
        written = write_reports(args.folders, names, args.out, reports_for(args))
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    print((args.out / "compare.md").read_text(encoding="utf-8"))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
