"""Plots of the runs frame (`sweep.results.load_runs`): medians with min-max whiskers, as PNG.

`plot(runs, x=..., y=...)` draws any numeric column against any column; `auto_plots(runs)` draws
the merge's plots, one set per swept axis that actually varies. Both go through a `PlotSpec` (the
plotted numbers, JSON-able: hash `spec.data()` to know whether a PNG is stale without drawing it)
and `render(spec)`.

Byte-deterministic: the Agg canvas with matplotlib's default style (the user's matplotlibrc is
ignored), fixed size, dpi and font, and no `Software` metadata in the PNG.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import numbers
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGSIZE = (8.0, 5.0)
DPI = 100
# Bump when a change here alters how a plot looks, so a merge re-renders the PNGs.
STYLE = 2
SPREAD = "median over runs; whiskers: min-max"
MAX_TICKS = 12  # beyond this many distinct x values matplotlib places the ticks
MISSING = "n/a"

# Axis labels of the runs frame's columns (any other column is labelled by its name).
LABELS = {
    "tokens": "new tokens per request",
    "batch_size": "batch size (prompts per request)",
    "prompt_tokens": "prompt tokens (image soft tokens included)",
    "run_index": "run index in its phase",
    "total_s": "total time per request (s)",
    "first_token_s": "time to first token (s)",
    "post_first_s": "time after the first token (s)",
    "new_tokens": "new tokens generated",
    "tokens_per_s": "tokens/s (end to end)",
    "decode_tokens_per_s": "decode tokens/s (aggregate)",
    "decode_tokens_per_s_per_seq": "decode tokens/s per sequence",
    "pre_first_tokens_per_s": "pre-first tokens/s",
    "prefill_tokens_per_s": "prefill tokens/s",
    "mbu": "model bandwidth utilization (MBU)",
    "mfu": "model FLOPs utilization (MFU)",
    "first_token_derived": "TTFT from a separate 1-token request",
}

# The merge's plots: per swept axis, (file name, y column) per plot; drawn when the axis varies.
AXIS_PLOTS = {
    "tokens": (("decode_tokens_per_s.png", "decode_tokens_per_s"), ("ttft.png", "first_token_s")),
    "prompt_tokens": (
        ("prompt_ttft.png", "first_token_s"),
        ("prompt_prefill_tokens_per_s.png", "prefill_tokens_per_s"),
    ),
    "batch_size": (
        ("batch_decode_tokens_per_s.png", "decode_tokens_per_s"),
        ("batch_decode_tokens_per_s_per_seq.png", "decode_tokens_per_s_per_seq"),
    ),
}
TITLES = {  # "<y> vs <axis>"
    "tokens": "tokens",
    "prompt_tokens": "prompt length",
    "batch_size": "batch size",
    "decode_tokens_per_s": "Decode tokens/s",
    "first_token_s": "Time to first token",
    "prefill_tokens_per_s": "Prefill tokens/s",
    "decode_tokens_per_s_per_seq": "Decode tokens/s per sequence",
}
TRADEOFF_PLOT = "batch_tradeoff.png"  # per-sequence vs aggregate decode tokens/s, per batch
_TRADEOFF = ("decode_tokens_per_s", "decode_tokens_per_s_per_seq")  # its x and y
# What tells the merge's series apart, in legend order: each is kept only where it splits
# the points (prompt_tokens follows mode, so it joins the legend only when prompts were swept).
HUE_CANDIDATES = ("mode_label", "model", "engine", "topology", "quant", "batch_size", "tokens")
HUE_CANDIDATES += ("prompt_tokens", "machine", "seed")
IDENTITY_HUES = ("model", "engine", "topology", "quant", "machine")
_BARE = {"mode", "mode_label"}  # legend shows the value alone
_SHORT = {"batch_size": "batch", "prompt_tokens": "prompt"}


@dataclasses.dataclass(frozen=True)
class Point:
    x: float  # the x value, or its position among `PlotSpec.categories`
    y: float  # median
    y_lo: float
    y_hi: float
    n: int = 0  # runs behind the point
    x_lo: float | None = None  # spread of x, when x is measured too (trade-off plots)
    x_hi: float | None = None
    note: str = ""  # written beside the point


@dataclasses.dataclass(frozen=True)
class Series:
    label: str
    points: tuple[Point, ...]


@dataclasses.dataclass(frozen=True)
class Panel:
    title: str
    series: tuple[Series, ...]


@dataclasses.dataclass(frozen=True)
class PlotSpec:
    title: str
    xlabel: str
    ylabel: str
    panels: tuple[Panel, ...]  # one subplot each
    categories: tuple[str, ...] = ()  # x tick labels when x is not numeric
    ticks: bool = True  # numeric x: a tick at each x value (when there are few)
    legend_title: str = ""
    note: str = SPREAD
    empty: str = "no data"
    style: int = STYLE

    def data(self) -> dict[str, Any]:
        """The content as JSON data: equal data, equal PNG bytes (same matplotlib)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


