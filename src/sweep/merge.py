"""Records -> benchmarks/metrics.json -> BENCHMARKS.md (+ plots and benchmarks/index.html).

`python tools/merge_benchmarks.py [DIRS...]` and the end-of-multirun callback both land here.

- Every `metrics.json` under the inputs is read with `record.read_record` and checked further
  for what the tables need; a bad file (any exception while reading or checking it: invalid
  JSON, nesting too deep, a malformed field...) is skipped with one warning line naming it and
  why, and the rest merges.
- Records are upserted into the store (`benchmarks/metrics.json`) by `run_key`: a rerun of the
  same experiment on the same kind of machine replaces its record. When several records share a
  key the latest `started_at` wins, whatever the order they were read in.
- Every figure is recomputed from the raw per-run timings (`total_s`, `first_token_s`,
  `new_tokens`, `prompt_tokens`, `batch_size`, `first_token_derived` (absent in older records:
  false), and the record's `cost_model` for MBU/MFU) with
  `sweep.metrics`, never copied from a record's own summary.
- Output is deterministic (same store -> same bytes) and only files whose bytes change are
  rewritten. Plots are re-rendered only when the data they show changes: the store keeps, per
  plot, a hash of its data and of the PNG written, so `--check` needs no rendering and does not
  depend on the local matplotlib build.

Pure standard library here; matplotlib is imported (by `sweep.report`) only to draw a plot.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sweep import metrics
from sweep.record import (
    PHASE_CACHE_COUNTS,
    PHASES,
    RECORD_NAME,
    RecordError,
    read_record,
    run_key,
    validate_record,
    write_bytes_atomically,
)

log = logging.getLogger("sweep")

STORE_VERSION = 1
DEFAULT_DIRS = ("multirun", "outputs")
DEFAULT_STORE = Path("benchmarks/metrics.json")
DEFAULT_MARKDOWN = Path("BENCHMARKS.md")
DEFAULT_PLOTS_DIR = Path("benchmarks")
HTML_NAME = "index.html"

# The seed table's header, byte for byte (shared/seed/BENCHMARKS.seed.md). Add, never drop.
SEED_COLUMNS = (
    "Date (UTC)",
    "Script",
    "Phase",
    "Mode",
    "TPU",
    "Token Count",
    "Batch Size",
    "Runs",
    "Avg Total s",
    "Avg First Token s",
    "Avg Post-First s",
    "Avg Tokens/s",
    "Avg Decode Tokens/s",
    "Avg Pre-First Tokens/s",
    "Notes",
)
SEED_HEADER = "| " + " | ".join(SEED_COLUMNS) + " |"
SEED_RULE = "|" + " --- |" * len(SEED_COLUMNS)
SCRIPT = "sweep.run"
MISSING = "—"
# Per-run metrics averaged into the seed table, in its column order.
AVG_METRICS = (
    "total_s",
    "first_token_s",
    "post_first_s",
    "tokens_per_s",
    "decode_tokens_per_s",
    "pre_first_tokens_per_s",
)
RAW_RUN_KEYS = ("total_s", "first_token_s", "new_tokens", "prompt_tokens", "batch_size")
# Optional raw per-run keys, with the value older records imply.
OPTIONAL_RUN_KEYS = {"first_token_derived": False}
# Baseline for the engine comparison: the seed's per-token loop first, then gemma's sampler.
BASELINE_ENGINES = ("stream", "sampler", "fused")
PLOTS = (
    # file name, metric, title, y label
    ("decode_tokens_per_s.png", "decode_tokens_per_s", "Decode tokens/s vs tokens", "tokens/s"),
    ("ttft.png", "first_token_s", "Time to first token vs tokens", "seconds"),
)
# Bump when report.py changes how a plot looks, so --check and merge re-render it.
PLOT_STYLE = 1

Warn = Callable[[str], None]


class StoreError(RuntimeError):
    """benchmarks/metrics.json itself is unreadable: refuse to overwrite it."""


# --------------------------------------------------------------------------------------------
# Reading records


def load_inputs(
    inputs: Iterable[str | os.PathLike], warn: Warn, *, exclude: Sequence[Path] = ()
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Read and validate the records under `inputs` (dirs searched recursively, or files). A
    merged store (benchmarks/metrics.json) given as input contributes its records. Returns
    (records, skipped [(path, reason)]); each skip is also one `warn` line."""
    excluded = {p.resolve() for p in exclude}
    records: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []

    def skip(path: Path | str, reason: str) -> None:
        reason = " ".join(str(reason).split())  # one line, whatever the message held
        skipped.append((str(path), reason))
        warn(f"skipped {path}: {reason}")

    files: set[Path] = set()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            # Skip the copies wandb keeps of each record inside its run dirs.
            files.update(
                p
                for p in path.rglob(RECORD_NAME)
                if p.is_file() and "wandb" not in p.relative_to(path).parts
            )
        elif path.is_file():
            files.add(path)
        else:
            skip(path, "no such file or directory")
    for path in sorted(files):
        if path.resolve() in excluded:
            continue
        try:
            record = read_record(path)
            job_from_record(record)
        except Exception as exc:  # any failure makes it a bad file, never a failed merge
            if not _is_store(path):
                skip(path, _reason(exc))
                continue
            try:
                store_records, _, bad = read_store(path)
            except Exception as store_exc:
                skip(path, _reason(store_exc))
                continue
            for where, reason in bad:
                skip(where, reason)
            records += store_records
            continue
        records.append(record)
    return records, skipped


