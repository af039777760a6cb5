#!/usr/bin/env python3
"""Merge sweep records into benchmarks/metrics.json and rewrite BENCHMARKS.md, the CSVs and plots.

    python tools/merge_benchmarks.py [DIRS...]     # default: multirun/ outputs/
    python tools/merge_benchmarks.py --check       # exit 1 when an output is stale
    python tools/merge_benchmarks.py --history     # print the tables with superseded results

Every metrics.json under DIRS is validated; a bad file is skipped with one warning naming it
and the exit status is 1 at the end (--allow-bad: 0). Records are kept per configuration and
machine: a rerun supersedes the older result in the tables, the older one stays in the store.
See `--help` and src/sweep/results/.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from sweep.results import cli
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from sweep.results import cli

if __name__ == "__main__":
    sys.exit(cli.main())
