"""The result record: one `metrics.json` per Hydra job, the source of truth for every table.

`Record` is the typed form the job fills (dataclasses; `to_dict()` is the JSON layout, and
`Record.from_dict()` checks a file's contents and gives them back typed). `ErrorInfo.of()` is
the one place an error block is built. Pure standard library. Written atomically (temp file
in the same dir, fsync, `os.replace`) with `allow_nan=False`, so a reader sees the old record
or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
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
# Config keys that do not change what is measured: left out of the run identity
# (`merge_on_end`: what older records call `merge.on_end`, so their keys stay the same).
NON_IDENTITY_KEYS = (
    "wandb",
    "compile_cache_dir",
    "merge",
    "merge_on_end",
    "resume",
    "isolate",
    "dry_run",
    "profile",
)


class RecordError(ValueError):
    """A record file is unreadable or breaks the schema; the message says which and why."""


# Mode keys added later, null by default: a config at their default keeps its older hash.
_LATER_MODE_KEYS = ("image_tokens", "audio")


def _drop_null_later_keys(identity: dict[str, Any]) -> None:
    mode = identity.get("mode")
    if isinstance(mode, dict):
        identity["mode"] = {
            k: v for k, v in mode.items() if not (k in _LATER_MODE_KEYS and v is None)
        }


def run_key(config: dict[str, Any], env: dict[str, Any] | None = None) -> str:
    """Identity of a run: same experiment on the same kind of machine = same key, so a rerun
    replaces its record in benchmarks/metrics.json instead of adding a duplicate."""
    identity = {k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS}
    _drop_null_later_keys(identity)
    env = env or {}
    machine = {k: env.get(k) for k in ("backend", "device_kind", "device_count", "hosts")}
    blob = json.dumps({"config": identity, "machine": machine}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_hash(config: dict[str, Any]) -> str:
    """Identity of a job's config alone (no machine): known before the job runs, so
    `resume=true` can tell whether a job dir's record measured this very config."""
    identity = {k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS}
    _drop_null_later_keys(identity)
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ErrorInfo:
    """Why a job did not end ok: the exception's type name and message."""

    type: str
    message: str

    @classmethod
    def of(cls, exc: BaseException | str, message: str | None = None) -> ErrorInfo:
        """From an exception (its message, or `message` instead), or from a type name."""
        if isinstance(exc, BaseException):
            return cls(type=type(exc).__name__, message=str(exc) if message is None else message)
        return cls(type=exc, message=message or "")

    def summary(self) -> str:
        return f"{self.type}: {self.message}"


@dataclasses.dataclass(kw_only=True)
class SweepInfo:
    dir: str | None = None  # the multirun's sweep dir (None for a single run)
    job_num: int = 0
    overrides: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(kw_only=True)
class ModelInfo:
    name: str
    source: str  # "random-init (seed N)" or the checkpoint path
    num_params: int
    param_bytes: int
    reused: bool  # served by this process's model cache
    load_s: float


@dataclasses.dataclass(kw_only=True)
class EngineInfo:
    name: str
    reused: bool
    # The KV cache length the engine ran with (`engine.cache_length`, or the auto length when
    # that is null); absent in older records.
    cache_length: int | None = None


@dataclasses.dataclass(kw_only=True)
class CompileCounts:
    """What compiled while a phase ran (counted from `jax.monitoring` by sweep/phases.py)."""

    compiles: int = 0  # backend compiles, including ones served by the persistent cache
    compile_s: float = 0.0  # tracing + lowering + backend compile
    cache_hits: int = 0  # persistent XLA cache
    cache_misses: int = 0
    program_hits: int = 0  # traced programs loaded from disk (sweep/programs.py)
    program_misses: int = 0


@dataclasses.dataclass(kw_only=True)
class PhaseBlock(CompileCounts):
    """One phase: raw per-run figures, their statistics, and what compiled meanwhile."""

    runs: list[dict[str, Any]]
    summary: dict[str, Any]
    wall_s: float = 0.0


@dataclasses.dataclass(kw_only=True)
class IsolateInfo:
    """The child process of an `isolate=true` job."""

    pid: int
    exit_code: int
    signal: str | None
    wall_s: float


@dataclasses.dataclass(kw_only=True)
class CrashInfo:
    signal: str | None
    exit_code: int
    phase: str | None  # the phase the child had reached
    output: list[str]  # its last lines of output


@dataclasses.dataclass(kw_only=True)
class MemoryInfo:
    """What the job's memory went to (sweep/memory.py). Every field may be null (older records,
    a job that ended before the figure was known)."""

    # The process's peak so far (every job it ran): the devices' allocator peak ("device") or,
    # where the backend keeps none (CPU), the process's peak RSS ("process_rss").
    peak_bytes: int | None = None
    peak_source: str | None = None  # "device" | "process_rss"
    weight_bytes: int | None = None  # the params on the devices (model.param_bytes)
    kv_cache_bytes: int | None = None  # batch x the engine's cache length, every layer's K/V
    # {"prefill": {temp_bytes, argument_bytes, output_bytes, alias_bytes,
    # generated_code_bytes}, "decode": {...}} from XLA's memory_analysis(); null with a reason.
    programs: dict[str, Any] | None = None
    programs_reason: str | None = None


