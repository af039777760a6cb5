"""BENCHMARKS.md: the seed's "Inference Runs" table first (its header byte for byte), then the
further tables, the plots, and tools/bench_engines.py's section.

Every cell, and every text taken from a record or bench_engines.json, is HTML-escaped (`<`, `>`,
`&`: a label like `<script>` shows as text wherever the markdown is rendered) and kept on one
line with `|` escaped.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.results.jobs import is_int, is_real
from sweep.results.report import extra_tables
from sweep.results.tables import MISSING, SEED_COLUMNS, inference_rows

SEED_HEADER = "| " + " | ".join(SEED_COLUMNS) + " |"
SEED_RULE = "|" + " --- |" * len(SEED_COLUMNS)
HTML_NAME = "index.html"
BENCH_ENGINES_NAME = "bench_engines.json"
BENCH_ENGINES = ("fused", "sampler", "stream", "reference")


def esc(text: Any) -> str:
    """Text for markdown: `<`, `>` and `&` escaped (quotes kept)."""
    return html.escape(str(text), quote=False)


def cell(text: Any) -> str:
    """One table cell: escaped, on one line, `|` escaped."""
    return esc(" ".join(str(text).split())).replace("|", "\\|")


def markdown_table(headers: Sequence[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(target).resolve(), Path(start).resolve())).as_posix()


INFERENCE_NOTE = (
    "One row per job and phase. Avg = mean over the phase's runs, recomputed from the raw per-run "
    "timings in each record; tokens/s count every sequence of a batch (Pre-First Tokens/s = batch "
    "size ÷ first-token s). Decode figures are `—` for runs with no decode step to time (1 token, "
    "or a derived first-token time with fewer than 2 tokens decoded after it). Script names the "
    "engine; TPU is the topology; Mode is the prompt's mode on every phase (Phase says which). "
    "Notes say which machine ran the job (its CPU model or device kind, and hostname: two "
    "machines' results for one configuration are both kept); on warmup rows they say how the "
    "programs were obtained: `warmup=cold (N compiles, S s)` when XLA compiled (with how many of "
    "them were persistent-cache hits, if any), `warmup=warm (N compiles from the persistent cache,"
    " S s)` when every compile was a persistent-cache hit (cheap), `warmup=warm (no compile)` when"
    " the process's own caches served everything. `concurrent_jobs=N` in Notes: the launcher ran N"
    " jobs at once on the host, which slows each of them down. A job that did not end ok keeps its"
    " rows, with its status in Notes and `—` for every figure. A newer result of the same "
    "configuration on the same machine replaces the older one here; the older one stays in the "
    "store (`python tools/merge_benchmarks.py --history` shows both). Regenerate with `python "
    "tools/merge_benchmarks.py`; `--check` fails when this file is stale."
)


def machine_groups(phases: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(machine label, its rows) per machine, in order of first appearance."""
    if phases.empty or "machine" not in phases:
        return []
    return [(str(m), g) for m, g in phases.groupby("machine", sort=False)]


def render_markdown(
    phases: pd.DataFrame,
    *,
    store: Path,
    markdown: Path,
    plots_dir: Path,
    plots: Sequence[tuple[str, str]] = (),
    bench_engines: dict[str, Any] | None = None,
) -> str:
    """The whole file. `plots`: (file name in plots_dir, title), in order."""
    base = Path(markdown).parent
    lines = [
        "# Benchmark Results",
        "",
        f"This file is auto-generated from `{rel(store, base)}`.",
        "",
        "## Inference Runs",
        "",
        SEED_HEADER,
        SEED_RULE,
    ]
    # One seed table per machine: the first machine's (in the store's order) under the seed's
    # heading, every other machine's in its own section named after it (an accelerator's runs
    # never interleave with a CPU's).
    by_machine = machine_groups(phases)
    first, others = (by_machine[0][1], by_machine[1:]) if by_machine else (phases, [])
    lines += markdown_table(SEED_COLUMNS, inference_rows(first))[2:]
    for machine, group in others:
        lines += ["", f"### Inference Runs on {machine}", "", SEED_HEADER, SEED_RULE]
        lines += markdown_table(SEED_COLUMNS, inference_rows(group))[2:]
    lines += ["", INFERENCE_NOTE]
    for table in extra_tables(phases):
        lines += ["", f"## {table.title}", "", table.intro, ""]
        lines += markdown_table(table.headers, table.rows) if table.rows else [table.empty]
        if table.title == "Engine Comparison":
            lines += _plot_section(base, Path(plots_dir), plots)
    if bench_engines:
        lines += ["", *bench_engines_section(bench_engines)]
    return "\n".join(lines) + "\n"


def _plot_section(base: Path, plots_dir: Path, plots: Sequence[tuple[str, str]]) -> list[str]:
    lines = ["", "## Plots", ""]
    for name, title in plots:
        lines += [f"![{esc(title)}]({rel(plots_dir / name, base)})", ""]
    lines.append(
        f"The same tables, sortable, with these plots: [{HTML_NAME}]"
        f"({rel(plots_dir / HTML_NAME, base)})."
    )
    return lines


# --------------------------------------------------------------------------------------------
# tools/bench_engines.py's section (benchmarks/bench_engines.json)


