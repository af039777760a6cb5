"""Many machines per sweep through Hydra launcher plugins (Ray, SLURM via submitit), and the
seed grid preset. The launcher packages are optional extras: their tests skip without them.

Slow tests run real 2-job sweeps: on a local Ray cluster (`hydra/launcher=ray`) and with
submitit's local executor (`hydra/launcher=submitit_local`, the SLURM launcher's stand-in), then
merge the records with tools/merge_benchmarks.py exactly as after any sweep.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sweep.config import validate  # also registers the `base_config` schema
from sweep.preflight import fit_problem
from tests.conftest import REPO, records, run_sweep, sweep_env

CONF = REPO / "conf"
JOBS = ("experiment=quick", "tokens=4", "runs.benchmark=1", "mode=text,image")


def hydra_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_seed_v6e_preset_is_the_seed_grid():
    cfg = hydra_cfg("experiment=seed_v6e")
    assert cfg.model.name == "gemma3_4b" and cfg.model.arch == "Gemma3_4B"
    assert cfg.topology.name == "v6e-1" and cfg.topology.platform == "tpu"
    assert cfg.batch_size == 1
    assert (cfg.runs.warmup, cfg.runs.benchmark, cfg.runs.final) == (1, 10, 1)
    params = cfg.hydra.sweeper.params
    assert params.tokens == "128,256,512,1024" and params.mode == "text,image"
    # Every job of the grid fits the chip and the KV cache (image prompt + 1024 tokens).
    config = validate(hydra_cfg("experiment=seed_v6e", "tokens=1024", "mode=image"))
    assert fit_problem(config) is None


@pytest.mark.parametrize(
    ("launcher", "package", "target"),
    [
        ("ray", "hydra_plugins.hydra_ray_launcher", "ray_launcher.RayLauncher"),
        ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher", "SlurmLauncher"),
        ("submitit_local", "hydra_plugins.hydra_submitit_launcher", "LocalLauncher"),
    ],
)
def test_launcher_configs_compose_with_resources(launcher, package, target):
    pytest.importorskip(package)
    if launcher == "ray":
        extra = [
            "hydra.launcher.ray.init.address=auto",
            "+hydra.launcher.ray.remote.num_gpus=1",
            "+hydra.launcher.ray.remote.resources={TPU:4}",
            "+hydra.launcher.ray.remote.max_calls=1",
        ]
    elif launcher == "submitit_slurm":
        extra = [
            "hydra.launcher.partition=gpu",
            "hydra.launcher.gpus_per_node=1",
            "hydra.launcher.timeout_min=120",
        ]
    else:
        extra = ["hydra.launcher.timeout_min=10"]
    cfg = hydra_cfg(f"hydra/launcher={launcher}", *extra)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "ray":
        assert cfg.hydra.launcher.ray.remote.resources == {"TPU": 4}
        assert cfg.hydra.launcher.ray.init.address == "auto"
    elif launcher == "submitit_slurm":
        assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.gpus_per_node == 1
    # Records land one per job under the sweep dir, where the merge looks.
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}"


def merge(sweep_dir: Path, out: Path) -> dict:
    """tools/merge_benchmarks.py over the sweep dir into `out`; the merged store."""
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "merge_benchmarks.py"),
            str(sweep_dir),
            "--store",
            str(out / "metrics.json"),
            "--markdown",
            str(out / "B.md"),
            "--plots-dir",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (out / "B.md").is_file()
    return json.loads((out / "metrics.json").read_text())


def check_two_ok_jobs_merged(sweep_dir: Path, out: Path) -> None:
    recs = records(sweep_dir)
    assert [r["sweep"]["job_num"] for r in recs] == [0, 1]
    assert all(r["status"] == "ok" for r in recs), [r["error"] for r in recs]
    assert {r["choices"]["mode"] for r in recs} == {"text", "image"}
    store = merge(sweep_dir, out)
    merged = [r for r in store["records"] if r.get("status") == "ok"]
    assert len(merged) == 2
    assert {r["run_key"] for r in merged} == {r["run_key"] for r in recs}
    markdown = (out / "B.md").read_text()
    assert "With Image" in markdown and "Text-Only" in markdown


@pytest.fixture
def ray_root():
    """A short temp dir for Ray's session files (its socket paths must stay under ~107 bytes,
    which pytest's tmp_path can exceed)."""
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_ray_launcher_runs_a_sweep_on_a_local_cluster(tmp_path, ray_root):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    pytest.importorskip("ray")
    sweep_dir = tmp_path / "sweep"
    env = sweep_env(
        HOME=str(ray_root / "home"),  # Ray writes ~/.ray (its auth token) otherwise
        RAY_TMPDIR=str(ray_root),
        RAY_USAGE_STATS_ENABLED="0",
    )
    proc = run_sweep(
        sweep_dir,
        *JOBS,
        "hydra/launcher=ray",
        "+hydra.launcher.ray.init.num_cpus=2",
        f"+hydra.launcher.ray.init._temp_dir={ray_root / 'rt'}",
        "+hydra.launcher.ray.init.include_dashboard=false",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Ray Launcher is launching 2 jobs" in proc.stdout + proc.stderr
    assert (ray_root / "rt").is_dir()
    check_two_ok_jobs_merged(sweep_dir, tmp_path / "merged")


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    proc = run_sweep(
        sweep_dir,
        *JOBS,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(list((sweep_dir / ".submitit").iterdir())) >= 2  # one folder per submitted job
    check_two_ok_jobs_merged(sweep_dir, tmp_path / "merged")