@dataclasses.dataclass(kw_only=True)
class ProfileInfo:
    """The `profile=true` trace: one untimed request under `jax.profiler.trace`."""

    dir: str  # <job dir>/profile (`tensorboard --logdir` it)
    files: list[str] = dataclasses.field(default_factory=list)  # .xplane.pb, perfetto json...


def _not_started() -> dict[str, Any]:
    return {"mode": None, "run_id": None, "path": None, "status": "not started"}


@dataclasses.dataclass(kw_only=True)
class Record:
    """One job's record. The job fills it in order; `to_dict()` is what metrics.json holds."""

    schema_version: int = SCHEMA_VERSION
    status: str = "failed"  # until the job says otherwise
    error: ErrorInfo | None = None
    run_key: str | None = None  # config + machine: what the merge upserts on
    config_hash: str | None = None  # config alone: what resume=true compares
    started_at: str | None = None
    finished_at: str | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    choices: dict[str, Any] = dataclasses.field(default_factory=dict)
    sweep: SweepInfo = dataclasses.field(default_factory=SweepInfo)
    env: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: ModelInfo | None = None
    engine: EngineInfo | None = None
    cost_model: dict[str, Any] | None = None
    phases: dict[str, PhaseBlock] = dataclasses.field(default_factory=dict)
    generated_text: str | None = None
    generated_texts: list[str] | None = None
    generated_token_ids: list[list[int]] | None = None
    wandb: dict[str, Any] = dataclasses.field(default_factory=_not_started)
    wall_s: float | None = None
    process_peak_rss_bytes: int | None = None
    isolate: IsolateInfo | None = None
    crash: CrashInfo | None = None
    memory: MemoryInfo | None = None
    profile: ProfileInfo | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fail(self, status: str, error: ErrorInfo) -> None:
        self.status, self.error = status, error

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout (every key present; blocks that do not apply are null)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Record:
        """Check `data` (a parsed metrics.json) and give it back typed. Raises RecordError."""
        try:
            validate_record(data)
        except RecordError:
            raise
        except Exception as exc:  # e.g. a phase block that is not an object
            raise RecordError(f"not a valid record ({type(exc).__name__}: {exc})") from None
        try:
            return cls(
                **{k: v for k, v in data.items() if k in _RECORD_FIELDS and k not in _NESTED}
                | {k: _nested(k, data.get(k)) for k in _NESTED}
                | {"phases": {name: _phase(name, b) for name, b in data["phases"].items()}}
            )
        except RecordError:
            raise
        except (TypeError, ValueError, AttributeError) as exc:
            raise RecordError(f"a block does not have the record's layout ({exc})") from None


_RECORD_FIELDS = {f.name for f in dataclasses.fields(Record)}
_NESTED = {
    "error": ErrorInfo,
    "sweep": SweepInfo,
    "model": ModelInfo,
    "engine": EngineInfo,
    "isolate": IsolateInfo,
    "crash": CrashInfo,
    "memory": MemoryInfo,
    "profile": ProfileInfo,
}


_PHASE_FIELDS = {f.name for f in dataclasses.fields(PhaseBlock)}


def _phase(name: str, block: Any) -> PhaseBlock:
    if not isinstance(block, dict) or not isinstance(block.get("runs"), list):
        raise RecordError(f"phases.{name} is not a phase block (no runs list)")
    return PhaseBlock(
        **{k: v for k, v in block.items() if k in _PHASE_FIELDS}
        | {"summary": block.get("summary") if isinstance(block.get("summary"), dict) else {}}
    )


def _nested(key: str, value: Any) -> Any:
    if key == "sweep" and value is None:  # a record written outside a sweep
        return SweepInfo()
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RecordError(f"{key} is not an object")
    cls = _NESTED[key]
    # A key an older record lacks reads as None: the reader sees every field, typed or null.
    return cls(**{f.name: value.get(f.name) for f in dataclasses.fields(cls)})


def write_record(path: str | os.PathLike, record: Record | dict[str, Any]) -> Path:
    """Atomically write `record` as JSON. Raises ValueError on NaN/inf (a counting bug)."""
    path = Path(path)
    if isinstance(record, Record):
        record = record.to_dict()
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
    """Load and validate one record. Raises RecordError naming the reason, for whatever goes
    wrong with the file (deep nesting: RecursionError, a huge file: MemoryError, ...): a caller
    handles one exception type and treats the file as a bad record."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise RecordError(f"unreadable: {exc}") from None
    except Exception as exc:  # MemoryError, ...
        raise RecordError(f"unreadable ({type(exc).__name__}: {exc})") from None
    if not text.strip():
        raise RecordError("empty file")
    try:
        record = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise RecordError(f"not valid JSON ({exc})") from None
    except Exception as exc:  # RecursionError (nesting too deep), MemoryError, ...
        raise RecordError(f"not readable JSON ({type(exc).__name__}: {exc})") from None
    try:
        Record.from_dict(record)  # every block has the record's layout
    except RecordError:
        raise
    except Exception as exc:  # a block of an unexpected type, ...
        raise RecordError(f"not a valid record ({type(exc).__name__}: {exc})") from None
    return record


def load_record(path: str | os.PathLike) -> Record:
    """`read_record`, typed."""
    return Record.from_dict(read_record(path))


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
