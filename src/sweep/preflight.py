"""Checks that run before any model is built: input files, memory fit, devices."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from sweep.config import Config, ConfigError, TopologyConfig

# Larger images are refused from their header, before any pixel is decoded: the model resizes
# every image to its encoder's input (896x896 for Gemma 3) anyway, and a 12000x12000 PNG
# peaked at 4.3 GiB. (Pillow's own decompression-bomb limit is 89.5 megapixels.)
MAX_IMAGE_PIXELS = 50_000_000


def _image_too_big(path: str, size: str) -> ConfigError:
    return ConfigError(
        "mode.image",
        path,
        f"{size}, more than the cap of {MAX_IMAGE_PIXELS / 1e6:g} megapixels "
        "(sweep.preflight.MAX_IMAGE_PIXELS): give a smaller image (the model resizes it to "
        "its encoder's input anyway)",
    )


def _open_image_header(path: str, p: Path):
    """`Image.open` (reads the header only), with Pillow's decompression-bomb warning and error
    turned into the size cap's ConfigError."""
    import re
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            img = Image.open(p)
    except Image.DecompressionBombError as exc:  # > 2x Pillow's limit: no size is returned
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)) / 1e6:.1f} megapixels" if pixels else "too many pixels"
        raise _image_too_big(path, f"{size} (Pillow refuses it as a decompression bomb)") from None
    bomb = False
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            bomb = True
        else:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    width, height = img.size
    if bomb or width * height > MAX_IMAGE_PIXELS:
        img.close()
        raise _image_too_big(
            path, f"{width}x{height} pixels ({width * height / 1e6:.1f} megapixels)"
        )
    return img


def load_image(path: str | None) -> np.ndarray:
    """The image as uint8 [H, W, 3]; ConfigError naming `mode.image` when it cannot be used.

    Images above MAX_IMAGE_PIXELS are refused from the header, before any pixel is decoded.
    """
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
        with _open_image_header(path, p) as img:
            img.load()  # decodes every byte: truncated files fail here, not on the device
            rgb = img.convert("RGB")
    except ConfigError:
        raise
    except Image.DecompressionBombError as exc:  # e.g. raised again while decoding
        raise _image_too_big(path, str(exc)) from None
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
        problem = _orbax_problem(ckpt, p)
        if problem:
            raise ConfigError("model.checkpoint", ckpt, problem)
    tok = config.model.tokenizer
    if tok:
        p = Path(tok).expanduser()
        if not p.is_file():
            raise ConfigError("model.tokenizer", tok, "file not found (a sentencepiece .model)")
        if p.stat().st_size == 0:
            raise ConfigError("model.tokenizer", tok, "empty file")
        if not os.access(p, os.R_OK):
            raise ConfigError("model.tokenizer", tok, "file not readable")
        problem = _sentencepiece_problem(p)
        if problem:
            raise ConfigError("model.tokenizer", tok, problem)


# What gm.ckpts.save_params (orbax's StandardCheckpointer, OCDBT format) writes into its
# directory. gm.ckpts.load_params needs `_METADATA` (the tree of arrays) to start.
ORBAX_FILES = ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt", "d")


def _has_orbax_metadata(p: Path) -> bool:
    if (p / "_METADATA").is_file():
        return True
    # A Kauldron checkpoint: load_params reads the item in its `default/` subdirectory.
    return (p / "_CHECKPOINT_METADATA").is_file() and (p / "default" / "_METADATA").is_file()


