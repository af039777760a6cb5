"""Model config -> (gemma Transformer, params, tokenizer); `sweep.cache` keeps one per process.

`tiny` is gemma's own Gemma 3 Transformer at toy size with a tiny SigLIP encoder, so it runs
anywhere with no download. The other archs are gemma's own classes (`gm.nn.Gemma3_4B`, ...):
random-initialised when `checkpoint` is null (timing is the real model's, outputs are noise),
else loaded from a local orbax checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sweep.config import ConfigError, ModelConfig
from sweep.gemma4 import (
    gemma4_audio_soft_token_count,
    gemma4_soft_token_count,
    init_inputs_gemma4,
    is_gemma4,
    tiny_gemma4_module,
)
from sweep.gemma_lib import import_gemma
from sweep.tokenizer import local_tokenizer_path

# Greedy decoding with these forbidden forces exactly `tokens` new tokens.
# (EOS, <end_of_turn>; gemma's Sampler adds BEGIN_OF_TOOL_RESPONSE itself.)
STOP_TOKEN_IDS = (1, 106)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """The model without its weights: enough to tokenize and size a request before loading."""

    name: str
    model: Any  # gm.nn.Transformer (a flax module: hashable, static under jit)
    tokenizer: Any  # gm.text.Tokenizer

    @property
    def config(self):
        return self.model.config

    @property
    def has_vision(self) -> bool:
        return self.model.config.vision_encoder is not None

    @property
    def has_audio(self) -> bool:
        """Whether the model has an audio encoder (Gemma 4 E2B/E4B and tiny_gemma4)."""
        return getattr(self.model.config, "audio_encoder", None) is not None

    def audio_soft_tokens(self, num_samples: int) -> int:
        """Prompt tokens one clip of `num_samples` (16 kHz) adds on top of its placeholder:
        `<|audio|>` becomes `<|audio>` + soft tokens + `<audio|>` (gemma's
        `add_variable_extra_tokens_for_audio`), the soft tokens `gemma4_audio_soft_token_count`."""
        return gemma4_audio_soft_token_count(num_samples) + 1

    def image_soft_tokens(
        self, image_shape: tuple[int, ...] | None = None, budget: int | None = None
    ) -> int:
        """Prompt tokens one image adds on top of its placeholder token.

        Gemma 3: `<start_of_image>` becomes \\n\\n + soft tokens + `<end_of_image>` +
        \\n\\n, a fixed number of soft tokens. Gemma 4: `<|image|>` becomes \\n\\n +
        `<|image>` + soft tokens + `<image|>` + \\n\\n, the soft tokens those of gemma's
        `predict_soft_token_count` for an image of `image_shape` ([H, W, ...]; the encoder's
        square size when None) under `budget` (the model's `num_mm_tokens_per_image` when None).
        """
        encoder = self.model.config.vision_encoder
        if not is_gemma4(self.model):
            return encoder.num_mm_tokens_per_image + 3
        return gemma4_soft_token_count(encoder, image_shape, budget) + 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadedModel(ModelSpec):
    """Static things an engine needs. Never mutated; shared by every job of a process."""

    params: Any  # pytree of jax arrays (dynamic under jit)
    num_params: int
    param_bytes: int
    source: str  # "random-init (seed N)" or the checkpoint path

    def image_encoder_params(self) -> int:
        vision = self.params.get("vision_encoder")
        return sum(x.size for x in jax.tree.leaves(vision)) if vision is not None else 0

    def image_encoder_bytes(self) -> int:
        return tree_bytes(self.params.get("vision_encoder", {}))


def build_model(
    cfg: ModelConfig, *, seed: int, quant: str = "none", mesh=None, spec: ModelSpec | None = None
) -> LoadedModel:
    """Build the model for `cfg` (no caching here: `sweep.cache` holds one model per process).

    `mesh` (a jax Mesh or None): params are placed sharded over its `model` axis. `spec`: the
    module and tokenizer already made for `cfg` (made here when None).
    """
    return _build(spec or make_spec(cfg), cfg, seed=seed, quant=quant, mesh=mesh)


def make_mesh(topology):
    """The topology's device mesh (None for a single device)."""
    if topology.num_devices == 1:
        return None
    from jax.sharding import AxisType

    devices = jax.devices()[: topology.num_devices]
    # Auto axis types: Explicit (the default) breaks gemma's embedding lookup under sharding.
    return jax.make_mesh(
        tuple(topology.mesh.shape),
        tuple(topology.mesh.axes),
        axis_types=(AxisType.Auto,) * len(topology.mesh.axes),
        devices=devices,
    )


def _tiny_module():
    import_gemma()
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


def module_for(cfg: ModelConfig):
    """The flax module for `cfg` (cheap: no params)."""
    if cfg.arch == "tiny":
        return _tiny_module()
    if cfg.arch == "tiny_gemma4":
        return tiny_gemma4_module()
    import_gemma()
    from gemma import gm

    cls = getattr(gm.nn, cfg.arch)
    if any(f.name == "text_only" for f in dataclasses.fields(cls)):
        return cls(text_only=cfg.text_only)
    return cls()


def _tokenizer(cfg: ModelConfig):
    from gemma import gm

    gemma4 = cfg.arch.startswith("Gemma4") or cfg.arch == "tiny_gemma4"
    cls = gm.text.Gemma4Tokenizer if gemma4 else gm.text.Gemma3Tokenizer
    if not cfg.tokenizer:
        # The local one of the family: Gemma 4's has its <|turn>/<|image|> pieces.
        return cls(path=os.fspath(local_tokenizer_path("gemma4" if gemma4 else "gemma3")))
    return cls(path=os.fspath(Path(cfg.tokenizer)))


def make_spec(cfg: ModelConfig) -> ModelSpec:
    """Module and tokenizer for `cfg`, without building any weights."""
    return ModelSpec(name=cfg.name, model=module_for(cfg), tokenizer=_tokenizer(cfg))


def _build(spec: ModelSpec, cfg: ModelConfig, *, seed: int, quant: str, mesh) -> LoadedModel:
    model, tokenizer = spec.model, spec.tokenizer
    dtype = jnp.dtype(cfg.dtype)
    expected = param_shapes(model, dtype=dtype)
    if cfg.checkpoint:
        params = load_checkpoint(cfg.checkpoint, expected, dtype=dtype)
        source = str(cfg.checkpoint)
    else:
        # Straight onto the mesh when there is no quantization step in between: no chip ever
        # holds a whole weight that the mesh splits.
        place = mesh if quant == "none" else None
        params = random_params(model, seed=seed, dtype=dtype, mesh=place)
        source = f"random-init (seed {seed})"
    if quant != "none":
        model, params = quantize(model, params, quant)
    if mesh is not None:
        params = shard_params(params, mesh)  # a no-op for leaves already placed
    leaves = jax.tree.leaves(params)
    return LoadedModel(
        name=cfg.name,
        model=model,
        params=params,
        tokenizer=tokenizer,
        num_params=int(sum(x.size for x in leaves)),
        param_bytes=tree_bytes(params),
        source=source,
    )


def dtype_bits(dtype) -> int:
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.iinfo(dtype).bits
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.finfo(dtype).bits
    return 8 * dtype.itemsize


def tree_bytes(tree: Any) -> int:
    """Bytes of every array (or ShapeDtypeStruct) in `tree`; int4 counts half a byte."""
    return int(sum(x.size * dtype_bits(x.dtype) // 8 for x in jax.tree.leaves(tree)))


def param_shapes(model, *, dtype=None) -> Any:
    """The params tree as ShapeDtypeStructs, at no memory cost (`jax.eval_shape`).

    `model.init` runs on the dummy inputs of its architecture family (`init_inputs`), so that
    every encoder it has (vision, and audio for Gemma 4 E2B/E4B) gets its params.
    """
    tokens, kwargs = init_inputs(model)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens=tokens, **kwargs))
    shapes = shapes["params"]
    if dtype is not None:
        shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), shapes)
    return shapes


