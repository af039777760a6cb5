"""sweep.results on real sweep records (the `quick_sweep` fixture: 4 jobs, runs 1/2/1): the
frames and their figures, the CSVs, two machines kept apart, history, escaping, module sizes."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sweep import results
from sweep.env import cpu_identity
from sweep.metrics import RUN_METRICS, STATS
from sweep.record import PHASES, write_record
from sweep.results.frames import PHASE_COLUMNS, RUN_COLUMNS
from tests.conftest import REPO, records
from tests.test_merge import new_identity, retime, table_lines, table_rows

CONTRACT = (
    # axes
    "model",
    "mode",
    "mode_label",
    "tokens",
    "batch_size",
    "engine",
    "topology",
    "quant",
    "seed",
    "prompt_tokens",
    # machine
    "hostname",
    "cpu_model",
    "device_kind",
    "device_count",
    "hosts",
    "backend",
    "machine",
    # versions and provenance
    "jax",
    "jaxlib",
    "gemma",
    "git_commit",
    "sweep_dir",
    "job_num",
    "run_key",
    "machine_key",
    "started_at",
    "status",
    "error",
    "superseded",
)
PHASE_EXTRA = (
    "phase",
    "runs",
    "compiles",
    "compile_s",
    "cache_hits",
    "cache_misses",
    "program_hits",
    "program_misses",
    "wall_s",
)


def merge_into(out: Path, *inputs: Path, **kw) -> results.MergeResult:
    return results.merge(
        inputs,
        store=out / "metrics.json",
        markdown=out / "BENCHMARKS.md",
        plots_dir=out,
        warn=lambda m: None,
        **kw,
    )


def missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def test_frames_have_a_row_per_run_and_per_phase_with_the_contract_columns(quick_sweep, tmp_path):
    runs = results.load_runs(quick_sweep)
    phases = results.load_phases(quick_sweep)
    assert len(runs) == 4 * (1 + 2 + 1) == 16
    assert len(phases) == 4 * 3 == 12
    assert tuple(runs.columns) == RUN_COLUMNS and tuple(phases.columns) == PHASE_COLUMNS
    for name in (*CONTRACT, "phase", "run_index", *RUN_METRICS, "new_tokens"):
        assert name in runs.columns, name
    assert "first_token_derived" in runs.columns
    for name in (*CONTRACT, *PHASE_EXTRA):
        assert name in phases.columns, name
    for metric in RUN_METRICS:
        for stat in STATS:
            assert f"{metric}_{stat}" in phases.columns
    assert set(phases["phase"]) == set(PHASES) and not phases["superseded"].any()
    assert list(phases.groupby("phase", sort=False)["runs"].sum()) == [4, 8, 4]
    assert set(runs["mode_label"]) == {"Text-Only", "With Image"}
    assert set(runs["mode"]) == {"text", "image"} and set(runs["tokens"]) == {4, 8}
    assert str(runs["started_at"].dtype).startswith("datetime64") and runs["started_at"].dt.tz
    rec = records(quick_sweep)[0]
    row = phases.iloc[0]
    assert row["hostname"] == rec["env"]["hostname"] and row["cpu_model"] == rec["env"]["cpu_model"]
    assert row["machine"] == f"{rec['env']['cpu_model']} on {rec['env']['hostname']}"
    assert row["backend"] == "cpu" and row["device_count"] == 1 and row["hosts"] == 1
    assert row["jax"] == rec["env"]["versions"]["jax"]
    assert row["sweep_dir"] == rec["sweep"]["dir"] and row["status"] == "ok"
    # The same records through a merged store: the same frames.
    merge_into(tmp_path, quick_sweep)
    store = tmp_path / "metrics.json"
    pd.testing.assert_frame_equal(results.load_phases(store), phases)
    pd.testing.assert_frame_equal(results.load_runs(store, quick_sweep), runs)  # counted once


def test_figures_equal_the_records_own_runs_and_summaries(quick_sweep):
    runs = results.load_runs(quick_sweep)
    phases = results.load_phases(quick_sweep)
    by_job = {r["sweep"]["job_num"]: r for r in records(quick_sweep)}
    for row in runs.to_dict("records"):
        raw = by_job[row["job_num"]]["phases"][row["phase"]]["runs"][row["run_index"]]
        for name in (*RUN_METRICS, "new_tokens", "prompt_tokens", "first_token_derived"):
            if raw[name] is None:
                assert missing(row[name]), name
            else:
                assert row[name] == pytest.approx(raw[name], rel=1e-12), name
    for row in phases.to_dict("records"):
        block = by_job[row["job_num"]]["phases"][row["phase"]]
        assert row["runs"] == block["summary"]["runs"] == len(block["runs"])
        for key in ("compiles", "compile_s", "cache_hits", "cache_misses", "program_hits"):
            assert row[key] == block[key], key
        for metric in RUN_METRICS:
            described = block["summary"][metric]
            for stat in STATS:
                value = row[f"{metric}_{stat}"]
                if described is None:
                    assert missing(value), (metric, stat)
                else:
                    assert value == pytest.approx(described[stat], rel=1e-9, abs=1e-12)


def test_the_merge_writes_deterministic_csvs_of_the_frames(quick_sweep, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    result = merge_into(a, quick_sweep)
    assert {str(a / "runs.csv"), str(a / "phases.csv")} <= set(result.written)
    runs = pd.read_csv(a / "runs.csv")
    phases = pd.read_csv(a / "phases.csv")
    assert runs.shape == (16, len(RUN_COLUMNS)) and tuple(runs.columns) == RUN_COLUMNS
    assert phases.shape == (12, len(PHASE_COLUMNS)) and tuple(phases.columns) == PHASE_COLUMNS
    frame = results.load_runs(quick_sweep)
    assert list(runs["total_s"]) == list(frame["total_s"])  # floats read back exactly
    # Twice, and from the records in another order: the same bytes.
    first = {n: (a / n).read_bytes() for n in ("runs.csv", "phases.csv")}
    assert not merge_into(a, quick_sweep).written
    merge_into(b, *sorted(quick_sweep.glob("*/metrics.json"), reverse=True))
    assert {n: (b / n).read_bytes() for n in first} == first
    # A stale CSV is found by --check.
    (a / "runs.csv").write_bytes(first["runs.csv"].replace(b"\n", b"\r\n"))
    assert merge_into(a, check=True).stale == [str(a / "runs.csv")]


def _as_machine(record: dict, hostname: str | None, cpu_model: str | None) -> dict:
    rec = copy.deepcopy(record)
    for key, value in (("hostname", hostname), ("cpu_model", cpu_model)):
        if value is None:
            rec["env"].pop(key, None)
        else:
            rec["env"][key] = value
    return rec


def test_two_machines_results_of_one_config_are_both_kept(quick_sweep, tmp_path):
    other = tmp_path / "other"
    for i, rec in enumerate(records(quick_sweep)):
        write_record(other / str(i) / "metrics.json", _as_machine(rec, "box2", "Intel Xeon 8480+"))
    out = tmp_path / "out"
    merge_into(out, quick_sweep)
    result = merge_into(out, other)
    assert (result.added, result.replaced, result.unchanged) == (4, 0, 0)
    phases = results.load_phases(out / "metrics.json")
    assert len(phases) == 2 * 12 and not phases["superseded"].any()
    env = records(quick_sweep)[0]["env"]
    assert phases.groupby("machine").size().to_dict() == {
        f"{env['cpu_model']} on {env['hostname']}": 12,
        "Intel Xeon 8480+ on box2": 12,
    }
    md = (out / "BENCHMARKS.md").read_text()
    assert len(table_rows(md)) == 24
    assert sum("machine=Intel Xeon 8480+ on box2" in r[14] for r in table_rows(md)) == 12
    columns, _, *rows = table_lines(md, "Benchmark Percentiles")
    assert columns[-1] == "Machine" and len(rows) == 8
    assert sum(r[-1] == "Intel Xeon 8480+ on box2" for r in rows) == 4
    columns, _, *rows = table_lines(md, "Environment")
    assert len(rows) == 2 and "Machine" in columns


def test_a_newer_result_supersedes_the_older_which_stays_in_the_store(quick_sweep, tmp_path):
    out = tmp_path / "out"
    merge_into(out, quick_sweep)
    target = records(quick_sweep)[2]
    newer = retime(target, scale_total=1.5, shift_s=3600)
    newer["sweep"] = {**target["sweep"], "dir": "multirun/later", "job_num": 0}
    write_record(tmp_path / "later" / "0" / "metrics.json", newer)
    result = merge_into(out, tmp_path / "later")
    assert (result.added, result.replaced, result.unchanged) == (0, 1, 0)
    store = out / "metrics.json"
    assert json.loads(store.read_text())["store_version"] == 2
    current = results.load_phases(store)
    everything = results.load_phases(store, history=True)
    assert len(current) == 12 and len(everything) == 15
    old = everything[everything["superseded"]]
    assert len(old) == 3 and set(old["sweep_dir"]) == {target["sweep"]["dir"]}
    assert set(current[current["tokens"] == target["config"]["tokens"]]["sweep_dir"]) >= {
        "multirun/later"
    }
    assert len(results.load_runs(store, history=True)) == 16 + 4
    # An older result merged after a newer one goes to history, the tables keep the newer.
    before = (out / "BENCHMARKS.md").read_bytes()
    oldest = retime(target, shift_s=-3600)
    write_record(tmp_path / "older" / "0" / "metrics.json", oldest)
    result = merge_into(out, tmp_path / "older")
    assert (result.added, result.replaced, result.unchanged, result.history) == (0, 0, 1, 1)
    assert "1 older result(s) kept as history" in results.summary_line(result, "B.md")
    assert len(results.load_phases(store, history=True)) == 18
    md = (out / "BENCHMARKS.md").read_bytes()
    assert table_rows(md.decode()) == table_rows(before.decode())


def test_older_records_and_version_1_stores_still_read(quick_sweep, tmp_path):
    recs = [_as_machine(r, None, None) for r in records(quick_sweep)]
    for rec in recs:
        rec["env"].pop("cpu_flags", None)
    store = tmp_path / "v1" / "metrics.json"
    store.parent.mkdir()
    store.write_text(json.dumps({"store_version": 1, "records": recs, "plots": {}}))
    phases = results.load_phases(store)
    assert len(phases) == 12 and phases["hostname"].isna().all()
    assert set(phases["machine"]) == {"cpu on unknown host"}
    out = tmp_path / "out"
    shutil.copytree(store.parent, out)
    result = merge_into(out, quick_sweep)  # the same runs on a known machine: 4 more cells
    assert (result.added, result.records) == (4, 8)
    assert json.loads((out / "metrics.json").read_text())["store_version"] == 2


def test_labels_and_messages_are_escaped(quick_sweep, tmp_path):
    rec = new_identity(records(quick_sweep)[0], mode__label="<script>alert(1)</script>")
    failed = new_identity(records(quick_sweep)[1], tokens=99)
    failed.update(
        status="failed",
        error={"type": "ValueError", "message": "bad <b>input</b> & more"},
        phases={},
    )
    write_record(tmp_path / "s" / "0" / "metrics.json", rec)
    write_record(tmp_path / "s" / "1" / "metrics.json", failed)
    out = tmp_path / "out"
    merge_into(out, tmp_path / "s")
    md = (out / "BENCHMARKS.md").read_text()
    assert "<script>" not in md and "<b>" not in md and "& more" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "bad &lt;b&gt;input&lt;/b&gt; &amp; more" in md
    assert "<script>alert" not in (out / "index.html").read_text()
    # The frames keep the text as it was: escaping is the renderer's.
    phases = results.load_phases(tmp_path / "s")
    assert "<script>alert(1)</script>" in set(phases["mode_label"])
    failed_rows = phases[phases["status"] == "failed"]
    assert len(failed_rows) == 3 and (failed_rows["runs"] == 0).all()
    assert failed_rows["total_s_mean"].isna().all()
    assert len(results.load_runs(tmp_path / "s")) == 4  # only the ok job's runs


def test_a_bad_file_is_skipped_with_a_warning_naming_it(quick_sweep, tmp_path):
    root = tmp_path / "in"
    shutil.copytree(quick_sweep, root)
    bad = root / "bad" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text("{")
    warnings: list[str] = []
    runs = results.load_runs(root, warn=warnings.append)
    assert len(runs) == 16
    assert len(warnings) == 1 and warnings[0].startswith(f"skipped {bad}: not valid JSON")


def test_cpu_identity_reads_the_model_and_the_isa_flags():
    x86 = (
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile avx512_vnni\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    )
    assert cpu_identity(x86) == {
        "cpu_model": "Intel(R) Xeon(R) Platinum 8480+",
        "cpu_flags": [
            "amx_bf16",
            "amx_tile",
            "avx",
            "avx2",
            "avx512_bf16",
            "avx512_vnni",
            "avx512f",
            "fma",
        ],
    }
    arm = "processor\t: 0\nFeatures\t: fp asimd sve sve2 bf16 i8mm\n"
    assert cpu_identity(arm)["cpu_flags"] == ["asimd", "bf16", "i8mm", "sve", "sve2"]
    assert cpu_identity(x86.replace("avx512_bf16 ", ""))["cpu_flags"].count("avx512_bf16") == 0


def test_the_sweep_records_the_cpu(quick_sweep):
    rec = records(quick_sweep)[0]
    assert rec["env"]["backend"] == "cpu"
    assert rec["env"]["cpu_model"] and isinstance(rec["env"]["cpu_flags"], list)
    assert rec["env"]["cpu_flags"] == sorted(rec["env"]["cpu_flags"])


def test_no_module_in_the_package_is_over_600_lines():
    sizes = {
        str(p.relative_to(REPO)): len(p.read_text().splitlines())
        for p in (REPO / "src" / "sweep").rglob("*.py")
    }
    assert {p: n for p, n in sizes.items() if n > 600} == {}
