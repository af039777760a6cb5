"""Model config -> (gemma Transformer, params, tokenizer), built once per process.

`tiny` is gemma's own Gemma 3 Transformer at toy size with a tiny SigLIP encoder, so it runs
anywhere with no download. The other archs are gemma's own classes (`gm.nn.Gemma3_4B`, ...):
random-initialised when `checkpoint` is null (timing is the real model's, outputs are noise),
else loaded from a local orbax checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sweep.config import ModelConfig
from sweep.tokenizer import local_tokenizer_path

# Greedy decoding with these forbidden forces exactly `tokens` new tokens.
# (EOS, <end_of_turn>; gemma's Sampler adds BEGIN_OF_TOOL_RESPONSE itself.)
STOP_TOKEN_IDS = (1, 106)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadedModel:
    """Static things an engine needs. Never mutated; shared by every job of a process."""

    name: str
    model: Any  # gm.nn.Transformer (a flax module: hashable, static under jit)
    params: Any  # pytree of jax arrays (dynamic under jit)
    tokenizer: Any  # gm.text.Tokenizer
    num_params: int
    param_bytes: int
    source: str  # "random-init (seed N)" or the checkpoint path

    @property
    def config(self):
        return self.model.config

    @property
    def has_vision(self) -> bool:
        return self.model.config.vision_encoder is not None

    def image_soft_tokens(self) -> int:
        """Prompt tokens one image adds: `<start_of_image>` becomes \\n\\n + soft tokens +
        `<end_of_image>` + \\n\\n."""
        return self.model.config.vision_encoder.num_mm_tokens_per_image + 3

    def image_encoder_params(self) -> int:
        vision = self.params.get("vision_encoder")
        return sum(x.size for x in jax.tree.leaves(vision)) if vision is not None else 0


_CACHE: dict[tuple, LoadedModel] = {}


def load_model(cfg: ModelConfig, *, seed: int) -> tuple[LoadedModel, bool]:
    """The model for `cfg`, and whether it came from this process's cache."""
    key = (dataclasses.astuple(cfg), seed)
    if key in _CACHE:
        return _CACHE[key], True
    loaded = _build(cfg, seed=seed)
    _CACHE.clear()  # hold one model at a time: a sweep over models must not pile them up
    _CACHE[key] = loaded
    return loaded, False


def _tiny_module():
    from gemma import gm
    from gemma.gm.nn.vision import _vision, _vision_utils

    vision = _vision.SigLiPFromPatches(
        siglip_encoder=_vision_utils.ViTModel(
            patch_size=(14, 14), width=32, depth=1, mlp_dim=64, num_heads=2
        ),
        siglip_exit=_vision.VisionExit(output_length=4),
        num_mm_tokens_per_image_prepool=16,
        num_mm_tokens_per_image=4,
        image_height=56,
        image_width=56,
    )
    config = gm.nn.config.TransformerConfig(
        num_embed=262144,  # Gemma 3's vocabulary: the image token ids are fixed
        embed_dim=64,
        hidden_dim=256,
        num_heads=2,
        head_dim=32,
        num_kv_heads=1,
        final_logit_softcap=None,
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        use_qk_norm=True,
        attention_types=gm.nn.config.make_attention_layers_types(
            gm.nn.config.GEMMA3_ATTENTION_PATTERN, num_layers=2
        ),
        sliding_window_size=64,
        transpose_gating_einsum=True,
        vision_encoder=vision,
    )
    return gm.nn.Transformer(config=config)


def _module(cfg: ModelConfig):
    if cfg.arch == "tiny":
        return _tiny_module()
    from gemma import gm

    cls = getattr(gm.nn, cfg.arch)
    return cls(text_only=True) if cfg.text_only and _accepts_text_only(cls) else cls()


def _accepts_text_only(cls) -> bool:
    return any(f.name == "text_only" for f in dataclasses.fields(cls))


def _tokenizer(cfg: ModelConfig):
    from gemma import gm

    path = Path(cfg.tokenizer) if cfg.tokenizer else local_tokenizer_path()
    return gm.text.Gemma3Tokenizer(path=os.fspath(path))


def _build(cfg: ModelConfig, *, seed: int) -> LoadedModel:
    model = _module(cfg)
    tokenizer = _tokenizer(cfg)
    dtype = jnp.dtype(cfg.dtype)
    if cfg.checkpoint:
        from gemma import gm

        params = gm.ckpts.load_params(os.fspath(Path(cfg.checkpoint)))
        params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
        source = str(cfg.checkpoint)
    else:
        params = random_params(model, seed=seed, dtype=dtype)
        source = f"random-init (seed {seed})"
    leaves = jax.tree.leaves(params)
    return LoadedModel(
        name=cfg.name,
        model=model,
        params=params,
        tokenizer=tokenizer,
        num_params=int(sum(x.size for x in leaves)),
        param_bytes=int(sum(x.size * x.dtype.itemsize for x in leaves)),
        source=source,
    )


def random_params(model, *, seed: int, dtype) -> Any:
    """Random params with the model's real shapes, without materialising them twice.

    `jax.eval_shape` gives the tree of shapes at no cost; each leaf is then filled on the host
    (numpy, so no XLA compile) and moved to the device. Norm scales are neutral, biases zero,
    weights N(0, 0.02): activations stay finite at any depth.
    """
    dummy_tokens = jnp.zeros((1, 4), jnp.int32)
    kwargs = {}
    if model.config.vision_encoder is not None:
        enc = model.config.vision_encoder
        dummy_tokens = jnp.asarray([[2, 255999, 3, 3]], jnp.int32)
        kwargs["images"] = jnp.zeros((1, 1, enc.image_height, enc.image_width, 3), jnp.uint8)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), tokens=dummy_tokens, **kwargs)["params"]
    )
    rng = np.random.default_rng(seed)
    np_dtype = np.dtype(dtype)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if name.endswith("['scale']") and "siglip_encoder" in name:
            host = np.ones(leaf.shape, np_dtype)  # flax LayerNorm: y = x_hat * scale
        elif name.endswith("['scale']") or name.endswith("['bias']"):
            host = np.zeros(leaf.shape, np_dtype)  # gemma RMSNorm: y = x_hat * (1 + scale)
        else:
            host = (rng.standard_normal(leaf.shape, dtype=np.float32) * 0.02).astype(np_dtype)
        return jax.device_put(host)

    return jax.tree_util.tree_map_with_path(fill, shapes)
