"""The tables of BENCHMARKS.md and index.html, each a pandas grouping of the phases frame.

Every table takes the frame `frames.load_phases` gives (sorted: date, sweep, then the jobs'
order) and returns a `Table` of plain text cells (escaping is the renderer's job). Figures are
the frame's statistics; formatting is the seed's: 4 decimals, an em dash when missing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd

from sweep.record import PHASE_CACHE_COUNTS, PHASES

SCRIPT = "sweep.run"
MISSING = "—"
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
# Per-run metrics averaged into the seed table, in its column order.
AVG_METRICS = (
    "total_s",
    "first_token_s",
    "post_first_s",
    "tokens_per_s",
    "decode_tokens_per_s",
    "pre_first_tokens_per_s",
)
IDENT = (
    "Date (UTC)",
    "Script",
    "Mode",
    "TPU",
    "Model",
    "Token Count",
    "Prompt Tokens",
    "Batch Size",
)
# Runs a phase needs before a percentile is shown (the frames keep it from any number).
MIN_RUNS = {"median": 1, "p90": 10, "p99": 100, "stdev": 1}
# Baseline for the engine comparison: the seed's per-token loop first, then gemma's sampler.
BASELINE_ENGINES = ("stream", "sampler", "fused")


@dataclasses.dataclass
class Table:
    title: str
    intro: str
    headers: tuple[str, ...]
    rows: list[list[str]]
    empty: str = "None."


def py(value: Any) -> Any:
    """A pandas/numpy scalar as plain Python: None for NA/NaN/NaT."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value


def rows_of(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: py(v) for k, v in row.items()} for row in df.to_dict("records")]


def fmt(value: Any) -> str:
    """Floats as in the seed (4 decimals); None as an em dash."""
    value = py(value)
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def warmup_note(block: Any) -> str | None:
    """How a warmup phase got its programs, from its compile and cache counts (None when the
    record predates them):
    - `warmup=warm (no compile)`: no XLA compile at all; the process's own caches (engines and
      programs kept from an earlier job) served every program.
    - `warmup=warm (N compiles from the persistent cache, S s)`: every compile was a hit of the
      persistent XLA cache (deserialised, not compiled: cheap).
    - `warmup=cold (N compiles, S s)`: XLA compiled (a miss, or no persistent cache), with
      `, H from the persistent cache` when some of the N were hits.
    S is the phase's compile_s (tracing + lowering + backend compile, cache reads included)."""
    block = block if isinstance(block, dict) else {}
    compiles = py(block.get("compiles"))
    if not isinstance(compiles, int) or isinstance(compiles, bool):
        return None
    if compiles == 0:
        return "warmup=warm (no compile)"
    seconds = py(block.get("compile_s"))
    took = f", {seconds:.2f} s" if isinstance(seconds, int | float) else ""
    hits, misses = py(block.get("cache_hits")), py(block.get("cache_misses"))
    hits = hits if isinstance(hits, int) else 0
    misses = misses if isinstance(misses, int) else None
    if misses == 0 and hits >= compiles:
        return f"warmup=warm ({_plural(compiles, 'compile')} from the persistent cache{took})"
    from_cache = f", {hits} from the persistent cache" if hits else ""
    return f"warmup=cold ({_plural(compiles, 'compile')}{from_cache}{took})"


def _ordered(phases: pd.DataFrame) -> pd.DataFrame:
    """The frame with `_job` (the job's position) and `_phase` (the phase's)."""
    df = phases.copy()
    df["_job"] = pd.factorize(df["record_id"])[0]
    df["_phase"] = df["phase"].map({p: i for i, p in enumerate(PHASES)})
    return df


def _jobs(phases: pd.DataFrame, ok: bool | None = None) -> pd.DataFrame:
    """One row per job (its benchmark phase's), in order; only ok jobs or only the others."""
    df = _ordered(phases)
    df = df[df["phase"] == "benchmark"]
    if ok is not None:
        df = df[(df["status"] == "ok") == ok]
    return df


