"""Accelerator installs: extras pinned to the project's JAX, and a clear failure when the
devices do not appear (checked here on a CPU machine, where a GPU/TPU install must fail)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO

TOOL = REPO / "tools" / "check_accelerator.py"


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_accelerator_extras_pin_the_projects_jax_version():
    (jax_pin,) = [d for d in project()["dependencies"] if d.startswith("jax==")]
    version = jax_pin.removeprefix("jax==")
    extras = project()["optional-dependencies"]
    for name, plugin in (("tpu", "tpu"), ("cuda", "cuda13"), ("cuda12", "cuda12")):
        assert extras[name] == [f"jax[{plugin}]=={version}"], extras[name]


@pytest.mark.parametrize(("accel", "hint"), [("cuda", "nvidia-smi"), ("tpu", "TPU VM")])
def test_an_install_whose_devices_do_not_appear_fails_clearly(accel, hint):
    proc = subprocess.run(
        [sys.executable, str(TOOL), accel], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert re.search(rf"ACCEL={accel}: JAX sees only \d+ cpu device", proc.stderr), proc.stderr
    assert hint in proc.stderr and "Traceback" not in proc.stderr


def test_an_unknown_accelerator_names_the_choices():
    proc = subprocess.run([sys.executable, str(TOOL), "rocm"], capture_output=True, text=True)
    assert proc.returncode == 1 and "expected one of tpu, cuda, cuda12" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("extra", ["cuda", "tpu"])
def test_the_accelerator_extras_resolve(extra, tmp_path):
    """`pip install --dry-run -e '.[cuda]'` / `'.[tpu]'` resolve against the registry."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--report",
            str(tmp_path / "report.json"),
            "-e",
            f"{REPO}[{extra}]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "report.json").read_text()
    assert ("libtpu" if extra == "tpu" else "jax-cuda13-plugin") in report
