"""sweep.results on real sweep records (the `quick_sweep` fixture: 4 jobs, runs 1/2/1): the
frames and their figures, the CSVs, two machines kept apart, history, escaping, module sizes;
the bandwidth limit, percentiles gated by the run count, the Memory table, concurrent jobs."""

from __future__ import annotations

import copy
import json
import math
import shutil
import statistics
from pathlib import Path

import pandas as pd
import pytest

from sweep import results
from sweep.costs import CostModel
from sweep.env import cpu_identity
from sweep.metrics import LIMIT_METRICS, RUN_METRICS, STATS, decode_bytes
from sweep.record import PHASES, write_record
from sweep.results.frames import MEMORY, PHASE_COLUMNS, RUN_COLUMNS
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
    *LIMIT_METRICS,
    *MEMORY,
    "concurrent_jobs",
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
    # One seed table per machine: the first under the seed's heading, the other in its own.
    first, second = table_rows(md), table_rows(md, "Inference Runs on Intel Xeon 8480+ on box2")
    assert len(first) == len(second) == 12
    assert not any("box2" in r[14] for r in first)
    assert all("machine=Intel Xeon 8480+ on box2" in r[14] for r in second)
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


# --------------------------------------------------------------------------------------------
# The bandwidth limit, percentiles by run count, the Memory table, concurrent jobs (issue 16)


def write_all(root: Path, recs: list[dict]) -> Path:
    for i, rec in enumerate(recs):
        write_record(root / str(i) / "metrics.json", rec)
    return root


def by_header(md: str, section: str) -> list[dict[str, str]]:
    header, _, *rows = table_lines(md, section)
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_the_utilization_table_shows_the_bandwidth_limit_for_every_job(quick_sweep, tmp_path):
    recs = records(quick_sweep)
    unknown = new_identity(recs[0], seed=5)
    unknown["cost_model"]["peak_bytes_per_s"] = None
    merge_into(tmp_path, write_all(tmp_path / "in", [*recs, unknown]))
    rows = by_header((tmp_path / "BENCHMARKS.md").read_text(), "MBU / MFU")
    assert len(rows) == 5  # every ok job, the one with no known peak too
    header = list(rows[0])
    mbu = header.index("Median MBU")
    assert header[mbu + 1 : mbu + 4] == [
        "Median Decode Tokens/s",
        "Limit Decode Tokens/s",
        "ms/Step Above Limit",
    ]
    cells = {(r["Token Count"], r["Mode"]): r for r in rows if r["Peak Source"] != "—"}
    for rec in recs:  # recomputed here from the raw samples and the record's cost model
        cost = CostModel(**rec["cost_model"])  # on CPU: the probed read peak
        assert cost.peak_bytes_per_s and rec["env"]["backend"] == "cpu"
        limits, above = [], []
        for run in rec["phases"]["benchmark"]["runs"]:
            steps, batch = run["new_tokens"] - 1, run["batch_size"]
            read = decode_bytes(
                cost, prompt_tokens=run["prompt_tokens"], steps=steps, batch_size=batch
            )
            limits.append(batch * cost.peak_bytes_per_s / (read / steps))
            measured_ms = 1000 * (run["total_s"] - run["first_token_s"]) / steps
            above.append(measured_ms - 1000 * read / steps / cost.peak_bytes_per_s)
        row = cells[(str(rec["config"]["tokens"]), rec["config"]["mode"]["label"])]
        assert row["Limit Decode Tokens/s"] == f"{statistics.median(limits):.4f}"
        assert row["ms/Step Above Limit"] == f"{statistics.median(above):.4f}"
        assert statistics.median(above) > 0 and float(row["Median MBU"]) < 1
    (none,) = [r for r in rows if r["Peak Source"] == "—"]
    assert none["Limit Decode Tokens/s"] == none["ms/Step Above Limit"] == none["Median MBU"] == "—"
    assert none["Median Decode Tokens/s"] != "—"
    phases = results.load_phases(tmp_path / "metrics.json")
    bench = phases[(phases.phase == "benchmark") & phases.peak_bytes_per_s.notna()]
    assert bench.limit_decode_tokens_per_s.notna().all() and len(bench) == 4
    assert (bench.ms_per_step_above_limit > 0).all()
    # The limit is where MBU is 1: median decode tokens/s over the limit is about the MBU.
    ratio = bench.decode_tokens_per_s_median / bench.limit_decode_tokens_per_s
    assert list(ratio) == pytest.approx(list(bench.mbu_median), rel=0.2)


