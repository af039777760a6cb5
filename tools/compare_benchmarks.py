#!/usr/bin/env python3
"""Compare two benchmark runs: NEW/OLD ratios of median TTFT and decode tokens/s, with a
bootstrap confidence interval from the raw samples; exit 1 on a regression (a CI gate).

    python tools/compare_benchmarks.py OLD NEW [--threshold 0.05] [--confidence 0.95]

OLD and NEW are each a sweep dir (searched for metrics.json), one job's metrics.json, or a merged
store (benchmarks/metrics.json). Configurations match on the run identity (the resolved config)
on the same kind of machine (backend, device kind and count, hosts); per configuration the
latest record is used.
Only records with status ok count; figures are recomputed from the raw per-run timings
(`sweep.results.load_runs`).

For each matching configuration and metric: ratio = median(NEW) / median(OLD) over the phase's
runs (default: benchmark), and a percentile-bootstrap interval (scipy.stats.bootstrap, each
side resampled with replacement). A regression is flagged only when the whole interval is
worse than no change by more than the threshold: TTFT interval above 1 + threshold, decode
tokens/s interval below 1 - threshold. Fewer than --min-runs samples on a side: reported,
never flagged.

Exit status: 0 no regression, 1 regression(s), 2 nothing to compare (no matching configuration,
or an input without usable records).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

try:
    from sweep.results import load_runs
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from sweep.results import load_runs

from sweep.record import PHASES
from sweep.results.markdown import markdown_table
from sweep.results.tables import MISSING, fmt

# metric, column label, True when higher is better
METRICS = (
    ("first_token_s", "TTFT", False),
    ("decode_tokens_per_s", "Decode", True),
)
# A configuration: the run identity (config) on the same kind of machine.
CONFIG_KEY = ("run_key", "backend", "device_kind", "device_count", "hosts")
LABEL = ("model", "quant", "engine", "topology", "mode_label", "tokens", "batch_size")


@dataclasses.dataclass
class Ratio:
    old_median: float | None
    new_median: float | None
    ratio: float | None
    low: float | None
    high: float | None
    verdict: str  # "regression" | "faster" | "same" | "too few runs" | "n/a"


@dataclasses.dataclass
class Job:
    """One configuration's latest ok job in an input: its label and its raw samples."""

    key: tuple
    label: dict
    samples: dict[str, list[float]]  # metric -> the phase's per-run values
    runs: int


@dataclasses.dataclass
class Row:
    job: Job
    runs_old: int
    runs_new: int
    ratios: dict[str, Ratio]

    @property
    def regressions(self) -> list[str]:
        return [label for m, label, _ in METRICS if self.ratios[m].verdict == "regression"]


def bootstrap_ratio(
    old: list[float],
    new: list[float],
    *,
    resamples: int,
    confidence: float,
    rng: np.random.Generator,
) -> tuple[float, float, float]:
    """median(new)/median(old) and its percentile-bootstrap interval (scipy.stats.bootstrap,
    each side resampled independently)."""
    from scipy.stats import bootstrap

    def ratio(new_sample, old_sample, axis=-1):
        return np.median(new_sample, axis=axis) / np.median(old_sample, axis=axis)

    point = statistics.median(new) / statistics.median(old)
    result = bootstrap(
        (np.asarray(new, float), np.asarray(old, float)),
        ratio,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        paired=False,
        vectorized=True,
        rng=rng,
    )
    interval = result.confidence_interval
    return point, float(interval.low), float(interval.high)


def judge(low: float, high: float, *, higher_is_better: bool, threshold: float) -> str:
    worse = high < 1 - threshold if higher_is_better else low > 1 + threshold
    better = low > 1 + threshold if higher_is_better else high < 1 - threshold
    return "regression" if worse else "faster" if better else "same"


