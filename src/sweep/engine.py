"""Three ways to generate, one timing contract.

Every engine times a request the same way: the clock starts with the prompt as text and the
image as pixels on the host, and stops when the tokens are on the host and decoded to text
(`block_until_ready` / `device_get`). `first_token_s` is when the first generated token is on
the host; `new_tokens` is the count actually generated (EOS and <end_of_turn> are forbidden so
that exactly `max_new_tokens` come out, as gemma's Sampler does with `forbidden_tokens`).

- `FusedEngine` (ours): a jitted prefill that returns the first token (honest TTFT) and one
  jitted decode loop whose step count is a dynamic argument. Static (recompile): model, batch,
  prompt shape, image shape, cache length. Dynamic: params, tokens, images, step count.
  Both programs are also stored on disk (sweep/programs.py), so a warm process skips tracing.
- `SamplerEngine`: gemma's `gm.text.Sampler`. It exposes no first token, so `first_token_s` is a
  1-token generate of the same prompt timed right after the full one in the same run
  (decode = generate minus prefill, as optimum-benchmark does).
- `StreamEngine`: `Sampler.sample(..., stream=True)`, the per-token host loop the seed table
  was measured with.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from sweep.cpu_logits import activation_dtype, apply_model, with_cpu_logits_table
from sweep.gemma4 import (
    gemma4_audio_inputs,
    gemma4_stream,
    gemma4_vision_input,
    is_gemma4,
    with_image_budget,
)
from sweep.models import LoadedModel
from sweep.programs import StoredProgram
from sweep.request import Request, prompt_tokens_with_images


@dataclasses.dataclass(frozen=True, kw_only=True)
class Generation:
    """What one timed request produced."""

    first_token_s: float
    total_s: float
    new_tokens: int  # per sequence, actually generated
    prompt_tokens: int  # per sequence, including image soft tokens
    token_ids: np.ndarray  # int32 [B, new_tokens]
    texts: tuple[str, ...]
    # True when first_token_s was not observed within this request but timed as a separate
    # 1-token request (gemma's Sampler): post_first_s is then a difference of two requests.
    first_token_derived: bool = False


class Engine(Protocol):
    name: str

    def generate(self, request: Request) -> Generation: ...


def forbidden_token_ids(tokenizer) -> tuple[int, ...]:
    """The ids gemma's Sampler forbids when told to never stop (ours forbids the same)."""
    special = tokenizer.special_tokens
    stop = (special.EOS, special.END_OF_TURN, special.BEGIN_OF_TOOL_RESPONSE)
    return tuple(int(t) for t in (*stop, *tokenizer.FORBIDDEN_TOKENS))


def _now() -> float:
    return time.perf_counter()


