"""The merged store (`<merge.dir>/metrics.json`): every record merged so far, history included.

    {"store_version": 2, "records": [...], "plots": {...}}

Records are kept per cell (run identity + machine, `jobs.Job.cell`): a newer result of a cell
supersedes the older one in the tables, and the older one stays here (history). Version 1
stores (one record per run_key, no history) read as they are. `plots` holds what the plots were
drawn from (a hash of their input and of each PNG), so `--check` needs no rendering.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sweep.record import RecordError, validate_record
from sweep.results.jobs import Job, parse_job

STORE_VERSION = 2


class StoreError(RuntimeError):
    """The store itself is unreadable: refuse to overwrite it."""


def reason(exc: BaseException) -> str:
    """Why a file is bad, in one line: a RecordError's own message, else the exception's type
    and message (a RecursionError or MemoryError says little by its message alone)."""
    if isinstance(exc, RecordError | StoreError):
        text = str(exc)
    else:
        message = str(exc)
        text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return " ".join(text.split())


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _parse(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)


def is_store(path: Path) -> bool:
    try:
        data = _parse(path)
    except Exception:  # unreadable in any way: not a store
        return False
    return isinstance(data, dict) and "store_version" in data


def read_store(path: Path) -> tuple[list[Job], dict[str, Any], list[tuple[str, str]]]:
    """(jobs, plots, skipped) of a store; empty when it does not exist. An invalid record
    inside it is left out and listed in skipped; an unreadable store raises StoreError."""
    path = Path(path)
    if not path.exists():
        return [], {}, []
    try:
        data = _parse(path)
    except Exception as exc:  # OSError, UnicodeError, ValueError, RecursionError, MemoryError...
        raise StoreError(f"{path}: unreadable store ({reason(exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise StoreError(f"{path}: not a merged store (no 'records' list)")
    version = data.get("store_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreError(f"{path}: store_version {version!r} is not 1-{STORE_VERSION}")
    if version > STORE_VERSION:
        raise StoreError(f"{path}: store_version {version} is newer than {STORE_VERSION}")
    jobs, skipped = [], []
    for i, record in enumerate(data["records"]):
        try:
            validate_record(record)
            jobs.append(parse_job(record))
        except Exception as exc:
            skipped.append((f"{path} (record {i})", reason(exc)))
    plots = data.get("plots") if isinstance(data.get("plots"), dict) else {}
    return jobs, plots, skipped


def store_bytes(jobs: list[Job], plots: dict[str, Any]) -> bytes:
    """The store's bytes: records in the given (table) order, keys sorted, no NaN."""
    data = {"store_version": STORE_VERSION, "records": [j.record for j in jobs], "plots": plots}
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


@dataclasses.dataclass
class Upsert:
    jobs: list[Job]  # every distinct record: the store's and the new ones, history included
    added: int = 0  # cells new to the store
    replaced: int = 0  # cells whose current result is now a newer one (the older kept)
    unchanged: int = 0  # cells whose current result stays (the same record, or a newer one)
    history: int = 0  # older results new to the store, kept as history only


def upsert(existing: list[Job], incoming: list[Job]) -> Upsert:
    """Add `incoming` to `existing`, keeping every distinct record; count per cell how the
    current result changed (order-independent: per cell the latest started_at wins)."""
    known = {job.record_id: job for job in existing}
    old_latest: dict[tuple[str, str], Job] = {}
    for job in existing:
        best = old_latest.get(job.cell)
        if best is None or job.recency > best.recency:
            old_latest[job.cell] = job
    new_latest: dict[tuple[str, str], Job] = {}
    fresh: dict[str, Job] = {}
    for job in incoming:
        best = new_latest.get(job.cell)
        if best is None or job.recency > best.recency:
            new_latest[job.cell] = job
        if job.record_id not in known:
            fresh.setdefault(job.record_id, job)
    result = Upsert(jobs=[*known.values(), *fresh.values()])
    for cell, job in new_latest.items():
        old = old_latest.get(cell)
        if old is None:
            result.added += 1
        elif job.record_id == old.record_id or job.recency < old.recency:
            result.unchanged += 1
        else:
            result.replaced += 1
    heads = {job.record_id for job in new_latest.values()}
    result.history = sum(
        1
        for job in fresh.values()
        if job.record_id not in heads or job.recency < old_latest.get(job.cell, job).recency
    )
    return result
