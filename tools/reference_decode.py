"""The yardstick: a bare jitted prefill + one `lax.scan` decode of exactly N tokens.

Deliberately minimal (the shape of spikes/fused_decode.py): no dynamic step count, no
forbidden-token bookkeeping beyond what forcing N tokens needs, and the params exactly as loaded
(none of the fused engine's per-backend preparation, e.g. its float32 CPU logits table).
`tools/bench_engines.py` times the real engines against it; the fused engine should match or
beat it. It recompiles for every N.

`prefix_logits` is the same model's next-token logits after a prompt and a token prefix (one
forward pass, no cache): `tools/bench_engines.py` asks it whether two engines that pick
different tokens at some step faced a tie there.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from sweep.engine import Generation, _prefill, decode_step, forbidden_token_ids
from sweep.request import Request


class ReferenceEngine:
    name = "reference"

    def __init__(self, model, *, cache_length: int):
        self.model = model
        self._forbidden = jnp.asarray(forbidden_token_ids(model.tokenizer), jnp.int32)
        self._prefill = jax.jit(functools.partial(_prefill, model.model, cache_length))
        self._decode = jax.jit(functools.partial(_scan_decode, model.model), static_argnames="n")

    def generate(self, request: Request) -> Generation:
        tok = self.model.tokenizer
        start = time.perf_counter()
        ids = [tok.encode(p, add_bos=True) for p in request.prompts]
        tokens = jax.device_put(np.asarray(ids, np.int32))
        first, cache, pos = self._prefill(self.model.params, tokens, None, self._forbidden)
        first_host = np.asarray(jax.device_get(first))
        first_token_s = time.perf_counter() - start
        rest = self._decode(
            self.model.params, first, cache, pos, self._forbidden, n=request.max_new_tokens - 1
        )
        token_ids = np.concatenate([first_host[:, None], np.asarray(jax.device_get(rest))], 1)
        texts = tuple(tok.decode(row.tolist()) for row in token_ids)
        return Generation(
            first_token_s=first_token_s,
            total_s=time.perf_counter() - start,
            new_tokens=token_ids.shape[1],
            prompt_tokens=len(ids[0]),
            token_ids=token_ids,
            texts=texts,
        )


def _scan_decode(model, params, first, cache, pos, forbidden, n):
    """The same greedy step as the fused engine, in a `lax.scan` of static length `n`."""

    def step(carry, _):
        tok, cache, pos = carry
        nxt, cache, pos = decode_step(model, params, tok, cache, pos, forbidden)
        return (nxt, cache, pos + 1), nxt

    _, toks = jax.lax.scan(step, (first, cache, pos), None, length=n)
    return toks.T


def prefix_logits(model, prompt: str, prefix) -> np.ndarray:
    """Next-token logits (float32 [vocab]) after `prompt` (with BOS) and the generated token ids
    `prefix`: one jitted forward pass of `model.apply` over the whole sequence (no KV cache),
    with the params exactly as loaded; the tokens every engine forbids are -inf."""
    ids = model.tokenizer.encode(prompt, add_bos=True) + [int(t) for t in prefix]
    tokens = jax.device_put(np.asarray([ids], np.int32))

    @jax.jit
    def forward(params, tokens):
        out = model.model.apply({"params": params}, tokens=tokens, return_last_only=True)
        return out.logits.astype(jnp.float32)

    logits = np.array(jax.device_get(forward(model.params, tokens))).reshape(-1)
    logits[list(forbidden_token_ids(model.tokenizer))] = -np.inf
    return logits
