"""What one request costs the hardware, for MBU and MFU: bytes read per decode step, FLOPs
per prefill token, and the peaks they are divided by (the topology's, or probed on a CPU).

`CostModel` is plain data, recorded with every job and read back by the merge (sweep/metrics.py
divides by it, without JAX); `cost_model` builds one from a loaded model (JAX imported there).
"""

from __future__ import annotations

import dataclasses
from typing import Any


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


def cost_model(model, topology, env: dict[str, Any]) -> CostModel:
    """Bytes and FLOPs per request for MBU/MFU, with the topology's (or probed) peaks.
    `topology`: a `sweep.config.TopologyConfig`; `env`: the record's env block, which gains the
    CPU probe's figures."""
    import jax

    from sweep.env import cpu_read_peak

    params = model.params
    vision_bytes = model.image_encoder_bytes()
    embed = params["embedder"]["input_embedding"]
    decoder_params = model.num_params - model.image_encoder_params()
    matmul_params = decoder_params - embed.size  # the embedding is a lookup in prefill

    dtype = jax.tree.leaves(params)[0].dtype
    cache = jax.eval_shape(
        lambda: model.config.init_cache(batch_size=1, dtype=dtype, cache_length=1)
    )
    types = getattr(model.config, "attention_types", None) or ()
    window = getattr(model.config, "sliding_window_size", None)
    kv_global = kv_local = 0
    for i, (_, layer) in enumerate(sorted(cache.items(), key=lambda kv: _layer_index(kv[0]))):
        per_pos = sum(layer[k].size * layer[k].dtype.itemsize for k in ("k", "v"))
        is_local = i < len(types) and "LOCAL" in str(types[i]).upper()
        if is_local and window:
            kv_local += per_pos
        else:
            kv_global += per_pos

    decode_weight_bytes = model.param_bytes - vision_bytes
    if topology.platform == "cpu":
        probe = cpu_read_peak(decode_weight_bytes)  # shared with tools/bench_engines.py
        env.update(probe)
        peak_bytes = probe["cpu_read_bytes_per_s"]
        peak_flops = topology.peak_bf16_flops
    else:
        chips = topology.num_devices
        peak_bytes = topology.peak_hbm_bytes_per_s and topology.peak_hbm_bytes_per_s * chips
        peak_flops = topology.peak_bf16_flops and topology.peak_bf16_flops * chips
    return CostModel(
        decode_weight_bytes=decode_weight_bytes,
        kv_bytes_per_position_global=kv_global,
        kv_bytes_per_position_local=kv_local,
        sliding_window=window,
        prefill_flops_per_token=2 * matmul_params,
        peak_bytes_per_s=peak_bytes,
        peak_flops=peak_flops,
    )


def _layer_index(name: str) -> int:
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else 0