def latest_jobs(runs: pd.DataFrame, phase: str) -> dict[tuple, Job]:
    """Per configuration, the latest ok job's samples in `phase` (from `load_runs`)."""
    runs = runs[(runs.status == "ok") & (runs.phase == phase)]
    jobs: dict[tuple, Job] = {}
    if runs.empty:
        return jobs
    keyed = runs.assign(_key=[tuple(row) for row in runs[list(CONFIG_KEY)].itertuples(False)])
    for key, group in keyed.groupby("_key", sort=False):
        latest = group[group.record_id == group.sort_values("started_at").record_id.iloc[-1]]
        latest = latest.sort_values("run_index")
        first = latest.iloc[0]
        jobs[key] = Job(
            key=key,
            label={name: first[name] for name in LABEL},
            samples={m: [float(v) for v in latest[m].dropna()] for m, _, _ in METRICS},
            runs=len(latest),
        )
    return jobs


def compare(
    old: pd.DataFrame,
    new: pd.DataFrame,
    *,
    phase: str = "benchmark",
    threshold: float = 0.05,
    confidence: float = 0.95,
    resamples: int = 2000,
    min_runs: int = 2,
    seed: int = 0,
) -> tuple[list[Row], list[Job], list[Job]]:
    """(rows for matching configurations, jobs only in OLD, jobs only in NEW), from the
    `load_runs` frames of the two inputs."""
    old_jobs, new_jobs = latest_jobs(old, phase), latest_jobs(new, phase)
    rows = []
    for key in sorted(set(old_jobs) & set(new_jobs), key=lambda k: _sort_key(new_jobs[k])):
        a, b = old_jobs[key], new_jobs[key]
        ratios = {}
        for i, (metric, _, higher) in enumerate(METRICS):
            xs, ys = a.samples[metric], b.samples[metric]
            if not xs or not ys or not statistics.median(xs):
                ratios[metric] = Ratio(_median(xs), _median(ys), None, None, None, "n/a")
                continue
            if len(xs) < min_runs or len(ys) < min_runs:
                point = statistics.median(ys) / statistics.median(xs)
                ratios[metric] = Ratio(_median(xs), _median(ys), point, None, None, "too few runs")
                continue
            rng = np.random.default_rng([seed, len(rows), i])
            point, low, high = bootstrap_ratio(
                xs, ys, resamples=resamples, confidence=confidence, rng=rng
            )
            verdict = judge(low, high, higher_is_better=higher, threshold=threshold)
            ratios[metric] = Ratio(_median(xs), _median(ys), point, low, high, verdict)
        rows.append(Row(b, a.runs, b.runs, ratios))
    only_old = sorted((j for k, j in old_jobs.items() if k not in new_jobs), key=_sort_key)
    only_new = sorted((j for k, j in new_jobs.items() if k not in old_jobs), key=_sort_key)
    return rows, only_old, only_new


def _sort_key(job: Job) -> tuple:
    return tuple(str(job.label[name]) for name in LABEL)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _label(job: Job) -> list[str]:
    label = job.label
    quant = str(label["quant"])
    model = label["model"] if quant in ("none", "") else f"{label['model']} ({quant})"
    return [
        model,
        label["engine"],
        label["topology"],
        label["mode_label"],
        fmt(label["tokens"]),
        fmt(label["batch_size"]),
    ]


def _verdict(row: Row) -> str:
    if row.regressions:
        return "**REGRESSION: " + ", ".join(row.regressions) + "**"
    faster = [label for m, label, _ in METRICS if row.ratios[m].verdict == "faster"]
    if faster:
        return "faster: " + ", ".join(faster)
    if any(r.verdict == "too few runs" for r in row.ratios.values()):
        return "too few runs to judge"
    return "no significant change"