def _reason(exc: BaseException) -> str:
    """Why a file is bad, in one line: a RecordError's own message, else the exception's type
    and message (a RecursionError or MemoryError says little by its message alone)."""
    if isinstance(exc, RecordError | StoreError):
        return str(exc)
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _is_store(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except Exception:  # unreadable in any way: not a store
        return False
    return isinstance(data, dict) and "store_version" in data


def read_store(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any], list[tuple[str, str]]]:
    """(records, plots, skipped) of a store; empty when it does not exist. An invalid record
    inside it is left out and listed in skipped; an unreadable store raises StoreError."""
    if not path.exists():
        return [], {}, []
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except Exception as exc:  # OSError, UnicodeError, ValueError, RecursionError, MemoryError...
        raise StoreError(f"{path}: unreadable store ({_reason(exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise StoreError(f"{path}: not a merged store (no 'records' list)")
    version = data.get("store_version")
    if not isinstance(version, int) or version > STORE_VERSION or version < 1:
        raise StoreError(f"{path}: store_version {version!r} is not {STORE_VERSION}")
    records, skipped = [], []
    for i, record in enumerate(data["records"]):
        try:
            validate_record(record)
            job_from_record(record)
        except Exception as exc:
            skipped.append((f"{path} (record {i})", " ".join(_reason(exc).split())))
            continue
        records.append(record)
    plots = data.get("plots") if isinstance(data.get("plots"), dict) else {}
    return records, plots, skipped


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


# --------------------------------------------------------------------------------------------
# One record -> one job, with every figure recomputed from the raw samples


@dataclasses.dataclass
class Job:
    key: str
    record: dict[str, Any]
    status: str
    started: datetime
    sweep: str  # the sweep dir as recorded; "" for a single run
    model: str
    engine: str
    topology: str
    mode: str  # label: Text-Only / With Image
    tokens: int | None
    batch: int | None
    quant: str
    image_used: bool
    runs: dict[str, list[dict[str, Any]]]  # phase -> recomputed per-run metrics (ok jobs)
    summaries: dict[str, dict[str, Any]]  # phase -> metrics.summarize(runs)
    date: str = ""  # the sweep's start, set by assign_dates

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def script(self) -> str:
        return f"{SCRIPT} ({self.engine})"

    def group_key(self) -> tuple:
        """Sort key of a job inside a date: model, engine, topology, quant, batch, tokens,
        mode (tokens numerically)."""
        return (
            self.model,
            self.engine,
            self.topology,
            self.quant,
            _num(self.batch),
            _num(self.tokens),
            self.mode,
            self.key,
        )

    def sort_key(self) -> tuple:
        return (self.date, self.sweep, *self.group_key())


def _num(value: int | None) -> tuple[int, int]:
    return (0, value) if isinstance(value, int) else (1, 0)


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise RecordError("started_at is missing")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RecordError(f"started_at {value!r} is not an ISO time") from None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def record_key(record: dict[str, Any]) -> str:
    key = record.get("run_key")
    if isinstance(key, str) and key:
        return key
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    env = record.get("env") if isinstance(record.get("env"), dict) else {}
    return run_key(config, env)


def _cost_model(record: dict[str, Any]) -> metrics.CostModel | None:
    raw = record.get("cost_model")
    if not isinstance(raw, dict):
        return None
    names = [f.name for f in dataclasses.fields(metrics.CostModel)]
    if any(name not in raw for name in names):
        return None
    for name in names:  # numbers (peaks and the window may be null), never strings or bools
        value = raw[name]
        if not (_is_real(value) or (value is None and name in _NULLABLE_COSTS)):
            raise RecordError(f"cost_model.{name} is not a number: {value!r}")
    return metrics.CostModel(**{name: raw[name] for name in names})


_NULLABLE_COSTS = ("sliding_window", "peak_bytes_per_s", "peak_flops")


def job_from_record(record: dict[str, Any]) -> Job:
    """Check what the tables need and recompute every figure. Raises RecordError."""
    config = record.get("config")
    if not isinstance(config, dict):
        raise RecordError("config is not an object")
    status = record.get("status")
    ok = status == "ok"
    fields = {
        "model": _get(config, "model", "name"),
        "engine": _get(config, "engine", "name"),
        "topology": _get(config, "topology", "name"),
        "mode": _get(config, "mode", "label"),
    }
    tokens, batch = config.get("tokens"), config.get("batch_size")
    if ok:
        bad = [f"config.{k}" for k, v in fields.items() if not isinstance(v, str) or not v]
        bad += [
            k
            for k, v in (("config.tokens", tokens), ("config.batch_size", batch))
            if not _is_int(v)
        ]
        if bad:
            raise RecordError(f"missing or invalid {', '.join(bad)}")
    runs: dict[str, list[dict[str, Any]]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    if ok:
        cost = _cost_model(record)
        for phase in PHASES:
            runs[phase] = [
                _recompute(run, f"phases.{phase}.runs[{i}]", cost)
                for i, run in enumerate(record["phases"][phase]["runs"])
            ]
            summaries[phase] = metrics.summarize(runs[phase])
    quant = config.get("quant")
    mode_name = _get(config, "mode", "name")
    return Job(
        key=record_key(record),
        record=record,
        status=str(status),
        started=parse_time(record.get("started_at")),
        sweep=str(_get(record, "sweep", "dir") or ""),
        model=str(fields["model"] or "?"),
        engine=str(fields["engine"] or "?"),
        topology=str(fields["topology"] or "?"),
        mode=str(fields["mode"] or mode_name or "?"),
        tokens=tokens if _is_int(tokens) else None,
        batch=batch if _is_int(batch) else None,
        quant=str(quant) if quant is not None else "none",
        image_used=mode_name == "image" or bool(_get(config, "mode", "image")),
        runs=runs,
        summaries=summaries,
    )


def _recompute(run: Any, where: str, cost: metrics.CostModel | None) -> dict[str, Any]:
    if not isinstance(run, dict):
        raise RecordError(f"{where} is not an object")
    for key in RAW_RUN_KEYS:
        value = run.get(key)
        if key.endswith("_s"):
            if not _is_real(value) or value < 0:
                raise RecordError(f"{where}.{key} is missing or not a finite time: {value!r}")
        elif not _is_int(value) or value < (0 if key == "prompt_tokens" else 1):
            raise RecordError(f"{where}.{key} is missing or not a positive count: {value!r}")
    optional = {k: run.get(k, default) for k, default in OPTIONAL_RUN_KEYS.items()}
    if not isinstance(optional["first_token_derived"], bool):
        raise RecordError(f"{where}.first_token_derived is not a boolean")
    # A derived first-token time comes from another request: it may exceed total_s (tokens=1).
    if run["first_token_s"] > run["total_s"] and not optional["first_token_derived"]:
        raise RecordError(f"{where}: first_token_s is after total_s")
    try:
        return metrics.run_metrics(**{k: run[k] for k in RAW_RUN_KEYS}, **optional, cost=cost)
    except (metrics.MetricError, ArithmeticError) as exc:
        raise RecordError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Upsert


def _canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, allow_nan=False)


def _recency(record: dict[str, Any]) -> tuple:
    started = parse_time(record.get("started_at"))
    finished = record.get("finished_at") if isinstance(record.get("finished_at"), str) else ""
    return (started, finished, _canonical(record))


@dataclasses.dataclass
class Upsert:
    records: list[dict[str, Any]]
    added: int = 0
    replaced: int = 0
    unchanged: int = 0


def upsert(existing: list[dict[str, Any]], incoming: list[dict[str, Any]]) -> Upsert:
    """Records keyed by run_key; per key the latest started_at wins (order-independent)."""
    old = {}
    for record in existing:
        key = record_key(record)
        if key not in old or _recency(record) > _recency(old[key]):
            old[key] = record
    new: dict[str, dict[str, Any]] = {}
    for record in incoming:
        key = record_key(record)
        if key not in new or _recency(record) > _recency(new[key]):
            new[key] = record
    result = Upsert(records=[])
    merged = dict(old)
    for key, record in new.items():
        if key not in old:
            result.added += 1
            merged[key] = record
        elif _canonical(record) == _canonical(old[key]) or _recency(record) < _recency(old[key]):
            result.unchanged += 1
        else:
            result.replaced += 1
            merged[key] = record
    result.records = list(merged.values())
    return result


def build_jobs(records: list[dict[str, Any]]) -> list[Job]:
    jobs = [job_from_record(r) for r in records]
    assign_dates(jobs)
    jobs.sort(key=Job.sort_key)
    return jobs


def assign_dates(jobs: list[Job]) -> None:
    """Date (UTC) = the sweep's start: the earliest started_at among its records."""
    starts: dict[str, datetime] = {}
    for job in jobs:
        if job.sweep:
            starts[job.sweep] = min(starts.get(job.sweep, job.started), job.started)
    for job in jobs:
        when = starts[job.sweep] if job.sweep else job.started
        job.date = when.strftime("%Y-%m-%d %H:%M:%S")


# --------------------------------------------------------------------------------------------
# Tables


@dataclasses.dataclass
class Table:
    title: str
    intro: str
    headers: tuple[str, ...]
    rows: list[list[str]]
    empty: str = "None."


def fmt(value: Any) -> str:
    """Floats as in the seed (4 decimals); None as an em dash."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _stat(job: Job, phase: str, metric: str, stat: str) -> float | None:
    described = job.summaries.get(phase, {}).get(metric)
    return described[stat] if described else None


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def warmup_note(block: Any) -> str | None:
    """How a warmup phase got its programs, from its phase block's counts (None when the record
    predates them):
    - `warmup=warm (no compile)`: no XLA compile at all; the process's own caches (engines and
      programs kept from an earlier job) served every program.
    - `warmup=warm (N compiles from the persistent cache, S s)`: every compile was a hit of the
      persistent XLA cache (deserialised, not compiled: cheap).
    - `warmup=cold (N compiles, S s)`: XLA compiled (a miss, or no persistent cache), with
      `, H from the persistent cache` when some of the N were hits.
    S is the phase's compile_s (tracing + lowering + backend compile, cache reads included)."""
    compiles = _get(block, "compiles")
    if not _is_int(compiles):
        return None
    if compiles == 0:
        return "warmup=warm (no compile)"
    seconds = _get(block, "compile_s")
    took = f", {seconds:.2f} s" if _is_real(seconds) else ""
    hits, misses = _get(block, "cache_hits"), _get(block, "cache_misses")
    hits = hits if _is_int(hits) else 0
    misses = misses if _is_int(misses) else None
    if misses == 0 and hits >= compiles:
        return f"warmup=warm ({_plural(compiles, 'compile')} from the persistent cache{took})"
    from_cache = f", {hits} from the persistent cache" if hits else ""
    return f"warmup=cold ({_plural(compiles, 'compile')}{from_cache}{took})"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def notes(job: Job, phase: str | None = None) -> str:
    parts = [f"image_used={job.image_used}", f"model={job.model}"]
    if job.quant not in ("none", "None", ""):
        parts.append(f"quant={job.quant}")
    if job.ok and phase == "warmup":
        note = warmup_note(_get(job.record, "phases", "warmup"))
        if note:
            parts.append(note)
    if not job.ok:
        err = job.record.get("error") or {}
        kind = err.get("type") if isinstance(err, dict) else None
        parts.append(f"status={job.status}" + (f": {kind}" if kind else ""))
    return "; ".join(parts)


