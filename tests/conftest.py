"""Shared test helpers: real sweeps run as real processes into temporary sweep dirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Short and small: every test sweep pays ~10 s of imports and model build per process.
QUICK = ("experiment=quick", "tokens=8", "runs.benchmark=2")


def sweep_env(**extra: str) -> dict[str, str]:
    """Environment for a test sweep: no wandb network, no user caches touched."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.setdefault("WANDB_MODE", "disabled")
    env["WANDB_SILENT"] = "true"
    env.update(extra)
    return env


def run_sweep(
    sweep_dir: Path,
    *overrides: str,
    multirun: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """`python -m sweep.run [-m] hydra.sweep.dir=<sweep_dir> overrides...` as a subprocess."""
    args = [sys.executable, "-m", "sweep.run"]
    if multirun:
        args += ["-m", f"hydra.sweep.dir={sweep_dir}"]
    else:
        args += [f"hydra.run.dir={sweep_dir}"]
    args += ["merge.on_end=false", *overrides]
    return subprocess.run(
        args, cwd=REPO, env=env or sweep_env(), capture_output=True, text=True, timeout=timeout
    )


def records(sweep_dir: Path) -> list[dict]:
    """The job records of a sweep, in job order."""
    paths = sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: int(p.parent.name))
    return [json.loads(p.read_text()) for p in paths]


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    """Tokenizer and compile caches in a per-session temp dir (shared by subprocesses)."""
    root = tmp_path_factory.mktemp("caches")
    os.environ.setdefault("WANDB_MODE", "disabled")  # in-process jobs: no wandb unless asked
    os.environ["SWEEP_CACHE_DIR"] = str(root / "sweep")
    os.environ["SWEEP_COMPILE_CACHE"] = str(root / "xla")
    yield


@pytest.fixture(scope="module")
def tiny():
    """The embedded tiny model, random-init (seed 0), built in-process."""
    from sweep.config import ModelConfig
    from sweep.models import build_model

    return build_model(ModelConfig(name="tiny", arch="tiny"), seed=0)


@pytest.fixture(scope="session")
def quick_sweep(tmp_path_factory) -> Path:
    """One real 4-job sweep (text/image x 2 token counts), shared by every test that reads
    records: `tokens=4,8 mode=text,image` with 2 benchmark runs each."""
    sweep_dir = tmp_path_factory.mktemp("quick_sweep")
    proc = run_sweep(
        sweep_dir, "experiment=quick", "runs.benchmark=2", "tokens=4,8", "mode=text,image"
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return sweep_dir
