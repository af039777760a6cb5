"""Records -> pandas DataFrames: the one place where records become tables.

    from sweep.results import load_runs, load_phases
    runs = load_runs("multirun/")            # one row per timed run (job x phase x run index)
    phases = load_phases("benchmarks/metrics.json")   # one row per job x phase, with statistics

Paths are sweep dirs (searched recursively for metrics.json), record files or merged stores.
Per-run figures are recomputed from the raw samples (`sweep.metrics.run_metrics`); per-phase
statistics are pandas groupings of them: mean, median, p90 and p99 (linear interpolation),
sample stdev (0.0 for one run), min, max, over the defined values (p90 and p99 from any number
of runs: the Benchmark Percentiles table shows them only from 10 and 100). Only each cell's current
result is returned (`superseded` False) unless `history=True`. Rows are sorted (the tables'
order), columns in the fixed order below.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.metrics import LIMIT_METRICS, RUN_METRICS, STATS
from sweep.record import PHASES
from sweep.results.jobs import Job, current, get, is_int, is_real, machine_label, unique
from sweep.results.jobs import variant_key as _variant_key
from sweep.results.load import Warn, load_jobs

AXES = (
    "model",
    "mode",
    "mode_label",
    "tokens",
    "batch_size",
    "engine",
    "topology",
    "quant",
    "seed",
    "prompt_tokens",
)
MACHINE = (
    "machine",
    "hostname",
    "cpu_model",
    "cpu_flags",
    "device_kind",
    "device_count",
    "hosts",
    "backend",
)
PROVENANCE = (
    "status",
    "error",
    "superseded",
    "date",
    "started_at",
    "sweep_dir",
    "job_num",
    "jax",
    "jaxlib",
    "gemma",
    "flax",
    "python",
    "git_commit",
    "run_key",
    "machine_key",
    "record_id",
)
EXTRA = (
    "image_used",
    "prompt_tokens_requested",
    "error_type",
    "error_message",
    "model_load_s",
    "peak_bytes_per_s",
    "peak_flops",
    "topology_peak_bytes_per_s",
    "cpu_read_probe_bytes",
    "env_vars",
    "variant_key",
    "concurrent_jobs",
)
# The record's memory block (absent in older records: all None). Bytes; `memory_peak_source`
# is "device" (memory_stats()) or "process_rss"; the programs' figures are
# compiled.memory_analysis()'s, None with `memory_programs_reason` when it had none.
PROGRAM_MEMORY = tuple(
    f"memory_{program}_{kind}_bytes"
    for program in ("prefill", "decode")
    for kind in ("temp", "argument", "output")
)
MEMORY = (
    "memory_peak_bytes",
    "memory_peak_source",
    "memory_weight_bytes",
    "memory_kv_cache_bytes",
    *PROGRAM_MEMORY,
    "memory_programs_reason",
)
JOB_COLUMNS = AXES + MACHINE + PROVENANCE + EXTRA + MEMORY
RUN_FIGURES = (*RUN_METRICS, *LIMIT_METRICS, "new_tokens", "first_token_derived")
PHASE_COUNTS = (
    "compiles",
    "compile_s",
    "cache_hits",
    "cache_misses",
    "program_hits",
    "program_misses",
    "wall_s",
)
STAT_COLUMNS = tuple(f"{m}_{s}" for m in RUN_METRICS for s in STATS)
RUN_COLUMNS = (*AXES, "phase", "run_index", *RUN_FIGURES, *JOB_COLUMNS[len(AXES) :])
# Per phase, LIMIT_METRICS are the medians of its runs' (the limit is one figure per job unless
# its runs' token counts differ).
PHASE_COLUMNS = (
    *AXES,
    "phase",
    "runs",
    *STAT_COLUMNS,
    *LIMIT_METRICS,
    *PHASE_COUNTS,
    *JOB_COLUMNS[len(AXES) :],
)

_INTS = {
    "tokens",
    "batch_size",
    "seed",
    "prompt_tokens",
    "prompt_tokens_requested",
    "device_count",
    "hosts",
    "job_num",
    "run_index",
    "new_tokens",
    "runs",
    "compiles",
    "cache_hits",
    "cache_misses",
    "program_hits",
    "program_misses",
    "cpu_read_probe_bytes",
    "concurrent_jobs",
    *(m for m in MEMORY if m.endswith("_bytes")),
}
_BOOLS = {"superseded", "image_used", "first_token_derived"}
_FLOATS = {
    *RUN_METRICS,
    *STAT_COLUMNS,
    *LIMIT_METRICS,
    "compile_s",
    "wall_s",
    "model_load_s",
    "peak_bytes_per_s",
    "peak_flops",
    "topology_peak_bytes_per_s",
}
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if is_int(value) else None


def _real(value: Any) -> float | None:
    return float(value) if is_real(value) else None


def _num(value: Any) -> tuple[int, Any]:
    return (0, value) if is_int(value) else (1, 0)


def memory_row(block: Any) -> dict[str, Any]:
    """The MEMORY columns of a record's memory block (all None when it has none)."""
    block = block if isinstance(block, dict) else {}
    programs = block.get("programs")
    row = {
        "memory_peak_bytes": _int(block.get("peak_bytes")),
        "memory_peak_source": _text(block.get("peak_source")),
        "memory_weight_bytes": _int(block.get("weight_bytes")),
        "memory_kv_cache_bytes": _int(block.get("kv_cache_bytes")),
    }
    for name in PROGRAM_MEMORY:
        program, kind = name.split("_")[1:3]
        row[name] = _int(get(programs, program, f"{kind}_bytes"))
    row["memory_programs_reason"] = _text(block.get("programs_reason"))
    return row


