"""One record -> one `Job`: checked for what the tables need, every figure recomputed.

Every per-run figure is recomputed from the raw samples (`total_s`, `first_token_s`,
`new_tokens`, `prompt_tokens`, `batch_size`, `first_token_derived` (absent in older records:
false), and the record's `cost_model` for MBU/MFU and the bandwidth limit) with
`sweep.metrics.run_metrics` and `sweep.metrics.limit_metrics`, never copied from a record's own
summary. A record that fails a check raises `RecordError`: the reader skips it as a bad file.

Identity: a job's cell is its run identity (`run_key`: the config minus the keys that do not
change what is measured, `record.NON_IDENTITY_KEYS`) plus its machine (`machine_key`: hostname,
cpu_model, device kind and count, hosts). Two machines' results for one config are two cells;
within a cell the latest `started_at` is the current result and the others are its history.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any

from sweep import metrics
from sweep.costs import DECODE_BYTES_RULES
from sweep.record import NON_IDENTITY_KEYS, PHASES, RecordError, config_hash

RAW_RUN_KEYS = ("total_s", "first_token_s", "new_tokens", "prompt_tokens", "batch_size")
# Optional raw per-run keys, with the value older records imply.
OPTIONAL_RUN_KEYS = {"first_token_derived": False}
MACHINE_FIELDS = ("hostname", "cpu_model", "device_kind", "device_count", "hosts")
_NULLABLE_COSTS = ("sliding_window", "peak_bytes_per_s", "peak_flops")


def get(mapping: Any, *keys: str) -> Any:
    """mapping[k1][k2]..., None where a level is missing or not an object."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, allow_nan=False)


def _hash(blob: str) -> str:
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise RecordError("started_at is missing")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RecordError(f"started_at {value!r} is not an ISO time") from None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def machine_of(env: Any) -> dict[str, Any]:
    """The machine a record ran on: hostname, cpu_model (CPU backend only), device kind and
    count, hosts. What an older record lacks is None (unknown), never an error."""
    env = env if isinstance(env, dict) else {}

    def text(key: str) -> str | None:
        value = env.get(key)
        return value if isinstance(value, str) and value.strip() else None

    def count(key: str) -> int | None:
        value = env.get(key)
        return value if is_int(value) else None

    return {
        "hostname": text("hostname"),
        "cpu_model": text("cpu_model") if env.get("backend") == "cpu" else None,
        "device_kind": text("device_kind"),
        "device_count": count("device_count"),
        "hosts": count("hosts"),
    }


def machine_key(machine: dict[str, Any]) -> str:
    return _hash(json.dumps({k: machine.get(k) for k in MACHINE_FIELDS}, sort_keys=True))


def machine_label(machine: dict[str, Any]) -> str:
    """One readable label: `AMD EPYC 7B13 on vm`, `TPU v6 lite x4 on t1v-0`."""
    kind = machine.get("cpu_model") or machine.get("device_kind") or "unknown device"
    count, hosts = machine.get("device_count"), machine.get("hosts")
    if is_int(count) and count > 1:
        kind += f" x{count}"
    if is_int(hosts) and hosts > 1:
        kind += f", {hosts} hosts"
    return f"{kind} on {machine.get('hostname') or 'unknown host'}"


def variant_key(config: dict[str, Any]) -> str:
    """The config without the engine: jobs that differ only by engine share it."""
    identity = {k: v for k, v in config.items() if k not in (*NON_IDENTITY_KEYS, "engine")}
    return _hash(json.dumps(identity, sort_keys=True, default=str))


@dataclasses.dataclass
class Job:
    """One record, checked, with its identity and (ok jobs) its recomputed runs."""

    record: dict[str, Any]
    record_id: str  # hash of the whole record: the same file read twice is one job
    status: str
    started: datetime
    finished: str
    run_key: str  # the config minus non-identity keys (record.config_hash)
    machine: dict[str, Any]
    machine_key: str
    runs: dict[str, list[dict[str, Any]]]  # phase -> recomputed per-run metrics (ok jobs)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def cell(self) -> tuple[str, str]:
        return (self.run_key, self.machine_key)

    @property
    def recency(self) -> tuple:
        """Latest started_at wins; finished_at, then the record's hash break ties."""
        return (self.started, self.finished, self.record_id)


