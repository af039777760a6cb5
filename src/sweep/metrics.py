"""Per-run metrics and per-phase statistics (definitions in DESIGN.md, "Metric definitions").

Pure standard library: the merge tool recomputes tables from the raw samples with these same
functions. Undefined values are None (JSON null), never NaN.

Counting conventions:
- `new_tokens` and `prompt_tokens` are per sequence; `*_tokens_per_s` count all `batch_size`
  sequences; `*_per_seq` variants divide by the batch.
- MBU: bytes one decode step must read (decoder weights once + the K/V of every position
  attended so far, averaged over the steps) x steps/s / peak bandwidth.
- MFU: prefill FLOPs (2 x decoder matmul params x prompt tokens x batch) / first_token_s /
  peak FLOP/s. A lower bound: attention and the vision encoder are not counted.
A value above 1.0 means the counting is wrong and raises MetricError.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

RUN_METRICS = (
    "total_s",
    "first_token_s",
    "post_first_s",
    "tokens_per_s",
    "decode_tokens_per_s",
    "decode_tokens_per_s_per_seq",
    "pre_first_tokens_per_s",
    "prefill_tokens_per_s",
    "mbu",
    "mfu",
)
STATS = ("mean", "median", "p90", "p99", "stdev", "min", "max")


class MetricError(ArithmeticError):
    """A derived figure is impossible (e.g. MBU above 100%): the counting is wrong."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CostModel:
    """What the hardware must do per request; static for a job."""

    decode_weight_bytes: int  # decoder weights read once per decode step
    # K+V bytes of one cached position, one sequence: global layers, and sliding-window layers
    # (which attend at most `sliding_window` positions).
    kv_bytes_per_position_global: int
    kv_bytes_per_position_local: int
    sliding_window: int | None
    prefill_flops_per_token: int  # 2 x decoder matmul params
    peak_bytes_per_s: float | None  # all chips together; None = unknown
    peak_flops: float | None  # all chips together; None = unknown


def _div(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def run_metrics(
    *,
    total_s: float,
    first_token_s: float,
    new_tokens: int,
    prompt_tokens: int,
    batch_size: int,
    cost: CostModel | None = None,
) -> dict[str, Any]:
    """Every per-run figure from the raw timings."""
    post_first_s = total_s - first_token_s
    decode_steps = new_tokens - 1
    run: dict[str, Any] = {
        "total_s": total_s,
        "first_token_s": first_token_s,
        "post_first_s": post_first_s,
        "new_tokens": new_tokens,
        "prompt_tokens": prompt_tokens,
        "batch_size": batch_size,
        "tokens_per_s": _div(batch_size * new_tokens, total_s),
        "decode_tokens_per_s": _div(batch_size * decode_steps, post_first_s)
        if decode_steps > 0
        else None,
        "decode_tokens_per_s_per_seq": _div(decode_steps, post_first_s)
        if decode_steps > 0
        else None,
        "pre_first_tokens_per_s": _div(1.0, first_token_s),
        "prefill_tokens_per_s": _div(batch_size * prompt_tokens, first_token_s),
        "mbu": None,
        "mfu": None,
    }
    if cost is not None:
        run["mbu"] = decode_mbu(cost, run, prompt_tokens=prompt_tokens, batch_size=batch_size)
        run["mfu"] = prefill_mfu(cost, run, prompt_tokens=prompt_tokens, batch_size=batch_size)
    return run


def decode_mbu(cost: CostModel, run: dict, *, prompt_tokens: int, batch_size: int):
    steps = run["new_tokens"] - 1
    if not cost.peak_bytes_per_s or steps <= 0 or run["post_first_s"] <= 0:
        return None
    # Step i attends prompt_tokens + i positions (i = 1..steps): average over the steps.
    mean_positions = prompt_tokens + (steps + 1) / 2
    local_positions = min(mean_positions, cost.sliding_window or mean_positions)
    kv_bytes = (
        cost.kv_bytes_per_position_global * mean_positions
        + cost.kv_bytes_per_position_local * local_positions
    )
    bytes_per_step = cost.decode_weight_bytes + batch_size * kv_bytes
    value = bytes_per_step * steps / run["post_first_s"] / cost.peak_bytes_per_s
    _check_fraction("mbu", value)
    return value


def prefill_mfu(cost: CostModel, run: dict, *, prompt_tokens: int, batch_size: int):
    if not cost.peak_flops or run["first_token_s"] <= 0:
        return None
    flops = cost.prefill_flops_per_token * prompt_tokens * batch_size
    value = flops / run["first_token_s"] / cost.peak_flops
    _check_fraction("mfu", value)
    return value


def _check_fraction(name: str, value: float) -> None:
    if not math.isfinite(value) or value > 1.0:
        raise MetricError(f"{name}={value:.3f} is above 100% of the peak: a counting bug")


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def describe(values: list[float | None]) -> dict[str, float | int | None] | None:
    """mean/median/p90/p99/stdev/min/max of the defined values; None when there are none."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    return {
        "n": len(xs),
        "mean": statistics.fmean(xs),
        "median": percentile(xs, 50),
        "p90": percentile(xs, 90),
        "p99": percentile(xs, 99),
        "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "min": xs[0],
        "max": xs[-1],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-phase summary: statistics of every run metric over the phase's runs."""
    summary = {name: describe([r.get(name) for r in runs]) for name in RUN_METRICS}
    summary["runs"] = len(runs)
    summary["new_tokens"] = describe([r["new_tokens"] for r in runs])
    return summary
