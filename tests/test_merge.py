"""tools/merge_benchmarks.py and sweep.results' merge on real sweep records (the `quick_sweep`
fixture), copied and modified into temp dirs for the bad-file, rerun and failed-job cases."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import shutil
import statistics
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sweep import results
from sweep.metrics import CostModel, run_metrics, summarize
from sweep.record import PHASES, RecordError, run_key, write_record
from sweep.results.jobs import parse_job
from sweep.results.store import StoreError, is_store, read_store
from sweep.results.tables import warmup_note
from tests.conftest import REPO, records, sweep_env

# Copied byte for byte from shared/seed/BENCHMARKS.seed.md.
SEED_PREAMBLE = (
    "# Benchmark Results\n\nThis file is auto-generated from `benchmarks/metrics.json`.\n\n"
    "## Inference Runs\n\n"
    "| Date (UTC) | Script | Phase | Mode | TPU | Token Count | Batch Size | Runs | Avg Total s "
    "| Avg First Token s | Avg Post-First s | Avg Tokens/s | Avg Decode Tokens/s "
    "| Avg Pre-First Tokens/s | Notes |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)
OUTPUTS = (
    "BENCHMARKS.md",
    "benchmarks/metrics.json",
    "benchmarks/decode_tokens_per_s.png",
    "benchmarks/ttft.png",
    "benchmarks/index.html",
    "benchmarks/runs.csv",
    "benchmarks/phases.csv",
)


def merge_tool(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "merge_benchmarks.py"), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def merge_here(cwd: Path, *inputs: Path, **kw) -> results.MergeResult:
    """In-process merge with the default output layout under `cwd`."""
    return results.merge(
        inputs,
        store=cwd / "benchmarks/metrics.json",
        markdown=cwd / "BENCHMARKS.md",
        plots_dir=cwd / "benchmarks",
        warn=lambda m: None,
        **kw,
    )


def table_lines(markdown: str, section: str) -> list[list[str]]:
    """A section's (or subsection's) table (header, rule, rows), each line split into cells."""
    heading = f"\n## {section}\n\n"
    if heading not in markdown:
        heading = f"\n### {section}\n\n"
    body = markdown.split(heading, 1)[1]
    table = body[body.index("| ") :].split("\n\n", 1)[0].splitlines()
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in table]


def table_rows(markdown: str, section: str = "Inference Runs") -> list[list[str]]:
    """Rows of a section's table (by default the first, Inference Runs), split into cells."""
    return table_lines(markdown, section)[2:]


def digest(root: Path) -> dict[str, str]:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in OUTPUTS}


