"""The result record: one `metrics.json` per Hydra job, the source of truth for every table.

Pure standard library. Written atomically (temp file in the same dir, fsync, `os.replace`)
with `allow_nan=False`, so a reader sees the old record or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RECORD_NAME = "metrics.json"
STATUSES = ("ok", "failed", "oom", "skipped", "crashed", "interrupted")
PHASES = ("warmup", "benchmark", "final")
# Counts in every phase block: persistent XLA cache, then stored programs (sweep/programs.py).
PHASE_CACHE_COUNTS = ("cache_hits", "cache_misses", "program_hits", "program_misses")
REQUIRED_KEYS = (
    "schema_version",
    "status",
    "error",
    "run_key",
    "config",
    "choices",
    "env",
    "phases",
    "generated_text",
    "wandb",
)
# Config keys that do not change what is measured: left out of the run identity.
NON_IDENTITY_KEYS = ("wandb", "compile_cache_dir", "merge_on_end", "resume", "isolate")


class RecordError(ValueError):
    """A record file is unreadable or breaks the schema; the message says which and why."""


def run_key(config: dict[str, Any], env: dict[str, Any] | None = None) -> str:
    """Identity of a run: same experiment on the same kind of machine = same key, so a rerun
    replaces its record in benchmarks/metrics.json instead of adding a duplicate."""
    identity = {k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS}
    env = env or {}
    machine = {k: env.get(k) for k in ("backend", "device_kind", "device_count", "hosts")}
    blob = json.dumps({"config": identity, "machine": machine}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_hash(config: dict[str, Any]) -> str:
    """Identity of a job's config alone (no machine): known before the job runs, so
    `resume=true` can tell whether a job dir's record measured this very config."""
    identity = {k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS}
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def error_block(exc: BaseException | None) -> dict[str, str] | None:
    if exc is None:
        return None
    return {"type": type(exc).__name__, "message": str(exc)}


def write_record(path: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Atomically write `record` as JSON. Raises ValueError on NaN/inf (a counting bug)."""
    path = Path(path)
    data = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomically(path, data.encode("utf-8"))
    _fsync_dir(path.parent)
    return path


def write_bytes_atomically(path: Path, data: bytes | bytearray) -> None:
    """Temp file in the same dir, fsync, `os.replace`: a reader sees the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide files from other users
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} (NaN/Infinity is not valid in a record)")


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate one record. Raises RecordError naming the reason."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"unreadable: {exc}") from None
    if not text.strip():
        raise RecordError("empty file")
    try:
        record = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise RecordError(f"not valid JSON ({exc})") from None
    validate_record(record)
    return record


def validate_record(record: Any) -> None:
    if not isinstance(record, dict):
        raise RecordError("not a JSON object")
    version = record.get("schema_version")
    if not isinstance(version, int):
        raise RecordError("missing or non-integer schema_version")
    if version > SCHEMA_VERSION:
        raise RecordError(
            f"schema_version {version} is newer than this tool's {SCHEMA_VERSION} (upgrade sweep)"
        )
    if version < 1:
        raise RecordError(f"unknown schema_version {version}")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise RecordError(f"missing keys: {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise RecordError(f"unknown status {record['status']!r}")
    if not isinstance(record["phases"], dict):
        raise RecordError("phases is not an object")
    if record["status"] == "ok":
        for phase in PHASES:
            runs = record["phases"].get(phase, {}).get("runs")
            if not isinstance(runs, list) or not runs:
                raise RecordError(f"status ok but phases.{phase}.runs is missing or empty")
