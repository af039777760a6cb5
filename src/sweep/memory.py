"""Memory figures: what the weights, the KV cache and the compiled programs take, and the peak.

One place for the numbers the record's `memory` block holds and the fit check compares against
the topology's memory (`preflight.fit_problem`): weight and KV cache bytes are shape arithmetic
(`jax.eval_shape`, no weight built, no device touched); program figures come from XLA
(`compiled.memory_analysis()`); the peak from the device's allocator where the backend keeps
one (`memory_stats()`), else the process's peak RSS (CPU).
"""

from __future__ import annotations

import sys
from typing import Any

# `CompiledMemoryStats` attribute -> the record's key (`memory.programs.<name>.<key>`).
PROGRAM_FIELDS = {
    "temp_size_in_bytes": "temp_bytes",
    "argument_size_in_bytes": "argument_bytes",
    "output_size_in_bytes": "output_bytes",
    "alias_size_in_bytes": "alias_bytes",
    "generated_code_size_in_bytes": "generated_code_bytes",
}


def weight_bytes(model_config, quant: str = "none") -> int:
    """The weights' bytes for `model_config` (a `config.ModelConfig`) and `quant`, from shapes.

    With int8/int4 the matmul kernels shrink and the embeddings and norms stay as they are.
    """
    from sweep.models import dtype_bits, module_for, param_shapes, tree_bytes

    shapes = param_shapes(module_for(model_config), dtype=model_config.dtype)
    weights = tree_bytes(shapes)
    if quant != "none":
        embed = tree_bytes(shapes["embedder"])
        bits = {"int8": 8, "int4": 4}[quant]
        weights = embed + (weights - embed) * bits // dtype_bits(model_config.dtype)
    return weights


def kv_cache_bytes(module, *, batch_size: int, cache_length: int, dtype) -> int:
    """Bytes of the KV cache `module` (a gemma Transformer) allocates for `batch_size`
    sequences of `cache_length` positions (`module.config.init_cache`, by `jax.eval_shape`)."""
    import jax

    from sweep.models import tree_bytes

    cache = jax.eval_shape(
        lambda: module.config.init_cache(
            batch_size=batch_size, dtype=dtype, cache_length=cache_length
        )
    )
    return tree_bytes(cache)


def program_memory(compiled) -> dict[str, int] | None:
    """`compiled.memory_analysis()` (a `jax.stages.Compiled`) as the record's figures, or None
    where the backend gives none."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # a backend without the analysis
        return None
    if stats is None:
        return None
    figures = {}
    for attr, key in PROGRAM_FIELDS.items():
        value = getattr(stats, attr, None)
        if value is not None:
            figures[key] = int(value)
    return figures or None


def peak_bytes() -> tuple[int | None, str | None]:
    """(peak bytes, source): the devices' `peak_bytes_in_use` (the largest over this process's
    devices, "device") where the backend keeps it, else the process's peak RSS ("process_rss",
    CPU). Both are this process's peak so far: with a reused process, over every job it ran."""
    import jax

    peaks = []
    for device in jax.local_devices():
        try:
            stats = device.memory_stats()
        except Exception:  # a backend without allocator stats
            stats = None
        if stats and stats.get("peak_bytes_in_use") is not None:
            peaks.append(int(stats["peak_bytes_in_use"]))
    if peaks:
        return max(peaks), "device"
    rss = peak_rss_bytes()
    return (rss, "process_rss") if rss is not None else (None, None)


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory so far (all jobs it ran, not this job alone)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes; Linux: KiB


def programs_reason(engine: Any) -> str:
    """Why `engine` has no program figures (gemma's Sampler compiles its own programs)."""
    return (
        f"engine={engine.name} runs gemma's Sampler, whose programs are compiled inside the "
        "library: only the fused engine's prefill and decode are analysed"
    )
