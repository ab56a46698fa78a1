"""``sinterlab-report DIR [--out STEM]``: summarise every metrics.json under DIR.

Exit status: 0 written (runs that failed or are incomplete are named on screen); 2 no such
folder, or no finished run in it; 74 the summary could not be written (one line naming the
file and the cause).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sinterlab.cli import stopped
from sinterlab.errors import WRITE_FAILED, WriteFailed
from sinterlab.evaluation.summary import failed_runs, write_summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sinterlab-report",
        description="Summarise the runs under DIR (every metrics.json, e.g. a Hydra multirun "
        "folder): mean ± sd per experiment and split, written as Markdown and CSV.",
    )
    parser.add_argument("dir", type=Path, help="folder searched recursively for metrics.json")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="STEM",
        help="output path without extension (default: DIR/summary -> summary.md, summary.csv)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root: Path = args.dir
    if not root.is_dir():
        print(f"sinterlab-report: no such folder: {root}", file=sys.stderr)
        sys.exit(2)
    try:
        md_path, csv_path = write_summary(root, args.out)
    except FileNotFoundError as err:
        print(f"sinterlab-report: {err}", file=sys.stderr)
        sys.exit(2)
    except WriteFailed as err:
        print(f"sinterlab-report: {stopped(err)}", file=sys.stderr)
        sys.exit(WRITE_FAILED)
    print(md_path.read_text(encoding="utf-8"), end="")
    for run, reason in failed_runs(root):
        print(f"sinterlab-report: skipped run {run}: {reason}", file=sys.stderr)
    print(f"\nwrote {md_path} and {csv_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
