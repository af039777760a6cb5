"""Bad input files and values are refused before any model is built (issue 14, item 7).

Each case gets a ConfigError whose message names the key, the value and what is expected. The
checks are called in-process on composed configs; one real job shows they fire before any
device work.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from sweep import preflight
from sweep.config import ConfigError, validate
from tests.conftest import REPO

CONF = REPO / "conf"


def config(*overrides: str):
    """The validated (typed) config for these overrides."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return validate(compose(config_name="config", overrides=list(overrides)))


def refused(key: str, fn, *args) -> ConfigError:
    """The ConfigError `fn(*args)` raises, checked to name `key`."""
    with pytest.raises(ConfigError) as info:
        fn(*args)
    assert info.value.key == key
    assert str(info.value).startswith(f"invalid config: {key}=")
    return info.value


def save_params(tree: dict, path: Path) -> None:
    """What `gm.ckpts.save_params(tree, path, wait_until_finished=True)` does (orbax's
    StandardCheckpointer), without importing gemma's stack (~4 s) for a 24-byte checkpoint."""
    import orbax.checkpoint as ocp

    ckpt = ocp.StandardCheckpointer()
    ckpt.save(path, tree)
    ckpt.wait_until_finished()


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory) -> Path:
    """OUT/params as tools/save_tiny_checkpoint.py writes it (here: a 2x3 float32 array)."""
    out = tmp_path_factory.mktemp("saved")
    save_params({"w": np.zeros((2, 3), np.float32)}, out / "params")
    return out


def blank_png(path: Path, width: int, height: int) -> Path:
    """A valid all-black 1-bit PNG, written row by row: a 20000x20000 one is 48 KB and takes
    ~0.1 s and a few KB of memory (Pillow's Image.new("1", ...).save needs 0.5 s and 400 MB:
    mode "1" holds a byte per pixel)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = bytes(1 + (width + 7) // 8)  # filter byte 0 + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def no_decoding(monkeypatch) -> list:
    """Fails the test if Pillow decodes any pixel (ImageFile.load is where every format's
    decoder runs); returns the list of attempted decodes."""
    from PIL import ImageFile

    calls = []

    def load(self):
        calls.append(self.size)
        raise AssertionError(f"decoded a {self.size} image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return calls


# ------------------------------------------------------------------------------------------
# config values


def test_a_negative_seed_is_refused_at_validation():
    err = refused("seed", config, "seed=-1")
    assert err.value == -1
    assert "must be >= 0" in str(err)
    assert config("seed=0").seed == 0


# ------------------------------------------------------------------------------------------
# model.checkpoint


def test_a_saved_checkpoint_passes(saved_checkpoint):
    preflight.check_paths(config(f"model.checkpoint={saved_checkpoint / 'params'}"))


def test_a_directory_of_garbage_is_not_a_checkpoint(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\x00garbage" * 100)
    (tmp_path / "notes").mkdir()
    err = refused("model.checkpoint", preflight.check_paths, config(f"model.checkpoint={tmp_path}"))
    message = str(err)
    assert str(tmp_path) in message
    assert "not an orbax checkpoint: missing _METADATA" in message
    assert "gm.ckpts.save_params" in message
    assert "found notes/, weights.bin" in message


def test_garbage_orbax_metadata_is_named(tmp_path):
    (tmp_path / "_METADATA").write_text('{"not": "orbax"}')  # gemma: KeyError: 'tree_metadata'
    err = refused("model.checkpoint", preflight.check_paths, config(f"model.checkpoint={tmp_path}"))
    assert "its _METADATA file is not orbax tree metadata" in str(err)
    assert "'tree_metadata'" in str(err)


def test_the_parent_of_a_saved_checkpoint_suggests_its_params_dir(saved_checkpoint):
    out = saved_checkpoint
    err = refused("model.checkpoint", preflight.check_paths, config(f"model.checkpoint={out}"))
    assert err.value == str(out)
    assert f"did you mean model.checkpoint={out / 'params'}?" in str(err)


def test_a_checkpoint_that_fails_to_load_is_named(saved_checkpoint):
    """Past the preflight, any error of orbax/gemma's loader still names model.checkpoint."""
    from sweep.models import CheckpointError, load_checkpoint

    with pytest.raises(CheckpointError) as info:
        load_checkpoint(str(saved_checkpoint), {}, dtype=np.float32)
    err = info.value
    assert isinstance(err, ConfigError)
    assert err.key == "model.checkpoint"
    assert str(saved_checkpoint) in str(err)
    assert "could not load it as an orbax checkpoint (ValueError: No item metadata" in str(err)


