"""Records as pandas frames, the store that keeps every machine's results and their history,
and the merge that renders them (BENCHMARKS.md, runs.csv, phases.csv, plots, index.html).

    from sweep.results import load_runs, load_phases
    runs = load_runs("multirun/")                        # one row per timed run
    phases = load_phases("benchmarks/metrics.json")      # one row per job x phase

Modules: `load` (reading records, bad files skipped), `jobs` (one record checked, figures
recomputed, its identity), `store`, `frames` (the DataFrames and CSVs), `tables`, `memory` (the
Memory table), `report` (the tables in order), `markdown`, `html`, `plots`, `merging` (the
merge) and `cli` (tools/merge_benchmarks.py). No JAX here.
"""

from sweep.results.frames import PHASE_COLUMNS, RUN_COLUMNS, load_phases, load_runs
from sweep.results.merging import MergeResult, merge, merge_after_sweep, summary_line
from sweep.results.store import StoreError

__all__ = [
    "PHASE_COLUMNS",
    "RUN_COLUMNS",
    "MergeResult",
    "StoreError",
    "load_phases",
    "load_runs",
    "merge",
    "merge_after_sweep",
    "summary_line",
]
