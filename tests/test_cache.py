"""The process holds one model at a time: a new model releases the old one and its engines;
a token-count sweep keeps reusing them."""

from __future__ import annotations

import gc
import weakref

from hydra import compose, initialize_config_dir

from sweep.cache import MODELS
from sweep.job import run_job
from tests.conftest import REPO, records, run_sweep

FAST = ["experiment=quick", "runs.benchmark=1", "compile_cache_dir=null"]


def job(tmp_path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*FAST, *overrides])
    return run_job(cfg, job_dir=tmp_path / "_".join(overrides))


def test_a_new_model_releases_the_old_one_and_its_engines(tmp_path):
    first = job(tmp_path, "seed=0", "tokens=4")
    assert first.status == "ok", first.error
    model = weakref.ref(MODELS.loaded)
    engines = [weakref.ref(e) for e in MODELS.engines()]
    assert MODELS.held == (1, 1)

    # Same model, another token count: reused, nothing rebuilt or recompiled.
    again = job(tmp_path, "seed=0", "tokens=6")
    assert again.model.reused and again.engine.reused
    assert again.phases["warmup"].compiles == 0
    assert model() is not None

    other = job(tmp_path, "seed=1", "tokens=4")
    assert other.status == "ok" and not other.model.reused and not other.engine.reused
    gc.collect()
    assert model() is None, gc.get_referrers(model())  # the seed-0 model is gone...
    assert all(e() is None for e in engines)  # ...with its engine and its programs
    assert MODELS.held == (1, 1)


def test_a_seed_sweep_does_not_grow_the_process(tmp_path):
    """Acceptance: `-m seed=0,...,5 tokens=8`: the last job's peak RSS within 100 MB of the
    first's (it grew by about 130 MB per job when every engine kept its model)."""
    proc = run_sweep(tmp_path, *FAST[:2], "tokens=8", "seed=0,1,2,3,4,5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    peaks = [r["process_peak_rss_bytes"] for r in records(tmp_path)]
    assert len(peaks) == 6 and all(peaks), peaks
    growth_mb = (peaks[-1] - peaks[0]) / 1e6
    assert growth_mb < 100, [round(p / 1e6) for p in peaks]
