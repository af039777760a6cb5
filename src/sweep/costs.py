"""What one request costs the hardware, for MBU and MFU: bytes read per decode step, FLOPs
per prefill token, and the peaks they are divided by (the topology's, or probed on a CPU).

`CostModel` is plain data, recorded with every job and read back by the merge (sweep/metrics.py
divides by it, without JAX); `cost_model` builds one from a loaded model (JAX imported there).

What a decode step reads (`decode_weights`, by each param's path):
- the decoder's weights, once per step (the tied input embedding counts whole: it is the
  logits' matmul);
- no encoder: `vision_encoder` and `audio_encoder` (and, for Gemma 3n/4, the `mm_*` /
  `audio_*` projections of their outputs into the embedding) are not on the decode path.
  Gemma 3 keeps its historical figure (`mm_input_projection` counted, ~0.1% of the weights)
  so its records stay comparable;
- per-layer embedding tables (Gemma 3n/4 E2B/E4B: (vocab, layers, dim)) are a lookup: one
  row per sequence of the batch per step, never the table;
- a mixture of experts (Gemma 4 26B A4B) reads its shared weights (router, attention, the
  dense `mlp2`, norms) and the routed experts only: top-k of each MoE layer at batch 1
  (exact: `decode_bytes_rule` "moe_top_k"); at batch B at most min(num_experts, B x k)
  distinct experts, an upper bound ("moe_upper_bound"). Dense models: "dense".
The batch size is part of the job, so `cost_model` takes it and the record's figure is the
one of its own batch (the design with no per-batch arithmetic on the results side).
"""

from __future__ import annotations

import dataclasses
from typing import Any

# How `decode_weight_bytes` was counted (see the module docstring); older records: "dense".
DECODE_BYTES_RULES = ("dense", "moe_top_k", "moe_upper_bound")

# Params never on the decode path (top-level subtrees), and the embedder's projections of
# encoder outputs (Gemma 3n/4 only: Gemma 3 keeps its historical figure).
_ENCODERS = ("vision_encoder", "audio_encoder")
_ENCODER_PROJECTION_PREFIXES = ("mm_", "audio_")
# Per-layer embedding tables: Gemma 4 (`per_layer_embeddings`), Gemma 3n
# (`per_layer_input_embedding`), shaped (vocab, layers, dim).
_LOOKUP_TABLES = ("per_layer_embeddings", "per_layer_input_embedding")
# The leaves of a MoE block (gemma4 `MoERagged`, under `mlp`) with one slice per expert.
_EXPERT_LEAVES = ("gating_einsum", "linear", "per_expert_scale")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CostModel:
    """What the hardware must do per request; static for a job."""

    # Weight bytes one decode step reads (the whole batch): see the module docstring.
    decode_weight_bytes: int
    # K+V bytes of one cached position, one sequence: global layers, and sliding-window layers
    # (which attend at most `sliding_window` positions). Layers that reuse another layer's K/V
    # (Gemma 3n/4 KV cache sharing) add nothing: the positions are read once.
    kv_bytes_per_position_global: int
    kv_bytes_per_position_local: int
    sliding_window: int | None
    prefill_flops_per_token: int  # 2 x decoder matmul params a token goes through
    peak_bytes_per_s: float | None  # all chips together; None = unknown
    peak_flops: float | None  # all chips together; None = unknown
    # "dense" | "moe_top_k" (exact, batch 1) | "moe_upper_bound" (batch > 1: a bound).
    decode_bytes_rule: str = "dense"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecodeWeights:
    """A params tree's bytes (and params) by what a decode step does with them."""

    dense_bytes: int  # read whole every step
    encoder_bytes: int  # never read by a decode step
    lookup_bytes: int  # per-layer embedding tables, whole
    lookup_row_bytes: int  # one token's rows of every table
    expert_bytes: int  # every expert of every MoE layer
    num_experts: int  # per MoE layer (0: dense)
    top_k: int  # experts a token is routed to
    # The same split in params, for the prefill FLOPs.
    dense_params: int
    encoder_params: int
    lookup_params: int
    expert_params: int

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0 and self.expert_bytes > 0

    def experts_read(self, batch_size: int) -> int:
        """Distinct experts (per MoE layer) a decode step of `batch_size` reads, at most."""
        return min(self.num_experts, batch_size * self.top_k) if self.is_moe else 0

    def bytes_per_step(self, batch_size: int = 1) -> int:
        """Weight bytes one decode step of `batch_size` sequences reads."""
        lookup = min(batch_size, self._vocab_rows()) * self.lookup_row_bytes
        experts = 0
        if self.is_moe:
            experts = self.expert_bytes * self.experts_read(batch_size) // self.num_experts
        return self.dense_bytes + lookup + experts

    def rule(self, batch_size: int = 1) -> str:
        if not self.is_moe:
            return "dense"
        return "moe_top_k" if batch_size == 1 else "moe_upper_bound"

    def _vocab_rows(self) -> int:
        return self.lookup_bytes // self.lookup_row_bytes if self.lookup_row_bytes else 0


def _family(config) -> str:
    """ "gemma4", "gemma3n" or "gemma3" (gm.nn.Transformer's own config)."""
    module = type(config).__module__
    for name in ("gemma4", "gemma3n"):
        if f".{name}." in module:
            return name
    return "gemma3"


def _keys(path) -> tuple[str, ...]:
    out = []
    for entry in path:
        key = getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry)))
        out.append(str(key))
    return tuple(out)


