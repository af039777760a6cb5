"""The merge: records -> the store -> BENCHMARKS.md, runs.csv, phases.csv, plots, index.html.

`python tools/merge_benchmarks.py` (`cli.main`) and the end-of-multirun callback
(`merge_after_sweep`) both land in `merge`:
- the records under the inputs are read (bad files skipped with a warning: `load.load_jobs`)
  and added to the store (`store.upsert`: every machine's results, and each cell's history);
- the frames (`frames`: every figure recomputed from the raw samples) give the tables, the CSVs
  and the plots, each cell's current result only;
- output is deterministic (same store -> same bytes) and only files whose bytes change are
  rewritten. Plots are drawn only when the data they show changes: the store keeps, per plot,
  a hash of its data and of the PNG written, so `--check` draws nothing.
Every path is the caller's: nothing is written anywhere else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.record import write_bytes_atomically
from sweep.results.frames import csv_bytes, ordered, phases_frame, runs_frame
from sweep.results.html import render_html
from sweep.results.load import Warn, load_jobs, log_warning
from sweep.results.markdown import BENCH_ENGINES_NAME, HTML_NAME, rel, render_markdown
from sweep.results.report import html_tables
from sweep.results.store import read_store, reason, store_bytes, upsert

DEFAULT_DIRS = ("multirun", "outputs")
DEFAULT_DIR = Path("benchmarks")
STORE_NAME = "metrics.json"
DEFAULT_STORE = DEFAULT_DIR / STORE_NAME
DEFAULT_MARKDOWN = Path("BENCHMARKS.md")
DEFAULT_PLOTS_DIR = DEFAULT_DIR
RUNS_CSV = "runs.csv"
PHASES_CSV = "phases.csv"


@dataclasses.dataclass
class MergeResult:
    files: int = 0  # input records read, the skipped ones included
    records: int = 0  # jobs in the tables (each cell's current result)
    rows: int = 0  # rows of the seed table (jobs x phases)
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    history: int = 0  # older results new to the store, kept as history only
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    written: list[str] = dataclasses.field(default_factory=list)
    stale: list[str] = dataclasses.field(default_factory=list)


def plot_specs(runs: pd.DataFrame) -> dict[str, Any]:
    """THE PLOTS CALL SITE: file name -> spec of every PNG the merge draws, from the runs
    frame (`sweep.results.plots.auto_specs`: one set per axis that varies). `spec.data()` is
    hashed to know whether a PNG is stale, `plots.render(spec)` draws it, `spec.title` names
    it in BENCHMARKS.md and index.html."""
    from sweep.results import plots  # matplotlib itself is imported only to draw

    return plots.auto_specs(runs)


def _render(spec: Any) -> bytes:
    from sweep.results import plots

    return plots.render(spec)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


@dataclasses.dataclass
class _Plots:
    pngs: dict[str, bytes]  # file name -> PNG bytes (on disk, or newly drawn)
    titles: dict[str, str]
    meta: dict[str, Any]  # what the store keeps: per file, its data's hash and the PNG's
    stale: list[Path]
    drawn: dict[Path, bytes]


def _plots(runs: pd.DataFrame, plots_dir: Path, meta: dict[str, Any], check: bool) -> _Plots:
    """Each plot: reused when its data and the file on disk are what the store says, else
    drawn (or, with `check`, listed as stale without drawing)."""
    out = _Plots({}, {}, {}, [], {})
    for name, spec in plot_specs(runs).items():
        path, want = plots_dir / name, _sha(json.dumps(spec.data(), sort_keys=True).encode())
        known = meta.get(name) if isinstance(meta.get(name), dict) else {}
        png_hash = known.get("png") if known.get("data") == want else None
        on_disk = _read(path)
        if png_hash and on_disk is not None and _sha(on_disk) == png_hash:
            out.pngs[name] = on_disk
        elif check:
            out.stale.append(path)
            out.pngs[name] = on_disk or b""
        else:
            out.pngs[name] = out.drawn[path] = _render(spec)
            png_hash = _sha(out.pngs[name])
        out.titles[name] = spec.title
        out.meta[name] = {"data": want, "png": png_hash}
    return out


def _bench_engines(plots_dir: Path, warn: Warn) -> dict[str, Any] | None:
    path = plots_dir / BENCH_ENGINES_NAME
    blob = _read(path)
    if blob is None:
        return None
    try:
        data = json.loads(blob)
        if not isinstance(data, dict) or not {"config", "env", "engines"} <= set(data):
            raise ValueError("no config, env and engines")
    except Exception as exc:
        warn(f"skipped {path}: {reason(exc)}")
        return None
    return data


def merge(
    inputs: Iterable[str | os.PathLike] = (),
    *,
    store: str | os.PathLike = DEFAULT_STORE,
    markdown: str | os.PathLike = DEFAULT_MARKDOWN,
    plots_dir: str | os.PathLike = DEFAULT_PLOTS_DIR,
    check: bool = False,
    rebuild: bool = False,
    warn: Warn | None = None,
) -> MergeResult:
    """Add the records under `inputs` to `store` and rewrite `markdown`, runs.csv and
    phases.csv (beside the store), the plots and index.html (in `plots_dir`). With `check`,
    write nothing and list in `stale` what a merge would change. With `rebuild`, ignore the
    existing store. Raises StoreError when the store exists but cannot be read."""
    store, markdown, plots_dir = Path(store), Path(markdown), Path(plots_dir)
    warn = warn or log_warning
    with contextlib.nullcontext() if check else _locked(store.parent):
        up, meta, result = _gather(inputs, store, rebuild=rebuild, warn=warn)
        everything = ordered(up.jobs, history=True)  # the store's order
        shown = [(job, row) for job, row in everything if not row["superseded"]]
        runs = runs_frame(shown)
        phases = phases_frame(shown, runs)
        result.records, result.rows = len(shown), len(phases)

        plots = _plots(runs, plots_dir, meta, check)
        result.stale += [str(p) for p in plots.stale]
        outputs: dict[Path, bytes] = dict(plots.drawn)
        outputs[store] = store_bytes([job for job, _ in everything], plots.meta)
        outputs[store.parent / RUNS_CSV] = csv_bytes(runs)
        outputs[store.parent / PHASES_CSV] = csv_bytes(phases)
        outputs[markdown] = render_markdown(
            phases,
            store=store,
            markdown=markdown,
            plots_dir=plots_dir,
            plots=list(plots.titles.items()),
            bench_engines=_bench_engines(plots_dir, warn),
        ).encode()
        outputs[plots_dir / HTML_NAME] = render_html(
            "Benchmark Results",
            html_tables(phases),
            [(plots.titles[n], png) for n, png in plots.pngs.items()],
            source=rel(store, plots_dir),
        ).encode()
        for path, blob in outputs.items():
            if _read(path) == blob:
                continue
            if check:
                if str(path) not in result.stale:
                    result.stale.append(str(path))
            else:
                write_bytes_atomically(path, blob)
                result.written.append(str(path))
    return result


def _gather(inputs, store: Path, *, rebuild: bool, warn: Warn):
    """(the store's jobs upserted with those under `inputs`, the store's meta, a MergeResult
    with the input counts). Every skipped file or stored record is also one `warn` line."""
    existing, meta, store_skipped = ([], {}, []) if rebuild else read_store(store)
    for where, why in store_skipped:
        warn(f"skipped {where}: {why}")
    incoming, skipped = load_jobs(inputs, warn, exclude=[store])
    up = upsert(existing, incoming)
    result = MergeResult(files=len(incoming) + len(skipped), skipped=store_skipped + skipped)
    result.added, result.replaced, result.unchanged = up.added, up.replaced, up.unchanged
    result.history = up.history
    return up, meta, result


def history_markdown(
    inputs: Iterable[str | os.PathLike] = (),
    *,
    store: str | os.PathLike = DEFAULT_STORE,
    markdown: str | os.PathLike = DEFAULT_MARKDOWN,
    plots_dir: str | os.PathLike = DEFAULT_PLOTS_DIR,
    rebuild: bool = False,
    warn: Warn | None = None,
) -> tuple[str, MergeResult]:
    """BENCHMARKS.md as it would be with every result in the store and `inputs`, superseded
    ones included (marked in Notes and in the Machine columns). Writes nothing."""
    store, plots_dir = Path(store), Path(plots_dir)
    warn = warn or log_warning
    up, _, result = _gather(inputs, store, rebuild=rebuild, warn=warn)
    everything = ordered(up.jobs, history=True)
    runs = runs_frame(everything)
    phases = phases_frame(everything, runs)
    result.records, result.rows = len(everything), len(phases)
    titles = [(name, spec.title) for name, spec in plot_specs(runs).items()]
    text = render_markdown(
        phases,
        store=store,
        markdown=Path(markdown),
        plots_dir=plots_dir,
        plots=titles,
        bench_engines=_bench_engines(plots_dir, warn),
    )
    return text, result


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise concurrent merges (two sweeps ending together) with flock on the dir."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def summary_line(result: MergeResult, markdown: str | os.PathLike) -> str:
    line = (
        f"{result.files} input record(s), {len(result.skipped)} skipped; "
        f"{result.added} added, {result.replaced} replaced, {result.unchanged} unchanged; "
        f"{result.records} record(s), {result.rows} row(s) in {markdown}"
    )
    if result.history:
        line += f"; {result.history} older result(s) kept as history"
    return line


def merge_after_sweep(sweep_dir: Path, *, merge_dir: Path, markdown: Path) -> str:
    """The end of a multirun (failed jobs included): merge that sweep's records into
    `merge_dir` (metrics.json, runs.csv, phases.csv, plots, index.html) and `markdown`, exactly
    those paths (a relative one is relative to the current directory). Returns the summary
    line; raises what `merge` raises (StoreError for an unreadable store)."""
    merge_dir = Path(merge_dir)
    result = merge(
        [sweep_dir], store=merge_dir / STORE_NAME, markdown=Path(markdown), plots_dir=merge_dir
    )
    return summary_line(result, markdown)
