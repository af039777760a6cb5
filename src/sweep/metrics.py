"""Per-run metrics and per-phase statistics (definitions in DESIGN.md, "Metric definitions").

Pure standard library: the merge tool recomputes tables from the raw samples with these same
functions. Undefined values are None (JSON null), never NaN, and no rate is ever derived from a
non-positive time, so no figure is negative: `post_first_s` is kept as measured, except a
derived split (below) whose decode figures are undefined, which is null.

Counting conventions:
- `new_tokens` and `prompt_tokens` are per sequence; `*_tokens_per_s` count all `batch_size`
  sequences (`pre_first_tokens_per_s` = batch_size / first_token_s: the batch's first tokens
  per second of TTFT); `*_per_seq` variants divide by the batch.
- Decode figures (`decode_tokens_per_s`, `decode_tokens_per_s_per_seq`, `mbu`) need at least
  one decode step (new_tokens >= 2) and post_first_s > 0. When the first-token time is derived
  (`first_token_derived`: gemma's Sampler times a separate 1-token request, so post_first_s =
  total_s - first_token_s mixes two requests) they also need at least 2 tokens decoded after
  the first: with fewer, the split is noise (negative at tokens=1-2); and a derived split that
  would put MBU above 100% is noise too (the separate 1-token request ran slow): null.
- MBU: bytes the decode steps must read (the weights a step reads,
  `CostModel.decode_weight_bytes`: no encoder, one row of a lookup table, a MoE's routed
  experts, see sweep/costs.py; + the K/V of every position each step attends:
  prompt_tokens + i on global layers, min(prompt_tokens + i, sliding_window) on
  sliding-window layers, for step i = 1..steps, summed exactly) / the decode time / peak
  bandwidth.
- MFU: prefill FLOPs (2 x decoder matmul params x prompt tokens x batch) / first_token_s /
  peak FLOP/s. A lower bound: attention and the vision encoder are not counted.
A value above 1.0 means the counting is wrong and raises MetricError.
- The bandwidth limit (`decode_limit`): the decode tokens/s of a run reading the bytes its
  steps must read (the MBU numerator, averaged per step) at 100% of the peak bandwidth:
  batch_size x peak / bytes per step. `ms_per_step_above_limit`: the measured milliseconds per
  decode step (post_first_s / steps) minus the limit's (bytes per step / peak); never negative,
  since MBU <= 1. Both need the peak, and the excess a timed decode (as MBU).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from sweep.costs import CostModel

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
# Per-run figures against the bandwidth limit (not in RUN_METRICS: the records' own summaries
# predate them; the results side adds them to its frames, `sweep.results.frames`).
LIMIT_METRICS = ("limit_decode_tokens_per_s", "ms_per_step_above_limit")
STATS = ("mean", "median", "p90", "p99", "stdev", "min", "max")


class MetricError(ArithmeticError):
    """A derived figure is impossible (e.g. MBU above 100%): the counting is wrong."""


def _div(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def decode_defined(
    *, post_first_s: float | None, new_tokens: int, first_token_derived: bool = False
) -> bool:
    """Whether the decode figures of a run are defined (see the module docstring)."""
    decode_steps = new_tokens - 1
    if decode_steps < 1 or post_first_s is None or not post_first_s > 0:
        return False
    return not (first_token_derived and decode_steps < 2)


def run_metrics(
    *,
    total_s: float,
    first_token_s: float,
    new_tokens: int,
    prompt_tokens: int,
    batch_size: int,
    cost: CostModel | None = None,
    first_token_derived: bool = False,
) -> dict[str, Any]:
    """Every per-run figure from the raw timings. `first_token_derived`: the first-token time
    was not observed in this request but timed separately (gemma's Sampler)."""
    split = total_s - first_token_s
    decode_steps = new_tokens - 1
    decodes = decode_defined(
        post_first_s=split, new_tokens=new_tokens, first_token_derived=first_token_derived
    )
    # A derived split (two requests) is only a time when the decode figures are defined:
    # otherwise it is noise, negative at 1-2 tokens, and recorded as null.
    post_first_s = split if decodes or not first_token_derived else None
    run: dict[str, Any] = {
        "total_s": total_s,
        "first_token_s": first_token_s,
        "post_first_s": post_first_s,
        "new_tokens": new_tokens,
        "prompt_tokens": prompt_tokens,
        "batch_size": batch_size,
        "first_token_derived": bool(first_token_derived),
        "tokens_per_s": _div(batch_size * new_tokens, total_s),
        "decode_tokens_per_s": _div(batch_size * decode_steps, post_first_s) if decodes else None,
        "decode_tokens_per_s_per_seq": _div(decode_steps, post_first_s) if decodes else None,
        "pre_first_tokens_per_s": _div(batch_size, first_token_s),
        "prefill_tokens_per_s": _div(batch_size * prompt_tokens, first_token_s),
        "mbu": None,
        "mfu": None,
    }
    if cost is not None:
        if first_token_derived and decodes and _above_peak(cost, run, prompt_tokens, batch_size):
            # A derived split faster than the hardware allows is the noise of two requests
            # (the 1-token one ran slow), not a decode time: undefined, like a negative split.
            for key in ("post_first_s", "decode_tokens_per_s", "decode_tokens_per_s_per_seq"):
                run[key] = None
        run["mbu"] = decode_mbu(cost, run, prompt_tokens=prompt_tokens, batch_size=batch_size)
        run["mfu"] = prefill_mfu(cost, run, prompt_tokens=prompt_tokens, batch_size=batch_size)
    return run


def _above_peak(cost: CostModel, run: dict, prompt_tokens: int, batch_size: int) -> bool:
    if not cost.peak_bytes_per_s:
        return False
    steps = run["new_tokens"] - 1
    total = decode_bytes(cost, prompt_tokens=prompt_tokens, steps=steps, batch_size=batch_size)
    return total / run["post_first_s"] / cost.peak_bytes_per_s > 1.0


def attended_positions(*, prompt_tokens: int, steps: int, window: int | None = None) -> int:
    """Cache positions attended over decode steps i = 1..steps, summed: step i attends
    prompt_tokens + i positions, at most `window` of them (None: no window)."""
    if steps <= 0:
        return 0
    total = steps * prompt_tokens + steps * (steps + 1) // 2
    if window is None:
        return total
    # Steps whose span still fits in the window: prompt_tokens + i <= window.
    inside = max(0, min(steps, window - prompt_tokens))
    return inside * prompt_tokens + inside * (inside + 1) // 2 + (steps - inside) * window


def decode_bytes(cost: CostModel, *, prompt_tokens: int, steps: int, batch_size: int) -> int:
    """Bytes `steps` decode steps must read: the decoder weights once per step, plus the K/V
    of every position each step attends, for each sequence of the batch."""
    window = cost.sliding_window or None
    kv = cost.kv_bytes_per_position_global * attended_positions(
        prompt_tokens=prompt_tokens, steps=steps
    ) + cost.kv_bytes_per_position_local * attended_positions(
        prompt_tokens=prompt_tokens, steps=steps, window=window
    )
    return cost.decode_weight_bytes * steps + batch_size * kv


def decode_mbu(cost: CostModel, run: dict, *, prompt_tokens: int, batch_size: int):
    steps = run["new_tokens"] - 1
    defined = decode_defined(
        post_first_s=run["post_first_s"],
        new_tokens=run["new_tokens"],
        first_token_derived=bool(run.get("first_token_derived", False)),
    )
    if not cost.peak_bytes_per_s or not defined:
        return None
    total = decode_bytes(cost, prompt_tokens=prompt_tokens, steps=steps, batch_size=batch_size)
    value = total / run["post_first_s"] / cost.peak_bytes_per_s
    _check_fraction("mbu", value)
    return value


def decode_limit(
    cost: CostModel, *, prompt_tokens: int, new_tokens: int, batch_size: int
) -> float | None:
    """Decode tokens/s (all sequences of the batch) at 100% of the peak bandwidth: batch_size x
    peak / the bytes one decode step reads, averaged over this request's new_tokens - 1 steps
    (the weights once per step + the K/V each step attends). None when the peak is unknown or
    there is no decode step."""
    steps = new_tokens - 1
    if not cost.peak_bytes_per_s or steps < 1:
        return None
    total = decode_bytes(cost, prompt_tokens=prompt_tokens, steps=steps, batch_size=batch_size)
    return batch_size * cost.peak_bytes_per_s * steps / total


def limit_metrics(cost: CostModel | None, run: dict[str, Any]) -> dict[str, float | None]:
    """A run's LIMIT_METRICS (`run`: run_metrics' figures): the limit's decode tokens/s, and the
    measured ms per decode step minus the limit's (None without a timed decode)."""
    out: dict[str, float | None] = dict.fromkeys(LIMIT_METRICS)
    if cost is None:
        return out
    batch, steps = run["batch_size"], run["new_tokens"] - 1
    limit = decode_limit(
        cost, prompt_tokens=run["prompt_tokens"], new_tokens=run["new_tokens"], batch_size=batch
    )
    out["limit_decode_tokens_per_s"] = limit
    defined = decode_defined(
        post_first_s=run["post_first_s"],
        new_tokens=run["new_tokens"],
        first_token_derived=bool(run.get("first_token_derived", False)),
    )
    if limit is not None and defined:
        measured_ms = 1000 * run["post_first_s"] / steps
        out["ms_per_step_above_limit"] = measured_ms - 1000 * batch / limit
    return out


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