def param_kind(keys: tuple[str, ...], *, family: str, moe: bool) -> str:
    """ "encoder", "lookup", "expert" or "dense": what a decode step does with the param at
    `keys` (its path in the params tree)."""
    if keys and keys[0] in _ENCODERS:
        return "encoder"
    if len(keys) > 1 and keys[0] == "embedder":
        if keys[1] in _LOOKUP_TABLES:
            return "lookup"
        if family != "gemma3" and keys[1].startswith(_ENCODER_PROJECTION_PREFIXES):
            return "encoder"
    in_moe = moe and len(keys) > 2 and keys[0].startswith("layer_") and keys[1] == "mlp"
    if in_moe and keys[2] in _EXPERT_LEAVES:
        return "expert"
    return "dense"


def decode_weights(module, params) -> DecodeWeights:
    """Split `params` (arrays or ShapeDtypeStructs) of `module` (a gemma Transformer or an
    IntWrapper of one) by what a decode step reads."""
    import jax

    from sweep.models import dtype_bits

    config = module.config
    family = _family(config)
    moe = bool(getattr(config, "enable_moe", False))
    num_experts = int(getattr(config, "num_experts", 0) or 0) if moe else 0
    top_k = int(getattr(config, "top_k_experts", 0) or 0) if moe else 0
    totals = dict.fromkeys(("dense", "encoder", "lookup", "expert"), 0)
    counts = dict.fromkeys(totals, 0)
    row_bytes = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        kind = param_kind(_keys(path), family=family, moe=moe)
        nbytes = leaf.size * dtype_bits(leaf.dtype) // 8
        totals[kind] += nbytes
        counts[kind] += leaf.size
        if kind == "lookup":
            row_bytes += nbytes // leaf.shape[0]  # (vocab, layers, dim): one token's rows
    return DecodeWeights(
        dense_bytes=totals["dense"],
        encoder_bytes=totals["encoder"],
        lookup_bytes=totals["lookup"],
        lookup_row_bytes=row_bytes,
        expert_bytes=totals["expert"],
        num_experts=num_experts,
        top_k=top_k,
        dense_params=counts["dense"],
        encoder_params=counts["encoder"],
        lookup_params=counts["lookup"],
        expert_params=counts["expert"],
    )


def prefill_matmul_params(weights: DecodeWeights, embed_params: int) -> int:
    """Params a prefill token goes through in matmuls: the decoder's dense weights but the
    input embedding (a lookup in prefill), and its top-k experts of each MoE layer."""
    experts = 0
    if weights.is_moe:
        experts = weights.expert_params * weights.top_k // weights.num_experts
    return weights.dense_params - embed_params + experts


def kv_bytes_per_position(config, dtype) -> tuple[int, int]:
    """(global, local) K+V bytes of one cached position of one sequence, over the layers
    that own their K/V.

    `config.init_cache` allocates K/V for every layer, also for the layers that, with Gemma
    3n/4 KV cache sharing, attend to an earlier layer's K/V instead (their own stays
    unread), so those layers are left out here: each position is read once, by its owner.
    An owner counts as sliding-window only when every layer reading it is."""
    import jax

    cache = jax.eval_shape(lambda: config.init_cache(batch_size=1, dtype=dtype, cache_length=1))
    types = tuple(getattr(config, "attention_types", None) or ())
    window = getattr(config, "sliding_window_size", None)
    owners = kv_owners(config)
    local_only: dict[int, bool] = {}
    for i, owner in enumerate(owners):
        is_local = i < len(types) and "LOCAL" in str(types[i]).upper()
        local_only[owner] = local_only.get(owner, True) and is_local
    kv_global = kv_local = 0
    for name, layer in cache.items():
        i = _layer_index(name)
        if i < len(owners) and owners[i] != i:
            continue  # reads layer owners[i]'s K/V
        per_pos = sum(layer[k].size * layer[k].dtype.itemsize for k in ("k", "v"))
        if local_only.get(i, False) and window:
            kv_local += per_pos
        else:
            kv_global += per_pos
    return kv_global, kv_local


def kv_owners(config) -> list[int]:
    """For each layer, the layer whose K/V it attends to (itself, unless KV cache sharing
    gives it an earlier one's), by gemma's own `create_kv_cache_sharing_patterns`."""
    types = tuple(getattr(config, "attention_types", None) or ())
    sharing = getattr(config, "kv_cache_sharing_config", None)
    family = _family(config)
    if sharing is None or family == "gemma3":
        return list(range(len(types)))
    if family == "gemma4":
        from gemma.gm.nn.gemma4 import _config as family_config
    else:
        from gemma.gm.nn.gemma3n import _config as family_config
    return list(family_config.create_kv_cache_sharing_patterns(sharing, len(types), types))


def cost_model(model, topology, env: dict[str, Any], *, batch_size: int = 1) -> CostModel:
    """Bytes and FLOPs per request for MBU/MFU, with the topology's (or probed) peaks.
    `topology`: a `sweep.config.TopologyConfig`; `env`: the record's env block, which gains the
    CPU probe's figures; `batch_size`: the job's (a MoE's decode reads more experts per step
    for a larger batch, the per-layer embeddings one row per sequence)."""
    import jax

    from sweep.env import cpu_read_peak

    params = model.params
    weights = decode_weights(model.model, params)
    embed = params["embedder"]["input_embedding"]
    matmul_params = prefill_matmul_params(weights, embed.size)

    dtype = jax.tree.leaves(params)[0].dtype
    kv_global, kv_local = kv_bytes_per_position(model.config, dtype)
    window = getattr(model.config, "sliding_window_size", None)

    decode_weight_bytes = weights.bytes_per_step(batch_size)
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
        decode_bytes_rule=weights.rule(batch_size),
    )


def _layer_index(name: str) -> int:
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else 0