def _text(value: Any) -> str:
    return "?" if value is None else str(value)


def _machine(row: dict[str, Any]) -> str:
    return row["machine"] + (" (superseded)" if row["superseded"] else "")


def _ident(row: dict[str, Any]) -> list[str]:
    return [
        row["date"],
        f"{SCRIPT} ({_text(row['engine'])})",
        _text(row["mode_label"]),
        _text(row["topology"]),
        _text(row["model"]),
        fmt(row["tokens"]),
        fmt(row["prompt_tokens"]),
        fmt(row["batch_size"]),
    ]


def notes(row: dict[str, Any]) -> str:
    """The seed table's Notes: image_used, model, quant, the machine, how the warmup got its
    programs, the status of a job that did not end ok, `concurrent_jobs=N` when the launcher
    ran N > 1 jobs at once on the host, and whether the result is superseded."""
    parts = [f"image_used={row['image_used']}", f"model={_text(row['model'])}"]
    if row["quant"] not in ("none", "None", ""):
        parts.append(f"quant={row['quant']}")
    parts.append(f"machine={row['machine']}")
    ok = row["status"] == "ok"
    if ok and row["phase"] == "warmup":
        note = warmup_note(row)  # the warmup row's own compile and cache counts
        if note:
            parts.append(note)
    if not ok:
        kind = row["error_type"]
        parts.append(f"status={row['status']}" + (f": {kind}" if kind else ""))
    concurrent = row.get("concurrent_jobs")
    if concurrent is not None and concurrent > 1:
        parts.append(f"concurrent_jobs={concurrent}")  # a shared host slows every job down
    if row["superseded"]:
        parts.append("superseded by a newer result")
    return "; ".join(parts)


def inference_rows(phases: pd.DataFrame) -> list[list[str]]:
    """The seed table: one row per (job, phase); per date and sweep, its warmup rows, then its
    benchmark rows, then its final rows, jobs in order inside each."""
    df = _ordered(phases)
    df["_group"] = pd.factorize(df["date"] + "\0" + df["sweep_dir"].fillna(""))[0]
    df = df.sort_values(["_group", "_phase", "_job"], kind="stable")
    out = []
    for row in rows_of(df):
        ok = row["status"] == "ok"
        avgs = [row[f"{m}_mean"] if ok else None for m in AVG_METRICS]
        out.append(
            [
                row["date"],
                f"{SCRIPT} ({_text(row['engine'])})",
                row["phase"],
                _text(row["mode_label"]),  # final rows too: the Phase column says final
                _text(row["topology"]),
                fmt(row["tokens"]),
                fmt(row["batch_size"]),
                fmt(row["runs"] if ok else None),
                *[fmt(v) for v in avgs],
                notes(row),
            ]
        )
    return out


def percentile_table(phases: pd.DataFrame) -> Table:
    rows = []
    for row in rows_of(_jobs(phases, ok=True)):
        cells = [*_ident(row), fmt(row["runs"])]
        runs = row["runs"] or 0
        for metric in ("first_token_s", "decode_tokens_per_s"):
            cells += [
                fmt(row[f"{metric}_{s}"] if runs >= MIN_RUNS[s] else None)
                for s in ("median", "p90", "p99", "stdev")
            ]
        cells.append(fmt(row["prefill_tokens_per_s_median"]))
        rows.append([*cells, _machine(row)])
    return Table(
        "Benchmark Percentiles",
        "Benchmark phase: percentiles (linear interpolation) and sample standard deviation over "
        "the phase's runs. p50 is the median; for tokens/s a high percentile is a fast run. A "
        "percentile is shown only when the phase has enough runs for it: p90 from "
        f"{MIN_RUNS['p90']} runs, p99 from {MIN_RUNS['p99']}, `—` below (phases.csv keeps the "
        "computed values).",
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
            "Prefill Tokens/s p50",
            "Machine",
        ),
        rows,
        "No job ended ok.",
    )


