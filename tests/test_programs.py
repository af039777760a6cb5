"""Stored programs (sweep/programs.py): a new engine loads the traced program instead of tracing
the model again, produces the same tokens, and a damaged or mismatched file is never used."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sweep import programs
from sweep.engine import FusedEngine
from sweep.phases import compile_monitor
from tests.test_engines import CACHE, request


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(programs, "programs_dir", lambda: tmp_path)
    return tmp_path


def generate(model, mode: str = "text", tokens: int = 6):
    """A fresh engine (nothing in memory) generating once; returns (generation, stats)."""
    engine = FusedEngine(model, cache_length=CACHE)
    with compile_monitor.watch() as stats:
        gen = engine.generate(request(mode, tokens))
    return gen, stats


@pytest.mark.parametrize("mode", ["text", "image"])
def test_a_new_engine_loads_the_stored_programs_and_gives_the_same_tokens(tiny, store, mode):
    first, cold = generate(tiny, mode)
    assert (cold.program_misses, cold.program_hits) == (2, 0)  # prefill and decode traced
    assert len(list(store.glob(f"*{programs.SUFFIX}"))) == 2

    second, warm = generate(tiny, mode)
    assert (warm.program_misses, warm.program_hits) == (0, 2)
    np.testing.assert_array_equal(second.token_ids, first.token_ids)

    with pytest.MonkeyPatch.context() as mp:  # the plain jit path: the same tokens again
        mp.setattr(programs, "programs_dir", lambda: None)
        plain, stats = generate(tiny, mode)
    assert (stats.program_misses, stats.program_hits) == (0, 0)
    np.testing.assert_array_equal(plain.token_ids, first.token_ids)


def test_a_damaged_stored_program_is_traced_again(tiny, store, caplog):
    first, _ = generate(tiny)
    for path in store.glob(f"*{programs.SUFFIX}"):
        path.write_bytes(b"not a program")
    with caplog.at_level(logging.WARNING, logger="sweep"):
        again, stats = generate(tiny)
    assert "is unreadable" in caplog.text
    assert (stats.program_misses, stats.program_hits) == (2, 0)
    np.testing.assert_array_equal(again.token_ids, first.token_ids)
    _, stats = generate(tiny)  # rewritten whole: the next engine loads it
    assert (stats.program_misses, stats.program_hits) == (0, 2)


def test_the_file_key_follows_every_input_that_changes_the_program(tiny, store):
    engine = FusedEngine(tiny, cache_length=CACHE)
    other_cache = FusedEngine(tiny, cache_length=2 * CACHE)
    sig = programs.signature((np.zeros((1, 9), np.int32),))
    longer = programs.signature((np.zeros((1, 10), np.int32),))
    wider = programs.signature((np.zeros((1, 9), np.int64),))
    path = engine._prefill.path_for(store, sig)
    assert path == FusedEngine(tiny, cache_length=CACHE)._prefill.path_for(store, sig)
    others = {
        other_cache._prefill.path_for(store, sig),  # static: cache length
        engine._decode.path_for(store, sig),  # another function
        engine._prefill.path_for(store, longer),  # shape
        engine._prefill.path_for(store, wider),  # dtype
    }
    assert path not in others and len(others) == 4


def test_the_file_key_is_hashed_when_the_engine_is_built_not_in_the_first_request(tiny, store):
    # Hashing gemma's sources takes ~20 ms: it must not land in the first request's TTFT.
    programs._toolchain_key.cache_clear()
    FusedEngine(tiny, cache_length=CACHE)
    assert programs._toolchain_key.cache_info().currsize == 1