# --------------------------------------------------------------------------------------------
# Public API


def plot(
    runs: pd.DataFrame,
    *,
    x: str,
    y: str,
    hue: str | Sequence[str] | None = None,
    facet: str | Sequence[str] | None = None,
    phase: str = "benchmark",
    ok_only: bool = True,
) -> bytes:
    """PNG bytes: per hue value a line through the median of `y` at each `x` over the runs of
    `phase` (of ok jobs unless `ok_only=False`), whiskers min-max; one subplot per `facet` value.
    ValueError for an unknown column, a non-numeric `y` or a phase not in the data."""
    return render(plot_spec(runs, x=x, y=y, hue=hue, facet=facet, phase=phase, ok_only=ok_only))


def plot_spec(
    runs: pd.DataFrame,
    *,
    x: str,
    y: str,
    hue: str | Sequence[str] | None = None,
    facet: str | Sequence[str] | None = None,
    phase: str = "benchmark",
    ok_only: bool = True,
    title: str | None = None,
) -> PlotSpec:
    """What `plot` draws, without drawing it."""
    hues, facets = _names(hue), _names(facet)
    check_columns(runs, [x, y, *hues, *facets])
    if _numeric(runs[y]) is None:
        raise ValueError(
            f"column {y!r} is not numeric ({runs[y].dtype}); numeric columns: "
            + ", ".join(numeric_columns(runs))
        )
    if "phase" in runs.columns and len(runs) and phase not in set(runs["phase"]):
        phases = ", ".join(sorted({str(p) for p in runs["phase"].dropna()}))
        raise ValueError(f"no rows with phase {phase!r}; phases in the data: {phases}")
    rows = select(runs, phase=phase, ok_only=ok_only)
    title = title or f"{y} vs {x} ({phase} phase)"
    legend = hues[0] if len(hues) == 1 else ""
    note = f"{'ok ' if ok_only else ''}{phase} runs"
    return _axis_spec(rows, x, y, hues, facets, title, legend_title=legend, runs_note=note)


def auto_specs(runs: pd.DataFrame, out_dir_name_prefix: str = "") -> dict[str, PlotSpec]:
    """The merge's plots (file name -> spec), in a fixed order: for each of tokens, prompt
    length and batch size that takes more than one value among the ok benchmark runs, its
    plots (see AXIS_PLOTS); for batch size also the latency/throughput trade-off. Older
    results of a cell (`superseded`, in a frame loaded with history) are left out."""
    rows = select(runs, phase="benchmark", ok_only=True, current=True)
    out: dict[str, PlotSpec] = {}
    for axis, plots in AXIS_PLOTS.items():
        if not varies(rows, axis):
            continue
        hues = auto_hue(rows, axis)
        for name, y in plots:
            if y not in rows.columns:
                continue
            title = f"{TITLES[y]} vs {TITLES[axis]} (benchmark phase)"
            spec = _axis_spec(rows, axis, y, hues, [], title, runs_note="ok benchmark runs")
            out[out_dir_name_prefix + name] = spec
        if axis == "batch_size" and set(_TRADEOFF) <= set(rows.columns):
            out[out_dir_name_prefix + TRADEOFF_PLOT] = _tradeoff_spec(rows, hues)
    return out


def varies(rows: pd.DataFrame, axis: str) -> bool:
    """Whether `axis` takes more than one value in `rows`. The prompt length counts only where
    it varies within a mode: text and image prompts differ by the image's soft tokens, which is
    the mode's difference (the tokens plots show it), not a swept prompt length."""
    if axis not in rows.columns:
        return False
    if axis == "prompt_tokens" and "mode" in rows.columns:
        return any(_distinct(part[axis]) > 1 for _, part in rows.groupby("mode", dropna=False))
    return _distinct(rows[axis]) > 1


def auto_plots(runs: pd.DataFrame, out_dir_name_prefix: str = "") -> dict[str, bytes]:
    """File name -> PNG bytes of `auto_specs`: one set of plots per axis that varies."""
    return {name: render(spec) for name, spec in auto_specs(runs, out_dir_name_prefix).items()}