def compile_table(phases: pd.DataFrame) -> Table:
    df = _ordered(phases)
    df = df[df["status"] == "ok"]
    wide = {k: df.pivot(index="_job", columns="phase", values=k) for k in ("compiles", "compile_s")}
    # Cache counts of all phases together; absent in older records: a dash, not a partial sum.
    sums = df.groupby("_job")[list(PHASE_CACHE_COUNTS)].sum(min_count=len(PHASES))
    rows = []
    for row in rows_of(_jobs(phases, ok=True).set_index("_job", drop=False)):
        job = row["_job"]
        cells = _ident(row)
        for phase in PHASES:
            cells += [fmt(wide["compiles"].loc[job, phase]), fmt(wide["compile_s"].loc[job, phase])]
        cells += [fmt(sums.loc[job, key]) for key in PHASE_CACHE_COUNTS]
        cells += [fmt(row["model_load_s"]), _machine(row)]
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
            "Machine",
        ),
        rows,
        "No job ended ok.",
    )


def utilization_table(phases: pd.DataFrame) -> Table:
    """Every ok job: MBU, its median decode tokens/s against the bandwidth limit, MFU, and the
    peaks they are fractions of (`—` where the topology or probe gives none)."""
    rows = []
    for row in rows_of(_jobs(phases, ok=True)):
        peak_bw, peak_flops = row["peak_bytes_per_s"], row["peak_flops"]
        topo_bw, probe_bytes = row["topology_peak_bytes_per_s"], row["cpu_read_probe_bytes"]
        source = "topology" if topo_bw else "measured host read"
        if not topo_bw and probe_bytes is not None:
            source += f" ({probe_bytes / 2**20:.0f} MiB)"
        rows.append(
            [
                *_ident(row),
                fmt(row["runs"]),
                fmt(row["mbu_mean"]),
                fmt(row["mbu_median"]),
                fmt(row["decode_tokens_per_s_median"]),
                fmt(row["limit_decode_tokens_per_s"]),
                fmt(row["ms_per_step_above_limit"]),
                fmt(row["mfu_mean"]),
                fmt(row["mfu_median"]),
                fmt(peak_bw / 1e9 if peak_bw is not None else None),
                fmt(peak_flops / 1e12 if peak_flops is not None else None),
                source if peak_bw else MISSING,
                _machine(row),
            ]
        )
    return Table(
        "MBU / MFU",
        "Benchmark phase, as fractions of the peak (all chips together): MBU = bytes read per "
        "decode step × steps/s ÷ peak bandwidth; MFU = prefill FLOPs ÷ first-token time ÷ peak "
        "FLOP/s (a lower bound). Limit Decode Tokens/s: the decode tokens/s at 100% of the peak "
        "bandwidth (batch size × peak ÷ bytes read per decode step: the weights once, plus the "
        "K/V the job's steps attend); ms/Step Above Limit: the measured milliseconds per decode "
        "step minus the limit's (medians over the runs), how far from the hardware the result "
        "is. `—` where the topology (or host probe) gives no peak, or there is no decode step.",
        (
            *IDENT,
            "Runs",
            "Mean MBU",
            "Median MBU",
            "Median Decode Tokens/s",
            "Limit Decode Tokens/s",
            "ms/Step Above Limit",
            "Mean MFU",
            "Median MFU",
            "Peak GB/s",
            "Peak TFLOP/s",
            "Peak Source",
            "Machine",
        ),
        rows,
        "No job ended ok.",
    )