class FusedEngine:
    name = "fused"

    def __init__(self, model: LoadedModel, *, cache_length: int, image_tokens: int | None = None):
        self.model = model
        self.cache_length = cache_length
        self.image_tokens = image_tokens
        self._gemma4 = is_gemma4(model.model)
        # Gemma 4: the vision encoder pools to the request's soft-token budget.
        self._module = with_image_budget(model.model, image_tokens)
        self._forbidden = jnp.asarray(forbidden_token_ids(model.tokenizer), jnp.int32)
        self._params = with_cpu_logits_table(model.params)
        # Stored programs (sweep/programs.py): a warm process skips tracing as well as compiling.
        self._static = static = f"{self._module!r}; cache_length={cache_length}"
        self._prefill = StoredProgram(
            functools.partial(_prefill, self._module, cache_length),
            name="prefill",
            static_key=static,
        )
        # Gemma 4 images: one prefill per tuple of per-image soft-token counts (static: they
        # size the expanded prompt), its patches and positions plain array arguments.
        self._gemma4_prefills: dict[tuple[int, ...], StoredProgram] = {}
        # Gemma 4 audio: likewise one prefill per tuple of per-clip soft-token counts.
        self._audio_prefills: dict[tuple[int, ...], StoredProgram] = {}
        # The prefill's cache is donated: the loop updates it in place instead of copying it.
        self._decode = StoredProgram(
            functools.partial(_decode, self._module),
            name="decode",
            static_key=static,
            donate_argnums=(2,),
        )

    def _gemma4_prefill(self, counts: tuple[int, ...]) -> StoredProgram:
        program = self._gemma4_prefills.get(counts)
        if program is None:
            program = self._gemma4_prefills[counts] = StoredProgram(
                functools.partial(_prefill_gemma4, self._module, self.cache_length, counts),
                name="prefill_gemma4",
                static_key=f"{self._static}; soft_token_counts={counts}",
            )
        return program

    def _audio_prefill(self, counts: tuple[int, ...]) -> StoredProgram:
        program = self._audio_prefills.get(counts)
        if program is None:
            program = self._audio_prefills[counts] = StoredProgram(
                functools.partial(_prefill_gemma4_audio, self._module, self.cache_length, counts),
                name="prefill_gemma4_audio",
                static_key=f"{self._static}; audio_soft_token_counts={counts}",
            )
        return program

    def _prefill_args(self, request: Request, ids: list[list[int]]):
        """(prefill program, its arguments, expanded prompt length) for `request`: the host
        part of a prefill (tokens, and Gemma 4's image preprocessing + token expansion)."""
        tokens = _right_pad(ids)
        if request.audio is not None:
            # As gm.text.Gemma4Sampler: every clip of the batch in one row [1, B, samples],
            # each row's <|audio|> expanded on the host to its clip's soft tokens.
            clips, tokens, counts = gemma4_audio_inputs(tokens, request.audio)
            audio, lengths = clips
            args = (self._params, jax.device_put(tokens), jax.device_put(audio))
            args = (*args, jax.device_put(lengths), self._forbidden)
            return self._audio_prefill(counts), args, tokens.shape[1]
        if request.images is not None and self._gemma4:
            from gemma.gm.vision import _token_utils

            vision = gemma4_vision_input(
                self._module.config.vision_encoder, request.images, budget=self.image_tokens
            )
            counts = tuple(vision.soft_token_counts)
            per_row = counts[: request.images.shape[1]]
            tokens = _token_utils.add_variable_extra_tokens_for_images(
                tokens, soft_token_counts=list(per_row)
            )
            # device_put, not jnp.asarray: the latter compiles a small staging program.
            args = (self._params, jax.device_put(tokens), vision.patches, vision.positions_xy)
            return self._gemma4_prefill(counts), (*args, self._forbidden), tokens.shape[1]
        images = None if request.images is None else jax.device_put(request.images)
        args = (self._params, jax.device_put(tokens), images, self._forbidden)
        length = tokens.shape[1]
        if request.images is not None:
            length += request.images.shape[1] * self.model.image_soft_tokens()
        return self._prefill, args, length

    def generate(self, request: Request) -> Generation:
        tokenizer = self.model.tokenizer
        start = _now()
        ids = [tokenizer.encode(p, add_bos=True) for p in request.prompts]
        prefill, args, prompt_tokens = self._prefill_args(request, ids)
        first, cache, pos = prefill(*args)
        first_host = np.asarray(jax.device_get(first))
        first_token_s = _now() - start
        steps = np.int32(request.max_new_tokens - 1)
        out, done, _ = self._decode(self._params, first, cache, pos, steps, self._forbidden)
        out_host, done_host = jax.device_get((out, done))
        n = 1 + int(done_host)
        token_ids = np.concatenate([first_host[:, None], out_host[:, : n - 1]], axis=1)
        texts = tuple(tokenizer.decode(row.tolist()) for row in token_ids)
        total_s = _now() - start
        return Generation(
            first_token_s=first_token_s,
            total_s=total_s,
            new_tokens=n,
            prompt_tokens=prompt_tokens,
            token_ids=token_ids,
            texts=texts,
        )

    def kv_cache_bytes(self, batch_size: int) -> int:
        """Bytes of the full KV cache the prefill hands the decode loop (`cache_length`)."""
        return _kv_cache_bytes(self.model, batch_size, self.cache_length)

    def program_memory(self, request: Request) -> dict[str, dict[str, int] | None]:
        """`memory_analysis()` of the prefill and decode programs compiled for `request`.

        Runs the prefill once (for the decode's real arguments) and lowers both programs with
        the arrays a timed call gets: after a warmup JAX serves them from its caches, so no
        compile happens. Outside any timed phase only (a first call compiles here).
        """
        from sweep.memory import program_memory

        ids = [self.model.tokenizer.encode(p, add_bos=True) for p in request.prompts]
        program, prefill_args, _ = self._prefill_args(request, ids)
        prefill = program.compiled(*prefill_args)
        first, cache, pos = program(*prefill_args)
        steps = np.int32(request.max_new_tokens - 1)
        decode = self._decode.compiled(self._params, first, cache, pos, steps, self._forbidden)
        return {"prefill": program_memory(prefill), "decode": program_memory(decode)}