def render(spec: PlotSpec) -> bytes:
    """The spec as PNG bytes; the same spec gives the same bytes."""
    with _style():
        fig = _draw(spec)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def figure(spec: PlotSpec) -> Figure:
    """The matplotlib Figure `render` would save (to inspect its axes and lines)."""
    with _style():
        return _draw(spec)


def check_columns(runs: pd.DataFrame, names: Sequence[str]) -> None:
    """ValueError naming the first unknown column and the frame's columns."""
    for name in names:
        if name not in runs.columns:
            raise ValueError(
                f"unknown column {name!r}; available columns: "
                + ", ".join(str(c) for c in runs.columns)
            )


def numeric_columns(runs: pd.DataFrame) -> list[str]:
    return [str(c) for c in runs.columns if _numeric(runs[c]) is not None]


def select(
    runs: pd.DataFrame, *, phase: str, ok_only: bool = True, current: bool = False
) -> pd.DataFrame:
    """The rows of `phase` (of ok jobs; of current results, not history), where the frame
    has those columns."""
    keep = runs
    if "phase" in keep.columns:
        keep = keep[keep["phase"] == phase]
    if ok_only and "status" in keep.columns:
        keep = keep[keep["status"] == "ok"]
    if current and "superseded" in keep.columns:
        keep = keep[~keep["superseded"].astype(bool)]
    return keep


def auto_hue(rows: pd.DataFrame, x: str) -> list[str]:
    """HUE_CANDIDATES that split the points of an `x` plot, in order (mode_label, or mode
    where the label is missing)."""
    labels = {c: [label(v) for v in rows[c]] for c in (x, *HUE_CANDIDATES) if c in rows.columns}
    if "mode_label" in labels and all(v == MISSING for v in labels["mode_label"]):
        labels.pop("mode_label")
        if "mode" in rows.columns:
            labels["mode"] = [label(v) for v in rows["mode"]]
    frame = pd.DataFrame(labels, index=range(len(rows)))
    chosen: list[str] = []
    for col in ("mode", *HUE_CANDIDATES):
        if col == x or col not in frame.columns or not len(frame):
            continue
        if frame.groupby([x, *chosen], sort=False)[col].nunique().max() > 1:
            chosen.append(col)
    # What was measured (model, engine, ...) is named whenever the plot holds more than one,
    # even when each x holds only one: lines of two models must not read as one model's.
    for col in IDENTITY_HUES:
        if col != x and col in frame.columns and col not in chosen and frame[col].nunique() > 1:
            chosen.append(col)
    return [c for c in ("mode", *HUE_CANDIDATES) if c in chosen]


def label(value: Any) -> str:
    """A cell as legend/tick text: integral floats as integers, missing as n/a."""
    if _missing(value):
        return MISSING
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)
        return str(int(value)) if value.is_integer() else f"{value:g}"
    return str(value)


# --------------------------------------------------------------------------------------------
# From rows to specs


