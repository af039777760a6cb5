"""Records -> benchmarks/metrics.json -> BENCHMARKS.md. (Interim: the merge lands in issue 3.)"""

from __future__ import annotations

from pathlib import Path


def merge_after_sweep(sweep_dir: Path) -> None:
    pass