def _kv_cache_bytes(model: LoadedModel, batch_size: int, cache_length: int) -> int:
    """The engines' KV cache: `cache_length` positions in the model's activation dtype."""
    from sweep.memory import kv_cache_bytes

    return kv_cache_bytes(
        model.model,
        batch_size=batch_size,
        cache_length=cache_length,
        dtype=activation_dtype(model.params),
    )


def _right_pad(ids: list[list[int]]) -> np.ndarray:
    if len({len(x) for x in ids}) != 1:
        raise ValueError("all prompts of a batch must tokenize to the same length")
    return np.asarray(ids, np.int32)


def _greedy(logits, forbidden):
    logits = logits.at[:, forbidden].set(-jnp.inf)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def _prefill(model, cache_length, params, tokens, images, forbidden):
    """Prompt (+ images) -> (first token [B], full-size KV cache, next position [B]).

    Runs the prompt against a cache exactly as long as the expanded prompt, so the model builds
    positions and the causal + bidirectional-image mask itself, then copies K/V into a cache of
    `cache_length` (static) that the decode loop fills.
    """
    length = tokens.shape[1]
    if images is not None:
        per_image = model.config.vision_encoder.num_mm_tokens_per_image + 3
        length += images.shape[1] * per_image
    return _prefill_run(model, cache_length, params, tokens, length, forbidden, images=images)


def _prefill_gemma4(model, cache_length, counts, params, tokens, patches, positions_xy, forbidden):
    """`_prefill` for a Gemma 4 prompt with images: `tokens` already expanded on the host
    (gemma's `add_variable_extra_tokens_for_images`), the images gemma's preprocessed patches
    and xy positions; `counts` (static) the soft tokens of each image."""
    from gemma.gm.nn.gemma4 import _transformer as gemma4_transformer

    images = gemma4_transformer.PreprocessedVisionInput(
        patches=patches, positions_xy=positions_xy, soft_token_counts=counts
    )
    length = tokens.shape[1]
    return _prefill_run(model, cache_length, params, tokens, length, forbidden, images=images)


def _prefill_gemma4_audio(
    model, cache_length, counts, params, tokens, audio, audio_lengths, forbidden
):
    """`_prefill` for a Gemma 4 prompt with audio: `tokens` already expanded on the host
    (gemma's `add_variable_extra_tokens_for_audio`), `audio` the raw clips [1, N, samples],
    `audio_lengths` [1, N]; `counts` (static) the soft tokens of each clip."""
    return _prefill_run(
        model,
        cache_length,
        params,
        tokens,
        tokens.shape[1],
        forbidden,
        audio=audio,
        audio_lengths=audio_lengths,
        audio_soft_token_counts=counts,
    )


def _prefill_run(model, cache_length, params, tokens, length, forbidden, **inputs):
    """What every prefill shares: the prompt (`length` positions once the model has inserted
    its soft tokens; `inputs` its images or audio) against a cache exactly that long, its K/V
    copied into the `cache_length` cache, and the first token picked."""
    batch = tokens.shape[0]
    dtype = activation_dtype(params)
    small = model.config.init_cache(batch_size=batch, dtype=dtype, cache_length=length)
    out = apply_model(
        model, {"params": params}, tokens=tokens, cache=small, return_last_only=True, **inputs
    )
    full = model.config.init_cache(batch_size=batch, dtype=dtype, cache_length=cache_length)
    cache = _write_prefix(full, out.cache)
    return _greedy(out.logits, forbidden), cache, jnp.full((batch,), length, jnp.int32)


# The decode loop attends to a prefix of the cache that grows with the position (256, 1024,
# 4096... slots, then the whole cache) instead of all `cache_length` slots on every step.
_FIRST_WINDOW = 256
_WINDOW_GROWTH = 4


def attention_windows(cache_length: int) -> tuple[int, ...]:
    """The cache prefixes the decode loop attends to, smallest first; the last is the cache."""
    windows = []
    window = _FIRST_WINDOW
    while window < cache_length:
        windows.append(window)
        window *= _WINDOW_GROWTH
    return (*windows, cache_length)