def inference_rows(jobs: list[Job]) -> list[list[str]]:
    """The seed table: one row per (job, phase); dates, then warmup/benchmark/final rows."""
    rows = []
    dates = sorted({(j.date, j.sweep) for j in jobs})
    for date, sweep in dates:
        group = sorted((j for j in jobs if (j.date, j.sweep) == (date, sweep)), key=Job.group_key)
        for phase in PHASES:
            for job in group:
                runs = len(job.runs[phase]) if job.ok else None
                avgs = [_stat(job, phase, m, "mean") if job.ok else None for m in AVG_METRICS]
                rows.append(
                    [
                        job.date,
                        job.script,
                        phase,
                        job.mode,  # final rows too: the Phase column says final
                        job.topology,
                        fmt(job.tokens),
                        fmt(job.batch),
                        fmt(runs),
                        *[fmt(v) for v in avgs],
                        notes(job, phase),
                    ]
                )
    return rows


def _ident(job: Job) -> list[str]:
    return [
        job.date,
        job.script,
        job.mode,
        job.topology,
        job.model,
        fmt(job.tokens),
        fmt(job.batch),
    ]


IDENT = ("Date (UTC)", "Script", "Mode", "TPU", "Model", "Token Count", "Batch Size")


def percentile_table(jobs: list[Job]) -> Table:
    rows = []
    for job in jobs:
        if not job.ok:
            continue
        cells = [*_ident(job), fmt(len(job.runs["benchmark"]))]
        for metric in ("first_token_s", "decode_tokens_per_s"):
            cells += [fmt(_stat(job, "benchmark", metric, s)) for s in ("median", "p90", "p99")]
            cells.append(fmt(_stat(job, "benchmark", metric, "stdev")))
        rows.append(cells)
    return Table(
        "Benchmark Percentiles",
        "Benchmark phase: percentiles (linear interpolation) and sample standard deviation over "
        "the phase's runs. p50 is the median; for tokens/s a high percentile is a fast run.",
        (
            *IDENT,
            "Runs",
            "TTFT p50 s",
            "TTFT p90 s",
            "TTFT p99 s",
            "TTFT Stdev s",
            "Decode Tokens/s p50",
            "Decode Tokens/s p90",
            "Decode Tokens/s p99",
            "Decode Tokens/s Stdev",
        ),
        rows,
        "No job ended ok.",
    )