def job_row(job: Job) -> dict[str, Any]:
    """A job's own columns (the axes, machine, versions, provenance)."""
    rec, config = job.record, job.record["config"]
    env = rec.get("env") if isinstance(rec.get("env"), dict) else {}
    error = rec.get("error") if isinstance(rec.get("error"), dict) else None
    mode_name = get(config, "mode", "name")
    quant = config.get("quant")
    first = next((runs[0] for runs in job.runs.values() if runs), None)
    flags = env.get("cpu_flags") if env.get("backend") == "cpu" else None
    env_vars = env.get("env_vars") if isinstance(env.get("env_vars"), dict) else {}
    cost = rec.get("cost_model") if isinstance(rec.get("cost_model"), dict) else {}
    return {
        "model": _text(get(config, "model", "name")),
        "mode": _text(mode_name),
        "mode_label": _text(get(config, "mode", "label")) or _text(mode_name),
        "tokens": _int(config.get("tokens")),
        "batch_size": _int(config.get("batch_size")),
        "engine": _text(get(config, "engine", "name")),
        "topology": _text(get(config, "topology", "name")),
        "quant": str(quant) if quant is not None else "none",
        "seed": _int(config.get("seed")),
        "prompt_tokens": first["prompt_tokens"] if first else _int(config.get("prompt_tokens")),
        "machine": machine_label(job.machine),
        **job.machine,
        "cpu_flags": " ".join(sorted(map(str, flags))) if isinstance(flags, list) else None,
        "backend": _text(env.get("backend")),
        "status": job.status,
        "error": f"{error.get('type') or '?'}: {error.get('message') or ''}" if error else None,
        "started_at": job.started,
        "sweep_dir": _text(get(rec, "sweep", "dir")),
        "job_num": _int(get(rec, "sweep", "job_num")),
        **{k: _text(get(env, "versions", k)) for k in ("jax", "jaxlib", "gemma", "flax")},
        "python": _text(get(env, "versions", "python")),
        "git_commit": _text(env.get("git_commit")),
        "run_key": job.run_key,
        "machine_key": job.machine_key,
        "record_id": job.record_id,
        "image_used": mode_name == "image" or bool(get(config, "mode", "image")),
        "prompt_tokens_requested": _int(config.get("prompt_tokens")),
        "error_type": _text(error.get("type")) if error else None,
        "error_message": str(error.get("message") or "") if error else None,
        "model_load_s": _real(get(rec, "model", "load_s")),
        "peak_bytes_per_s": _real(cost.get("peak_bytes_per_s")),
        "peak_flops": _real(cost.get("peak_flops")),
        "topology_peak_bytes_per_s": _real(get(config, "topology", "peak_hbm_bytes_per_s")),
        "cpu_read_probe_bytes": _int(env.get("cpu_read_probe_bytes")),
        "env_vars": "\n".join(sorted(f"{k}={v}" for k, v in env_vars.items())) or None,
        "variant_key": _variant_key(config),
        "concurrent_jobs": _int(env.get("concurrent_jobs")),
        **memory_row(rec.get("memory")),
    }


