"""The fused engine's CPU logits table: the output projection kept as float32 [embed, vocab]
so that XLA on a CPU does not convert and transpose the bf16 table on every decode call, and
`apply_model`, the model call that reads it (a flax method interceptor on Embedder.decode)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

_LOGITS_TABLE = "cpu_logits_table"  # extra leaf under params["embedder"]


def with_cpu_logits_table(params):
    """`params` plus the output projection as float32 [embed, vocab], or `params` unchanged.

    XLA on CPU has no fast bf16 matvec: on every decode call it converts the [vocab, embed]
    table to float32 and transposes it (1.7 s and 1.3 GB of temporaries per call for 270M, on
    one thread, before the first step). Doing it once per engine skips that on every call. The
    numbers do not change: it is the same float32 dot XLA runs, rounded to the activation dtype
    as before. Only for one CPU device; an accelerator reads bf16 natively, and its memory is
    better spent on the KV cache.
    """
    table = _embedding_table(params)
    if not isinstance(table, jax.Array) or table.ndim != 2:
        return params
    if not jnp.issubdtype(table.dtype, jnp.floating):  # a quantized table needs its scales
        return params
    devices = table.sharding.device_set
    if len(devices) != 1 or next(iter(devices)).platform != "cpu":
        return params
    table_t = jax.jit(lambda t: t.astype(jnp.float32).T)(table)
    return {**params, "embedder": {**params["embedder"], _LOGITS_TABLE: table_t}}


def _logits_from_table(next_fun, args, kwargs, context):
    """Embedder.decode from the float32 [embed, vocab] table when the params carry one."""
    module = context.module
    if context.method_name != "decode" or not module.has_variable("params", _LOGITS_TABLE):
        return next_fun(*args, **kwargs)
    (x,) = args
    table_t = module.get_variable("params", _LOGITS_TABLE)
    return jnp.dot(x.astype(table_t.dtype), table_t).astype(x.dtype)


def _embedding_table(params):
    return params.get("embedder", {}).get("input_embedding")


def activation_dtype(params):
    """The model's dtype: that of its embedding table (not of the engine's extra leaf)."""
    table = _embedding_table(params)
    return table.dtype if table is not None else jax.tree.leaves(params)[0].dtype


def apply_model(model, *args, **kwargs):
    with nn.intercept_methods(_logits_from_table):
        return model.apply(*args, **kwargs)
