"""Checks and preparation that run before any device work: inputs, devices, request, costs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from sweep.config import Config, ConfigError, TopologyConfig
from sweep.metrics import CostModel

CHAT_TEMPLATE = "<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n"


def load_image(path: str | None) -> np.ndarray:
    """The image as uint8 [H, W, 3]; ConfigError naming `mode.image` when it cannot be used."""
    from PIL import Image, UnidentifiedImageError

    if not path:
        raise ConfigError("mode.image", path, "image mode needs an image file")
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError("mode.image", path, "file not found")
    if not p.is_file():
        raise ConfigError("mode.image", path, "not a file (a directory?)")
    if p.stat().st_size == 0:
        raise ConfigError("mode.image", path, "empty file (0 bytes)")
    try:
        with Image.open(p) as img:
            img.load()  # decodes every byte: truncated files fail here, not on the device
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ConfigError("mode.image", path, f"not a readable image ({exc})") from None
    return np.asarray(rgb, dtype=np.uint8)


def check_paths(config: Config) -> None:
    """Local checkpoint and tokenizer paths exist and are usable (nothing is downloaded)."""
    ckpt = config.model.checkpoint
    if ckpt:
        p = Path(ckpt).expanduser()
        if not p.exists():
            raise ConfigError("model.checkpoint", ckpt, "directory not found")
        if not p.is_dir():
            raise ConfigError("model.checkpoint", ckpt, "not a directory (an orbax checkpoint dir)")
        if not os.access(p, os.R_OK | os.X_OK):
            raise ConfigError("model.checkpoint", ckpt, "directory not readable")
        if not any(p.iterdir()):
            raise ConfigError("model.checkpoint", ckpt, "empty directory (no orbax checkpoint)")
    tok = config.model.tokenizer
    if tok:
        p = Path(tok).expanduser()
        if not p.is_file():
            raise ConfigError("model.tokenizer", tok, "file not found (a sentencepiece .model)")
        if p.stat().st_size == 0:
            raise ConfigError("model.tokenizer", tok, "empty file")
        if not os.access(p, os.R_OK):
            raise ConfigError("model.tokenizer", tok, "file not readable")


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def fit_problem(config: Config) -> str | None:
    """Why the weights + KV cache cannot fit the topology's memory, or None.

    Pure shape arithmetic (`jax.eval_shape`): no memory is allocated, no device is touched.
    """
    from sweep.models import dtype_bits, module_for, param_shapes, tree_bytes

    topo = config.topology
    if topo.platform == "cpu":
        from sweep.env import host_memory_bytes

        per_chip, chips, where = host_memory_bytes(), 1, "host memory"
    else:
        per_chip, chips = topo.hbm_bytes, topo.num_devices
        where = f"HBM on topology={topo.name} ({chips} x {gib(per_chip or 0)})"
    if not per_chip:
        return None
    module = module_for(config.model)
    shapes = param_shapes(module, dtype=config.model.dtype)
    weights = tree_bytes(shapes)
    if config.quant != "none":  # matmul kernels shrink; embeddings and norms stay
        embed = tree_bytes(shapes["embedder"])
        bits = {"int8": 8, "int4": 4}[config.quant]
        weights = embed + (weights - embed) * bits // dtype_bits(config.model.dtype)
    cache = jax.eval_shape(
        lambda: module.config.init_cache(
            batch_size=config.batch_size,
            dtype=config.model.dtype,
            cache_length=config.engine.cache_length,
        )
    )
    kv = tree_bytes(cache)
    capacity = per_chip * chips
    usable = 0.9 * capacity  # XLA needs working space beyond weights and cache
    if weights + kv > usable:
        return (
            f"model={config.model.name} needs {gib(weights)} of weights + {gib(kv)} of KV "
            f"cache (batch {config.batch_size} x {config.engine.cache_length} positions) = "
            f"{gib(weights + kv)}, more than 90% of the {gib(capacity)} of {where}"
        )
    return None


def make_mesh(topology: TopologyConfig):
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


def topology_mismatch(topology: TopologyConfig, env: dict[str, Any]) -> str | None:
    """Why these devices cannot be this topology, or None when they can."""
    backend = env["backend"]
    if topology.platform != backend:
        return (
            f"topology={topology.name} expects platform {topology.platform}, "
            f"but JAX's backend here is {backend}"
        )
    if topology.device_kind and topology.device_kind not in env["device_kind"]:
        return (
            f"topology={topology.name} expects device kind {topology.device_kind!r}, "
            f"found {env['device_kind']!r}"
        )
    if topology.num_devices != env["device_count"]:
        return (
            f"topology={topology.name} has {topology.num_devices} device(s), but JAX sees "
            f"{env['device_count']} ({env['device_kind']}): pick the topology that matches "
            "the machine"
        )
    if topology.num_hosts != env["hosts"]:
        return f"topology={topology.name} needs {topology.num_hosts} hosts, found {env['hosts']}"
    return None


def build_request(config: Config, model, image: np.ndarray | None):
    """The request every phase sends. Checks it fits the KV cache before any compile.

    `model`: a `models.ModelSpec` (module + tokenizer) is enough; no weights are needed.
    """
    from sweep.engine import Request, prompt_tokens_with_images

    prompt = CHAT_TEMPLATE.format(prompt=config.mode.prompt)
    images = None
    if config.mode.name == "image":
        if not model.has_vision:
            raise ConfigError("mode", "image", f"model={config.model.name} has no vision encoder")
        images = np.broadcast_to(image, (config.batch_size, 1, *image.shape)).copy()
    ids = model.tokenizer.encode(prompt, add_bos=True)
    num_images = 0 if images is None else images.shape[1]
    prompt_tokens = prompt_tokens_with_images(model, ids, num_images)
    needed = prompt_tokens + config.tokens
    if needed > config.engine.cache_length:
        raise ConfigError(
            "tokens",
            config.tokens,
            f"prompt ({prompt_tokens} tokens) + tokens needs {needed} cache positions, more than "
            f"engine.cache_length={config.engine.cache_length}: lower tokens or raise "
            "engine.cache_length",
        )
    return Request(
        prompts=(prompt,) * config.batch_size, images=images, max_new_tokens=config.tokens
    )


def cost_model(model, topology: TopologyConfig, env: dict[str, Any]) -> CostModel:
    """Bytes and FLOPs per request for MBU/MFU, with the topology's (or probed) peaks."""
    from sweep.env import probe_bytes_for, probe_read_bandwidth

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
        probe_bytes = probe_bytes_for(decode_weight_bytes)
        peak_bytes = probe_read_bandwidth(probe_bytes)
        peak_flops = topology.peak_bf16_flops
        env["cpu_read_bytes_per_s"] = peak_bytes
        env["cpu_read_probe_bytes"] = probe_bytes
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