def _baseline(engines: list[str]) -> str:
    for name in BASELINE_ENGINES:
        if name in engines:
            return name
    return sorted(engines)[0]


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def engine_table(phases: pd.DataFrame) -> Table:
    """Jobs of one sweep, one machine and one configuration but for the engine: each engine's
    benchmark medians against the baseline engine's."""
    df = _jobs(phases, ok=True)
    df = df.assign(engine=df["engine"].fillna("?"))
    keys = ["sweep_dir", "variant_key", "machine_key", "superseded"]
    df = df[df.groupby(keys, dropna=False, sort=False)["engine"].transform("nunique") > 1]
    rows = []
    for _, group in df.groupby(keys, dropna=False, sort=False):
        base_name = _baseline(list(group["engine"]))
        base = rows_of(group[group["engine"] == base_name].head(1))[0]
        b_ttft, b_dec = base["first_token_s_median"], base["decode_tokens_per_s_median"]
        group = group.assign(_base=group["engine"] != base_name)
        for row in rows_of(group.sort_values(["_base", "engine"], kind="stable")):
            ttft, dec = row["first_token_s_median"], row["decode_tokens_per_s_median"]
            rows.append(
                [
                    row["date"],
                    _text(row["mode_label"]),
                    _text(row["topology"]),
                    _text(row["model"]),
                    fmt(row["tokens"]),
                    fmt(row["batch_size"]),
                    row["engine"],
                    base_name,
                    fmt(ttft),
                    fmt(_ratio(ttft, b_ttft)),
                    fmt(dec),
                    fmt(_ratio(dec, b_dec)),
                    _machine(row),
                ]
            )
    return Table(
        "Engine Comparison",
        "Engines measured in the same sweep on the same configuration and machine, "
        "benchmark-phase medians. Ratios are engine ÷ baseline (the seed's `stream` loop when "
        "present): a TTFT ratio below 1 and a decode ratio above 1 mean faster than the baseline.",
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
            "Machine",
        ),
        rows,
        "No sweep measured more than one engine on the same configuration.",
    )


def failed_table(phases: pd.DataFrame) -> Table:
    rows = []
    for row in rows_of(_jobs(phases, ok=False)):
        message = " ".join(str(row["error_message"] or "").split())
        if len(message) > 160:
            message = message[:157] + "..."
        has_error = row["error_message"] is not None
        text = f"{row['error_type'] or '?'}: {message}" if has_error else MISSING
        sweep = row["sweep_dir"] or MISSING
        rows.append([*_ident(row), row["status"], text, sweep, fmt(row["job_num"]), _machine(row)])
    return Table(
        "Jobs That Did Not End OK",
        "Their rows above carry the status in Notes and `—` for every figure.",
        (*IDENT, "Status", "Error", "Sweep", "Job", "Machine"),
        rows,
        "None: every job ended ok.",
    )


def _values(group: pd.DataFrame, column: str) -> str:
    found = sorted({fmt(v) for v in group[column] if py(v) is not None})
    return ", ".join(found) or MISSING


def environment_table(phases: pd.DataFrame) -> Table:
    """Per sweep and machine, from the records' env blocks."""
    df = _jobs(phases)
    rows = []
    for (date, sweep, machine), group in df.groupby(
        ["date", "sweep_dir", "machine"], dropna=False, sort=False
    ):
        env_vars = {v for cell in group["env_vars"] if py(cell) for v in cell.split("\n")}
        rows.append(
            [
                date,
                py(sweep) or MISSING,
                fmt(len(group)),
                fmt(int((group["status"] == "ok").sum())),
                *[
                    _values(group, c)
                    for c in ("backend", "device_kind", "device_count", "hosts", "jax", "jaxlib")
                ],
                *[_values(group, c) for c in ("gemma", "flax", "python", "git_commit")],
                ", ".join(sorted(env_vars)) or MISSING,
                _values(group, "concurrent_jobs"),
                machine,
                _values(group, "cpu_flags"),
            ]
        )
    return Table(
        "Environment",
        "Per sweep and machine, from the records' env blocks. Concurrent Jobs: how many jobs "
        "the launcher ran at once on the host (`—` in records that predate it); above 1 the "
        "jobs shared the host, which slows each of them down (the Notes above say so too).",
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
            "Concurrent Jobs",
            "Machine",
            "CPU Flags",
        ),
        rows,
        "No records.",
    )
