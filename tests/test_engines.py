"""The three engines on the embedded model: same greedy tokens, exact counts, no recompiles."""

from __future__ import annotations

import numpy as np
import pytest

from sweep.engine import FusedEngine, SamplerEngine, StreamEngine
from sweep.phases import compile_monitor
from sweep.preflight import load_image
from sweep.request import CHAT_TEMPLATE, Request

CACHE = 256


def request(mode: str, tokens: int) -> Request:
    from sweep.config import ASSETS_DIR

    if mode == "image":
        prompt = CHAT_TEMPLATE.format(prompt="Describe this picture: <start_of_image>")
        image = load_image(str(ASSETS_DIR / "default_image.png"))
        return Request(prompts=(prompt,), images=image[None, None], max_new_tokens=tokens)
    prompt = CHAT_TEMPLATE.format(prompt="Write a short story about a cat.")
    return Request(prompts=(prompt,), images=None, max_new_tokens=tokens)


@pytest.mark.parametrize("mode", ["text", "image"])
def test_fused_sampler_and_stream_agree_token_for_token(tiny, mode):
    req = request(mode, 12)
    outs = {
        E.name: E(tiny, cache_length=CACHE).generate(req)
        for E in (FusedEngine, SamplerEngine, StreamEngine)
    }
    for name, gen in outs.items():
        assert gen.new_tokens == 12, name
        assert gen.token_ids.shape == (1, 12), name
        assert gen.total_s > gen.first_token_s > 0, name
    np.testing.assert_array_equal(outs["fused"].token_ids, outs["sampler"].token_ids)
    np.testing.assert_array_equal(outs["fused"].token_ids, outs["stream"].token_ids)
    assert len({g.prompt_tokens for g in outs.values()}) == 1


def test_fused_serves_every_token_count_without_recompiling(tiny):
    engine = FusedEngine(tiny, cache_length=CACHE)
    engine.generate(request("text", 4))  # compiles prefill + decode
    with compile_monitor.watch() as stats:
        counts = [engine.generate(request("text", n)).new_tokens for n in (1, 7, 30, 100)]
    assert counts == [1, 7, 30, 100]
    assert stats.compiles == 0


def test_greedy_prefix_is_stable_across_lengths(tiny):
    engine = FusedEngine(tiny, cache_length=CACHE)
    short = engine.generate(request("text", 5)).token_ids
    long = engine.generate(request("text", 20)).token_ids
    np.testing.assert_array_equal(short, long[:, :5])


def test_decode_windows_give_the_tokens_of_full_attention(tiny):
    """A 1024-slot cache is attended in windows (the first 256 slots, then all 1024). Crossing
    the edge gives the tokens of gemma's Sampler, which attends to its whole cache."""
    from sweep.engine import attention_windows

    assert attention_windows(1024) == (256, 1024)
    assert attention_windows(2048) == (256, 1024, 2048)
    assert attention_windows(256) == (256,) and attention_windows(100) == (100,)
    req = request("text", 300)  # the prompt plus 300 tokens runs past slot 256
    fused = FusedEngine(tiny, cache_length=1024).generate(req)
    sampler = SamplerEngine(tiny, cache_length=1024).generate(req)
    assert fused.new_tokens == 300 and fused.prompt_tokens + 300 > 256
    assert len(set(fused.token_ids[0].tolist())) > 10  # not one token repeated
    np.testing.assert_array_equal(fused.token_ids, sampler.token_ids)
