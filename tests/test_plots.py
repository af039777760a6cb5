"""sweep.results.plots and tools/plot_benchmarks.py: any column against any other, medians with
min-max whiskers, deterministic PNG bytes; the merge's plots follow the axes that vary."""

from __future__ import annotations

import importlib.util
import itertools
import re
import subprocess
import sys

import pandas as pd
import pytest

from sweep.results import plots
from tests.conftest import REPO

PNG = b"\x89PNG\r\n\x1a\n"
TOOL = REPO / "tools" / "plot_benchmarks.py"
# load_runs' columns (its contract with the plots), in its order.
COLUMNS = (
    "model mode mode_label tokens batch_size engine topology quant seed prompt_tokens "
    "hostname cpu_model device_kind device_count hosts backend machine status phase run_index "
    "total_s first_token_s post_first_s new_tokens tokens_per_s decode_tokens_per_s "
    "decode_tokens_per_s_per_seq pre_first_tokens_per_s prefill_tokens_per_s mbu mfu "
    "first_token_derived"
).split()
LABELS = {"text": "Text-Only", "image": "With Image"}


def runs_frame(
    *,
    tokens=(8,),
    batch_size=(1,),
    mode=("text",),
    engine=("fused",),
    prompt=(12,),
    runs=3,
    failed=(),
) -> pd.DataFrame:
    """A runs frame as load_runs returns it: every job x phase x run, figures that move with
    the axes and the run index (image prompts: 256 soft tokens more). Jobs whose (tokens,
    batch_size) is in `failed` failed."""
    rows = []
    for tok, batch, md, eng, text in itertools.product(tokens, batch_size, mode, engine, prompt):
        prompt_tokens = text if md == "text" else text + 256
        status = "failed" if (tok, batch) in failed else "ok"
        for phase, count in (("warmup", 1), ("benchmark", runs), ("final", 1)):
            for i in range(count):
                ttft = (
                    0.01 * (1 + prompt_tokens / 100) * (1 + 0.1 * i) * (2 if eng == "stream" else 1)
                )
                post = 0.002 * (tok - 1) * (1 + batch / 8) * (1 + 0.05 * i)
                decode = batch * (tok - 1) / post
                rows.append(
                    {
                        "model": "tiny",
                        "mode": md,
                        "mode_label": LABELS[md],
                        "tokens": tok,
                        "batch_size": batch,
                        "engine": eng,
                        "topology": "cpu",
                        "quant": "none",
                        "seed": 0,
                        "prompt_tokens": prompt_tokens,
                        "hostname": "box",
                        "cpu_model": "AMD EPYC",
                        "device_kind": "cpu",
                        "device_count": 1,
                        "hosts": 1,
                        "backend": "cpu",
                        "machine": "box (AMD EPYC)",
                        "status": status,
                        "phase": phase,
                        "run_index": i,
                        "total_s": ttft + post,
                        "first_token_s": ttft,
                        "post_first_s": post,
                        "new_tokens": tok,
                        "tokens_per_s": batch * tok / (ttft + post),
                        "decode_tokens_per_s": decode,
                        "decode_tokens_per_s_per_seq": decode / batch,
                        "pre_first_tokens_per_s": batch / ttft,
                        "prefill_tokens_per_s": batch * prompt_tokens / ttft,
                        "mbu": 0.3 + 0.01 * i,
                        "mfu": None if eng == "stream" else 0.01,
                        "first_token_derived": eng == "sampler",
                    }
                )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    assert list(frame.columns) == COLUMNS
    return frame


GRID = runs_frame(tokens=(4, 8, 16), mode=("text", "image"), engine=("fused", "stream"))


def lines(ax) -> int:
    return len(ax.containers)  # one ErrorbarContainer per drawn series


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ("tokens", "decode_tokens_per_s"),
        ("engine", "first_token_s"),  # categorical x
        ("total_s", "mbu"),  # continuous x: matplotlib's ticks
        ("first_token_derived", "total_s"),  # bool x
        ("run_index", "mfu"),  # y with missing values
        ("mode_label", "first_token_derived"),  # bool y counts as 0/1
    ],
)
def test_any_two_columns_plot_deterministically(x, y):
    png = plots.plot(GRID, x=x, y=y)
    assert png.startswith(PNG) and b"Software" not in png
    assert plots.plot(GRID.copy(), x=x, y=y) == png