def init_inputs(model) -> tuple[Any, dict[str, Any]]:
    """(tokens, keyword inputs) that `model.init` initialises every param from.

    Gemma 3 and 3n take raw uint8 images [B, N, H, W, 3] behind a `<start_of_image>` token.
    Gemma 4 takes `PreprocessedVisionInput` (patches, xy positions, soft tokens per image)
    and, for E2B/E4B, raw audio: see `gemma4.init_inputs_gemma4`.
    """
    if is_gemma4(model):
        return init_inputs_gemma4(model)
    tokens = jnp.zeros((1, 4), jnp.int32)
    kwargs = {}
    if model.config.vision_encoder is not None:
        enc = model.config.vision_encoder
        tokens = jnp.asarray([[2, 255999, 3, 3]], jnp.int32)
        kwargs["images"] = jnp.zeros((1, 1, enc.image_height, enc.image_width, 3), jnp.uint8)
    return tokens, kwargs


class CheckpointError(ConfigError):
    """`model.checkpoint` cannot be loaded or does not fit the configured model; the message
    names the key, the path and why."""

    def __init__(self, path: str, reason: str):
        super().__init__("model.checkpoint", path, reason)


def load_checkpoint(path: str, expected: Any, *, dtype) -> Any:
    """Params from a local orbax checkpoint, checked against the model's expected shapes.
    Raises CheckpointError (a ConfigError naming `model.checkpoint`) when it cannot be used."""
    from gemma import gm

    try:
        params = gm.ckpts.load_params(os.fspath(Path(path).expanduser().resolve()))
    except Exception as exc:
        if isinstance(exc, MemoryError) or "RESOURCE_EXHAUSTED" in str(exc):
            raise  # out of memory: the job's `oom` status, not a config problem
        lines = str(exc).strip().splitlines() or [""]
        reason = f"{type(exc).__name__}: {lines[0][:300]}"
        raise CheckpointError(
            path, f"gm.ckpts.load_params could not load it as an orbax checkpoint ({reason})"
        ) from exc
    got = jax.tree_util.tree_flatten_with_path(params)[0]
    want = jax.tree_util.tree_flatten_with_path(expected)[0]
    got_shapes = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in got}
    want_shapes = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in want}
    if got_shapes != want_shapes:
        missing = sorted(set(want_shapes) - set(got_shapes))[:3]
        extra = sorted(set(got_shapes) - set(want_shapes))[:3]
        wrong = [k for k in want_shapes if k in got_shapes and got_shapes[k] != want_shapes[k]]
        raise CheckpointError(
            path,
            f"does not match the model's params: missing {missing}, unexpected {extra}, "
            f"wrong shape {wrong[:3]} (a checkpoint of another architecture than model=?)",
        )
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def quantize(model, params: Any, quant: str) -> tuple[Any, Any]:
    """int8/int4 weights through gemma's own support: `gm.nn.IntWrapper` runs the model with
    integer kernels + per-channel scales; values come from `peft`'s `uniform_quantize`.

    (`peft.quantize` guesses the reduced axes from shapes and gets them wrong for some layouts,
    e.g. transposed gating einsums; the axes here come from the scale shapes the wrapped model
    itself declares.)
    """
    from gemma import gm
    from gemma.peft import _quantization_utils as qutils

    int_dtype = {"int8": jnp.int8, "int4": jnp.int4}[quant]
    bits = {"int8": 8, "int4": 4}[quant]
    qmodel = gm.nn.IntWrapper(model=model, dtype=int_dtype)
    expected = param_shapes(qmodel)
    param_dtype = jax.tree.leaves(params)[0].dtype
    source_key = {
        "_IntEinsum_0": "w",
        "_IntEinsum_gating_einsum": "gating_einsum",
        "_IntEinsum_linear": "linear",
    }

    def convert(want: Any, have: Any) -> Any:
        if not isinstance(want, dict):
            return have
        out = {}
        for name, sub in want.items():
            if name in source_key and set(sub) == {"kernel", "scale"}:
                w = have[source_key[name]]
                axes = tuple(
                    i
                    for i, (k, sc) in enumerate(
                        zip(sub["kernel"].shape, sub["scale"].shape, strict=False)
                    )
                    if sc == 1 and k != 1
                )
                kernel, scale = qutils.uniform_quantize(
                    w.astype(jnp.float32),
                    bitwidth=bits,
                    granularity=qutils.QuantizationGranularity.PER_CHANNEL,
                    dtype=int_dtype,
                    axis_to_reduce=axes,
                )
                out[name] = {"kernel": kernel, "scale": scale.astype(param_dtype)}
            else:
                out[name] = convert(sub, have[name])
        return out

    return qmodel, convert(expected, params)