def ordered(jobs: list[Job], *, history: bool) -> list[tuple[Job, dict[str, Any]]]:
    """(job, row) pairs in the tables' order, with `superseded` and `date`: the sweep's start,
    its earliest current record (its earliest record when all of them are superseded), so
    that history never moves a current row. Only current results unless `history`."""
    jobs = unique(jobs)
    superseded = current(jobs)
    starts: dict[tuple[bool, str], Any] = {}
    rows = []
    for job in jobs:
        row = job_row(job) | {"superseded": superseded[job.record_id]}
        sweep = row["sweep_dir"]
        keys = [(True, sweep)] if row["superseded"] else [(True, sweep), (False, sweep)]
        for key in keys if sweep else ():
            starts[key] = min(starts.get(key, job.started), job.started)
        rows.append((job, row))
    out = []
    for job, row in rows:
        sweep = row["sweep_dir"]
        start = starts.get((False, sweep)) or starts.get((True, sweep)) or job.started
        row["date"] = start.strftime(DATE_FORMAT)
        if history or not row["superseded"]:
            out.append((_sort_key(job, row), job, row))
    out.sort(key=lambda t: t[0])
    return [(job, row) for _, job, row in out]


def _sort_key(job: Job, row: dict[str, Any]) -> tuple:
    """Inside a date and sweep: model, engine, topology, quant, batch, tokens (numerically),
    mode, prompt length, then seed, machine, identity and age."""
    return (
        row["date"],
        row["sweep_dir"] or "",
        row["model"] or "?",
        row["engine"] or "?",
        row["topology"] or "?",
        row["quant"],
        _num(row["batch_size"]),
        _num(row["tokens"]),
        row["mode_label"] or "?",
        _num(row["prompt_tokens"]),
        _num(row["seed"]),
        row["machine"],
        job.run_key,
        job.recency,
    )


def _typed(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(columns))
    typed = {}
    for name in columns:
        if name in _INTS:
            typed[name] = df[name].astype("Int64")
        elif name in _BOOLS:
            typed[name] = df[name].astype(bool)
        elif name in _FLOATS:
            typed[name] = df[name].astype("float64")
        elif name == "started_at":
            typed[name] = pd.to_datetime(df[name], utc=True)
        else:
            typed[name] = df[name].astype(object).where(df[name].notna(), None)
    return pd.DataFrame(typed, columns=list(columns))  # built at once: not fragmented


def runs_frame(pairs: list[tuple[Job, dict[str, Any]]]) -> pd.DataFrame:
    rows = []
    for job, row in pairs:
        for phase in PHASES:
            for i, run in enumerate(job.runs.get(phase, ())):
                figures = {k: run[k] for k in (*RUN_FIGURES, "prompt_tokens")}
                rows.append(row | {"phase": phase, "run_index": i} | figures)
    return _typed(rows, RUN_COLUMNS)


