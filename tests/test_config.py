"""The config groups compose, validate, and reject bad input before any model is built."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sweep.config import Config, ConfigError, validate
from tests.conftest import REPO, run_sweep, sweep_env
from tests.faults import fault_env

CONF = REPO / "conf"
GROUPS = ("model", "topology", "mode", "engine", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in options(g)], ids=lambda x: str(x)
)
def test_every_group_option_composes_and_validates(group, option):
    cfg = composed(f"{group}={option}")
    config = validate(cfg)
    assert isinstance(config, Config)
    if group in ("model", "topology", "mode", "engine"):
        assert getattr(config, group).name == option


def test_groups_have_the_required_options():
    assert {"tiny", "gemma3_270m", "gemma3_1b", "gemma3_4b", "gemma4_e2b"} <= set(options("model"))
    assert {"cpu", "v5e-1", "v6e-1", "v6e-4", "v6e-8", "h100", "h200"} <= set(options("topology"))
    assert set(options("mode")) == {"text", "image", "audio"}
    assert set(options("engine")) == {"fused", "sampler", "stream"}
    assert {"quick", "card"} <= set(options("experiment"))


def test_defaults_match_the_seed_table():
    config = validate(composed())
    assert (config.model.name, config.topology.name, config.mode.name, config.engine.name) == (
        "tiny",
        "cpu",
        "text",
        "fused",
    )
    assert (config.runs.warmup, config.runs.benchmark, config.runs.final) == (1, 10, 1)
    assert config.model.checkpoint is None
    assert Path(validate(composed("mode=image")).mode.image).is_file()  # shipped image


def test_topologies_carry_peaks_and_a_consistent_mesh():
    for name in options("topology"):
        topo = validate(composed(f"topology={name}")).topology
        size = 1
        for n in topo.mesh.shape:
            size *= n
        assert size == topo.num_devices
        if topo.platform != "cpu":  # CPU bandwidth is probed at run time
            assert topo.peak_hbm_bytes_per_s and topo.peak_bf16_flops and topo.hbm_bytes


def test_experiment_presets_override_the_defaults():
    quick = validate(composed("experiment=quick"))
    assert quick.runs.benchmark == 2 and quick.tokens < 128
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        card = compose("config", overrides=["experiment=card"], return_hydra_config=True)
    assert card.hydra.sweeper.params == {"tokens": "128,256,512,1024", "mode": "text,image"}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("tokens=0", "tokens"),
        ("tokens=-5", "tokens"),
        ("batch_size=0", "batch_size"),
        ("runs.benchmark=-1", "runs.benchmark"),
        ("+tokenz=1", "tokenz"),
        ("+model.size=3", "model.size"),
        ("quant=int3", "quant"),
        ("wandb.mode=sometimes", "wandb.mode"),
        ("prompt_tokens=0", "prompt_tokens"),  # tokens over the cache: test_prompt.py
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        validate(composed(override))
    assert info.value.key == key
    assert key in str(info.value)


def test_image_mode_on_a_text_only_model_is_a_config_error():
    with pytest.raises(ConfigError, match="text-only"):
        validate(composed("model=gemma3_270m", "mode=image"))


BAD_CLI = [
    ("tokens=abc", "tokens"),
    ("tokens=0", "tokens"),
    ("tokens=-5", "tokens"),
    ("batch_size=0", "batch_size"),
    ("mode=video", "mode"),
    ("model=nope", "model"),
    ("+tokenz=1", "tokenz"),
    ("runs.benchmark=-1", "runs.benchmark"),
]


@pytest.mark.parametrize(("override", "key"), BAD_CLI, ids=[o for o, _ in BAD_CLI])
def test_bad_cli_input_exits_nonzero_in_seconds_before_any_model(tmp_path, override, key):
    start = time.perf_counter()
    proc = run_sweep(tmp_path / "job", override, multirun=False)
    elapsed = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert key in output, output
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert "warmup" not in output  # no phase started
    record = tmp_path / "job" / "metrics.json"
    if record.exists():  # range errors write a failed record; composition errors write none
        data = OmegaConf.load(record)
        assert data.status == "failed" and data.error.type == "ConfigError"
        assert not data.model  # no model was built


def test_a_request_longer_than_the_cache_fails_before_the_weights_are_built(tmp_path):
    # `load:raise` fires when the weights would start building: the cache check must come first.
    env = sweep_env(**fault_env("load:raise"))
    proc = run_sweep(
        tmp_path / "job", "tokens=2040", "engine.cache_length=2048", multirun=False, env=env
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "more than engine.cache_length=2048" in output, output
    assert "SWEEP_FAULT" not in output, output
    data = OmegaConf.load(tmp_path / "job" / "metrics.json")
    assert data.status == "failed" and data.error.type == "ConfigError"
