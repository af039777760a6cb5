"""Dry runs, progress lines with an ETA, `-m` with --cfg/--info, and `env.concurrent_jobs`.

Two real sweeps (a 3-job basic one, a 2-job joblib one) and a dry run; the rest is unit-level.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, records, run_sweep, sweep_env

QUICK3 = ("experiment=quick", "runs.benchmark=1")


def _output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------
# unit level: job counts, concurrency, the progress line


def test_job_count_is_the_product_of_the_sweep_values_for_the_basic_sweeper():
    from sweep.progress import job_count

    basic = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}
    assert job_count(basic, ["tokens=8,16", "mode=text,image", "seed=1"]) == 4
    assert job_count(basic, ["tokens=range(1,4)"]) == 3
    # the sweeper's params (experiment=card) count too; the command line wins for a key
    card = basic | {"params": {"tokens": "128,256,512,1024", "mode": "text,image"}}
    assert job_count(card, []) == 8
    assert job_count(card, ["tokens=4"]) == 2
    assert job_count({"_target_": "hydra_plugins.optuna.OptunaSweeper"}, ["x=1,2"]) is None


def test_concurrent_jobs_from_the_launcher_config():
    import os

    from sweep.progress import concurrent_jobs

    joblib = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
    assert concurrent_jobs(None) == 1
    assert (
        concurrent_jobs({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
        == 1
    )
    assert concurrent_jobs(joblib | {"n_jobs": 2}) == 2
    assert concurrent_jobs(joblib | {"n_jobs": 8}, total=3) == 3  # no more than the jobs
    assert concurrent_jobs(joblib | {"n_jobs": -1}) == os.cpu_count()
    assert concurrent_jobs({"_target_": "hydra_plugins.hydra_ray_launcher.RayLauncher"}) is None


def test_progress_line_estimates_the_rest_from_the_jobs_done():
    from sweep.progress import progress_line

    line = progress_line(1, 3, "tokens=2", "ok", 10.0, 12.0)
    assert line.startswith("[1/3] tokens=2 ok in 10.0 s; ETA ~24 s for the sweep")
    assert "ETA" not in progress_line(2, None, "tokens=2", "ok", 1.0, 5.0)
    assert progress_line(2, None, "tokens=2", "ok", 1.0, 5.0).startswith("[2/?]")
    assert "sweep done" in progress_line(3, 3, "x", "failed", 1.0, 9.0)


# ------------------------------------------------------------------------------------------
# the command line


def test_dry_run_lists_every_job_in_seconds_and_builds_nothing(tmp_path):
    cache = tmp_path / "xla"
    env = sweep_env(SWEEP_COMPILE_CACHE=str(cache))
    started = time.perf_counter()
    proc = run_sweep(
        tmp_path / "dry", "dry_run=true", "tokens=8,16", "mode=text,image", env=env, timeout=120
    )
    elapsed = time.perf_counter() - started
    out = _output(proc)
    assert proc.returncode == 0, out[-3000:]
    lines = [line for line in out.splitlines() if "[dry run] job" in line]
    assert len(lines) == 4, out[-3000:]
    for tokens, mode in [("8", "text"), ("8", "image"), ("16", "text"), ("16", "image")]:
        assert any(f"tokens={tokens}" in ln and f"mode={mode}" in ln for ln in lines), lines
    assert all("fits" in ln and "weights" in ln and "KV cache" in ln for ln in lines), lines
    assert elapsed < 60, f"dry run took {elapsed:.1f} s"
    # no model, no compile, no record
    assert "random-init params" not in out and "warmup" not in out
    assert not cache.exists() or not any(cache.rglob("*")), list(cache.rglob("*"))
    assert not list((tmp_path / "dry").glob("*/metrics.json*"))


@pytest.mark.parametrize("flags", [("--cfg", "job"), ("--info",)])
def test_multirun_with_cfg_or_info_shows_configs_and_runs_nothing(tmp_path, flags):
    args = [sys.executable, "-m", "sweep.run", "-m", "tokens=8,16", *flags]
    proc = subprocess.run(
        args, cwd=REPO, env=sweep_env(), capture_output=True, text=True, timeout=120
    )
    out = _output(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "2 job(s)" in proc.stdout
    if flags[0] == "--cfg":
        assert "tokens: 8" in proc.stdout and "tokens: 16" in proc.stdout
    assert "Launching" not in out  # no job ran


# ------------------------------------------------------------------------------------------
# real sweeps


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    sweep_dir = tmp_path_factory.mktemp("progress_sweep")
    proc = run_sweep(sweep_dir, *QUICK3, "tokens=2,3,4")
    assert proc.returncode == 0, _output(proc)[-4000:]
    return sweep_dir, proc


def test_a_sweep_logs_each_job_as_k_of_n_with_an_eta(basic_sweep):
    _, proc = basic_sweep
    out = _output(proc)
    assert "[1/3] " in out and "[2/3] " in out and "[3/3] " in out, out[-3000:]
    assert "ETA ~" in out
    # long steps say what they do, and how long they took
    assert "building random-init params of model=tiny" in out
    assert "warmup: 1 run(s) (compiles prefill and decode on first use): done in" in out


def test_a_basic_sweep_records_one_job_at_a_time(basic_sweep):
    sweep_dir, _ = basic_sweep
    recs = records(sweep_dir)
    assert len(recs) == 3
    assert [r["env"]["concurrent_jobs"] for r in recs] == [1, 1, 1]


def test_a_joblib_sweep_records_its_concurrent_jobs(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    proc = run_sweep(
        tmp_path, *QUICK3, "tokens=2,3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
    )
    assert proc.returncode == 0, _output(proc)[-4000:]
    recs = records(tmp_path)
    assert [r["env"]["concurrent_jobs"] for r in recs] == [2, 2]
    out = _output(proc)  # k counts the jobs done, whichever worker ends first
    assert "[1/2] " in out and "[2/2] " in out, out[-3000:]