def param_sharding(shape: tuple[int, ...], mesh):
    """Where a param lives on `mesh`: its largest dimension divisible by the `model` axis is
    split over it (tensor parallel); otherwise it is replicated."""
    from jax.sharding import NamedSharding, PartitionSpec

    size = mesh.shape.get("model", 1)
    spec = [None] * len(shape)
    if size > 1:
        for d in sorted(range(len(shape)), key=lambda d: -shape[d]):
            if shape[d] % size == 0 and shape[d] >= size:
                spec[d] = "model"
                break
    return NamedSharding(mesh, PartitionSpec(*spec))


def shard_params(params: Any, mesh) -> Any:
    """Place every param on `mesh` (see `param_sharding`)."""
    return jax.tree.map(lambda x: jax.device_put(x, param_sharding(x.shape, mesh)), params)


_FILL_SLICE = 1 << 24  # elements of float32 scratch per slice (64 MiB)


def random_params(model, *, seed: int, dtype, mesh=None) -> Any:
    """Random params with the model's real shapes, without materialising them twice.

    Norm scales are neutral, biases zero, weights N(0, 0.02): activations stay finite at any
    depth. On a CPU each leaf is filled on the host in slices (numpy: no XLA compile, float32
    only one slice at a time); on an accelerator each leaf is drawn on the device itself
    (`_device_fill`: a 12B model's host fill would take minutes of one CPU core).
    """
    shapes = param_shapes(model)
    gemma4 = is_gemma4(model)
    np_dtype = np.dtype(dtype)
    device = mesh.devices.flat[0] if mesh is not None else jax.devices()[0]
    if device.platform != "cpu":
        return _device_fill(shapes, seed=seed, dtype=jnp.dtype(dtype), mesh=mesh, gemma4=gemma4)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        kind = _leaf_kind(path, gemma4=gemma4)
        if kind == "ones":
            host = np.ones(leaf.shape, np_dtype)
        elif kind == "zeros":
            host = np.zeros(leaf.shape, np_dtype)
        elif kind in _FULL:
            host = np.full(leaf.shape, _FULL[kind], np_dtype)
        else:
            host = np.empty(leaf.shape, np_dtype)
            flat = host.reshape(-1)
            for start in range(0, flat.size, _FILL_SLICE):
                part = rng.standard_normal(min(_FILL_SLICE, flat.size - start), dtype=np.float32)
                flat[start : start + part.size] = part * 0.02
        return jax.device_put(host, None if mesh is None else param_sharding(host.shape, mesh))

    return jax.tree_util.tree_map_with_path(fill, shapes)