def compile_table(jobs: list[Job]) -> Table:
    rows = []
    for job in jobs:
        if not job.ok:
            continue
        phases = job.record["phases"]
        cells = _ident(job)
        for phase in PHASES:
            cells += [fmt(phases[phase].get("compiles")), fmt(phases[phase].get("compile_s"))]
        for key in PHASE_CACHE_COUNTS:
            counts = [phases[p].get(key) for p in PHASES]  # absent in older records
            cells.append(fmt(sum(counts)) if all(_is_int(c) for c in counts) else MISSING)
        load_s = _get(job.record, "model", "load_s")
        cells.append(fmt(float(load_s)) if _is_real(load_s) else MISSING)
        rows.append(cells)
    return Table(
        "Compile Time",
        "XLA compiles (count and seconds) per phase; the benchmark and final phases must show 0. "
        "Cache hits/misses of the persistent compilation cache, and traced programs loaded from "
        "disk or traced (sweep/programs.py), all phases together.",
        (
            *IDENT,
            "Warmup Compiles",
            "Warmup Compile s",
            "Benchmark Compiles",
            "Benchmark Compile s",
            "Final Compiles",
            "Final Compile s",
            "Cache Hits",
            "Cache Misses",
            "Programs Loaded",
            "Programs Traced",
            "Model Load s",
        ),
        rows,
        "No job ended ok.",
    )


def utilization_table(jobs: list[Job]) -> Table:
    rows = []
    for job in jobs:
        if not job.ok:
            continue
        mbu = job.summaries["benchmark"].get("mbu")
        mfu = job.summaries["benchmark"].get("mfu")
        if not mbu and not mfu:
            continue
        cost = job.record.get("cost_model") or {}
        peak_bw, peak_flops = cost.get("peak_bytes_per_s"), cost.get("peak_flops")
        topo_bw = _get(job.record, "config", "topology", "peak_hbm_bytes_per_s")
        probe_bytes = _get(job.record, "env", "cpu_read_probe_bytes")
        source = "topology" if topo_bw else "measured host read"
        if not topo_bw and _is_real(probe_bytes):
            source += f" ({probe_bytes / 2**20:.0f} MiB)"
        rows.append(
            [
                *_ident(job),
                fmt(len(job.runs["benchmark"])),
                fmt(mbu["mean"] if mbu else None),
                fmt(mbu["median"] if mbu else None),
                fmt(mfu["mean"] if mfu else None),
                fmt(mfu["median"] if mfu else None),
                fmt(peak_bw / 1e9 if _is_real(peak_bw) else None),
                fmt(peak_flops / 1e12 if _is_real(peak_flops) else None),
                source if peak_bw else MISSING,
            ]
        )
    return Table(
        "MBU / MFU",
        "Benchmark phase, as fractions of the peak (all chips together): MBU = bytes read per "
        "decode step × steps/s ÷ peak bandwidth; MFU = prefill FLOPs ÷ first-token time ÷ peak "
        "FLOP/s (a lower bound). Only jobs whose topology (or host probe) gives a peak.",
        (
            *IDENT,
            "Runs",
            "Mean MBU",
            "Median MBU",
            "Mean MFU",
            "Median MFU",
            "Peak GB/s",
            "Peak TFLOP/s",
            "Peak Source",
        ),
        rows,
        "No job has a known peak.",
    )


