"""What a sweep is doing while it runs: a line when a long step of a job starts and ends (with
its seconds), `[k/N] <overrides> <status> in X s; ETA ~Y s for the sweep` after each job, and
how many jobs the launcher runs at once on this host (`env.concurrent_jobs` in the record).

N is the number of jobs of the sweep as Hydra's basic sweeper expands it (the product of the
sweep overrides' values, `resume.sweep_jobs`), counted by the sweep callback when the multirun
starts; with another sweeper it is unknown and the line reads `[k/?]` with no ETA. The
callback also exports N and the sweep's start time (`SWEEP_JOB_COUNT`, `SWEEP_STARTED_AT`) so
that jobs run in a launcher's worker processes (joblib) can print the same line. No JAX here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("sweep")

JOB_COUNT_VAR = "SWEEP_JOB_COUNT"
STARTED_VAR = "SWEEP_STARTED_AT"


def get_key(node: Any, key: str) -> Any:
    """`key` of a dict, DictConfig or dataclass (None when absent): launcher and topology
    configs reach us as any of the three."""
    if node is None:
        return None
    if hasattr(node, "get"):
        return node.get(key)
    return getattr(node, key, None)


def job_count(sweeper: Any, task_overrides: list[str]) -> int | None:
    """How many jobs Hydra's basic sweeper makes of `task_overrides` and its `params`; None
    for another sweeper (Optuna, Ax, ...) or overrides it cannot expand."""
    from sweep.resume import sweep_jobs

    if "BasicSweeper" not in str(get_key(sweeper, "_target_") or ""):
        return None
    params = get_key(sweeper, "params") or {}
    overrides = [f"{key}={value}" for key, value in params.items()]
    jobs = sweep_jobs([*overrides, *(str(o) for o in task_overrides)])
    return None if jobs is None else len(jobs)


def start_sweep(total: int | None) -> None:
    """Export the sweep's job count and start time to the jobs' processes."""
    os.environ[STARTED_VAR] = repr(time.time())
    if total is None:
        os.environ.pop(JOB_COUNT_VAR, None)
    else:
        os.environ[JOB_COUNT_VAR] = str(total)


def end_sweep() -> None:
    os.environ.pop(JOB_COUNT_VAR, None)
    os.environ.pop(STARTED_VAR, None)


def sweep_total() -> int | None:
    """N for the running multirun (this process or a launcher's worker), or None."""
    try:
        return int(os.environ[JOB_COUNT_VAR])
    except (KeyError, ValueError):
        return None


def _sweep_started() -> float | None:
    try:
        return float(os.environ[STARTED_VAR])
    except (KeyError, ValueError):
        return None


def concurrent_jobs(launcher: Any, total: int | None = None) -> int | None:
    """How many jobs `launcher` (Hydra's launcher config: `_target_`, `n_jobs`, ...) runs at
    once on one host: 1 for the basic launcher (and a single run), joblib's `n_jobs` (-1 = the
    CPU count, -2 = all but one...), submitit's local `array_parallelism`; at most the sweep's
    `total` jobs. None where the launcher config does not say (Ray, Slurm)."""
    target = str(get_key(launcher, "_target_") or "")
    if launcher is None or not target or "BasicLauncher" in target:
        return 1
    n: int | None = None
    if "joblib" in target.lower():
        n_jobs = get_key(launcher, "n_jobs")
        n = 1 if n_jobs is None else int(n_jobs)  # joblib: None means 1
        if n < 0:
            n = max(1, (os.cpu_count() or 1) + 1 + n)
    elif "submitit" in target.lower() and "LocalLauncher" in target:
        n = int(get_key(launcher, "array_parallelism") or 256)  # submitit's default
    if n is None:
        return None
    return min(n, total) if total else n


@contextlib.contextmanager
def step(job: Any, what: str) -> Iterator[None]:
    """Log that a long step of job `job` starts, and when it ends, its seconds."""
    log.info("[job %s] %s ...", job, what)
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        log.info("[job %s] %s: stopped after %.1f s", job, what, time.perf_counter() - started)
        raise
    log.info("[job %s] %s: done in %.1f s", job, what, time.perf_counter() - started)


def _seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def progress_line(
    done: int,
    total: int | None,
    label: str,
    status: str,
    job_s: float,
    elapsed_s: float | None,
) -> str:
    """`[k/N] <overrides> <status> in X s; ETA ~Y s for the sweep`: the ETA is the mean time
    per job so far (the sweep's elapsed time over the jobs done) times the jobs left."""
    line = f"[{done}/{total if total else '?'}] {label} {status} in {job_s:.1f} s"
    if not total or elapsed_s is None or done <= 0:
        return line
    left = max(total - done, 0)
    if left == 0:
        return f"{line}; sweep done in {_seconds(elapsed_s)}"
    return f"{line}; ETA ~{_seconds(elapsed_s / done * left)} for the sweep ({left} job(s) left)"


def report_job(
    job_num: Any,
    label: str,
    status: str,
    job_s: float,
    *,
    sweep_dir: str | None = None,
    parallel: bool = False,
) -> None:
    """Log the progress line of a job of the running multirun (nothing outside one). Jobs run
    one at a time are done in their order (k = job number + 1); with jobs at once (`parallel`)
    k counts the records written into `sweep_dir` since the sweep started."""
    started = _sweep_started()
    if started is None:
        return
    try:
        done = int(job_num) + 1  # jobs are numbered from 0 in the order they are launched
    except (TypeError, ValueError):
        return
    if parallel and sweep_dir:
        done = max(1, _records_since(Path(sweep_dir), started))
    log.info(progress_line(done, sweep_total(), label, status, job_s, time.time() - started))


def _records_since(sweep_dir: Path, started: float) -> int:
    count = 0
    for path in sweep_dir.glob("*/metrics.json"):
        try:
            count += path.stat().st_mtime >= started
        except OSError:
            continue
    return count