def _names(value: str | Sequence[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _numeric(col: pd.Series, *, bools: bool = True) -> pd.Series | None:
    """The column as floats (missing -> NaN), or None when it holds anything else."""
    types = pd.api.types
    if types.is_bool_dtype(col.dtype):
        return col.astype(float) if bools else None
    if types.is_numeric_dtype(col.dtype):
        return col.astype(float)
    if col.dtype != object:
        return None
    values = [v for v in col.tolist() if not _missing(v)]
    if not all(types.is_number(v) and (bools or not isinstance(v, bool)) for v in values):
        return None
    return pd.Series([math.nan if _missing(v) else float(v) for v in col], index=col.index)


def _distinct(col: pd.Series) -> int:
    return len({label(v) for v in col.tolist() if not _missing(v)})


def _levels(rows: pd.DataFrame, cols: Sequence[str]) -> tuple[list[int], list[tuple[str, ...]]]:
    """Per row the index of its value combination in `cols`, and the combinations in order
    (numeric columns numerically, missing last)."""
    if not cols:
        return [0] * len(rows), [()]
    per_col = []
    for col in cols:
        texts = [label(v) for v in rows[col]]
        num = _numeric(rows[col], bools=False)
        if num is not None:
            keys = {
                t: (math.isnan(v), 0.0 if math.isnan(v) else v)
                for t, v in zip(texts, num, strict=True)
            }
        else:
            keys = {t: (t == MISSING, t) for t in texts}
        per_col.append((texts, keys))
    combos = list(zip(*(texts for texts, _ in per_col), strict=True))
    order = sorted(set(combos), key=lambda c: [per_col[i][1][t] for i, t in enumerate(c)])
    index = {c: i for i, c in enumerate(order)}
    return [index[c] for c in combos], order


def _combo_label(cols: Sequence[str], values: Sequence[str], *, bare: Any = _BARE) -> str:
    """The values as "a=1, b=2", without the names in `bare` (True: a single column's)."""
    if bare is True and len(cols) == 1:
        return values[0]
    return ", ".join(
        v if c in (bare or ()) else f"{_SHORT.get(c, c)}={v}"
        for c, v in zip(cols, values, strict=True)
    )


def _axis_spec(
    rows: pd.DataFrame,
    x: str,
    y: str,
    hues: Sequence[str],
    facets: Sequence[str],
    title: str,
    *,
    legend_title: str = "",
    runs_note: str,
) -> PlotSpec:
    xs = _numeric(rows[x], bools=False)
    categories: tuple[str, ...] = ()
    if xs is None:
        codes, order = _levels(rows, [x])
        xs = pd.Series(codes, index=rows.index, dtype=float)
        categories = tuple(c[0] for c in order)
    fcodes, forder = _levels(rows, facets)
    hcodes, horder = _levels(rows, hues)
    ys = _numeric(rows[y]).to_numpy()
    frame = pd.DataFrame({"f": fcodes, "h": hcodes, "x": xs.to_numpy(), "y": ys})
    frame = frame.dropna(subset=["x", "y"])
    stats = frame.groupby(["f", "h", "x"]).agg(**_stats("y")).reset_index()
    bare = bool(legend_title) or _BARE
    panels = [
        Panel(
            _combo_label(facets, forder[f], bare=()),
            tuple(
                Series(_combo_label(hues, horder[h], bare=bare), _points(part, "x"))
                for h, part in fpart.groupby("h")
            ),
        )
        for f, fpart in stats.groupby("f")
    ]
    distinct_x = frame["x"].nunique()
    return PlotSpec(
        title=title,
        xlabel=LABELS.get(x, x),
        ylabel=f"{LABELS.get(y, y)}\n(median, whiskers min-max)",
        panels=tuple(panels),
        categories=categories,
        ticks=distinct_x <= MAX_TICKS,
        legend_title=legend_title,
        note=f"{SPREAD}; {len(frame)} {runs_note}",
        empty=f"no {runs_note} with {y}",
    )


def _stats(col: str) -> dict[str, tuple[str, str]]:
    """Named aggregations of a point's y: median, min, max, count."""
    return {"y": (col, "median"), "y_lo": (col, "min"), "y_hi": (col, "max"), "n": (col, "count")}


def _points(stats: pd.DataFrame, *fields: str) -> tuple[Point, ...]:
    """A Point per row of `stats` (columns y, y_lo, y_hi, n and `fields`), as plain floats."""
    return tuple(
        Point(
            y=float(r["y"]),
            y_lo=float(r["y_lo"]),
            y_hi=float(r["y_hi"]),
            n=int(r["n"]),
            **{k: r[k] if k == "note" else float(r[k]) for k in fields},
        )
        for _, r in stats.iterrows()
    )


def _tradeoff_spec(rows: pd.DataFrame, hues: Sequence[str]) -> PlotSpec:
    """Per series, a point per batch size: per-sequence against aggregate decode tokens/s."""
    agg_col, seq_col = _TRADEOFF
    hues = [h for h in hues if h != "batch_size"]
    hcodes, horder = _levels(rows, hues)
    bcodes, border = _levels(rows, ["batch_size"])
    a_col, s_col = _numeric(rows[agg_col]).to_numpy(), _numeric(rows[seq_col]).to_numpy()
    frame = pd.DataFrame({"h": hcodes, "b": bcodes, "a": a_col, "s": s_col})
    frame = frame.dropna(subset=["a", "s"])
    stats = frame.groupby(["h", "b"]).agg(
        x=("a", "median"), x_lo=("a", "min"), x_hi=("a", "max"), **_stats("s")
    )
    stats = stats.reset_index()
    stats["note"] = [f"b={border[b][0]}" for b in stats["b"]]
    series = [
        Series(_combo_label(hues, horder[h]), _points(part, "x", "x_lo", "x_hi", "note"))
        for h, part in stats.groupby("h")
    ]
    return PlotSpec(
        title="Latency/throughput trade-off: decode tokens/s per batch size (benchmark phase)",
        xlabel=f"{LABELS.get(agg_col, agg_col)}\n(median, whiskers min-max)",
        ylabel=f"{LABELS.get(seq_col, seq_col)}\n(median, whiskers min-max)",
        panels=(Panel("", tuple(series)),),
        ticks=False,
        note=f"{SPREAD}, both axes; b = batch size; {len(frame)} ok benchmark runs",
        empty="no ok benchmark runs with decode tokens/s",
    )


# --------------------------------------------------------------------------------------------
# Drawing


@contextlib.contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    rc = dict(matplotlib.rcParamsDefault)
    rc.pop("backend", None)
    rc.update({"font.family": "DejaVu Sans", "font.size": 10.0, "svg.hashsalt": "sweep"})
    with matplotlib.rc_context(rc):
        yield


def _draw(spec: PlotSpec) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    panels = spec.panels or (Panel("", ()),)
    count = len(panels)
    cols = min(count, 3)
    rows = -(-count // cols)
    single = count == 1
    figsize = FIGSIZE if single else (4.6 * cols + 0.6, 3.6 * rows + 0.8)
    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    labels = list(dict.fromkeys(s.label for p in panels for s in p.series if s.points))
    colors = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    markers = {lab: "os^Dv<>p*h"[(i // 10) % 10] for i, lab in enumerate(labels)}
    many = len(labels) > 6  # a long legend goes outside, right of the top row
    xs = sorted({pt.x for p in panels for s in p.series for pt in s.points})
    ys = [v for p in panels for s in p.series for pt in s.points for v in (pt.y_lo, pt.y)]
    first = None
    # categorical x: markers without lines, each series a little aside from the others
    step = min(0.12, 0.6 / len(labels)) if spec.categories and labels else 0.0
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1, sharex=first, sharey=first)
        first = first or ax
        noted = set()
        for line in panel.series:
            pts = line.points
            if not pts:
                continue
            if step:
                shift = (labels.index(line.label) - (len(labels) - 1) / 2) * step
                pts = tuple(dataclasses.replace(p, x=p.x + shift) for p in pts)
            yerr = [[p.y - p.y_lo for p in pts], [p.y_hi - p.y for p in pts]]
            xerr = None
            if any(p.x_lo is not None for p in pts):
                lo = [p.x if p.x_lo is None else p.x_lo for p in pts]
                hi = [p.x if p.x_hi is None else p.x_hi for p in pts]
                xerr = [
                    [p.x - v for p, v in zip(pts, lo, strict=True)],
                    [v - p.x for p, v in zip(pts, hi, strict=True)],
                ]
            ax.errorbar(
                [p.x for p in pts],
                [p.y for p in pts],
                yerr=yerr,
                xerr=xerr,
                marker=markers[line.label],
                capsize=3,
                label=line.label,
                color=colors[line.label],
                **({"linestyle": "none"} if spec.categories else {}),
            )
            for p in pts:
                if p.note and (p.x, p.y, p.note) not in noted:
                    noted.add((p.x, p.y, p.note))
                    ax.annotate(
                        p.note, (p.x, p.y), textcoords="offset points", xytext=(5, 5), fontsize=8
                    )
        if xs:
            if spec.categories:
                ax.set_xticks(range(len(spec.categories)), spec.categories)
                ax.set_xlim(-0.5, len(spec.categories) - 0.5)
            elif spec.ticks:
                if len(xs) > 1 and xs[0] > 0 and xs[-1] / xs[0] >= 4:
                    ax.set_xscale("log", base=2)
                ax.set_xticks(xs, [label(x) for x in xs])
                ax.minorticks_off()
            if min(ys) >= 0:
                ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
        else:
            ax.text(0.5, 0.5, spec.empty, ha="center", va="center")
            ax.set_axis_off()
        if single and not many:
            ax.set_title(spec.title)
        else:
            ax.set_title(panel.title, fontsize="medium")
        if single or i >= count - cols:
            ax.set_xlabel(spec.xlabel)
        if single or i % cols == 0:
            ax.set_ylabel(spec.ylabel)
    if xs and any(labels):  # one legend for all panels; outside the plot when it is long
        host = fig.axes[cols - 1 if many else 0]
        handles = None
        if not single:
            handles = [Line2D([], [], color=colors[k], marker=markers[k], label=k) for k in labels]
        where = {"loc": "upper left", "bbox_to_anchor": (1.02, 1)} if many else {"loc": "best"}
        host.legend(handles=handles, fontsize="small", title=spec.legend_title or None, **where)
    if not single or many:
        fig.suptitle(spec.title)
    fig.text(0.99, 0.01, spec.note, ha="right", va="bottom", fontsize=8)
    fig.tight_layout(rect=(0, 0.2 / figsize[1], 1, 1))  # room for the note at the bottom
    return fig
