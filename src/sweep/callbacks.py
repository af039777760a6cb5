"""Hydra callback: when a multirun ends, collect every job's status and merge the records.

It runs in the launching process for every launcher (basic, joblib, Ray, submitit), so it reads
statuses from the records on disk rather than from memory. Failures here are logged, never
raised (Hydra would turn them into warnings anyway).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sweep.record import RECORD_NAME, RecordError, read_record

log = logging.getLogger("sweep")

# (job label, status, error summary) for the last multirun of this process; read by run.main.
SWEEP_RESULTS: list[tuple[str, str, str]] = []


def collect_statuses(sweep_dir: Path) -> list[tuple[str, str, str]]:
    results = []
    for path in sorted(sweep_dir.glob(f"*/{RECORD_NAME}"), key=lambda p: _job_order(p.parent)):
        try:
            record = read_record(path)
        except RecordError as exc:
            results.append((str(path.parent), "unreadable record", str(exc)))
            continue
        label = " ".join(record.get("sweep", {}).get("overrides") or []) or path.parent.name
        err = record.get("error") or {}
        detail = f"{err.get('type', '')}: {err.get('message', '')}" if err else ""
        results.append((label, record["status"], detail))
    return results


def _job_order(job_dir: Path) -> tuple[int, str]:
    return (int(job_dir.name), "") if job_dir.name.isdigit() else (1 << 30, job_dir.name)


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SWEEP_RESULTS.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        results = collect_statuses(sweep_dir)
        SWEEP_RESULTS[:] = results
        ok = sum(1 for _, status, _ in results if status == "ok")
        log.info("sweep %s: %d/%d job(s) ok", sweep_dir, ok, len(results))
        if config.get("merge_on_end", True):
            try:
                from sweep import merge

                merge.merge_after_sweep(sweep_dir)
            except Exception:  # a merge problem must not hide the sweep's own results
                log.exception("merge after the sweep failed; run tools/merge_benchmarks.py")