def _engine_group(job: Job) -> str:
    config = {
        k: v
        for k, v in job.record["config"].items()
        if k not in ("engine", "wandb", "compile_cache_dir", "merge_on_end")
    }
    return json.dumps([job.sweep, config], sort_keys=True, default=str)


def _baseline(engines: Iterable[str]) -> str:
    engines = sorted(engines)
    for name in BASELINE_ENGINES:
        if name in engines:
            return name
    return engines[0]


def engine_table(jobs: list[Job]) -> Table:
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        if job.ok:
            groups.setdefault(_engine_group(job), []).append(job)
    rows = []
    ordered = sorted(
        (g for g in groups.values() if len({j.engine for j in g}) > 1),
        key=lambda g: min(j.sort_key() for j in g),
    )
    for group in ordered:
        base_name = _baseline(j.engine for j in group)
        base = next(j for j in group if j.engine == base_name)
        b_ttft = _stat(base, "benchmark", "first_token_s", "median")
        b_dec = _stat(base, "benchmark", "decode_tokens_per_s", "median")
        for job in sorted(group, key=lambda j: (j.engine != base_name, j.engine)):
            ttft = _stat(job, "benchmark", "first_token_s", "median")
            dec = _stat(job, "benchmark", "decode_tokens_per_s", "median")
            rows.append(
                [
                    job.date,
                    job.mode,
                    job.topology,
                    job.model,
                    fmt(job.tokens),
                    fmt(job.batch),
                    job.engine,
                    base_name,
                    fmt(ttft),
                    fmt(_ratio(ttft, b_ttft)),
                    fmt(dec),
                    fmt(_ratio(dec, b_dec)),
                ]
            )
    return Table(
        "Engine Comparison",
        "Engines measured in the same sweep on the same configuration, benchmark-phase medians. "
        "Ratios are engine ÷ baseline (the seed's `stream` loop when present): a TTFT ratio "
        "below 1 and a decode ratio above 1 mean faster than the baseline.",
        (
            "Date (UTC)",
            "Mode",
            "TPU",
            "Model",
            "Token Count",
            "Batch Size",
            "Engine",
            "Baseline",
            "Median TTFT s",
            "TTFT Ratio",
            "Median Decode Tokens/s",
            "Decode Ratio",
        ),
        rows,
        "No sweep measured more than one engine on the same configuration.",
    )


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def failed_table(jobs: list[Job]) -> Table:
    rows = []
    for job in jobs:
        if job.ok:
            continue
        err = job.record.get("error") if isinstance(job.record.get("error"), dict) else {}
        message = " ".join(str(err.get("message") or "").split())
        if len(message) > 160:
            message = message[:157] + "..."
        text = f"{err.get('type') or '?'}: {message}" if err else MISSING
        num = _get(job.record, "sweep", "job_num")
        rows.append([*_ident(job), job.status, text, job.sweep or MISSING, fmt(num)])
    return Table(
        "Jobs That Did Not End OK",
        "Their rows above carry the status in Notes and `—` for every figure.",
        (*IDENT, "Status", "Error", "Sweep", "Job"),
        rows,
        "None: every job ended ok.",
    )


def environment_table(jobs: list[Job]) -> Table:
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.date, job.sweep), []).append(job)
    rows = []
    for (date, sweep), group in sorted(groups.items()):
        envs = [j.record.get("env") for j in group if isinstance(j.record.get("env"), dict)]

        def values(*keys: str, envs: list = envs) -> str:
            found = sorted({fmt(_get(env, *keys)) for env in envs if _get(env, *keys) is not None})
            return ", ".join(found) or MISSING

        env_vars = sorted(
            {
                f"{k}={v}"
                for env in envs
                for k, v in (env.get("env_vars") or {}).items()
                if isinstance(env.get("env_vars"), dict)
            }
        )
        rows.append(
            [
                date,
                sweep or MISSING,
                fmt(len(group)),
                fmt(sum(j.ok for j in group)),
                values("backend"),
                values("device_kind"),
                values("device_count"),
                values("hosts"),
                values("versions", "jax"),
                values("versions", "jaxlib"),
                values("versions", "gemma"),
                values("versions", "flax"),
                values("versions", "python"),
                values("git_commit"),
                ", ".join(env_vars) or MISSING,
            ]
        )
    return Table(
        "Environment",
        "Per sweep, from the records' env blocks.",
        (
            "Date (UTC)",
            "Sweep",
            "Jobs",
            "OK",
            "Backend",
            "Device",
            "Devices",
            "Hosts",
            "jax",
            "jaxlib",
            "gemma",
            "flax",
            "Python",
            "Git Commit",
            "Env Vars",
        ),
        rows,
        "No records.",
    )