def test_a_point_is_the_median_of_its_runs_with_min_max_whiskers():
    spec = plots.plot_spec(GRID, x="tokens", y="first_token_s", hue="engine", facet="mode")
    bench = GRID[(GRID.phase == "benchmark") & (GRID["mode"] == "image")]
    cell = bench[(bench.engine == "fused") & (bench.tokens == 4)]["first_token_s"]
    image = next(p for p in spec.panels if p.title == "mode=image")
    fused = next(s for s in image.series if s.label == "fused")
    first = fused.points[0]
    assert (first.x, first.n) == (4, 3)
    assert (first.y, first.y_lo, first.y_hi) == (cell.median(), cell.min(), cell.max())
    assert [p.x for p in fused.points] == [4, 8, 16]
    assert "min-max" in spec.ylabel and spec.legend_title == "engine"


def test_hue_draws_a_line_per_value_and_facet_a_subplot_per_value():
    fig = plots.figure(plots.plot_spec(GRID, x="tokens", y="decode_tokens_per_s", hue="engine"))
    assert len(fig.axes) == 1 and lines(fig.axes[0]) == 2
    spec = plots.plot_spec(GRID, x="tokens", y="decode_tokens_per_s", hue="engine", facet="mode")
    fig = plots.figure(spec)
    assert [ax.get_title() for ax in fig.axes] == ["mode=image", "mode=text"]
    assert [lines(ax) for ax in fig.axes] == [2, 2]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["fused", "stream"]
    fig = plots.figure(plots.plot_spec(GRID, x="engine", y="total_s", hue=["mode", "engine"]))
    assert lines(fig.axes[0]) == 4
    fig = plots.figure(plots.plot_spec(GRID, x="mode", y="total_s", facet="tokens"))
    assert [ax.get_title() for ax in fig.axes] == ["tokens=4", "tokens=8", "tokens=16"]
    assert [lines(ax) for ax in fig.axes] == [1, 1, 1]
    assert fig.axes[0].get_legend() is None  # no hue: nothing to tell apart


def test_only_runs_of_ok_jobs_in_the_phase_are_plotted():
    frame = runs_frame(tokens=(4, 8), failed=[(8, 1)])
    spec = plots.plot_spec(frame, x="tokens", y="total_s")
    assert [(p.x, p.n) for p in spec.panels[0].series[0].points] == [(4, 3)]
    spec = plots.plot_spec(frame, x="tokens", y="total_s", phase="final", ok_only=False)
    assert [(p.x, p.n) for p in spec.panels[0].series[0].points] == [(4, 1), (8, 1)]


def test_an_unknown_or_non_numeric_column_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown column 'nope'; available columns: model, mode"):
        plots.plot(GRID, x="nope", y="total_s")
    with pytest.raises(ValueError, match="unknown column 'colour'"):
        plots.plot(GRID, x="tokens", y="total_s", hue="colour")
    with pytest.raises(ValueError, match=r"column 'engine' is not numeric .*numeric columns: tok"):
        plots.plot(GRID, x="tokens", y="engine")
    with pytest.raises(ValueError, match="no rows with phase 'bench'; phases in the data: bench"):
        plots.plot(GRID, x="tokens", y="total_s", phase="bench")


def test_no_data_still_draws_a_plot():
    png = plots.plot(GRID.iloc[:0], x="tokens", y="total_s")
    assert png.startswith(PNG)
    spec = plots.plot_spec(runs_frame(failed=[(8, 1)]), x="tokens", y="total_s")
    assert spec.panels == () and plots.render(spec).startswith(PNG)


