"""How the jobs of this process ended: what `sweep.run` turns into its exit status and what the
end-of-sweep summary counts.

The job appends one `JobResult` when it ends, whether or not its record could be written (a
full disk). The sweep summary prefers these to the records on disk for the jobs this process
ran, so that a record that could not be replaced (the older one is still there) is never
counted as the job's result; jobs run elsewhere (Ray, submitit) are known from their records.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

# Below this much free space in the sweep dir, the next job could not even write its config.
MIN_FREE_BYTES = 4 * 2**20


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobResult:
    label: str  # the job's overrides
    status: str
    detail: str = ""  # "<error type>: <message>", or ""
    job_dir: str | None = None


# Every job this process ran, in order.
JOB_RESULTS: list[JobResult] = []


def ran_here(job_dir: str | Path) -> JobResult | None:
    """The latest result of the job in `job_dir` that this process ran, or None."""
    want = Path(job_dir).resolve()
    for result in reversed(JOB_RESULTS):
        if result.job_dir and Path(result.job_dir).resolve() == want:
            return result
    return None


def not_ok(results: list[JobResult]) -> list[JobResult]:
    return [r for r in results if r.status != "ok"]


class SweepStopped(BaseException):
    """The sweep cannot go on (its disk is full); the message says why and what to do.

    A BaseException on purpose: Hydra would print an Exception as a traceback and skip the
    end of the sweep; this one reaches `sweep.run.main`, which says so once, removes the empty
    files Hydra left and prints the summary of the jobs that ran.
    """


def disk_problem(job_dir: Path, record_written: bool, *, more_jobs: bool) -> str | None:
    """Why the sweep must stop after this job (its record could not be written for lack of
    space, or too little space is left for another job's files), or None."""
    try:
        free = shutil.disk_usage(job_dir if job_dir.exists() else job_dir.parent).free
    except OSError:
        return None
    where = f"{job_dir.parent} ({free / 2**20:.1f} MiB free)"
    if not record_written and free < MIN_FREE_BYTES:
        return f"the disk of the sweep dir is full: {where}"
    if more_jobs and free < MIN_FREE_BYTES:
        return f"too little space left for the next job in the sweep dir {where}"
    return None
