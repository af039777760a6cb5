"""Gemma 4 specifics: the embedded tiny Gemma 4, its vision and audio inputs as gemma's own
preprocessing builds them (patches with xy positions and a soft-token budget; 16 kHz clips),
and `Gemma4Sampler`'s steps streamed. models.py and engine.py call these for Gemma 4 archs."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from sweep.gemma_lib import import_gemma


def tiny_gemma4_module():
    """gemma's own Gemma 4 Transformer at toy size, with the features of E2B/E4B: sliding and
    global layers (global keys twice as wide), per-layer embeddings, the last half of the
    layers reading the KV cache of earlier ones, and a tiny patch-based vision encoder (one
    block, width 32, at most 4 soft tokens an image: 36 patches of 16 px after 3x3 pooling),
    and a tiny conformer audio encoder (one layer, width 32, 2 heads) projecting to embed_dim:
    gemma's own subsampling (4x in time) and mel front end, so a clip's soft tokens are those
    of E2B/E4B (25 a second)."""
    import_gemma()
    from gemma.gm.nn.gemma4 import _config, _modules, _transformer
    from gemma.gm.nn.gemma4.audio import _modules as audio_modules
    from gemma.gm.nn.gemma4.vision import _encoder

    local, glob = _modules.AttentionType.LOCAL_SLIDING, _modules.AttentionType.GLOBAL
    config = _config.TransformerConfig(
        num_embed=262144,  # the image token ids are fixed (255999, 258880, 258882)
        embed_dim=64,
        hidden_dim=256,
        num_heads=2,
        head_dim=32,
        num_kv_heads=1,
        final_logit_softcap=30.0,
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        attention_types=_config.make_attention_layers_types((local, glob), num_layers=4),
        sliding_window_size=64,
        global_key_size=64,
        global_rope_proportion=0.25,
        local_rope_proportion=1.0,
        local_base_frequency=10_000,
        global_base_frequency=1_000_000,
        per_layer_input_dim=8,
        # Layers 2 and 3 reuse the K/V of layers 0 (sliding) and 1 (global), as E2B's last 20.
        kv_cache_sharing_config=_config.KVCacheSharingConfig(
            frac_shared_layers=0.5, share_global=True, share_local=True
        ),
        vision_encoder=_encoder.VisionEncoder(
            d_model=32, num_layers=1, num_heads=2, ffw_hidden=64, output_length=4
        ),
        audio_encoder=audio_modules.ConformerConfig(
            num_layers=1, model_dims=32, lm_model_dims=64, atten_num_heads=2
        ),
    )
    return _transformer.Transformer(config=config)


def is_gemma4(model) -> bool:
    """Whether `model` (a gemma Transformer, or an IntWrapper of one) is a Gemma 4
    architecture: images as preprocessed patches, its own special tokens and tokenizer."""
    import_gemma()
    from gemma.gm.nn.gemma4 import _config as gemma4_config

    return isinstance(model.config, gemma4_config.TransformerConfig)


# Raw audio samples of the dummy clip `init` sees (1 s at gemma's 16 kHz): any length that
# leaves at least one soft token after the conformer's subsampling.
_INIT_AUDIO_SAMPLES = 16000


def init_inputs_gemma4(model) -> tuple[Any, dict[str, Any]]:
    """Gemma 4's dummy inputs, built as `gm.text.Gemma4Sampler` builds real ones.

    Text alone is not enough: without images the model initialises its vision encoder on
    dummy patches itself, but not `embedder.mm_input_projection` (which only an image reaches),
    and nothing initialises the audio encoder. So: one blank image through gemma's own
    preprocessing (`preprocess_and_patchify`) into a `PreprocessedVisionInput`, its
    `<|image|>` token expanded by `add_variable_extra_tokens_for_images`; and, where the
    config has an audio encoder, one silent clip whose `<|audio|>` token is expanded to one
    soft token by `add_variable_extra_tokens_for_audio`.
    """
    from gemma import gm
    from gemma.gm.vision import _token_utils

    special = gm.text.Gemma4Tokenizer.special_tokens
    config = model.config
    ids = [int(special.BOS)]
    kwargs: dict[str, Any] = {}
    if config.vision_encoder is not None:
        ids.append(int(special.IMAGE_PLACEHOLDER))
        kwargs["images"] = gemma4_vision_input(
            config.vision_encoder, np.zeros((1, 1, 48, 48, 3), np.uint8)
        )
    if getattr(config, "audio_encoder", None) is not None:
        ids.append(int(special.AUDIO_PLACEHOLDER))
        kwargs["audio"] = jnp.zeros((1, 1, _INIT_AUDIO_SAMPLES), jnp.float32)
        kwargs["audio_lengths"] = jnp.asarray([[_INIT_AUDIO_SAMPLES]], jnp.int32)
        kwargs["audio_soft_token_counts"] = (1,)
    ids.append(3)
    tokens = np.asarray([ids], np.int32)
    if "images" in kwargs:
        counts = list(kwargs["images"].soft_token_counts)
        tokens = _token_utils.add_variable_extra_tokens_for_images(tokens, soft_token_counts=counts)
    if "audio" in kwargs:
        tokens = _token_utils.add_variable_extra_tokens_for_audio(tokens, soft_token_counts=[1])
    return jnp.asarray(tokens), kwargs


def gemma4_soft_token_count(encoder, image_shape=None, budget: int | None = None) -> int:
    """Soft tokens of one image of `image_shape` ([H, W, ...]) under `budget`: gemma's own
    `predict_soft_token_count` (the aspect-preserving resize, then 3x3 pooling)."""
    from gemma.gm.nn.gemma4.vision import _preprocessing

    if image_shape is None:
        image_shape = (encoder.image_height, encoder.image_width)
    return _preprocessing.predict_soft_token_count(
        int(image_shape[0]),
        int(image_shape[1]),
        patch_size=encoder.patch_size,
        max_soft_tokens=budget or encoder.num_mm_tokens_per_image,
        pooling_kernel_size=encoder.pooling_kernel_size,
    )


def gemma4_audio_soft_token_count(num_samples: int) -> int:
    """Soft tokens of one clip of `num_samples`, exactly as `gm.text.Gemma4Sampler.sample`
    counts them: mel frames of 20 ms every 10 ms at its `audio_sample_rate`, two stride-2
    subsampling convolutions, capped at its `audio_seq_length` (750)."""
    import_gemma()
    from gemma import gm

    defaults = {f.name: f.default for f in dataclasses.fields(gm.text.Gemma4Sampler)}
    rate, cap = defaults["audio_sample_rate"], defaults["audio_seq_length"]
    frame_length = round(rate * 20.0 / 1000.0)
    hop_length = round(rate * 10.0 / 1000.0)
    t = (int(num_samples) - (frame_length + 1)) // hop_length + 1
    for _ in range(2):
        t = (t + 2 - 3) // 2 + 1
    return min(t, cap)


def with_image_budget(model, budget: int | None):
    """`model` (a Gemma 4 module, or an IntWrapper of one) whose vision encoder pools to
    `budget` soft tokens an image (`output_length`), the way Gemma 4 honours a budget: the
    patches come padded to 9 x budget, pooled 3x3. No param depends on it, so the same params
    serve every budget. `model` itself when `budget` is None or already the encoder's."""
    if budget is None or not is_gemma4(model):
        return model
    from gemma import gm

    if isinstance(model, gm.nn.IntWrapper):
        return model.clone(model=with_image_budget(model.model, budget))
    encoder = model.config.vision_encoder
    if encoder is None or encoder.num_mm_tokens_per_image == budget:
        return model
    config = dataclasses.replace(model.config, vision_encoder=encoder.clone(output_length=budget))
    return model.clone(config=config)


