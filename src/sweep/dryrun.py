"""`dry_run=true`: each job of the sweep prints one line instead of running: its overrides, the
fit check's verdict (`preflight.fit_problem`) and the estimated weight and KV cache bytes, all
from shapes (`jax.eval_shape`). No model is built, nothing is compiled, no record is written.
"""

from __future__ import annotations

from typing import Any

from sweep.config import Config


def estimated_bytes(config: Config, cache_length: int) -> tuple[int, int]:
    """(weight bytes, KV cache bytes) of the job, from shapes alone (`sweep.memory`: the
    numbers the fit check and the record's `memory` block use)."""
    from sweep.memory import kv_cache_bytes, weight_bytes
    from sweep.models import module_for

    kv = kv_cache_bytes(
        module_for(config.model),
        batch_size=config.batch_size,
        cache_length=cache_length,
        dtype=config.model.dtype,
    )
    return weight_bytes(config.model, config.quant), kv


def describe(config: Config) -> str:
    """The fit verdict and the byte estimates of one valid job's config."""
    from sweep.preflight import fit_problem, resolved_cache_length

    cache_length = resolved_cache_length(config)  # the request's (tokenizer only, no weights)
    weights, kv = estimated_bytes(config, cache_length)
    verdict = fit_problem(config, cache_length)
    fits = "fits" if verdict is None else f"does not fit: {verdict}"
    return (
        f"weights {_size(weights)} ({weights} B) + KV cache {_size(kv)} ({kv} B; batch "
        f"{config.batch_size} x {cache_length} positions); {fits}"
    )


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def dry_run_line(config: Config | None, label: str, job: Any, problem: str | None = None) -> str:
    """`[dry run] job <n>: <overrides>: <what it would need, whether it fits>`."""
    what = problem or describe(config)
    return f"[dry run] job {job}: {label}: {what}"