def _times(num: float | None, den: float | None) -> str:
    return f"{num / den:.2f}x" if num and den else MISSING


def _logit(value: Any) -> str:
    return f"{value:.6g}" if is_real(value) else "?"


def _fixed(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if is_real(value) else MISSING


def divergence_text(fig: dict[str, Any]) -> str:
    """An engine's tokens against the fused engine's, in words: `identical`, or the first
    divergent step (0 = the prefill's token) and whether it was a near-tie (the chosen tokens'
    logits within one bf16 ulp of the top logit, by a forward pass over the shared prefix).
    Older bench_engines.json files only say whether the tokens matched."""
    step = fig.get("first_divergent_step")
    if step is None:
        if fig.get("same_tokens_as_fused", True):
            return "identical"
        return "differ (step not recorded)"
    top2 = fig.get("top2_logits") or []
    pair = " vs ".join(_logit(v) for v in top2[:2]) if len(top2) >= 2 else None
    near = fig.get("near_tie")
    if near is None:
        return f"diverge at step {step}" + (f" (top-2 logits {pair})" if pair else "")
    if near:
        return f"diverge at step {step} (near-tie: top-2 logits {pair}, within 1 bf16 ulp)"
    chosen = fig.get("chosen_logits") or {}
    picked = ", ".join(f"{k} {_logit(v)}" for k, v in sorted(chosen.items()))
    ulp = fig.get("bf16_ulp")
    detail = [f"top-2 logits {pair}"] if pair else []
    detail += [f"chosen: {picked}"] if picked else []
    detail += [f"1 bf16 ulp = {_logit(ulp)}"] if is_real(ulp) else []
    return f"diverge at step {step} (NOT a tie: {'; '.join(detail)})"


def bench_engines_table(result: dict[str, Any]) -> list[str]:
    """tools/bench_engines.py's figures: medians, MBU, ratios to the reference and `stream`,
    and where each engine's tokens first differ from the fused engine's."""
    figs = result["engines"]
    ref, stream = figs.get("reference", {}), figs.get("stream", {})
    lines = [
        "| Engine | First Token s (median) | Decode Tokens/s (median) | MBU | "
        "Decode vs reference | TTFT vs reference | Decode vs stream | Tokens vs fused |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in [n for n in BENCH_ENGINES if n in figs]:
        f = figs[name]
        decode, ttft = f.get("decode_tokens_per_s_median"), f.get("first_token_s_median")
        mbu = f"{100 * f['mbu']:.1f}%" if is_real(f.get("mbu")) else MISSING
        cells = [
            name,
            _fixed(ttft, 4),
            _fixed(decode, 2),
            mbu,
            _times(decode, ref.get("decode_tokens_per_s_median")),
            _times(ttft, ref.get("first_token_s_median")),
            _times(decode, stream.get("decode_tokens_per_s_median")),
            divergence_text(f),
        ]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return lines


def _probe_text(env: dict[str, Any]) -> str:
    """The CPU read-bandwidth probe behind MBU, when the env block carries it."""
    peak = env.get("cpu_read_bytes_per_s")
    if not is_real(peak):
        return ""
    text = f" Probed read bandwidth: {peak / 1e9:.1f} GB/s peak"
    median, low, high = (env.get(f"cpu_read_bytes_per_s_{k}") for k in ("median", "min", "max"))
    rounds = env.get("cpu_read_probe_rounds")
    if all(is_real(v) for v in (median, low, high)):
        text += f", median {median / 1e9:.1f} (min {low / 1e9:.1f}, max {high / 1e9:.1f})"
        text += f" over {rounds} rounds" if is_int(rounds) else ""
    probe_bytes = env.get("cpu_read_probe_bytes")
    text += f", {probe_bytes / 2**20:.0f} MiB buffer" if is_real(probe_bytes) else ""
    return text + "."


def bench_engines_section(result: dict[str, Any]) -> list[str]:
    cfg, env = result["config"], result["env"]
    machine = f"{env['device_kind']} x{env['device_count']}"
    machine += f" ({env['cpu_model']})" if env.get("cpu_model") else ""
    return [
        "## Engine Benchmark (tools/bench_engines.py)",
        "",
        esc(
            f"One process, same params and prompt: model={cfg['model']} ({cfg['dtype']}, random "
            f"init), {cfg['tokens']} new tokens, batch {cfg['batch_size']}, prompt "
            f"{cfg['prompt_tokens']} tokens, KV cache {cfg['cache_length']}; {cfg['rounds']} "
            f"timed rounds alternating engines after one untimed (compiling) call each; "
            f"{machine}, commit {env.get('git_commit')}. MBU is "
            f"against the probed host read bandwidth on CPU.{_probe_text(env)} `reference` is "
            "tools/reference_decode.py (jitted prefill + one lax.scan), the yardstick. Tokens "
            "vs fused: the first step (0 = the prefill's token) where an engine's greedy tokens "
            "differ from the fused engine's, and whether the top-2 logits there (one forward "
            "pass over the shared prefix) are within one bf16 ulp, a tie that either choice "
            "honours."
        ),
        "",
        *bench_engines_table(result),
    ]
