"""Multi-host jobs: `jax.distributed` setup, and two CPU processes on localhost as one job."""

from __future__ import annotations

import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir

from sweep import distributed
from sweep.distributed import DistributedError, explicit_settings
from sweep.job import run_job
from tests.conftest import REPO, records, run_sweep, sweep_env

FAST = ("experiment=quick", "tokens=4", "runs.benchmark=1", "model.dtype=float32")
# One job over two processes of one CPU device each: a 2-device mesh spanning both.
TWO_HOSTS = ("topology=cpu-2proc",)


def topo(num_hosts: int, platform: str = "cpu") -> SimpleNamespace:
    return SimpleNamespace(name="t", num_hosts=num_hosts, platform=platform)


def test_explicit_settings_come_from_the_three_jax_variables():
    assert explicit_settings({}) is None
    env = {
        "JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234",
        "JAX_NUM_PROCESSES": "4",
        "JAX_PROCESS_ID": "3",
    }
    assert explicit_settings(env) == {
        "coordinator_address": "10.0.0.2:1234",
        "num_processes": 4,
        "process_id": 3,
    }


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"JAX_COORDINATOR_ADDRESS": "h:1"}, "missing JAX_NUM_PROCESSES, JAX_PROCESS_ID"),
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
            "must be integers",
        ),
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
            "must be in [0, JAX_NUM_PROCESSES=2)",
        ),
    ],
)
def test_partial_or_malformed_settings_are_clear_errors(env, words):
    with pytest.raises(DistributedError) as err:
        explicit_settings(env)
    assert words in str(err.value)


def test_single_host_topologies_never_initialize(monkeypatch):
    monkeypatch.setattr(distributed.jax.distributed, "initialize", pytest.fail)
    assert distributed.initialize(topo(1)) is False
    assert distributed.is_writer()  # a plain process writes its records


def test_process_count_must_match_the_topology(monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "3")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    with pytest.raises(DistributedError, match="num_hosts=2, but JAX_NUM_PROCESSES=3"):
        distributed.initialize(topo(2))


def job(tmp_path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*FAST, *overrides, "compile_cache_dir=null"])
    return run_job(cfg, job_dir=tmp_path / "_".join(overrides)).to_dict()


@pytest.fixture
def no_jax_env(monkeypatch):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("topology", "reason"),
    [
        ("cpu-2proc", "has 2 device(s), but JAX sees 1"),
        ("v6e-16", "expects platform tpu"),
    ],
)
def test_a_multi_host_topology_with_no_cluster_is_skipped(
    tmp_path, monkeypatch, no_jax_env, topology, reason
):
    # As in a fresh process where JAX's cluster detection finds nothing to join.
    def no_cluster(*args, **kwargs):
        assert not args and not kwargs  # auto-detection: no explicit settings
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(distributed, "_backends_initialized", lambda: False)
    monkeypatch.setattr(distributed.jax.distributed, "initialize", no_cluster)
    rec = job(tmp_path, f"topology={topology}")
    assert rec["status"] == "skipped", rec["error"]
    assert reason in rec["error"]["message"]
    assert not rec["model"]
    assert distributed.is_writer()


def test_joining_a_slice_after_single_host_jobs_is_a_clear_failure(
    tmp_path, monkeypatch, no_jax_env
):
    monkeypatch.setattr(distributed, "_backends_initialized", lambda: True)
    monkeypatch.setattr(distributed.jax.distributed, "initialize", pytest.fail)
    rec = job(tmp_path, "topology=cpu-2proc")
    assert rec["status"] == "failed"
    assert "run multi-host topologies in a sweep of their own" in rec["error"]["message"]
    # Another platform's slice is not this machine's: skipped as usual, nothing joined.
    rec = job(tmp_path, "topology=v6e-16")
    assert rec["status"] == "skipped"
    assert "expects platform tpu" in rec["error"]["message"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_run_one_job_and_only_process_zero_writes(tmp_path):
    sweep_dir = tmp_path / "two"
    args = [sys.executable, "-m", "sweep.run", "-m", f"hydra.sweep.dir={sweep_dir}"]
    args += ["merge.on_end=false", *FAST, *TWO_HOSTS]
    coordinator = f"localhost:{_free_port()}"
    procs = [
        subprocess.Popen(
            args,
            cwd=REPO,
            env=sweep_env(
                JAX_COORDINATOR_ADDRESS=coordinator,
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(i),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"process {i}:\n{out[-4000:]}"

    assert len(list(sweep_dir.rglob("metrics.json"))) == 1  # process 1 wrote nothing
    (rec,) = records(sweep_dir)
    assert rec["status"] == "ok", rec["error"]
    env = rec["env"]
    assert (env["hosts"], env["device_count"], env["local_device_count"]) == (2, 2, 1)
    assert env["process_index"] == 0
    assert rec["wandb"]["status"] == "disabled"

    single = tmp_path / "single"
    proc = run_sweep(single, *FAST, "topology=cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (ref,) = records(single)
    assert ref["env"]["hosts"] == 1
    assert rec["generated_token_ids"] == ref["generated_token_ids"]
    assert rec["generated_text"] == ref["generated_text"]