def _with_runs(rec: dict, n: int, seed: int) -> dict:
    rec = new_identity(rec, seed=seed)
    runs = rec["phases"]["benchmark"]["runs"]
    for i in range(len(runs), n):  # slower copies: MBU stays below the probed peak
        run = copy.deepcopy(runs[i % 2])
        run["total_s"] = run["first_token_s"] + (run["total_s"] - run["first_token_s"]) * (
            1 + i / 100
        )
        runs.append(run)
    return rec


def test_percentiles_are_shown_only_with_enough_runs(quick_sweep, tmp_path):
    rec = records(quick_sweep)[2]  # text, 8 tokens: 7 decode steps
    recs = [
        _with_runs(rec, n, seed) for seed, n in ((11, 2), (12, 9), (13, 10), (14, 99), (15, 100))
    ]
    merge_into(tmp_path, write_all(tmp_path / "in", recs))
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "p90 from 10 runs, p99 from 100" in md
    shown = {}
    for row in by_header(md, "Benchmark Percentiles"):
        for metric, unit in (("TTFT", " s"), ("Decode Tokens/s", "")):
            p50, p90, p99 = (row[f"{metric} {p}{unit}"] for p in ("p50", "p90", "p99"))
            assert p50 != "—" and row[f"{metric} Stdev{unit}"] != "—"
            shown.setdefault(row["Runs"], set()).add((p90 != "—", p99 != "—"))
    assert shown == {
        "2": {(False, False)},
        "9": {(False, False)},
        "10": {(True, False)},
        "99": {(True, False)},
        "100": {(True, True)},
    }
    # The frames and phases.csv keep the computed values whatever the run count.
    phases = results.load_phases(tmp_path / "metrics.json")
    bench = phases[phases.phase == "benchmark"]
    assert bench.first_token_s_p99.notna().all() and bench.decode_tokens_per_s_p90.notna().all()
    assert pd.read_csv(tmp_path / "phases.csv").first_token_s_p99.notna().sum() == 3 * 5


MEMORY_BLOCK = {
    "peak_bytes": 3 * 2**30 + 2**29,
    "peak_source": "process_rss",
    "weight_bytes": 33 * 2**20,
    "kv_cache_bytes": 512 * 2**10,
    "programs": {
        "prefill": {"temp_bytes": 5 * 2**20, "argument_bytes": 34 * 2**20, "output_bytes": 600},
        "decode": {"temp_bytes": 3 * 2**19, "argument_bytes": 35 * 2**20, "output_bytes": 4096},
    },
    "programs_reason": None,
}