def extra_tables(jobs: list[Job]) -> list[Table]:
    return [
        percentile_table(jobs),
        compile_table(jobs),
        utilization_table(jobs),
        engine_table(jobs),
        failed_table(jobs),
        environment_table(jobs),
    ]


def markdown_table(headers: Sequence[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


# --------------------------------------------------------------------------------------------
# Plots


def plot_data(jobs: list[Job]) -> dict[str, dict[str, Any]]:
    """Per plot: series (one per mode, plus engine/model/... when several are present) of
    (tokens, median, min, max) over the benchmark phase's runs of ok jobs."""
    ok = [j for j in jobs if j.ok]
    dims = [
        (name, attr)
        for name, attr in (
            ("model", "model"),
            ("engine", "engine"),
            ("topology", "topology"),
            ("quant", "quant"),
            ("batch", "batch"),
        )
        if len({getattr(j, attr) for j in ok}) > 1
    ]

    def label(job: Job, with_date: bool) -> str:
        parts = [job.mode] + [f"{name}={getattr(job, attr)}" for name, attr in dims]
        return ", ".join(parts + ([job.date] if with_date else []))

    points = [(label(j, False), j.tokens) for j in ok]
    with_date = len(points) != len(set(points))
    out = {}
    for name, metric, title, ylabel in PLOTS:
        series: dict[str, list[list[float]]] = {}
        for job in ok:
            described = job.summaries["benchmark"].get(metric)
            if described:
                series.setdefault(label(job, with_date), []).append(
                    [job.tokens, described["median"], described["min"], described["max"]]
                )
        out[name] = {
            "style": PLOT_STYLE,
            "title": f"{title} (benchmark phase)",
            "ylabel": ylabel,
            "series": [
                {"label": lab, "points": sorted(pts)} for lab, pts in sorted(series.items())
            ],
        }
    return out


def data_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def file_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# Documents


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()


def render_markdown(jobs: list[Job], *, store: Path, markdown: Path, plots_dir: Path) -> str:
    base = markdown.parent
    lines = [
        "# Benchmark Results",
        "",
        f"This file is auto-generated from `{_rel(store, base)}`.",
        "",
        "## Inference Runs",
        "",
        SEED_HEADER,
        SEED_RULE,
    ]
    lines += markdown_table(SEED_COLUMNS, inference_rows(jobs))[2:]
    lines += [
        "",
        "One row per job and phase. Avg = mean over the phase's runs, recomputed from the raw "
        "per-run timings in each record; tokens/s count every sequence of a batch (Pre-First "
        "Tokens/s = batch size ÷ first-token s). Decode figures are `—` for runs with no decode "
        "step to time (1 token, or a derived first-token time with fewer than 2 tokens decoded "
        "after it). Script names the engine; TPU is the topology; Mode is the prompt's mode on "
        "every phase (Phase says which). Notes on warmup rows say how the programs were "
        "obtained: `warmup=cold (N compiles, S s)` when XLA compiled (with how many of them "
        "were persistent-cache hits, if any), `warmup=warm (N compiles from the persistent "
        "cache, S s)` when every compile was a persistent-cache hit (cheap), `warmup=warm (no "
        "compile)` when the process's own caches served everything. A job that did not end ok "
        "keeps its rows, with its status in Notes and `—` for every figure. Regenerate with "
        "`python tools/merge_benchmarks.py`; `--check` fails when this file is stale.",
    ]
    for table in extra_tables(jobs):
        lines += ["", f"## {table.title}", "", table.intro, ""]
        lines += markdown_table(table.headers, table.rows) if table.rows else [table.empty]
        if table.title == "Engine Comparison":
            lines += _plot_section(base, plots_dir)
    bench = _read(plots_dir / BENCH_ENGINES_NAME)
    if bench:
        lines += ["", *bench_engines_section(json.loads(bench))]
    return "\n".join(lines) + "\n"


BENCH_ENGINES_NAME = "bench_engines.json"
BENCH_ENGINES = ("fused", "sampler", "stream", "reference")


def _times(num: float | None, den: float | None) -> str:
    return f"{num / den:.2f}x" if num and den else MISSING


def _logit(value: Any) -> str:
    return f"{value:.6g}" if _is_real(value) else "?"


def divergence_text(fig: dict[str, Any]) -> str:
    """An engine's tokens against the fused engine's, in words: `identical`, or the first
    divergent step (0 = the prefill's token) and whether it was a near-tie (the chosen tokens'
    logits within one bf16 ulp of the top logit, by a forward pass over the shared prefix).
    Older bench_engines.json files only say whether the tokens matched."""
    step = fig.get("first_divergent_step")
    if step is None:
        if fig.get("same_tokens_as_fused", True):
            return "identical"
        return "differ (step not recorded)"
    top2 = fig.get("top2_logits") or []
    pair = " vs ".join(_logit(v) for v in top2[:2]) if len(top2) >= 2 else None
    near = fig.get("near_tie")
    if near is None:
        return f"diverge at step {step}" + (f" (top-2 logits {pair})" if pair else "")
    if near:
        return f"diverge at step {step} (near-tie: top-2 logits {pair}, within 1 bf16 ulp)"
    chosen = fig.get("chosen_logits") or {}
    picked = ", ".join(f"{k} {_logit(v)}" for k, v in sorted(chosen.items()))
    ulp = fig.get("bf16_ulp")
    detail = [f"top-2 logits {pair}"] if pair else []
    detail += [f"chosen: {picked}"] if picked else []
    detail += [f"1 bf16 ulp = {_logit(ulp)}"] if _is_real(ulp) else []
    return f"diverge at step {step} (NOT a tie: {'; '.join(detail)})"


def _fixed(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if _is_real(value) else MISSING


def bench_engines_table(result: dict[str, Any]) -> list[str]:
    """tools/bench_engines.py's figures: medians, MBU, ratios to the reference and `stream`,
    and where each engine's tokens first differ from the fused engine's."""
    figs = result["engines"]
    ref, stream = figs.get("reference", {}), figs.get("stream", {})
    lines = [
        "| Engine | First Token s (median) | Decode Tokens/s (median) | MBU | "
        "Decode vs reference | TTFT vs reference | Decode vs stream | Tokens vs fused |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in [n for n in BENCH_ENGINES if n in figs]:
        f = figs[name]
        decode, ttft = f.get("decode_tokens_per_s_median"), f.get("first_token_s_median")
        mbu = f"{100 * f['mbu']:.1f}%" if _is_real(f.get("mbu")) else MISSING
        cells = [
            name,
            _fixed(ttft, 4),
            _fixed(decode, 2),
            mbu,
            _times(decode, ref.get("decode_tokens_per_s_median")),
            _times(ttft, ref.get("first_token_s_median")),
            _times(decode, stream.get("decode_tokens_per_s_median")),
            divergence_text(f),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _probe_text(env: dict[str, Any]) -> str:
    """The CPU read-bandwidth probe behind MBU, when the env block carries it."""
    peak = env.get("cpu_read_bytes_per_s")
    if not _is_real(peak):
        return ""
    text = f" Probed read bandwidth: {peak / 1e9:.1f} GB/s peak"
    median, low, high = (env.get(f"cpu_read_bytes_per_s_{k}") for k in ("median", "min", "max"))
    rounds = env.get("cpu_read_probe_rounds")
    if all(_is_real(v) for v in (median, low, high)):
        text += f", median {median / 1e9:.1f} (min {low / 1e9:.1f}, max {high / 1e9:.1f})"
        text += f" over {rounds} rounds" if _is_int(rounds) else ""
    probe_bytes = env.get("cpu_read_probe_bytes")
    text += f", {probe_bytes / 2**20:.0f} MiB buffer" if _is_real(probe_bytes) else ""
    return text + "."


def bench_engines_section(result: dict[str, Any]) -> list[str]:
    cfg, env = result["config"], result["env"]
    return [
        "## Engine Benchmark (tools/bench_engines.py)",
        "",
        f"One process, same params and prompt: model={cfg['model']} ({cfg['dtype']}, random "
        f"init), {cfg['tokens']} new tokens, batch {cfg['batch_size']}, prompt "
        f"{cfg['prompt_tokens']} tokens, KV cache {cfg['cache_length']}; {cfg['rounds']} timed "
        f"rounds alternating engines after one untimed (compiling) call each; "
        f"{env['device_kind']} x{env['device_count']}, commit {env.get('git_commit')}. MBU is "
        f"against the probed host read bandwidth on CPU.{_probe_text(env)} `reference` is "
        "tools/reference_decode.py (jitted prefill + one lax.scan), the yardstick. Tokens vs "
        "fused: the first step (0 = the prefill's token) where an engine's greedy tokens differ "
        "from the fused engine's, and whether the top-2 logits there (one forward pass over the "
        "shared prefix) are within one bf16 ulp, a tie that either choice honours.",
        "",
        *bench_engines_table(result),
    ]


def _plot_section(base: Path, plots_dir: Path) -> list[str]:
    lines = ["", "## Plots", ""]
    for name, _, title, _ in PLOTS:
        lines += [f"![{title}]({_rel(plots_dir / name, base)})", ""]
    lines.append(
        f"The same tables, sortable, with these plots: [{HTML_NAME}]"
        f"({_rel(plots_dir / HTML_NAME, base)})."
    )
    return lines


def html_tables(jobs: list[Job]) -> list[Table]:
    main = Table(
        "Inference Runs",
        "One row per job and phase; click a column header to sort.",
        SEED_COLUMNS,
        inference_rows(jobs),
        "No records.",
    )
    return [main, *extra_tables(jobs)]


def store_bytes(records: list[dict[str, Any]], plots: dict[str, Any]) -> bytes:
    data = {"store_version": STORE_VERSION, "records": records, "plots": plots}
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


# --------------------------------------------------------------------------------------------
# The merge


@dataclasses.dataclass
class MergeResult:
    files: int = 0  # input records read, the skipped ones included
    records: int = 0
    rows: int = 0
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    written: list[str] = dataclasses.field(default_factory=list)
    stale: list[str] = dataclasses.field(default_factory=list)


def merge(
    inputs: Iterable[str | os.PathLike] = (),
    *,
    store: str | os.PathLike = DEFAULT_STORE,
    markdown: str | os.PathLike = DEFAULT_MARKDOWN,
    plots_dir: str | os.PathLike = DEFAULT_PLOTS_DIR,
    check: bool = False,
    rebuild: bool = False,
    warn: Warn | None = None,
) -> MergeResult:
    """Upsert the records under `inputs` into `store` and rewrite BENCHMARKS.md, the plots and
    index.html. With `check`, write nothing and list in `stale` what a merge would change."""
    from sweep import report  # matplotlib itself is imported only to draw a plot

    store, markdown, plots_dir = Path(store), Path(markdown), Path(plots_dir)
    warn = warn or (lambda message: log.warning("%s", message))
    lock = contextlib.nullcontext() if check else _locked(store.parent)
    with lock:
        result = MergeResult()
        existing, plots_meta, store_skipped = ([], {}, []) if rebuild else read_store(store)
        for where, reason in store_skipped:
            warn(f"skipped {where}: {reason}")
        records, skipped = load_inputs(inputs, warn, exclude=[store])
        result.skipped = store_skipped + skipped
        result.files = len(records) + len(skipped)
        up = upsert(existing, records)
        result.added, result.replaced, result.unchanged = up.added, up.replaced, up.unchanged
        jobs = build_jobs(up.records)
        result.records = len(jobs)
        result.rows = len(jobs) * len(PHASES)
        ordered = [j.record for j in jobs]

        outputs: dict[Path, bytes] = {}
        data = plot_data(jobs)
        new_meta: dict[str, Any] = {}
        pngs: dict[str, bytes] = {}
        for name, spec in data.items():
            path, want = plots_dir / name, data_hash(spec)
            meta = plots_meta.get(name) or {}
            on_disk = file_hash(path)
            png_hash = meta.get("png") if meta.get("data") == want else None
            if png_hash and on_disk == png_hash:
                pngs[name] = path.read_bytes()
            elif check:  # no rendering in --check: the data or the file changed, so stale
                result.stale.append(str(path))
                pngs[name] = _read(path) or b""
            else:
                pngs[name] = report.plot_png(spec)
                outputs[path] = pngs[name]
                png_hash = hashlib.sha256(pngs[name]).hexdigest()
            new_meta[name] = {"data": want, "png": png_hash}
        md = render_markdown(jobs, store=store, markdown=markdown, plots_dir=plots_dir)
        html = report.render_html(
            "Benchmark Results",
            html_tables(jobs),
            [(spec["title"], pngs[n]) for n, spec in data.items()],
        )
        outputs[store] = store_bytes(ordered, new_meta)
        outputs[markdown] = md.encode()
        outputs[plots_dir / HTML_NAME] = html.encode()
        for path, blob in outputs.items():
            if _read(path) == blob:
                continue
            if check:
                if str(path) not in result.stale:
                    result.stale.append(str(path))
            else:
                write_bytes_atomically(path, blob)
                result.written.append(str(path))
    return result


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise concurrent merges (two sweeps ending together) with flock on the dir."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def merge_after_sweep(
    sweep_dir: Path,
    *,
    store: str | os.PathLike = DEFAULT_STORE,
    markdown: str | os.PathLike = DEFAULT_MARKDOWN,
    plots_dir: str | os.PathLike = DEFAULT_PLOTS_DIR,
) -> None:
    """Called by the Hydra callback when a multirun ends (failed jobs included): merge that
    sweep's records into the repo-level store, BENCHMARKS.md and plots (paths from the cwd)."""
    result = merge([sweep_dir], store=store, markdown=markdown, plots_dir=plots_dir)
    log.info("merged %s: %s", sweep_dir, summary_line(result, markdown))


def summary_line(result: MergeResult, markdown: str | os.PathLike) -> str:
    return (
        f"{result.files} input record(s), {len(result.skipped)} skipped; "
        f"{result.added} added, {result.replaced} replaced, {result.unchanged} unchanged; "
        f"{result.records} record(s), {result.rows} row(s) in {markdown}"
    )


# --------------------------------------------------------------------------------------------
# CLI (tools/merge_benchmarks.py)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="merge_benchmarks.py",
        description="Merge sweep records (metrics.json) into benchmarks/metrics.json and "
        "rewrite BENCHMARKS.md, benchmarks/*.png and benchmarks/index.html.",
    )
    parser.add_argument(
        "dirs",
        nargs="*",
        metavar="DIR",
        help="dirs searched recursively for metrics.json, or record files "
        f"(default: {' '.join(d + '/' for d in DEFAULT_DIRS)}, those that exist)",
    )
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="%(default)s")
    parser.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN, help="%(default)s")
    parser.add_argument("--plots-dir", type=Path, default=DEFAULT_PLOTS_DIR, help="%(default)s")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when the store, BENCHMARKS.md, the plots or index.html are "
        "stale against the records",
    )
    parser.add_argument(
        "--allow-bad", action="store_true", help="exit 0 even when some files were skipped"
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="ignore the existing store: records from DIRS only"
    )
    args = parser.parse_args(argv)
    inputs = args.dirs or [d for d in DEFAULT_DIRS if Path(d).is_dir()]

    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    try:
        result = merge(
            inputs,
            store=args.store,
            markdown=args.markdown,
            plots_dir=args.plots_dir,
            check=args.check,
            rebuild=args.rebuild,
            warn=warn,
        )
    except StoreError as exc:
        print(f"error: {exc}; fix or move it, or pass --rebuild", file=sys.stderr)
        return 2
    print(summary_line(result, args.markdown))
    status = 0
    if args.check:
        if result.stale:
            for path in result.stale:
                print(f"stale: {path}", file=sys.stderr)
            print("run python tools/merge_benchmarks.py to regenerate", file=sys.stderr)
            status = 1
        else:
            print("up to date")
    elif result.written:
        print("wrote " + ", ".join(result.written))
    if result.skipped and not args.allow_bad:
        print(
            f"{len(result.skipped)} file(s) skipped (see warnings); --allow-bad to exit 0",
            file=sys.stderr,
        )
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
