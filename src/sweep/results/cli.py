"""tools/merge_benchmarks.py: merge sweep records into the store and rewrite the outputs.

    python tools/merge_benchmarks.py [DIRS...]        # default: multirun/ outputs/
    python tools/merge_benchmarks.py --check          # exit 1 when an output is stale
    python tools/merge_benchmarks.py --history        # the tables with superseded results

`main()` parses the arguments and calls `merging.merge` (or `merging.history_markdown`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sweep.results.merging import (
    DEFAULT_DIR,
    DEFAULT_DIRS,
    DEFAULT_MARKDOWN,
    STORE_NAME,
    history_markdown,
    merge,
    summary_line,
)
from sweep.results.store import StoreError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="merge_benchmarks.py",
        description="Merge sweep records (metrics.json) into benchmarks/metrics.json and "
        "rewrite BENCHMARKS.md, benchmarks/runs.csv, phases.csv, *.png and index.html.",
    )
    p.add_argument(
        "dirs",
        nargs="*",
        metavar="DIR",
        help="dirs searched recursively for metrics.json, record files or merged stores "
        f"(default: {' '.join(d + '/' for d in DEFAULT_DIRS)}, those that exist)",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help="where the store, the CSVs, the plots and index.html go (%(default)s)",
    )
    p.add_argument("--store", type=Path, help=f"the store (default: DIR/{STORE_NAME})")
    p.add_argument("--plots-dir", type=Path, help="plots and index.html (default: DIR)")
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN, help="%(default)s")
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when the store, the CSVs, BENCHMARKS.md, the plots or "
        "index.html are stale against the records",
    )
    p.add_argument(
        "--history",
        action="store_true",
        help="write nothing; print BENCHMARKS.md with every result kept in the store, the "
        "superseded ones (older results of a configuration on the same machine) included and "
        "marked",
    )
    p.add_argument(
        "--allow-bad", action="store_true", help="exit 0 even when some files were skipped"
    )
    p.add_argument(
        "--rebuild", action="store_true", help="ignore the existing store: records from DIRS only"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    inputs = args.dirs or [d for d in DEFAULT_DIRS if Path(d).is_dir()]
    store = args.store or args.dir / STORE_NAME
    plots_dir = args.plots_dir or args.dir

    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    paths = {"store": store, "markdown": args.markdown, "plots_dir": plots_dir}
    try:
        if args.history:
            text, result = history_markdown(inputs, **paths, rebuild=args.rebuild, warn=warn)
            sys.stdout.write(text)
            print(summary_line(result, "the history view"), file=sys.stderr)
        else:
            result = merge(inputs, **paths, check=args.check, rebuild=args.rebuild, warn=warn)
            print(summary_line(result, args.markdown))
    except StoreError as exc:
        print(f"error: {exc}; fix or move it, or pass --rebuild", file=sys.stderr)
        return 2
    status = 0
    if args.check:
        if result.stale:
            for path in result.stale:
                print(f"stale: {path}", file=sys.stderr)
            print("run python tools/merge_benchmarks.py to regenerate", file=sys.stderr)
            status = 1
        else:
            print("up to date")
    elif result.written:
        print("wrote " + ", ".join(result.written))
    if result.skipped and not args.allow_bad:
        print(
            f"{len(result.skipped)} file(s) skipped (see warnings); --allow-bad to exit 0",
            file=sys.stderr,
        )
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