def gemma4_vision_input(encoder, images: np.ndarray, budget: int | None = None):
    """uint8 images [B, N, H, W, 3] as the `PreprocessedVisionInput` a Gemma 4 model takes:
    gemma's `preprocess_and_patchify` (aspect-preserving resize to the encoder's soft-token
    budget, patches padded to a common length, xy positions with -1 for padding), laid out as
    `gm.text.Gemma4Sampler._preprocess_images` does: every image of the batch in one row."""
    from gemma.gm.nn.gemma4 import _transformer as gemma4_transformer
    from gemma.gm.nn.gemma4.vision import _preprocessing

    flat = [np.asarray(img) for row in images for img in row]
    patches, positions_xy, counts = _preprocessing.preprocess_and_patchify(
        flat,
        patch_size=encoder.patch_size,
        max_soft_tokens=budget or encoder.num_mm_tokens_per_image,
        pooling_kernel_size=encoder.pooling_kernel_size,
    )
    n, max_patches = patches.shape[0], patches.shape[1]
    return gemma4_transformer.PreprocessedVisionInput(
        patches=jnp.reshape(patches, (1, n * max_patches, patches.shape[2])),
        positions_xy=jnp.reshape(positions_xy, (1, n * max_patches, positions_xy.shape[2])),
        soft_token_counts=tuple(int(c) for c in counts),
    )