def _decode(model, params, first, cache, pos, steps, forbidden):
    """Generate `steps` (dynamic) more tokens greedily after `first`.

    Returns a [B, cache_length] buffer whose first columns are the tokens, the number of steps
    run, and the final cache (returned so that the donated input cache is updated in place).
    One compiled program serves every token count.

    Steps run in one loop per attention window: while every position fits in the first 256
    slots, gemma's attention reads only those, then 1024, and so on. The slots past the
    position are masked out either way, so the tokens are the same; the work per step follows
    the tokens generated instead of the cache size.
    """
    batch = first.shape[0]
    length = _cache_length(cache)
    out = jnp.zeros((batch, length), jnp.int32)
    tok, done = first, jnp.zeros((), jnp.int32)
    for window in attention_windows(length):
        # The steps whose new token still gets a slot inside this window.
        n = jnp.clip(jnp.minimum(steps - done, window - jnp.max(pos)), 0)
        view = _cache_prefix(cache, window)

        def body(i, carry, start=done):
            tok, view, pos, out = carry
            nxt, view, pos = decode_step(model, params, tok, view, pos, forbidden)
            out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, start + i))
            return nxt, view, pos + 1, out

        tok, view, pos, out = jax.lax.fori_loop(0, n, body, (tok, view, pos, out))
        cache = _write_prefix(cache, view)
        done = done + n
    return out, done, cache


def _cache_prefix(cache, window: int):
    """The first `window` slots of every layer's cache (the cache itself when it is that long)."""
    if window == _cache_length(cache):
        return cache
    return {
        name: dict(
            k=layer["k"][:, :window],
            v=layer["v"][:, :window],
            positions=layer["positions"][:, :window],
            end_index=layer["end_index"],
        )
        for name, layer in cache.items()
    }


def _write_prefix(cache, view):
    """`cache` with its first slots replaced by `view` (a prefix from `_cache_prefix`)."""
    if _cache_length(view) == _cache_length(cache):
        return view
    return {
        name: dict(
            k=jax.lax.dynamic_update_slice(layer["k"], view[name]["k"], (0, 0, 0, 0)),
            v=jax.lax.dynamic_update_slice(layer["v"], view[name]["v"], (0, 0, 0, 0)),
            positions=jax.lax.dynamic_update_slice(
                layer["positions"], view[name]["positions"], (0, 0)
            ),
            end_index=view[name]["end_index"],
        )
        for name, layer in cache.items()
    }


def _cache_length(cache) -> int:
    return next(iter(cache.values()))["k"].shape[1]


def decode_step(model, params, tok, cache, pos, forbidden):
    """One greedy step: token [B] at position [B] -> (next token, updated cache, position).

    The mask lets each sequence attend to every cache slot up to its own position.
    """
    mask = (jnp.arange(_cache_length(cache))[None, :] <= pos[:, None])[:, None, :]
    result = apply_model(
        model,
        {"params": params},
        tokens=tok[:, None],
        cache=cache,
        positions=pos[:, None],
        attention_mask=mask,
        return_last_only=True,
    )
    return _greedy(result.logits, forbidden), result.cache, pos


