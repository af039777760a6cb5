"""Reading records: sweep dirs (searched recursively), record files, merged stores.

Every `metrics.json` is read with `record.read_record` and checked further for what the tables
need (`jobs.parse_job`); a bad file (any exception while reading or checking it: invalid JSON,
nesting too deep, a malformed field...) is skipped with one warning line naming it and why, and
the rest is read. A merged store given as input contributes all its records, history included.
The copies wandb keeps of each record inside its run dirs are not read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sweep.record import RECORD_NAME, read_record
from sweep.results.jobs import Job, parse_job
from sweep.results.store import is_store, read_store, reason

log = logging.getLogger("sweep")

Warn = Callable[[str], None]


def log_warning(message: str) -> None:
    log.warning("%s", message)


def record_files(path: Path) -> set[Path]:
    """The records under a dir, not the copies inside wandb run dirs."""
    return {
        p
        for p in path.rglob(RECORD_NAME)
        if p.is_file() and "wandb" not in p.relative_to(path).parts
    }


def load_jobs(
    inputs: Iterable[str | os.PathLike], warn: Warn | None = None, *, exclude: Sequence = ()
) -> tuple[list[Job], list[tuple[str, str]]]:
    """Read and check the records under `inputs` (dirs searched recursively, record files or
    merged stores). Returns (jobs, skipped [(path, reason)]); each skip is also one `warn`
    line. Files in `exclude` are not read (the store a merge writes)."""
    warn = warn or log_warning
    excluded = {Path(p).resolve() for p in exclude}
    jobs: list[Job] = []
    skipped: list[tuple[str, str]] = []

    def skip(path: Path | str, why: str) -> None:
        why = " ".join(str(why).split())  # one line, whatever the message held
        skipped.append((str(path), why))
        warn(f"skipped {path}: {why}")

    files: set[Path] = set()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files |= record_files(path)
        elif path.is_file():
            files.add(path)
        else:
            skip(path, "no such file or directory")
    for path in sorted(files):
        if path.resolve() in excluded:
            continue
        try:
            jobs.append(parse_job(read_record(path)))
            continue
        except Exception as exc:  # any failure makes it a bad file, never a failed read
            if not is_store(path):
                skip(path, reason(exc))
                continue
        try:
            store_jobs, _, bad = read_store(path)
        except Exception as exc:
            skip(path, reason(exc))
            continue
        for where, why in bad:
            skip(where, why)
        jobs += store_jobs
    return jobs, skipped


def load_inputs(
    inputs: Iterable[str | os.PathLike], warn: Warn | None = None, *, exclude: Sequence = ()
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """`load_jobs`, as the records' dicts."""
    jobs, skipped = load_jobs(inputs, warn, exclude=exclude)
    return [job.record for job in jobs], skipped