def copy_sweep(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def retime(record: dict, scale_total=1.0, scale_post=1.0, shift_s: float = 0.0) -> dict:
    """A modified copy: every run's raw timings rescaled, derived figures recomputed, and the
    start moved by `shift_s` (a later rerun)."""
    rec = copy.deepcopy(record)
    cost = CostModel(**rec["cost_model"]) if rec.get("cost_model") else None
    for block in rec["phases"].values():
        runs = []
        for run in block["runs"]:
            first = run["first_token_s"] * scale_total
            post = (run["total_s"] - run["first_token_s"]) * scale_total * scale_post
            runs.append(
                run_metrics(
                    total_s=first + post,
                    first_token_s=first,
                    new_tokens=run["new_tokens"],
                    prompt_tokens=run["prompt_tokens"],
                    batch_size=run["batch_size"],
                    cost=cost,
                )
            )
        block["runs"], block["summary"] = runs, summarize(runs)
    for key in ("started_at", "finished_at"):
        when = datetime.fromisoformat(rec[key].replace("Z", "+00:00")) + timedelta(seconds=shift_s)
        rec[key] = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return rec


def new_identity(record: dict, **config) -> dict:
    rec = copy.deepcopy(record)
    for path, value in config.items():
        node = rec["config"]
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    rec["run_key"] = run_key(rec["config"], rec["env"])
    return rec


# --------------------------------------------------------------------------------------------


def test_table_matches_seed_header_and_raw_samples(quick_sweep, tmp_path):
    proc = merge_tool(tmp_path, quick_sweep)
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert md.startswith(SEED_PREAMBLE)
    recs = records(quick_sweep)
    rows = table_rows(md)
    assert len(rows) == 3 * len(recs) == 12
    assert all(len(r) == 15 for r in rows)

    date = min(r["started_at"] for r in recs)[:19].replace("T", " ")
    by_id = {(r["config"]["tokens"], r["config"]["mode"]["name"]): r for r in recs}
    # Phases grouped (warmup, benchmark, final), tokens ascending then mode inside each.
    assert [r[2] for r in rows] == ["warmup"] * 4 + ["benchmark"] * 4 + ["final"] * 4
    assert [int(r[5]) for r in rows[:4]] == [4, 4, 8, 8]
    for row in rows:
        assert row[0] == date
        assert row[1] == "sweep.run (fused)"
        assert row[4] == "cpu"
        image = "image_used=True" in row[14]
        rec = by_id[(int(row[5]), "image" if image else "text")]
        assert row[3] == rec["config"]["mode"]["label"]  # final rows too
        block = rec["phases"][row[2]]
        warmup = "" if row[2] != "warmup" else f"; {warmup_note(block)}"
        machine = f"{rec['env']['cpu_model']} on {rec['env']['hostname']}"
        assert row[14] == f"image_used={image}; model=tiny; machine={machine}{warmup}"
        runs = block["runs"]
        assert row[6] == "1" and row[7] == str(len(runs))
        # Recomputed here from the raw samples, independently of sweep.metrics.
        total = [r["total_s"] for r in runs]
        first = [r["first_token_s"] for r in runs]
        new = [r["new_tokens"] for r in runs]
        post = [t - f for t, f in zip(total, first, strict=True)]
        expect = [
            statistics.fmean(total),
            statistics.fmean(first),
            statistics.fmean(post),
            statistics.fmean(n / t for n, t in zip(new, total, strict=True)),
            statistics.fmean((n - 1) / p for n, p in zip(new, post, strict=True)),
            statistics.fmean(r["batch_size"] / r["first_token_s"] for r in runs),
        ]
        assert row[8:14] == [f"{v:.4f}" for v in expect]
    # One sweep process: the first job compiles (cold, or from the persistent cache when an
    # earlier test warmed it), a later one reuses the process's programs.
    notes = [r[14] for r in rows if r[2] == "warmup"]
    assert any(re.search(r"warmup=(cold|warm) \(\d+ compiles?", n) for n in notes), notes
    assert any(n.endswith("warmup=warm (no compile)") for n in notes), notes
    for section in ("Percentiles", "Compile Time", "MBU / MFU", "Engine Comparison", "Plots"):
        assert f"## {section}" in md or f"## Benchmark {section}" in md
    assert "## Environment" in md and str(quick_sweep) in md


def test_compile_table_sums_the_records_counts(quick_sweep, tmp_path):
    assert merge_tool(tmp_path, quick_sweep).returncode == 0
    md = (tmp_path / "BENCHMARKS.md").read_text()
    columns, _, *rows = table_lines(md, "Compile Time")
    recs = {(r["config"]["tokens"], r["config"]["mode"]["label"]): r for r in records(quick_sweep)}
    assert len(rows) == len(recs) == 4
    for row in rows:
        cells = dict(zip(columns, row, strict=True))
        phases = recs[(int(cells["Token Count"]), cells["Mode"])]["phases"]
        for column, key in (
            ("Cache Hits", "cache_hits"),
            ("Cache Misses", "cache_misses"),
            ("Programs Loaded", "program_hits"),
            ("Programs Traced", "program_misses"),
        ):
            assert cells[column] == str(sum(phases[p][key] for p in PHASES)), column
        assert cells["Warmup Compiles"] == str(phases["warmup"]["compiles"])
    # One sweep process: the first text and image jobs get the 3 programs, the others reuse them.
    programs = [columns.index("Programs Loaded"), columns.index("Programs Traced")]
    assert sum(int(row[i]) for row in rows for i in programs) == 3


def test_merge_is_deterministic_and_check_detects_staleness(quick_sweep, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    files = sorted(quick_sweep.glob("*/metrics.json"))
    assert merge_tool(a, quick_sweep).returncode == 0
    first = digest(a)
    proc = merge_tool(a, quick_sweep)
    assert proc.returncode == 0 and "wrote" not in proc.stdout
    assert digest(a) == first
    # Another order of the inputs, rendered from scratch: the same bytes (PNGs included).
    merge_here(b, *reversed(files))
    assert digest(b) == first

    assert merge_tool(a, "--check", quick_sweep).returncode == 0
    assert merge_tool(a, "--check").returncode == 0  # against the store alone (as in CI)
    md = a / "BENCHMARKS.md"
    text = md.read_text()
    md.write_text(text.replace("| warmup |", "| Warmup |", 1))
    proc = merge_tool(a, "--check")
    assert proc.returncode == 1 and "stale: BENCHMARKS.md" in proc.stderr
    md.write_text(text)
    png = a / "benchmarks" / "ttft.png"
    png.write_bytes(png.read_bytes() + b"\0")
    proc = merge_tool(a, "--check")
    assert proc.returncode == 1 and "ttft.png" in proc.stderr
    assert merge_tool(a).returncode == 0 and digest(a) == first
    # A record that is not merged yet makes the outputs stale too.
    extra = tmp_path / "extra" / "0" / "metrics.json"
    write_record(extra, new_identity(records(quick_sweep)[0], tokens=16))
    assert merge_tool(a, "--check", extra.parent.parent).returncode == 1


def test_bad_files_warn_once_each_and_the_rest_merges(quick_sweep, tmp_path):
    root = copy_sweep(quick_sweep, tmp_path / "in")
    good = records(quick_sweep)[0]
    text = json.dumps(good, indent=2)
    bad = {
        "truncated": text[: len(text) // 2],
        "notjson": "<html>not a record</html>\n",
        "newer": json.dumps({**good, "schema_version": 99}),
        "nan": json.dumps(
            {**good, "phases": {**good["phases"], "warmup": {"runs": [float("nan")]}}}
        ),
        "inf": text.replace(
            f'"total_s": {json.dumps(good["phases"]["benchmark"]["runs"][0]["total_s"])}',
            '"total_s": 1e999',
            1,
        ),
    }
    paths = {}
    for name, body in bad.items():
        path = root / f"bad-{name}" / "metrics.json"
        path.parent.mkdir()
        path.write_text(body)
        paths[name] = path
    proc = merge_tool(tmp_path, root)
    assert proc.returncode == 1
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(bad)
    for path in paths.values():
        [line] = [w for w in warnings if str(path) in w]
        assert line.startswith(f"warning: skipped {path}: ")
    assert "not valid JSON" in next(w for w in warnings if "truncated" in w)
    assert "newer" in next(w for w in warnings if "bad-newer" in w)
    assert "NaN" in next(w for w in warnings if "bad-nan" in w)
    assert len(table_rows((tmp_path / "BENCHMARKS.md").read_text())) == 12
    assert merge_tool(tmp_path, "--allow-bad", root).returncode == 0


def test_any_exception_reading_a_file_skips_only_that_file(quick_sweep, tmp_path):
    root = copy_sweep(quick_sweep, tmp_path / "in")
    deep = root / "deep" / "metrics.json"  # json.loads raises RecursionError on this
    deep.parent.mkdir()
    deep.write_text("[" * 100_000)
    latin = root / "latin1" / "metrics.json"
    latin.parent.mkdir()
    latin.write_bytes(b'{"schema_version": 1, "status": "\xe9t\xe9"}')
    odd = copy.deepcopy(records(quick_sweep)[0])
    odd["cost_model"]["peak_bytes_per_s"] = "fast"  # a string where arithmetic needs a number
    write_record(root / "oddcost" / "metrics.json", new_identity(odd, tokens=64))
    warnings = []
    result = results.merge(
        [root],
        store=tmp_path / "out" / "metrics.json",
        markdown=tmp_path / "BENCHMARKS.md",
        plots_dir=tmp_path / "out",
        warn=warnings.append,
    )
    assert len(warnings) == len(result.skipped) == 3, warnings
    reasons = dict(result.skipped)
    assert "RecursionError" in reasons[str(deep)] or "nest" in reasons[str(deep)]
    assert str(latin) in reasons
    assert "cost_model.peak_bytes_per_s" in reasons[str(root / "oddcost" / "metrics.json")]
    for path in reasons:
        [line] = [w for w in warnings if w.startswith(f"skipped {path}: ")]
        assert "\n" not in line
    assert result.records == 4 and md_rows(tmp_path) == 12

    # The same file as the store itself: unreadable, never overwritten.
    store = tmp_path / "store" / "metrics.json"
    store.parent.mkdir()
    store.write_text("[" * 100_000)
    with pytest.raises(StoreError, match="unreadable store"):
        read_store(store)
    assert not is_store(store)


@pytest.mark.parametrize(
    ("block", "note"),
    [
        (
            {"compiles": 0, "compile_s": 0.0, "cache_hits": 0, "cache_misses": 0},
            "warm (no compile)",
        ),
        (
            {"compiles": 2, "compile_s": 0.4, "cache_hits": 0, "cache_misses": 2},
            "cold (2 compiles, 0.40 s)",
        ),
        ({"compiles": 1, "compile_s": 0.05}, "cold (1 compile, 0.05 s)"),  # before cache counts
        (
            {"compiles": 3, "compile_s": 1.5, "cache_hits": 0, "cache_misses": 0},
            "cold (3 compiles, 1.50 s)",
        ),
        (
            {"compiles": 2, "compile_s": 0.1, "cache_hits": 2, "cache_misses": 0},
            "warm (2 compiles from the persistent cache, 0.10 s)",
        ),
        (
            {"compiles": 3, "compile_s": 2.0, "cache_hits": 1, "cache_misses": 2},
            "cold (3 compiles, 1 from the persistent cache, 2.00 s)",
        ),
        ({"runs": []}, None),  # a record from before compile counts: no note
    ],
)
def test_warmup_notes_say_cold_or_warm(block, note):
    assert warmup_note(block) == (f"warmup={note}" if note else None)


def test_derived_first_token_runs_merge_without_negative_rates(quick_sweep, tmp_path):
    rec = new_identity(records(quick_sweep)[0], engine__name="sampler")
    for block in rec["phases"].values():
        for run in block["runs"]:
            # As gemma's Sampler at 1-2 tokens: the separately timed first token is slower.
            run["first_token_s"] = run["total_s"] * 1.25
            run["first_token_derived"] = True
            run["new_tokens"] = 2
    write_record(tmp_path / "s" / "0" / "metrics.json", rec)
    result = merge_here(tmp_path, tmp_path / "s")
    assert not result.skipped and result.records == 1
    rows = table_rows((tmp_path / "BENCHMARKS.md").read_text())
    assert len(rows) == 3
    for row in rows:
        assert row[10] == "—"  # Avg Post-First s: a negative split of two requests is null
        assert row[12] == "—"  # and so is any decode rate
        assert all(not cell.startswith("-") for cell in row[8:14])  # no negative cell
    job = parse_job(rec)
    assert all(r["mbu"] is None for runs in job.runs.values() for r in runs)

    rec["phases"]["benchmark"]["runs"][0]["first_token_derived"] = "yes"
    with pytest.raises(RecordError, match="first_token_derived"):
        parse_job(rec)


def test_rerun_replaces_its_rows_and_keeps_the_older_in_the_store(quick_sweep, tmp_path):
    sweep = copy_sweep(quick_sweep, tmp_path / "multirun" / "s1")
    merge_here(tmp_path, sweep)
    before = table_rows((tmp_path / "BENCHMARKS.md").read_text())
    store = json.loads((tmp_path / "benchmarks/metrics.json").read_text())
    assert len(store["records"]) == 4

    # The same job run again later, in its own sweep dir: same run_key, new timings.
    target = records(quick_sweep)[1]
    rerun = retime(target, scale_total=2.0, shift_s=3600)
    rerun["sweep"] = {**target["sweep"], "dir": "multirun/rerun", "job_num": 0}
    write_record(tmp_path / "multirun" / "rerun" / "0" / "metrics.json", rerun)
    result = merge_here(tmp_path, tmp_path / "multirun")
    assert (result.added, result.replaced, result.unchanged) == (0, 1, 3)
    after = table_rows((tmp_path / "BENCHMARKS.md").read_text())
    assert len(after) == len(before) == 12
    # The older result stays in the store (history), out of the tables.
    store = json.loads((tmp_path / "benchmarks/metrics.json").read_text())
    assert len(store["records"]) == 5
    assert sum(r["run_key"] == target["run_key"] for r in store["records"]) == 2
    later = rerun["started_at"][:19].replace("T", " ")
    moved = [r for r in after if r[0] == later]
    assert len(moved) == 3 and {r[2] for r in moved} == {"warmup", "benchmark", "final"}
    bench = next(r for r in moved if r[2] == "benchmark")
    mean_total = statistics.fmean(r["total_s"] for r in rerun["phases"]["benchmark"]["runs"])
    assert bench[8] == f"{mean_total:.4f}"

    # Merging the old sweep again keeps the newer record (order does not matter)...
    result = merge_here(tmp_path, sweep)
    assert (result.added, result.replaced) == (0, 0)
    assert table_rows((tmp_path / "BENCHMARKS.md").read_text()) == after
    # ...and a rerun into the same job dir (same sweep) replaces it in place.
    # Slower, not faster: a made-up speed-up could push MBU past the probed bandwidth.
    again = retime(target, scale_total=1.5, shift_s=7200)
    write_record(sweep / "1" / "metrics.json", again)
    merge_here(tmp_path, sweep)
    final = table_rows((tmp_path / "BENCHMARKS.md").read_text())
    assert len(final) == 12 and not [r for r in final if r[0] == later]
    store = json.loads((tmp_path / "benchmarks/metrics.json").read_text())
    assert sum(r["run_key"] == target["run_key"] for r in store["records"]) == 3
    # --history shows the two older results too, marked.
    proc = merge_tool(tmp_path, "--history")
    assert proc.returncode == 0, proc.stderr
    rows = table_rows(proc.stdout)
    assert len(rows) == 12 + 2 * 3
    assert sum(r[14].endswith("; superseded by a newer result") for r in rows) == 6
    assert len([r for r in rows if r[0] == later]) == 3


def test_failed_jobs_are_rows_with_their_status(quick_sweep, tmp_path):
    ok = records(quick_sweep)[0]
    failed = new_identity(ok, tokens=32)
    failed.update(
        status="oom",
        error={"type": "XlaRuntimeError", "message": "RESOURCE_EXHAUSTED: | out of memory"},
        phases={},
        generated_text=None,
    )
    failed.pop("cost_model", None)
    write_record(tmp_path / "s" / "0" / "metrics.json", ok)
    write_record(tmp_path / "s" / "1" / "metrics.json", failed)
    merge_here(tmp_path, tmp_path / "s")
    md = (tmp_path / "BENCHMARKS.md").read_text()
    rows = [r for r in table_rows(md) if r[5] == "32"]
    assert [r[2] for r in rows] == ["warmup", "benchmark", "final"]
    for row in rows:
        assert row[14].endswith("status=oom: XlaRuntimeError")
        assert row[7:14] == ["—"] * 7
    assert "RESOURCE_EXHAUSTED: \\| out of memory" in md.split("## Jobs That Did Not End OK")[1]


def test_tokens_sort_numerically_and_engines_compare(quick_sweep, tmp_path):
    base = records(quick_sweep)[0]
    for i, tokens in enumerate((128, 16, 1024, 4)):
        rec = new_identity(base, tokens=tokens) if tokens != 4 else base
        write_record(tmp_path / "s" / str(i) / "metrics.json", rec)
    slow = new_identity(retime(base, scale_post=2.0), engine__name="stream")
    write_record(tmp_path / "s" / "9" / "metrics.json", slow)
    merge_here(tmp_path, tmp_path / "s")
    md = (tmp_path / "BENCHMARKS.md").read_text()
    warm = [r for r in table_rows(md) if r[2] == "warmup"]
    assert [(r[1], r[5]) for r in warm] == [
        ("sweep.run (fused)", "4"),
        ("sweep.run (fused)", "16"),
        ("sweep.run (fused)", "128"),
        ("sweep.run (fused)", "1024"),
        ("sweep.run (stream)", "4"),
    ]
    section = md.split("## Engine Comparison")[1].split("## Plots")[0]
    lines = [line for line in section.splitlines() if line.startswith("| 2")]
    assert [line.split(" | ")[6] for line in lines] == ["stream", "fused"]
    fused = [c.strip() for c in lines[1].strip("|").split("|")]
    dec = [r["decode_tokens_per_s"] for r in base["phases"]["benchmark"]["runs"]]
    dec_slow = [r["decode_tokens_per_s"] for r in slow["phases"]["benchmark"]["runs"]]
    assert fused[11] == f"{statistics.median(dec) / statistics.median(dec_slow):.4f}"
    assert fused[11] == "2.0000"


class _Html(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.rows, self.images, self.scripts = 0, [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables += 1
            self.rows.append(0)
        elif tag == "tr" and self.tables:
            self.rows[-1] += 1
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "script":
            self.scripts += 1


def test_plots_and_html_render_the_data(quick_sweep, tmp_path):
    from PIL import Image

    merge_here(tmp_path, quick_sweep)
    md = (tmp_path / "BENCHMARKS.md").read_text()
    pngs = {}
    for name in ("decode_tokens_per_s.png", "ttft.png"):
        assert f"(benchmarks/{name})" in md
        path = tmp_path / "benchmarks" / name
        with Image.open(path) as img:
            img.load()
            assert img.format == "PNG" and img.size == (800, 500)
            colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
            assert len(colors) > 50  # lines, markers, text: not a blank canvas
        pngs[name] = path.read_bytes()
        assert b"Software" not in pngs[name]
    assert "(benchmarks/index.html)" in md
    page = _Html()
    page.feed((tmp_path / "benchmarks" / "index.html").read_text())
    assert page.scripts == 1 and page.tables >= 5
    assert page.rows[0] == 1 + 12  # header + one row per (job, phase)
    embedded = [base64.b64decode(src.split(",", 1)[1]) for src in page.images]
    assert embedded == [pngs["decode_tokens_per_s.png"], pngs["ttft.png"]]


def test_merge_after_sweep_writes_where_it_is_told(quick_sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = results.merge_after_sweep(
        quick_sweep, merge_dir=Path("benchmarks"), markdown=Path("BENCHMARKS.md")
    )
    assert line.startswith("4 input record(s), 0 skipped; 4 added, 0 replaced, 0 unchanged")
    assert md_rows(tmp_path) == 12
    assert merge_tool(tmp_path, "--check").returncode == 0
    # Elsewhere: exactly those paths, nothing in the current directory.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "OUT"
    line = results.merge_after_sweep(quick_sweep, merge_dir=out / "b", markdown=out / "B.md")
    assert line.endswith(f"4 record(s), 12 row(s) in {out / 'B.md'}")
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == ["B.md", "b"]
    written = sorted(p.name for p in (out / "b").iterdir())
    assert {"metrics.json", "runs.csv", "phases.csv", "index.html"} <= set(written)
    md = (out / "B.md").read_text()
    assert "auto-generated from `b/metrics.json`" in md and "(b/index.html)" in md


def md_rows(root: Path) -> int:
    return len(table_rows((root / "BENCHMARKS.md").read_text()))


def test_unreadable_store_is_never_overwritten(quick_sweep, tmp_path):
    store = tmp_path / "benchmarks" / "metrics.json"
    store.parent.mkdir()
    store.write_text('{"store_version": 1, "records": [')
    proc = merge_tool(tmp_path, quick_sweep)
    assert proc.returncode == 2
    assert "benchmarks/metrics.json: unreadable store" in proc.stderr
    assert store.read_text() == '{"store_version": 1, "records": ['


@pytest.mark.slow
def test_multirun_merges_on_end_with_a_skipped_job(tmp_path):
    """The Hydra callback merges when the multirun ends, failed jobs included (~20 s)."""
    args = [
        sys.executable,
        "-m",
        "sweep.run",
        "-m",
        f"hydra.sweep.dir={tmp_path / 'multirun' / 'x'}",
        "experiment=quick",
        "tokens=4",
        "runs.benchmark=2",
        "topology=cpu,v6e-1",
    ]
    proc = subprocess.run(
        args, cwd=tmp_path, env=sweep_env(), capture_output=True, text=True, timeout=600
    )
    # The v6e-1 job is skipped on CPU: listed, but not a failure (README: exit codes).
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 of 2 job(s) did not end ok" in proc.stderr
    assert "skipped: experiment=quick tokens=4 runs.benchmark=2 topology=v6e-1" in proc.stderr
    rows = table_rows((tmp_path / "BENCHMARKS.md").read_text())
    assert len(rows) == 6
    assert sum("status=skipped: SkipJob" in r[14] for r in rows) == 3
    assert merge_tool(tmp_path, "--check").returncode == 0