TOKENS_PLOTS = ["decode_tokens_per_s.png", "ttft.png"]
PROMPT_PLOTS = ["prompt_ttft.png", "prompt_prefill_tokens_per_s.png"]
BATCH_PLOTS = [
    "batch_decode_tokens_per_s.png",
    "batch_decode_tokens_per_s_per_seq.png",
    "batch_tradeoff.png",
]


@pytest.mark.parametrize(
    ("frame", "names"),
    [
        (runs_frame(tokens=(4, 8)), TOKENS_PLOTS),
        (runs_frame(tokens=(4, 8), batch_size=(1, 2, 4)), TOKENS_PLOTS + BATCH_PLOTS),
        (runs_frame(batch_size=(1, 4)), BATCH_PLOTS),
        # text and image prompts differ in length: that is the mode, not a swept prompt
        (runs_frame(tokens=(4, 8), mode=("text", "image")), TOKENS_PLOTS),
        (runs_frame(tokens=(4, 8), prompt=(12, 40)), TOKENS_PLOTS + PROMPT_PLOTS),
        (runs_frame(prompt=(12, 40), mode=("text", "image")), PROMPT_PLOTS),
        (runs_frame(engine=("fused", "stream")), []),  # no swept axis varies
        (runs_frame(batch_size=(1, 4), failed=[(8, 4)]), []),  # only a failed job differs
    ],
)
def test_auto_plots_follow_the_axes_that_vary(frame, names):
    assert list(plots.auto_specs(frame)) == names
    assert list(plots.auto_specs(frame, "plots/")) == ["plots/" + n for n in names]


def test_auto_plots_leave_older_results_out():
    older = runs_frame(batch_size=(4,)).assign(superseded=True)
    frame = pd.concat([runs_frame(tokens=(4, 8)).assign(superseded=False), older])
    assert list(plots.auto_specs(frame)) == TOKENS_PLOTS
    (line,) = plots.auto_specs(frame)["ttft.png"].panels[0].series
    assert [p.n for p in line.points] == [3, 3]


def test_auto_plots_are_pngs_in_a_fixed_order_and_deterministic():
    frame = runs_frame(tokens=(4, 8), batch_size=(1, 2), prompt=(12, 40))
    first = plots.auto_plots(frame)
    assert list(first) == TOKENS_PLOTS + PROMPT_PLOTS + BATCH_PLOTS
    assert all(png.startswith(PNG) for png in first.values())
    assert plots.auto_plots(frame.sample(frac=1, random_state=1)) == first


def test_auto_plot_series_name_what_varies_besides_the_axis():
    frame = runs_frame(tokens=(4, 8), batch_size=(1, 2), mode=("text", "image"))
    specs = plots.auto_specs(frame)
    labels = [s.label for s in specs["ttft.png"].panels[0].series]
    modes = ("Text-Only", "With Image")
    assert labels == [f"{m}, batch={b}" for m in modes for b in (1, 2)]
    # the prompt length follows the mode here: no line of its own
    assert [s.label for s in specs["decode_tokens_per_s.png"].panels[0].series] == labels
    frame = runs_frame(tokens=(4, 8), batch_size=(1, 2), mode=("text", "image"), prompt=(12, 40))
    specs = plots.auto_specs(frame)
    labels = [s.label for s in specs["prompt_ttft.png"].panels[0].series]
    assert labels == [f"batch={b}, tokens={t}" for b in (1, 2) for t in (4, 8)]
    assert [p.x for p in specs["prompt_ttft.png"].panels[0].series[0].points] == [12, 40, 268, 296]
    labels = [s.label for s in specs["ttft.png"].panels[0].series]
    assert labels[:2] == [f"Text-Only, batch=1, prompt={p}" for p in (12, 40)]
    assert specs["ttft.png"].title == "Time to first token vs tokens (benchmark phase)"
    trade = specs["batch_tradeoff.png"]
    assert [p.note for p in trade.panels[0].series[0].points] == ["b=1", "b=2"]
    point = trade.panels[0].series[0].points[1]
    assert point.x_lo <= point.x <= point.x_hi and point.y_lo <= point.y <= point.y_hi


