"""Real checkpoints, quantization, batches, topologies and the fit check (in-process jobs)."""

from __future__ import annotations

import sys

import pytest
from hydra import compose, initialize_config_dir

from sweep.job import run_job
from tests.conftest import REPO, records, run_sweep, sweep_env

CONF = REPO / "conf"
FAST = ["tokens=6", "runs.benchmark=2", "compile_cache_dir=null"]


def job(tmp_path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*FAST, *overrides])
    return run_job(cfg, job_dir=tmp_path / "_".join(overrides).replace("/", "_")[:80]).to_dict()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    sys.path.insert(0, str(REPO / "tools"))
    from save_tiny_checkpoint import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=0)


@pytest.mark.parametrize("mode", ["text", "image"])
def test_saved_tiny_checkpoint_loads_back_bit_identically(tmp_path, tiny_checkpoint, mode):
    params, tokenizer = tiny_checkpoint
    random_init = job(tmp_path, f"mode={mode}")
    loaded = job(
        tmp_path, f"mode={mode}", f"model.checkpoint={params}", f"model.tokenizer={tokenizer}"
    )
    assert random_init["status"] == loaded["status"] == "ok", loaded["error"]
    assert loaded["model"]["source"] == str(params)
    assert loaded["generated_token_ids"] == random_init["generated_token_ids"]
    assert loaded["model"]["param_bytes"] == random_init["model"]["param_bytes"]


def test_a_checkpoint_of_another_model_is_a_clear_error(tmp_path, tiny_checkpoint):
    params, _ = tiny_checkpoint
    rec = job(tmp_path, "model=gemma3_270m", f"model.checkpoint={params}")
    assert rec["status"] == "failed"
    assert "does not match" in rec["error"]["message"]


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_quantized_tiny_model_runs_and_says_so(tmp_path, quant):
    plain = job(tmp_path)
    rec = job(tmp_path, f"quant={quant}")
    assert rec["status"] == "ok", rec["error"]
    assert rec["config"]["quant"] == quant
    assert rec["model"]["param_bytes"] < plain["model"]["param_bytes"]
    assert all(r["new_tokens"] == 6 for r in rec["phases"]["benchmark"]["runs"])


def test_batch_of_four_counts_every_sequence(tmp_path):
    rec = job(tmp_path, "batch_size=4")
    assert rec["status"] == "ok", rec["error"]
    assert len(rec["generated_token_ids"]) == 4 and len(rec["generated_texts"]) == 4
    for run in rec["phases"]["benchmark"]["runs"]:
        assert run["batch_size"] == 4
        assert run["tokens_per_s"] == pytest.approx(4 * run["new_tokens"] / run["total_s"])
        assert run["decode_tokens_per_s"] == pytest.approx(
            4 * (run["new_tokens"] - 1) / run["post_first_s"]
        )


def test_a_model_too_big_for_the_chip_is_skipped_with_sizes(tmp_path):
    rec = job(tmp_path, "model=gemma3_27b", "topology=v5e-1")
    assert rec["status"] == "skipped"
    message = rec["error"]["message"]
    assert "GiB of weights" in message and "16.0 GiB" in message and "v5e-1" in message
    assert not rec["model"]  # decided before anything was built


def test_tpu_topology_on_this_machine_is_skipped_not_failed(tmp_path):
    rec = job(tmp_path, "topology=v6e-1")
    assert rec["status"] == "skipped"
    assert "expects platform tpu" in rec["error"]["message"]


def test_sharded_equals_unsharded_on_eight_simulated_devices(tmp_path):
    env = sweep_env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
    run_sweep(tmp_path, *FAST, "model.dtype=float32", "topology=cpu-8,cpu-4", env=env)
    recs = {r["choices"]["topology"]: r for r in records(tmp_path)}
    assert recs["cpu-8"]["status"] == "ok", recs["cpu-8"]["error"]
    assert recs["cpu-8"]["env"]["device_count"] == 8
    assert recs["cpu-4"]["status"] == "skipped"
    assert "has 4 device(s), but JAX sees 8" in recs["cpu-4"]["error"]["message"]
    single = tmp_path / "single"
    proc = run_sweep(single, *FAST, "model.dtype=float32", "topology=cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (unsharded,) = records(single)
    assert recs["cpu-8"]["generated_token_ids"] == unsharded["generated_token_ids"]
