"""tools/compare_benchmarks.py on the real `quick_sweep` records and modified copies of them."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sweep.record import write_record
from tests.conftest import REPO, records
from tests.test_merge import retime

TOOL = REPO / "tools" / "compare_benchmarks.py"


def compare_tool(*args, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def load_tool():
    spec = importlib.util.spec_from_file_location("compare_benchmarks", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][2:]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]


def jittered(record: dict, seed: int) -> dict:
    """Rerun noise: each run's timings moved by up to ±3%, independently."""
    rng = random.Random(seed)
    out = json.loads(json.dumps(record))
    for block in out["phases"].values():
        for run in block["runs"]:
            first, post = run["first_token_s"], run["total_s"] - run["first_token_s"]
            run["first_token_s"] = first * rng.uniform(0.97, 1.03)
            run["total_s"] = run["first_token_s"] + post * rng.uniform(0.97, 1.03)
    return out


def spread(record: dict) -> float:
    dec = [r["decode_tokens_per_s"] for r in record["phases"]["benchmark"]["runs"]]
    return max(dec) / min(dec)


def test_same_config_reports_no_regression(quick_sweep, tmp_path):
    proc = compare_tool(quick_sweep, quick_sweep)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No regression in 4 configuration(s)." in proc.stdout

    # A second sweep of the same config: same run identities, slightly different samples.
    for i, rec in enumerate(records(quick_sweep)):
        write_record(tmp_path / "again" / str(i) / "metrics.json", jittered(rec, i))
    proc = compare_tool(quick_sweep, tmp_path / "again", "-o", tmp_path / "cmp.md")
    assert proc.returncode == 0, proc.stdout
    table = rows(proc.stdout)
    assert len(table) == 4
    assert not any("REGRESSION" in row[-1] for row in table)
    assert (tmp_path / "cmp.md").read_text() == proc.stdout
    assert proc.stdout.startswith("# Benchmark Comparison\n")


def test_decode_slowed_by_30_percent_is_a_regression(quick_sweep, tmp_path):
    recs = records(quick_sweep)
    # With 2 samples a side the interval reaches 0.7 x max/min of the samples: pick the
    # steadiest job so machine noise cannot hide a 30% slowdown.
    target = min(range(len(recs)), key=lambda i: spread(recs[i]))
    if spread(recs[target]) > 1.3:
        pytest.skip(f"decode samples too noisy on this machine (max/min {spread(recs[target])})")
    new = tmp_path / "new"
    shutil.copytree(quick_sweep, new)
    write_record(new / str(target) / "metrics.json", retime(recs[target], scale_post=1 / 0.7))
    proc = compare_tool(quick_sweep, new)
    assert proc.returncode == 1, proc.stdout
    table = rows(proc.stdout)
    flagged = [row for row in table if "REGRESSION" in row[-1]]
    assert len(flagged) == 1 and flagged[0][-1] == "**REGRESSION: Decode**"
    cfg = recs[target]["config"]
    assert flagged[0][3] == cfg["mode"]["label"] and flagged[0][4] == str(cfg["tokens"])
    assert flagged[0][13] == "0.7000"  # decode ratio of the medians, exactly
    low, high = (float(x) for x in flagged[0][14].split(" – "))
    assert low <= 0.7 <= high < 0.95
    assert flagged[0][9] == "1.0000"  # TTFT untouched
    assert "**1 regression(s)** in 4 configuration(s)." in proc.stdout

    # The merged store works as an input too, and a lenient threshold lets it pass.
    store = tmp_path / "benchmarks" / "metrics.json"
    merged = subprocess.run(
        [sys.executable, str(REPO / "tools" / "merge_benchmarks.py"), str(quick_sweep)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert merged.returncode == 0, merged.stderr
    assert compare_tool(store, new).returncode == 1
    assert compare_tool(store, new, "--threshold", "0.5").returncode == 0


def test_nothing_to_compare_exits_2(quick_sweep, tmp_path):
    rec = records(quick_sweep)[0]
    other = json.loads(json.dumps(rec))
    other["config"]["seed"] = 99  # another configuration
    write_record(tmp_path / "a" / "metrics.json", other)
    proc = compare_tool(quick_sweep, tmp_path / "a" / "metrics.json")
    assert proc.returncode == 2 and "no configuration is in both" in proc.stderr
    assert compare_tool(quick_sweep, tmp_path / "missing").returncode == 2


def test_judge_and_bootstrap():
    tool = load_tool()
    assert tool.judge(0.80, 0.90, higher_is_better=True, threshold=0.05) == "regression"
    assert tool.judge(0.80, 0.97, higher_is_better=True, threshold=0.05) == "same"
    assert tool.judge(1.10, 1.20, higher_is_better=False, threshold=0.05) == "regression"
    assert tool.judge(0.80, 0.90, higher_is_better=False, threshold=0.05) == "faster"
    old = [10.0, 10.5, 9.8, 10.2, 10.1]
    point, low, high = tool.bootstrap_ratio(
        old, [x * 0.7 for x in old], resamples=500, confidence=0.95, rng=np.random.default_rng(0)
    )
    assert point == pytest.approx(0.7) and low < 0.7 < high < 0.8