def test_spec_data_is_json_and_changes_with_the_numbers():
    import json

    frame = runs_frame(tokens=(4, 8))
    data = plots.auto_specs(frame)["ttft.png"].data()
    assert json.loads(json.dumps(data)) == data
    faster = frame.assign(first_token_s=frame.first_token_s / 2)
    assert plots.auto_specs(faster)["ttft.png"].data() != data


# --------------------------------------------------------------------------------------------
# tools/plot_benchmarks.py


@pytest.fixture
def tool(monkeypatch):
    """The tool as a module, loading GRID instead of records."""
    spec = importlib.util.spec_from_file_location("plot_benchmarks", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "load", lambda paths: GRID)
    return module


def test_tool_writes_the_plot(tool, tmp_path, capsys):
    out = tmp_path / "sub" / "b.png"
    argv = ["x", "--x", "tokens", "--y", "decode_tokens_per_s", "--hue", "engine,mode"]
    assert tool.main([*argv, "--facet", "model", "--out", str(out)]) == 0
    png = out.read_bytes()
    assert png == plots.plot(
        GRID, x="tokens", y="decode_tokens_per_s", hue=["engine", "mode"], facet=["model"]
    )
    assert f"wrote {out}" in capsys.readouterr().out
    assert tool.main([*argv, "--where", "engine=stream", "--out", str(out)]) == 0
    assert out.read_bytes() == plots.plot(
        GRID[GRID.engine == "stream"], x="tokens", y="decode_tokens_per_s", hue=["engine", "mode"]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--x", "colour", "--y", "total_s"], "unknown column 'colour'; available columns: "),
        (["--x", "tokens", "--y", "engine"], "column 'engine' is not numeric"),
        (["--x", "tokens", "--y", "total_s", "--where", "colour=red"], "unknown column 'colour'"),
    ],
)
def test_tool_bad_column_is_one_line_and_exit_2(tool, tmp_path, capsys, args, message):
    out = tmp_path / "b.png"
    assert tool.main(["x", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"plot_benchmarks.py: error: {message}") and err.count("\n") == 1
    assert not out.exists()


def test_tool_with_no_runs_says_so(tool, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tool, "load", lambda paths: GRID.iloc[:0])
    out = tmp_path / "b.png"
    assert tool.main(["nowhere", "--x", "tokens", "--y", "total_s", "--out", str(out)]) == 1
    assert capsys.readouterr().err == "plot_benchmarks.py: error: no runs under nowhere\n"
    assert not out.exists()


def test_tool_help_lists_the_columns():
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    listed = re.findall(r"^  (\w+)(?:  |$)", proc.stdout, re.MULTILINE)
    assert set(COLUMNS) <= set(listed)


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120
    )


def test_tool_and_auto_plots_on_a_real_sweep(quick_sweep, tmp_path):
    """tools/plot_benchmarks.py on the records of a real 4-job sweep (tokens=4,8 x text,image),
    and the merge's plots for it: tokens varies; the prompt length only with the mode."""
    from sweep.results import load_runs

    runs = load_runs(quick_sweep)
    assert set(COLUMNS) <= set(runs.columns)
    out = tmp_path / "ttft.png"
    proc = run_tool(
        str(quick_sweep),
        "--x",
        "mode",
        "--y",
        "first_token_s",
        "--hue",
        "tokens",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == plots.plot(runs, x="mode", y="first_token_s", hue="tokens")
    spec = plots.plot_spec(runs, x="tokens", y="decode_tokens_per_s", facet="mode")
    assert [p.title for p in spec.panels] == ["mode=image", "mode=text"]
    assert [[(p.x, p.n) for p in s.points] for s in spec.panels[0].series] == [[(4, 2), (8, 2)]]
    specs = plots.auto_specs(runs)
    assert list(specs) == TOKENS_PLOTS
    lines = [s.label for s in specs["ttft.png"].panels[0].series]
    assert lines == ["Text-Only", "With Image"]
    proc = run_tool(str(quick_sweep), "--x", "tokens", "--y", "hostname", "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr.startswith("plot_benchmarks.py: error: column 'hostname' is not numeric")
    assert proc.stderr.count("\n") == 1