def render(
    rows: list[Row],
    only_old: list[Job],
    only_new: list[Job],
    *,
    old_name: str,
    new_name: str,
    phase: str,
    threshold: float,
    confidence: float,
    resamples: int,
) -> str:
    pct = f"{confidence * 100:g}%"
    lines = [
        "# Benchmark Comparison",
        "",
        f"OLD: `{old_name}` · NEW: `{new_name}` · phase: {phase}",
        "",
        f"Ratios are NEW ÷ OLD of the median over the phase's runs, with a {pct} "
        f"percentile-bootstrap interval ({resamples} resamples of each side's raw samples). "
        "A regression is flagged only when the whole interval is worse than no change by more "
        f"than {threshold * 100:g}%: TTFT interval above {1 + threshold:.4f}, decode tokens/s "
        f"interval below {1 - threshold:.4f}.",
        "",
    ]
    headers = [
        "Model",
        "Engine",
        "TPU",
        "Mode",
        "Token Count",
        "Batch Size",
        "Runs Old/New",
        "Median TTFT s Old",
        "Median TTFT s New",
        "TTFT Ratio",
        f"TTFT {pct} CI",
        "Median Decode Tokens/s Old",
        "Median Decode Tokens/s New",
        "Decode Ratio",
        f"Decode {pct} CI",
        "Verdict",
    ]
    table = []
    for row in rows:
        cells = [*_label(row.job), f"{row.runs_old}/{row.runs_new}"]
        for metric, _, _ in METRICS:
            r = row.ratios[metric]
            ci = f"{r.low:.4f} – {r.high:.4f}" if r.low is not None else MISSING
            cells += [fmt(r.old_median), fmt(r.new_median), fmt(r.ratio), ci]
        cells.append(_verdict(row))
        table.append(cells)
    lines += markdown_table(headers, table) if table else ["No matching configuration."]
    for title, jobs in (("Only in OLD", only_old), ("Only in NEW", only_new)):
        if jobs:
            lines += ["", f"{title}: " + "; ".join(" ".join(_label(j)) for j in jobs)]
    flagged = [row for row in rows if row.regressions]
    lines += [
        "",
        f"**{len(flagged)} regression(s)** in {len(rows)} configuration(s)."
        if flagged
        else f"No regression in {len(rows)} configuration(s).",
    ]
    return "\n".join(lines) + "\n"


def load(path: str) -> pd.DataFrame:
    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    return load_runs(path, warn=warn)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="compare_benchmarks.py",
        description="NEW/OLD ratios of median TTFT and decode tokens/s per matching "
        "configuration, with bootstrap intervals; exit 1 on a regression.",
    )
    parser.add_argument("old", help="sweep dir, metrics.json record, or benchmarks/metrics.json")
    parser.add_argument("new", help="same kinds as OLD")
    parser.add_argument("--phase", default="benchmark", choices=PHASES)
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.05,
        help="relative change the whole interval must exceed to flag (default %(default)s)",
    )
    parser.add_argument("--confidence", type=float, default=0.95, help="(default %(default)s)")
    parser.add_argument("--resamples", type=int, default=2000, help="(default %(default)s)")
    parser.add_argument(
        "--min-runs", type=int, default=2, help="samples needed per side (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("-o", "--output", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    if not 0 < args.confidence < 1 or args.threshold < 0 or args.resamples < 1:
        parser.error("need 0 < --confidence < 1, --threshold >= 0, --resamples >= 1")

    old, new = load(args.old), load(args.new)
    for name, runs in ((args.old, old), (args.new, new)):
        if runs.empty or not (runs.status == "ok").any():
            print(f"error: no ok record in {name}", file=sys.stderr)
            return 2
    rows, only_old, only_new = compare(
        old,
        new,
        phase=args.phase,
        threshold=args.threshold,
        confidence=args.confidence,
        resamples=args.resamples,
        min_runs=args.min_runs,
        seed=args.seed,
    )
    text = render(
        rows,
        only_old,
        only_new,
        old_name=args.old,
        new_name=args.new,
        phase=args.phase,
        threshold=args.threshold,
        confidence=args.confidence,
        resamples=args.resamples,
    )
    sys.stdout.write(text)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    if not rows:
        print("error: no configuration is in both OLD and NEW", file=sys.stderr)
        return 2
    return 1 if any(row.regressions for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
