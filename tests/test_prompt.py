"""`prompt_tokens=N`: a chat prompt of exactly N text tokens, drawn from `seed`; and the KV
cache sized to the request (`engine.cache_length: null` = auto)."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from sweep.config import ConfigError, validate
from sweep.preflight import fit_problem
from sweep.request import (
    CHAT_TEMPLATE,
    IMAGE_PLACEHOLDER,
    auto_cache_length,
    build_request,
    resolve_cache_length,
    synthetic_prompt,
    template_tokens,
)
from tests.conftest import REPO, records, run_sweep


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return validate(compose(config_name="config", overrides=list(overrides)))


@pytest.fixture(scope="module")
def spec():
    """The tiny model's module and tokenizer: no weights."""
    from sweep.cache import MODELS

    return MODELS.spec(config().model)


def count(spec, prompt: str) -> int:
    return len(spec.tokenizer.encode(prompt, add_bos=True))


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("image", [False, True])
@pytest.mark.parametrize("n", [14, 16, 300, 1024, 3000, 8192])
def test_the_prompt_has_exactly_n_tokens(spec, n, seed, image):
    prompt = synthetic_prompt(spec.tokenizer, n, seed=seed, image=image)
    assert count(spec, prompt) == n
    assert prompt.startswith("<start_of_turn>user\n")
    assert prompt.endswith("<end_of_turn>\n<start_of_turn>model\n")
    assert prompt.count(IMAGE_PLACEHOLDER) == (1 if image else 0)


def test_the_minimum_is_the_template_and_one_token(spec):
    minimum = template_tokens(spec.tokenizer) + 1
    assert minimum == count(spec, CHAT_TEMPLATE.format(prompt="")) + 1 == 13  # BOS + 11 + 1
    for image in (False, True):
        assert count(spec, synthetic_prompt(spec.tokenizer, minimum, seed=0, image=image)) == (
            minimum
        )
    with pytest.raises(ConfigError, match=f"prompt_tokens=.*at least {minimum} tokens") as err:
        build_request(config(f"prompt_tokens={minimum - 1}"), spec, None)
    assert err.value.key == "prompt_tokens"


def test_the_prompt_is_deterministic_per_seed(spec):
    def prompt(seed):
        return synthetic_prompt(spec.tokenizer, 200, seed=seed)

    assert prompt(0) == prompt(0)
    assert prompt(0) != prompt(1)
    request = build_request(config("prompt_tokens=200", "seed=3"), spec, None)
    assert request.prompts == (prompt(3),)


def test_the_request_counts_exact_text_and_image_soft_tokens(spec):
    text = build_request(config("prompt_tokens=300", "batch_size=2"), spec, None)
    assert text.prompt_tokens == 300 and text.batch_size == 2
    assert all(count(spec, p) == 300 for p in text.prompts)
    image = np.zeros((8, 8, 3), np.uint8)
    req = build_request(config("prompt_tokens=300", "mode=image"), spec, image)
    assert IMAGE_PLACEHOLDER in req.prompts[0] and count(spec, req.prompts[0]) == 300
    assert req.prompt_tokens == 300 + spec.image_soft_tokens()
    assert req.images.shape == (1, 1, 8, 8, 3)


def test_null_prompt_tokens_keeps_the_modes_prompt(spec):
    cfg = config()
    assert cfg.prompt_tokens is None and cfg.engine.cache_length is None
    request = build_request(cfg, spec, None)
    assert request.prompts == (CHAT_TEMPLATE.format(prompt=cfg.mode.prompt),)
    assert request.cache_length == 2048


def test_auto_cache_length_is_a_power_of_two_at_least_2048():
    assert [auto_cache_length(n) for n in (1, 100, 2048, 2049, 3008, 4096, 4097, 9000)] == [
        2048,
        2048,
        2048,
        4096,
        4096,
        4096,
        8192,
        16384,
    ]


def test_the_cache_length_is_resolved_from_the_request(spec):
    # prompt 3000 + tokens 8 -> 4096; the default token sweep keeps one 2048 program
    assert build_request(config("prompt_tokens=3000", "tokens=8"), spec, None).cache_length == 4096
    for tokens in (128, 256, 512, 1024):
        assert build_request(config(f"tokens={tokens}"), spec, None).cache_length == 2048
    # an explicit value is kept, also when it is not a power of two
    cfg = config("prompt_tokens=100", "tokens=8", "engine.cache_length=1000")
    assert build_request(cfg, spec, None).cache_length == 1000
    assert resolve_cache_length(cfg, 992) == 1000


def test_an_explicit_cache_too_small_is_refused_naming_engine_cache_length(spec):
    # the config alone: prompt_tokens + tokens over the explicit length
    with pytest.raises(ConfigError, match=r"engine\.cache_length=256"):
        config("prompt_tokens=250", "tokens=8", "engine.cache_length=256")
    # the request: the image's soft tokens come on top of the text tokens
    cfg = config("prompt_tokens=250", "tokens=6", "mode=image", "engine.cache_length=256")
    with pytest.raises(ConfigError, match=r"more than engine\.cache_length=256") as err:
        build_request(cfg, spec, np.zeros((8, 8, 3), np.uint8))
    assert err.value.key == "engine.cache_length"
    # null: the same job is sized to fit
    cfg = config("prompt_tokens=250", "tokens=6", "mode=image")
    assert build_request(cfg, spec, None).cache_length == 2048


def test_the_fit_check_sizes_the_kv_cache_like_the_request(spec):
    # A chip too small for anything: the verdict names the KV cache length it sized.
    small = ("topology=v6e-1", "topology.hbm_bytes=1")
    auto = config(*small, "prompt_tokens=3000", "tokens=8")
    assert "x 4096 positions" in fit_problem(auto)
    assert "x 4096 positions" in fit_problem(auto, build_request(auto, spec, None).cache_length)
    assert "x 2048 positions" in fit_problem(config(*small))
    explicit = config(*small, "prompt_tokens=3000", "tokens=8", "engine.cache_length=16384")
    assert "x 16384 positions" in fit_problem(explicit)


def test_every_engine_reports_the_same_prompt_tokens(tiny):
    from sweep.engine import ENGINES

    for mode in ("text", "image"):
        cfg = config("prompt_tokens=40", "tokens=2", f"mode={mode}", "engine.cache_length=64")
        image = np.zeros((16, 16, 3), np.uint8) if mode == "image" else None
        request = build_request(cfg, tiny, image)
        counts = {
            name: cls(tiny, cache_length=request.cache_length).generate(request).prompt_tokens
            for name, cls in ENGINES.items()
        }
        assert set(counts.values()) == {request.prompt_tokens}, (mode, counts)
    assert request.prompt_tokens == 40 + tiny.image_soft_tokens()


def test_a_prompt_length_sweep_records_exact_prompt_tokens(tmp_path):
    proc = run_sweep(
        tmp_path,
        "experiment=quick",
        "runs.benchmark=1",
        "tokens=4",
        "prompt_tokens=16,300,3000",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    recs = records(tmp_path)
    assert [r["status"] for r in recs] == ["ok"] * 3
    assert [r["config"]["prompt_tokens"] for r in recs] == [16, 300, 3000]
    for rec in recs:
        n = rec["config"]["prompt_tokens"]
        runs = [run for phase in rec["phases"].values() for run in phase["runs"]]
        assert runs and {run["prompt_tokens"] for run in runs} == {n}
    assert rec["config"]["engine"]["cache_length"] is None  # no manual cache setting
    assert [r["engine"]["cache_length"] for r in recs] == [2048, 2048, 4096]