def _orbax_problem(ckpt: str, p: Path) -> str | None:
    """Why the directory `p` is not an orbax checkpoint gm.ckpts.load_params can read, or None.
    Reads only file names and the small `_METADATA` JSON: no array is loaded."""
    import json

    if _has_orbax_metadata(p):
        meta = p / "_METADATA"
        if not meta.is_file():
            return None  # the Kauldron layout
        try:
            tree = json.loads(meta.read_bytes())["tree_metadata"]
            if not isinstance(tree, dict) or not tree:
                raise ValueError("no arrays in it")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            return (
                f"its _METADATA file is not orbax tree metadata ({reason}): a damaged or "
                "unfinished checkpoint, or not one written by gm.ckpts.save_params"
            )
        return None
    subdirs = sorted(c for c in p.iterdir() if c.is_dir() and _has_orbax_metadata(c))
    if subdirs:
        guesses = " or ".join(f"model.checkpoint={Path(ckpt) / c.name}" for c in subdirs[:3])
        return (
            f"not an orbax checkpoint (no _METADATA file in it), but a subdirectory is: "
            f"did you mean {guesses}?"
        )
    missing = [n for n in ORBAX_FILES if not (p / n).exists()]
    found = sorted(c.name + ("/" if c.is_dir() else "") for c in p.iterdir())
    shown = ", ".join(found[:6]) + (f" (+{len(found) - 6} more)" if len(found) > 6 else "")
    return (
        f"not an orbax checkpoint: missing {', '.join(missing)} (expected a directory as "
        f"written by gm.ckpts.save_params, e.g. OUT/params of tools/save_tiny_checkpoint.py); "
        f"found {shown}"
    )


def _sentencepiece_problem(p: Path) -> str | None:
    """Why the file `p` is not a sentencepiece model, or None (loading one takes ~0.1 s)."""
    import sentencepiece

    try:
        pieces = sentencepiece.SentencePieceProcessor(model_file=os.fspath(p)).get_piece_size()
    except Exception as exc:  # sentencepiece raises RuntimeError/OSError with its own text
        return f"not a sentencepiece model ({type(exc).__name__}: {exc})"
    if pieces == 0:
        return "not a sentencepiece model (it has no pieces)"
    return None


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def resolved_cache_length(config: Config) -> int:
    """The KV cache length a job of `config` runs with: `engine.cache_length`, or when it is
    null the auto length for its request (`request.build_request`: tokenizer only, no weights).
    An explicit length too small for the request is refused by `build_request`, not here."""
    if config.engine.cache_length is not None:
        return config.engine.cache_length
    from sweep.cache import MODELS
    from sweep.request import build_request

    return build_request(config, MODELS.spec(config.model), None).cache_length


def fit_problem(config: Config, cache_length: int | None = None) -> str | None:
    """Why the weights + KV cache cannot fit the topology's memory, or None.

    The KV cache is `cache_length` positions long (the request's, `Request.cache_length`;
    None: `resolved_cache_length(config)`). Pure shape arithmetic (sweep/memory.py): no
    memory is allocated, no device is touched.
    """
    from sweep.memory import kv_cache_bytes, weight_bytes
    from sweep.models import module_for

    topo = config.topology
    if topo.platform == "cpu":
        from sweep.env import host_memory_bytes

        per_chip, chips, where = host_memory_bytes(), 1, "host memory"
    else:
        per_chip, chips = topo.hbm_bytes, topo.num_devices
        where = f"HBM on topology={topo.name} ({chips} x {gib(per_chip or 0)})"
    if not per_chip:
        return None
    # The same figures the record's memory block holds (sweep/memory.py).
    weights = weight_bytes(config.model, config.quant)
    cache_length = cache_length or resolved_cache_length(config)
    kv = kv_cache_bytes(
        module_for(config.model),
        batch_size=config.batch_size,
        cache_length=cache_length,
        dtype=config.model.dtype,
    )
    capacity = per_chip * chips
    usable = 0.9 * capacity  # XLA needs working space beyond weights and cache
    if weights + kv > usable:
        return (
            f"model={config.model.name} needs {gib(weights)} of weights + {gib(kv)} of KV "
            f"cache (batch {config.batch_size} x {cache_length} positions) = "
            f"{gib(weights + kv)}, more than 90% of the {gib(capacity)} of {where}"
        )
    return None


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