class _GemmaSamplerBase:
    def __init__(self, model: LoadedModel, *, cache_length: int, image_tokens: int | None = None):
        from gemma import gm

        self.model = model
        self.cache_length = cache_length
        self.image_tokens = image_tokens
        self._gemma4 = is_gemma4(model.model)
        # pad_length=None: prefill the prompt as it is, like the fused engine, so the engines
        # compare like for like (the library default pads prompts to 256 tokens).
        common = dict(
            params=model.params,
            tokenizer=model.tokenizer,
            forbidden_tokens=list(forbidden_token_ids(model.tokenizer)[:3]),
            cache_length=cache_length,
            max_out_length=cache_length,
            pad_length=None,
        )
        if not self._gemma4:
            self.sampler = gm.text.Sampler(model=model.model, **common)
            return
        # Gemma 4: gemma's Gemma4Sampler (preprocessed patches behind <|image|>; gm.text.Sampler
        # would pass raw pixels), its preprocessing under the encoder's patch/pooling sizes and
        # the request's budget, the encoder pooling to that budget (`with_image_budget`).
        module = with_image_budget(model.model, image_tokens)
        encoder = module.config.vision_encoder
        vision = {}
        if encoder is not None:
            vision = dict(
                patch_size=encoder.patch_size,
                max_soft_tokens=encoder.num_mm_tokens_per_image,
                pooling_kernel_size=encoder.pooling_kernel_size,
            )
        self.sampler = gm.text.Gemma4Sampler(model=module, **common, **vision)

    def kv_cache_bytes(self, batch_size: int) -> int:
        """The Sampler's KV cache: `cache_length` positions in the params' dtype, as ours."""
        return _kv_cache_bytes(self.model, batch_size, self.cache_length)

    def _images(self, request: Request):
        if request.images is None:
            return None
        if self._gemma4:  # Gemma4Sampler: a flat list, every image of the batch in order
            return [img for row in request.images for img in row]
        return request.images

    def _audio(self, request: Request) -> dict:
        """Gemma4Sampler's audio arguments: one clip a prompt, in order."""
        if request.audio is None:
            return {}
        return {"audio": [np.asarray(clip) for clip in request.audio]}

    def _prompt_tokens(self, request: Request) -> int:
        ids = self.model.tokenizer.encode(request.prompts[0], add_bos=True)
        if request.audio is not None:
            return len(ids) + self.model.audio_soft_tokens(request.audio.shape[-1])
        if request.images is None:
            return len(ids)
        num_images, shape = request.images.shape[1], request.images.shape[2:]
        return prompt_tokens_with_images(self.model, ids, num_images, shape, self.image_tokens)

    def _sample(self, request: Request, n: int, **kwargs):
        return self.sampler.sample(
            list(request.prompts),
            images=self._images(request),
            max_new_tokens=n,
            rng=0,
            **self._audio(request),
            **kwargs,
        )


class SamplerEngine(_GemmaSamplerBase):
    name = "sampler"

    def generate(self, request: Request) -> Generation:
        # The full generate first: when a call compiles (warmup), the compile lands in total_s,
        # as it does for the other engines, and post_first_s stays positive.
        start = _now()
        result = self._sample(request, request.max_new_tokens, return_state=True)
        state = result.state
        n = int(jax.device_get(state.step))
        token_ids = np.asarray(jax.device_get(state.predicted_tokens))[:, :n]
        total_s = _now() - start

        start = _now()
        first = self._sample(request, 1, return_state=True)
        jax.block_until_ready(first.state.predicted_tokens)
        first_token_s = _now() - start
        return Generation(
            first_token_s=first_token_s,
            total_s=total_s,
            new_tokens=n,
            prompt_tokens=self._prompt_tokens(request),
            token_ids=token_ids,
            texts=tuple(result.text),
            first_token_derived=True,
        )


class StreamEngine(_GemmaSamplerBase):
    name = "stream"

    def _states(self, request: Request):
        """The sampling state after each generated token."""
        if self._gemma4:
            tokenizer = self.sampler.tokenizer
            yield from gemma4_stream(
                self.sampler,
                _right_pad([tokenizer.encode(p, add_bos=True) for p in request.prompts]),
                self._images(request),
                request.max_new_tokens,
                audio=request.audio,
            )
            return
        for out in self._sample(request, request.max_new_tokens, stream=True, return_state=True):
            yield out.state

    def generate(self, request: Request) -> Generation:
        start = _now()
        first_token_s = None
        steps = []
        for state in self._states(request):
            if first_token_s is None:
                first_token_s = _now() - start
            steps.append(state)
        total_s = _now() - start
        if not steps:
            raise RuntimeError("stream engine generated no token")
        n = len(steps)
        state = steps[-1]
        token_ids = np.asarray(jax.device_get(state.predicted_tokens))[:, :n]
        texts = tuple(self.model.tokenizer.decode(row.tolist()) for row in token_ids)
        return Generation(
            first_token_s=first_token_s,
            total_s=total_s,
            new_tokens=n,
            prompt_tokens=self._prompt_tokens(request),
            token_ids=token_ids,
            texts=texts,
        )


ENGINES = {"fused": FusedEngine, "sampler": SamplerEngine, "stream": StreamEngine}


def make_engine(
    name: str, model: LoadedModel, *, cache_length: int, image_tokens: int | None = None
) -> Engine:
    """A new engine (`sweep.cache` keeps them per model, so a token sweep compiles once).
    `image_tokens`: a Gemma 4 image request's soft-token budget (`Request.image_tokens`)."""
    return ENGINES[name](model, cache_length=cache_length, image_tokens=image_tokens)