# ------------------------------------------------------------------------------------------
# model.tokenizer


def test_a_garbage_tokenizer_is_not_a_sentencepiece_model(tmp_path):
    tok = tmp_path / "tokenizer.model"
    tok.write_bytes(bytes(range(256)) * 20)
    err = refused("model.tokenizer", preflight.check_paths, config(f"model.tokenizer={tok}"))
    assert err.value == str(tok)
    assert "not a sentencepiece model (RuntimeError: Internal: could not parse" in str(err)


def test_a_real_tokenizer_passes():
    from sweep.tokenizer import local_tokenizer_path

    preflight.check_paths(config(f"model.tokenizer={local_tokenizer_path()}"))


# ------------------------------------------------------------------------------------------
# mode.image


def test_an_image_above_the_pixel_cap_is_refused_from_its_header(tmp_path, no_decoding):
    png = blank_png(tmp_path / "big.png", 12000, 12000)  # 144 MP: Pillow only warns
    t0 = time.perf_counter()
    err = refused("mode.image", preflight.load_image, str(png))
    assert time.perf_counter() - t0 < 1.0  # decoding it would take seconds and GiBs
    assert no_decoding == []
    assert err.value == str(png)
    assert "12000x12000 pixels (144.0 megapixels), more than the cap of 50 megapixels" in str(err)


def test_a_decompression_bomb_is_refused_with_the_same_message(tmp_path, no_decoding):
    png = blank_png(tmp_path / "bomb.png", 20000, 20000)  # 400 MP in 48 KB: Pillow raises
    assert png.stat().st_size < 100_000
    t0 = time.perf_counter()
    err = refused("mode.image", preflight.load_image, str(png))
    assert time.perf_counter() - t0 < 1.0
    assert no_decoding == []
    assert "400.0 megapixels (Pillow refuses it as a decompression bomb)" in str(err)
    assert "more than the cap of 50 megapixels" in str(err)


def test_an_image_just_over_the_cap_is_refused(tmp_path, no_decoding):
    png = blank_png(tmp_path / "over.png", 10000, 5001)  # below Pillow's own limit
    err = refused("mode.image", preflight.load_image, str(png))
    assert "10000x5001 pixels (50.0 megapixels)" in str(err)


def test_an_ordinary_image_is_still_accepted(tmp_path):
    from PIL import Image

    pixels = np.arange(7 * 7 * 3, dtype=np.uint8).reshape(7, 7, 3)
    Image.fromarray(pixels, "RGB").save(tmp_path / "small.png")
    image = preflight.load_image(str(tmp_path / "small.png"))
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, pixels)


# ------------------------------------------------------------------------------------------
# one real job: the checks fire before any device work


def test_a_bad_input_fails_the_job_before_any_device_work(tmp_path, monkeypatch):
    from sweep import env, hooks
    from sweep.job import run_job

    touched = []
    monkeypatch.setattr(env, "collect_env", lambda: touched.append("collect_env") or {})
    steps = []
    unregister = hooks.register(lambda step, record, job_num: steps.append(step))
    png = blank_png(tmp_path / "bomb.png", 20000, 20000)
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                config_name="config",
                overrides=["experiment=quick", "mode=image", f"mode.image={png}"],
            )
        t0 = time.perf_counter()
        record = run_job(cfg, job_dir=tmp_path / "job")
        wall = time.perf_counter() - t0
    finally:
        unregister()
    assert record.status == "failed"
    assert record.error.type == "ConfigError"
    assert record.error.message.startswith(f"invalid config: mode.image='{png}': 400.0 mega")
    assert steps == ["start"]  # never reached "load" (the model build)
    assert touched == []  # nor the device query
    assert record.env == {} and record.model is None
    assert wall < 10
    saved = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert saved["error"]["message"] == record.error.message
