#!/usr/bin/env python3
"""Plot any column of the runs against another: the median at each x, whiskers min-max.

    python tools/plot_benchmarks.py multirun/DATE/TIME --x batch_size \\
        --y decode_tokens_per_s --hue engine --out batch.png
    python tools/plot_benchmarks.py benchmarks/metrics.json --x tokens --y first_token_s \\
        --hue mode --facet model --out ttft.png

PATHS are sweep dirs, record files or the merged store; they load with
sweep.results.load_runs (one row per timed run). See `--help` for the columns.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

try:
    from sweep.results import plots
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from sweep.results import plots

PROG = "plot_benchmarks.py"
# The runs frame's columns (load_runs' contract; it has more: versions, commit, provenance).
COLUMNS = {
    "axes": "model mode mode_label tokens batch_size engine topology quant seed prompt_tokens",
    "machine": "machine hostname cpu_model device_kind device_count hosts backend",
    "run": "status phase run_index",
    "figures": "total_s first_token_s post_first_s new_tokens tokens_per_s decode_tokens_per_s "
    "decode_tokens_per_s_per_seq pre_first_tokens_per_s prefill_tokens_per_s mbu mfu "
    "first_token_derived",
}


def load(paths: Sequence[str]):
    """The runs frame of `paths` (sweep.results.load_runs)."""
    from sweep.results import load_runs

    return load_runs(*paths)


def _columns(value: str | None) -> list[str] | None:
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


def parser() -> argparse.ArgumentParser:
    names = [c for group in COLUMNS.values() for c in group.split()]
    width = max(map(len, names))
    columns = "\n".join(
        f"{group}:\n"
        + "\n".join(f"  {c:<{width}}  {plots.LABELS.get(c, '')}".rstrip() for c in cols.split())
        for group, cols in COLUMNS.items()
    )
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Plot the median of a column against another over the timed runs, with "
        "min-max whiskers: one line per --hue value, one subplot per --facet value. Only runs "
        "of ok jobs in --phase count.",
        epilog=f"columns of sweep.results.load_runs (and any other it has):\n{columns}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATHS", help="sweep dirs, records or the store")
    p.add_argument("--x", required=True, metavar="COLUMN", help="the x axis: any column")
    p.add_argument("--y", required=True, metavar="COLUMN", help="the y axis: a numeric column")
    p.add_argument("--hue", metavar="COLUMN[,COLUMN]", help="one line per value")
    p.add_argument("--facet", metavar="COLUMN[,COLUMN]", help="one subplot per value")
    p.add_argument("--phase", default="benchmark", help="warmup, benchmark or final (%(default)s)")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="keep only the runs whose COLUMN reads VALUE (repeatable)",
    )
    p.add_argument("--out", required=True, type=Path, metavar="FILE.png", help="the PNG to write")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    runs = load(args.paths)
    try:
        for cond in args.where:
            column, sep, value = cond.partition("=")
            if not sep:
                raise ValueError(f"--where {cond!r}: expected COLUMN=VALUE")
            plots.check_columns(runs, [column])
            runs = runs[[plots.label(v) == value for v in runs[column]]]
        png = plots.plot(
            runs,
            x=args.x,
            y=args.y,
            hue=_columns(args.hue),
            facet=_columns(args.facet),
            phase=args.phase,
        )
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    if not len(runs):
        print(f"{PROG}: error: no runs under {' '.join(args.paths)}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(png)
    print(f"wrote {args.out}: {args.y} vs {args.x} ({args.phase} phase)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
