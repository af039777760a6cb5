"""tools/device_bench.sh end to end on the CPU (the `one` plan: a single sweep of the given
overrides), with its report (tools/device_report.py) and trace summary (tools/trace_summary.py)."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import REPO


def _bench(tmp_path, deadline_s: int, *overrides: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DEADLINE_S": str(deadline_s),
        "DEVICE_BENCH_DIR": str(tmp_path / "runs"),
        "DEVICE_BENCH_REPORT": str(tmp_path / "device_bench.md"),
        "SWEEP_COMPILE_CACHE": str(tmp_path / "xla"),
    }
    return subprocess.run(
        ["bash", "tools/device_bench.sh", "one", "topology=cpu", "model=tiny", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_one_sweep_records_ok_jobs_with_a_report_and_the_trace_summary(tmp_path):
    out = _bench(tmp_path, 300, "tokens=4", "runs.benchmark=1", "batch_size=1,2", "profile=true")
    assert out.returncode == 0, out.stderr[-2000:]
    report = (tmp_path / "device_bench.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| tiny |")]
    assert len(rows) == 2 and all("| ok |" in row for row in rows)
    assert {row.split(" | ")[3] for row in rows} == {"1", "2"}  # the batch column
    assert "2 of 2 jobs ok" in report
    # Each profiled job's trace is summarized, and the report carries the summaries.
    summaries = list((tmp_path / "runs").glob("*/00-one/*/profile/plugins/profile/*/summary.md"))
    assert len(summaries) == 2 and report.count("### Trace of 00-one/") == 2
    assert "| Op | Count | Total ms |" in report


def test_a_sweep_that_would_start_after_the_deadline_is_skipped(tmp_path):
    out = _bench(tmp_path, 5, "tokens=4")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "skip 00-one" in out.stdout
    assert "No job records" in (tmp_path / "device_bench.md").read_text()
