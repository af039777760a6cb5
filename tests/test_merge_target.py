"""Where a sweep merges: the `merge` config node (`merge.on_end`, `merge.dir`,
`merge.markdown`), relative paths against the directory the sweep was launched from."""

from __future__ import annotations

import subprocess

from omegaconf import OmegaConf

from sweep.callbacks import merge_target
from tests.conftest import REPO, run_sweep


def git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--ignored=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def repo_outputs() -> dict[str, int]:
    paths = [REPO / "BENCHMARKS.md", *sorted((REPO / "benchmarks").glob("*"))]
    return {str(p): p.stat().st_mtime_ns for p in paths if p.is_file()}


def test_a_sweep_merged_elsewhere_leaves_the_checkout_untouched(tmp_path):
    before, outputs = git_status(), repo_outputs()
    out = tmp_path / "OUT"
    proc = run_sweep(
        tmp_path / "sweep",
        "experiment=quick",
        "tokens=4",
        "runs.benchmark=1",
        "merge.on_end=true",
        f"merge.dir={out}/b",
        f"merge.markdown={out}/B.md",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "B.md").read_text().startswith("# Benchmark Results")
    assert (out / "b" / "metrics.json").is_file() and (out / "b" / "index.html").is_file()
    assert f"{out}/B.md" in proc.stdout + proc.stderr  # the log says where it merged
    assert git_status() == before and repo_outputs() == outputs


def test_relative_merge_paths_are_the_launch_directory_s(tmp_path):
    cfg = OmegaConf.create({"merge": {"on_end": True, "dir": "out/b", "markdown": "B.md"}})
    target = merge_target(cfg, cwd=tmp_path)
    assert (target.dir, target.markdown) == (tmp_path / "out" / "b", tmp_path / "B.md")
    absolute = OmegaConf.create({"merge": {"on_end": False, "dir": "/x/b", "markdown": "/y.md"}})
    target = merge_target(absolute, cwd=tmp_path)
    assert not target.on_end and str(target.dir) == "/x/b" and str(target.markdown) == "/y.md"