def _cost_model(record: dict[str, Any]) -> metrics.CostModel | None:
    raw = record.get("cost_model")
    if not isinstance(raw, dict):
        return None
    names = [f.name for f in dataclasses.fields(metrics.CostModel) if f.name != "decode_bytes_rule"]
    if any(name not in raw for name in names):
        return None
    for name in names:  # numbers (peaks and the window may be null), never strings or bools
        value = raw[name]
        if not (is_real(value) or (value is None and name in _NULLABLE_COSTS)):
            raise RecordError(f"cost_model.{name} is not a number: {value!r}")
    # How decode_weight_bytes was counted: absent in records older than the rule ("dense").
    rule = raw.get("decode_bytes_rule", "dense")
    if rule not in DECODE_BYTES_RULES:
        raise RecordError(
            f"cost_model.decode_bytes_rule is not one of {DECODE_BYTES_RULES}: {rule!r}"
        )
    return metrics.CostModel(**{name: raw[name] for name in names}, decode_bytes_rule=rule)


def parse_job(record: dict[str, Any]) -> Job:
    """Check what the tables need and recompute every figure. Raises RecordError."""
    config = record.get("config")
    if not isinstance(config, dict):
        raise RecordError("config is not an object")
    status = record.get("status")
    ok = status == "ok"
    if ok:
        fields = {
            "config.model": get(config, "model", "name"),
            "config.engine": get(config, "engine", "name"),
            "config.topology": get(config, "topology", "name"),
            "config.mode": get(config, "mode", "label"),
        }
        bad = [k for k, v in fields.items() if not isinstance(v, str) or not v]
        bad += [k for k in ("tokens", "batch_size") if not is_int(config.get(k))]
        if bad:
            raise RecordError(f"missing or invalid {', '.join(bad)}")
    runs: dict[str, list[dict[str, Any]]] = {}
    if ok:
        cost = _cost_model(record)
        for phase in PHASES:
            runs[phase] = [
                recompute(run, f"phases.{phase}.runs[{i}]", cost)
                for i, run in enumerate(record["phases"][phase]["runs"])
            ]
    started = parse_time(record.get("started_at"))
    finished = record.get("finished_at")
    machine = machine_of(record.get("env"))
    return Job(
        record=record,
        record_id=_hash(canonical(record)),
        status=str(status),
        started=started,
        finished=finished if isinstance(finished, str) else "",
        run_key=config_hash(config),
        machine=machine,
        machine_key=machine_key(machine),
        runs=runs,
    )


def recompute(run: Any, where: str, cost: metrics.CostModel | None) -> dict[str, Any]:
    """One run's figures from its raw samples (sweep.metrics.run_metrics)."""
    if not isinstance(run, dict):
        raise RecordError(f"{where} is not an object")
    for key in RAW_RUN_KEYS:
        value = run.get(key)
        if key.endswith("_s"):
            if not is_real(value) or value < 0:
                raise RecordError(f"{where}.{key} is missing or not a finite time: {value!r}")
        elif not is_int(value) or value < (0 if key == "prompt_tokens" else 1):
            raise RecordError(f"{where}.{key} is missing or not a positive count: {value!r}")
    optional = {k: run.get(k, default) for k, default in OPTIONAL_RUN_KEYS.items()}
    if not isinstance(optional["first_token_derived"], bool):
        raise RecordError(f"{where}.first_token_derived is not a boolean")
    # A derived first-token time comes from another request: it may exceed total_s (tokens=1).
    if run["first_token_s"] > run["total_s"] and not optional["first_token_derived"]:
        raise RecordError(f"{where}: first_token_s is after total_s")
    try:
        figures = metrics.run_metrics(**{k: run[k] for k in RAW_RUN_KEYS}, **optional, cost=cost)
        return figures | metrics.limit_metrics(cost, figures)
    except (metrics.MetricError, ArithmeticError) as exc:
        raise RecordError(f"{where}: {exc}") from None


def current(jobs: list[Job]) -> dict[str, bool]:
    """record_id -> superseded: per cell, every result but the latest is superseded."""
    latest: dict[tuple[str, str], Job] = {}
    for job in jobs:
        best = latest.get(job.cell)
        if best is None or job.recency > best.recency:
            latest[job.cell] = job
    return {job.record_id: latest[job.cell] is not job for job in jobs}


def unique(jobs: list[Job]) -> list[Job]:
    """The same record read twice (a sweep dir and the store holding it) is one job."""
    seen: dict[str, Job] = {}
    for job in jobs:
        seen.setdefault(job.record_id, job)
    return list(seen.values())