def gemma4_audio_inputs(tokens: np.ndarray, clips: np.ndarray):
    """((audio [1, N, samples] float32, lengths [1, N] int32), expanded tokens, soft-token
    counts) for prompt `tokens` [B, L] with one `<|audio|>` a row and the `clips` [B, samples],
    laid out as `gm.text.Gemma4Sampler.sample` lays them out (its count, its expansion)."""
    from gemma.gm.vision import _token_utils

    counts = tuple(gemma4_audio_soft_token_count(clip.shape[-1]) for clip in clips)
    tokens = _token_utils.add_variable_extra_tokens_for_audio(
        np.asarray(tokens), soft_token_counts=list(counts)
    )
    audio = np.asarray(clips, np.float32)[None]
    lengths = np.asarray([[clip.shape[-1] for clip in clips]], np.int32)
    return (audio, lengths), tokens, counts


def gemma4_stream(sampler, tokens: np.ndarray, images, max_new_tokens: int, audio=None):
    """`gm.text.Gemma4Sampler.sample(prompts, images=images)` streamed, from the prompts'
    tokens [B, L] (BOS included): its very steps
    (tokenize, gemma's image preprocessing and `<|image|>` expansion, `_prefill.prefill`, the
    `SamplerLoop`) with `stream=True`, which `Gemma4Sampler.sample` does not expose; yields
    the sampling state after each token, as `gm.text.Sampler.sample(stream=True)` does.
    `audio`: one clip a prompt [B, samples], as `Gemma4Sampler.sample(audio=...)` takes it."""
    from gemma.gm.text import _prefill, _sampler_loop
    from gemma.gm.text import _sampler as gemma_sampler
    from gemma.gm.utils import _types
    from gemma.gm.vision import _token_utils

    tokenizer = sampler.tokenizer
    input_config = sampler.model.config.input_config
    vision_input = None
    if images:
        vision_input = sampler._preprocess_images(images)
        tokens = _token_utils.add_variable_extra_tokens_for_images(
            tokens, soft_token_counts=list(vision_input.soft_token_counts)
        )
        input_config = _types.InputConfig(
            support_images=True,
            num_tokens_per_image=input_config.num_tokens_per_image,
            special_tokens=input_config.special_tokens,
            already_expanded=True,
        )
    audio_args = dict(audio=None, audio_lengths=None, audio_soft_token_counts=())
    if audio is not None:
        (clips, lengths), tokens, counts = gemma4_audio_inputs(tokens, audio)
        audio_args = dict(
            audio=jnp.asarray(clips),
            audio_lengths=jnp.asarray(lengths),
            audio_soft_token_counts=counts,
        )
    init_state = _prefill.prefill(
        model=sampler.model,
        params=sampler.params,
        input=_types.Input(text=jnp.asarray(tokens), images=None, config=input_config),
        last_state=None,
        cache_length=sampler.cache_length,
        pad_length=sampler.pad_length,
        rng=gemma_sampler._normalize_rng(0),
        sharding=None,
        max_out_length=sampler.max_out_length,
        vision_input=vision_input,
        **audio_args,
    )
    special = tokenizer.special_tokens
    loop = _sampler_loop.SamplerLoop(
        model=sampler.model,
        end_tokens=(special.EOS, special.END_OF_TURN, special.BEGIN_OF_TOOL_RESPONSE),
        forbidden_tokens=sampler._normalized_forbidden_tokens,
        sampling=sampler.sampling,
        cache_length=sampler.cache_length,
        special_tokens=special,
    )
    yield from loop.sample(
        params=sampler.params,
        init_state=init_state,
        max_new_tokens=jnp.asarray(max_new_tokens),
        stream=True,
    )