# Leaves filled with one value (`_leaf_kind`).
_FULL = {"-inf": -np.inf, "inf": np.inf}


def _leaf_kind(path, *, gemma4: bool = False) -> str:
    name = jax.tree_util.keystr(path)
    if gemma4 and "['clip_" in name:
        # Gemma 4's clipped einsums (the audio conformer's): x clipped to [clip_*_min,
        # clip_*_max], gemma's own init -inf/+inf (no clipping); N(0, 0.02) would clip every
        # activation to about zero and silence the audio encoder.
        return "-inf" if name.endswith("_min']") else "inf"
    if gemma4 and (name.endswith("['scale']") or name.endswith("['skip_scale']")):
        # Gemma 4's RMSNorms (text and vision) are y = x_hat * scale, and each block's output
        # is multiplied by `skip_scale`: zero would silence the whole model.
        return "ones"
    if name.endswith("['scale']") and "siglip_encoder" in name:
        return "ones"  # flax LayerNorm: y = x_hat * scale
    if name.endswith("['scale']") or name.endswith("['bias']"):
        return "zeros"  # gemma RMSNorm: y = x_hat * (1 + scale)
    return "normal"


@functools.cache
def _fill_program(kind: str, shape: tuple[int, ...], dtype, sharding):
    """One jitted fill per (kind, shape, dtype, sharding): a model's layers share a few shapes,
    so a 48-layer model compiles about a dozen small programs."""

    def fill(key):
        if kind == "normal":
            return jax.random.normal(key, shape, jnp.float32).astype(dtype) * 0.02
        if kind in _FULL:
            return jnp.full(shape, _FULL[kind], dtype)
        return (jnp.ones if kind == "ones" else jnp.zeros)(shape, dtype)

    return jax.jit(fill, out_shardings=sharding)


def _device_fill(shapes: Any, *, seed: int, dtype, mesh, gemma4: bool = False) -> Any:
    root = jax.random.key(seed)
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    leaves = []
    for index, (path, leaf) in enumerate(flat):
        sharding = None if mesh is None else param_sharding(leaf.shape, mesh)
        kind = _leaf_kind(path, gemma4=gemma4)
        program = _fill_program(kind, tuple(leaf.shape), dtype, sharding)
        leaves.append(program(jax.random.fold_in(root, index)))
    return jax.tree_util.tree_unflatten(treedef, leaves)