def phases_frame(pairs: list[tuple[Job, dict[str, Any]]], runs: pd.DataFrame) -> pd.DataFrame:
    """One row per job x phase (non-ok jobs too: runs 0, no figures), with the statistics of
    the phase's runs grouped by pandas, and the phase block's compile and cache counts."""
    rows = []
    for job, row in pairs:
        for phase in PHASES:
            block = get(job.record, "phases", phase)
            counts = {k: (get(block, k) if is_real(get(block, k)) else None) for k in PHASE_COUNTS}
            rows.append(row | {"phase": phase} | counts)
    figures = {*STAT_COLUMNS, *LIMIT_METRICS}
    skeleton = pd.DataFrame(rows, columns=[c for c in PHASE_COLUMNS if c not in figures])
    skeleton = skeleton.drop(columns=["runs"])
    keys = ["record_id", "phase"]
    grouped = runs.groupby(keys, sort=False)[list(RUN_METRICS)]
    count = grouped.count()
    parts = {
        "mean": grouped.mean(),
        "median": grouped.median(),
        "p90": grouped.quantile(0.9),
        "p99": grouped.quantile(0.99),
        "stdev": grouped.std(ddof=1).mask(count == 1, 0.0),
        "min": grouped.min(),
        "max": grouped.max(),
    }
    stats = pd.concat([df.add_suffix(f"_{stat}") for stat, df in parts.items()], axis=1)
    limits = runs.groupby(keys, sort=False)[list(LIMIT_METRICS)].median()
    stats = pd.concat([stats, limits], axis=1)
    stats["runs"] = runs.groupby(keys, sort=False).size()
    stats = stats.reset_index()
    merged = skeleton.merge(stats, on=keys, how="left", sort=False)
    merged["runs"] = merged["runs"].fillna(0)
    return _typed(merged.to_dict("records"), PHASE_COLUMNS)


def frames(jobs: list[Job], *, history: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, phases) of `jobs`: every cell's current result, or all of them with `history`."""
    pairs = ordered(jobs, history=history)
    runs = runs_frame(pairs)
    return runs, phases_frame(pairs, runs)


def _load(paths: Iterable[str | os.PathLike], warn: Warn | None) -> list[Job]:
    jobs, _ = load_jobs([Path(p) for p in paths], warn)
    return jobs


def load_runs(
    *paths: str | os.PathLike, history: bool = False, warn: Warn | None = None
) -> pd.DataFrame:
    """One row per timed run (job x phase x run index) of the ok jobs under `paths`: the axes,
    the machine, versions and provenance, `phase`, `run_index` and every per-run figure
    (recomputed from the raw samples). Bad files are skipped with a warning (`warn`, default:
    the `sweep` logger)."""
    pairs = ordered(_load(paths, warn), history=history)
    return runs_frame(pairs)


def load_phases(
    *paths: str | os.PathLike, history: bool = False, warn: Warn | None = None
) -> pd.DataFrame:
    """One row per job x phase under `paths`, with `runs`, the phase's compile and cache
    counts, `<metric>_<stat>` for every run metric and statistic, the bandwidth limit
    (`limit_decode_tokens_per_s`, `ms_per_step_above_limit`: medians of the phase's runs), the
    record's memory block (`memory_*`) and `concurrent_jobs`. Jobs that did not end ok
    are there too (runs 0, no figures: their status and error say why)."""
    return frames(_load(paths, warn), history=history)[1]


def _float(value: float) -> str:
    return repr(float(value))


def csv_bytes(df: pd.DataFrame) -> bytes:
    """Deterministic CSV: the frame's (fixed) column order and sorted rows, floats as the
    shortest repr that reads back exactly, times as ISO UTC, missing values empty."""
    text = df.to_csv(
        index=False,
        float_format=_float,
        date_format="%Y-%m-%dT%H:%M:%S.%fZ",
        lineterminator="\n",
    )
    return text.encode()
