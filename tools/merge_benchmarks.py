#!/usr/bin/env python3
"""Merge sweep records into benchmarks/metrics.json and rewrite BENCHMARKS.md + plots.

    python tools/merge_benchmarks.py [DIRS...]     # default: multirun/ outputs/
    python tools/merge_benchmarks.py --check       # exit 1 when BENCHMARKS.md/plots are stale

Every metrics.json under DIRS is validated; a bad file is skipped with one warning naming it
and the exit status is 1 at the end (--allow-bad: 0). Records are upserted by run identity: a
rerun replaces its record. See `--help` and src/sweep/merge.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from sweep import merge
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from sweep import merge

if __name__ == "__main__":
    sys.exit(merge.main())