def test_the_memory_table_reads_the_records_memory_blocks(quick_sweep, tmp_path):
    recs = records(quick_sweep)
    recs[0]["memory"] = copy.deepcopy(MEMORY_BLOCK)
    recs[1]["memory"] = MEMORY_BLOCK | {"peak_bytes": 7 * 2**30, "peak_source": "device"}
    recs[2]["memory"] = MEMORY_BLOCK | {"programs": None, "programs_reason": "no compiled program"}
    recs[3].pop("memory", None)  # an older record: left out of the table
    merge_into(tmp_path, write_all(tmp_path / "in", recs))
    md = (tmp_path / "BENCHMARKS.md").read_text()
    rows = by_header(md, "Memory")
    assert [(r["Token Count"], r["Mode"]) for r in rows] == [
        ("4", "Text-Only"),
        ("4", "With Image"),
        ("8", "Text-Only"),
    ]
    first, device, no_programs = rows
    assert (first["Peak"], first["Peak Source"]) == ("3.50 GiB", "process peak RSS")
    assert (device["Peak"], device["Peak Source"]) == ("7.00 GiB", "device memory_stats()")
    assert (first["Weights"], first["KV Cache"]) == ("33.0 MiB", "512.0 KiB")
    assert [first[f"Prefill {k}"] for k in ("Temp", "Args", "Out")] == [
        "5.0 MiB",
        "34.0 MiB",
        "600 B",
    ]
    assert [first[f"Decode {k}"] for k in ("Temp", "Args", "Out")] == [
        "1.5 MiB",
        "35.0 MiB",
        "4.0 KiB",
    ]
    assert first["Programs Note"] == "—" and first["Status"] == "ok"
    assert (
        no_programs["Decode Temp"] == "—" and no_programs["Programs Note"] == "no compiled program"
    )
    assert md.index("## MBU / MFU") < md.index("## Memory") < md.index("## Engine Comparison")
    phases = results.load_phases(tmp_path / "metrics.json")
    bench = phases[phases.phase == "benchmark"].reset_index()
    peaks = [None if missing(v) else v for v in bench.memory_peak_bytes]
    assert peaks == [3 * 2**30 + 2**29, 7 * 2**30, 3 * 2**30 + 2**29, None]
    assert bench.memory_decode_temp_bytes[0] == 3 * 2**19 and missing(
        bench.memory_decode_temp_bytes[2]
    )
    assert bench.memory_peak_source[1] == "device" and bench.memory_programs_reason[0] is None
    assert str(bench.memory_kv_cache_bytes.dtype) == "Int64"
    # Deterministic: merged again, and --check, nothing changes.
    assert not merge_into(tmp_path, tmp_path / "in").written
    assert merge_into(tmp_path, check=True).stale == []
    # Without any memory block: the table says so.
    for rec in recs:
        rec.pop("memory", None)
    merge_into(tmp_path / "old", write_all(tmp_path / "old_in", recs))
    assert "No record has a memory block" in (tmp_path / "old" / "BENCHMARKS.md").read_text()


def test_concurrent_jobs_are_noted_in_the_notes_and_the_environment(quick_sweep, tmp_path):
    shared = [copy.deepcopy(r) for r in records(quick_sweep)]
    for rec in shared:
        rec["env"]["concurrent_jobs"] = 2
    alone = [new_identity(r, seed=7) for r in records(quick_sweep)]
    for rec in alone:
        rec["env"]["concurrent_jobs"] = 1
    merge_into(tmp_path, write_all(tmp_path / "in", [*shared, *alone]))
    md = (tmp_path / "BENCHMARKS.md").read_text()
    rows = table_rows(md)
    assert len(rows) == 24 and all(len(r) == 15 for r in rows)
    noted = [
        r for r in rows if r[14].endswith("; concurrent_jobs=2") or "; concurrent_jobs=2;" in r[14]
    ]
    assert len(noted) == 12 and not any("concurrent_jobs=1" in r[14] for r in rows)
    (env,) = by_header(md, "Environment")  # one sweep dir, one machine
    assert env["Concurrent Jobs"] == "1, 2"
    phases = results.load_phases(tmp_path / "metrics.json")
    assert sorted(phases.concurrent_jobs.unique()) == [1, 2]
    assert str(phases.concurrent_jobs.dtype) == "Int64"


def test_the_sweeps_own_records_fill_the_memory_table(quick_sweep, tmp_path):
    """Acceptance: every record has memory.peak_bytes and, for the fused engine, the decode
    program's temp bytes; BENCHMARKS.md shows them."""
    recs = records(quick_sweep)
    assert all(r["memory"]["peak_bytes"] > 0 for r in recs)
    merge_into(tmp_path, quick_sweep)
    rows = by_header((tmp_path / "BENCHMARKS.md").read_text(), "Memory")
    assert len(rows) == 4
    for row in rows:
        assert row["Peak"].endswith("iB") and row["Peak Source"] == "process peak RSS"
        assert row["Decode Temp"] != "—" and row["Weights"] != "—"
