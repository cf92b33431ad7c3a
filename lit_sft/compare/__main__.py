"""`python -m lit_sft.compare <run or folder> [...] --out <folder>`: compare.md and compare.json."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from lit_sft.compare import Report, load_results
from lit_sft.compare.judges import judges_report
from lit_sft.errors import UserError, one_line
from lit_sft.files import write_json_atomic

# Each report reads the same loaded results; a new kind of comparison is one more entry.
REPORTS: Mapping[str, Report] = {"judges": judges_report}


def write_reports(folders: Sequence[Path], names: Sequence[str], out: Path) -> list[Path]:
    """Runs the named reports on the folders' results; writes out/compare.md and compare.json."""
    results = load_results(folders)
    sections, data = [], {"folders": [str(f) for f in folders]}
    for name in names:
        markdown, values = REPORTS[name](results)
        sections.append(markdown)
        data[name] = values
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    write_json_atomic(out / "compare.json", data)
    return [out / "compare.md", out / "compare.json"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lit_sft.compare",
        description="Compare evaluation results: with one run, how far its judges agree.",
    )
    parser.add_argument("folders", nargs="+", type=Path, help="run folders or out= folders")
    parser.add_argument("--out", type=Path, required=True, help="where compare.md/.json go")
    parser.add_argument(
        "--report",
        action="append",
        choices=list(REPORTS),
        help="a report to write (repeatable; default: all)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Writes the reports; a user's mistake is one `error:` line and exit status 1."""
    args = parse_args(argv)
    try:
        written = write_reports(args.folders, args.report or list(REPORTS), args.out)
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    print((args.out / "compare.md").read_text(encoding="utf-8"))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
