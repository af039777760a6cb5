"""tools/bench_engines.py's token comparison: the first divergent step, the near-tie check on
the logits there, and how BENCHMARKS.md renders it (new and older bench_engines.json)."""

from __future__ import annotations

import importlib.util
import json
import sys

import ml_dtypes
import numpy as np
import pytest

from sweep.results.markdown import bench_engines_section, bench_engines_table, divergence_text
from tests.conftest import REPO


def load_tool():
    spec = importlib.util.spec_from_file_location("bench_engines", REPO / "tools/bench_engines.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = load_tool()


@pytest.mark.parametrize(
    "x", [12.3125, 1.0, 0.99609375, 3.0, -7.25, 1.5 * 2**-10, 448.0, 2.0**-130, 0.0]
)
def test_bf16_ulp_is_the_gap_to_the_next_bfloat16(x):
    value = np.asarray(abs(x), ml_dtypes.bfloat16)
    up = np.nextafter(value, np.asarray(np.inf, ml_dtypes.bfloat16))
    assert float(value) == abs(x)  # representable: the gap is well defined
    assert bench.bf16_ulp(x) == float(up) - float(value)


def test_first_divergence_is_the_earliest_step_over_the_rows():
    fused = [[5, 6, 7, 8], [1, 2, 3, 4]]
    assert bench.first_divergence(fused, [list(r) for r in fused]) is None
    assert bench.first_divergence(fused, [[5, 6, 7, 9], [1, 2, 0, 4]]) == (2, 1)
    assert bench.first_divergence(fused, [[9, 6, 7, 8], [1, 2, 3, 4]]) == (0, 0)  # prefill's
    assert bench.first_divergence(fused, [[5, 6], [1, 2, 3, 4]]) == (2, 0)  # ended early
    assert bench.first_divergence(np.array(fused), np.array(fused)) is None
    with pytest.raises(ValueError, match="batch"):
        bench.first_divergence(fused, fused[:1])


def logits_with(values: dict[int, float], vocab: int = 16) -> np.ndarray:
    logits = np.full(vocab, -3.0, np.float32)
    logits[0] = -np.inf  # a forbidden token
    for token, value in values.items():
        logits[token] = value
    return logits


def test_an_exact_bf16_tie_is_a_near_tie():
    # argmax takes the lower id (4); another engine's argmax may take 9.
    tie = bench.tie_check(logits_with({4: 12.3125, 9: 12.3125}), {"fused": 4, "sampler": 9})
    assert tie["near_tie"] is True
    assert tie["top2_logits"] == [12.3125, 12.3125] and tie["top2_ids"] == [4, 9]
    assert tie["bf16_ulp"] == 0.0625
    # One bf16 step apart is still a tie; two steps is not.
    assert bench.tie_check(logits_with({4: 12.375, 9: 12.3125}), {"a": 4, "b": 9})["near_tie"]
    far = bench.tie_check(logits_with({4: 12.4375, 9: 12.3125}), {"a": 4, "b": 9})
    assert far["near_tie"] is False
    # The other engine chose a token well below the top two: not a tie whatever the top-2.
    low = bench.tie_check(logits_with({4: 12.3125, 9: 12.3125, 2: 8.0}), {"a": 4, "b": 2})
    assert low["near_tie"] is False and low["chosen_logits"] == {"a": 12.3125, "b": 8.0}
    # A forbidden token's -inf is not JSON: it is recorded as null.
    json.dumps(bench.tie_check(logits_with({4: 1.0}), {"a": 4, "b": 0}), allow_nan=False)


def test_divergence_runs_the_tie_check_on_the_shared_prefix():
    asked = []

    def logits_at(row, prefix):
        asked.append((row, prefix))
        return logits_with({4: 12.3125, 9: 12.3125})

    fused = [[3, 5, 4, 4], [3, 5, 4, 4]]
    same = bench.divergence("reference", fused, fused, logits_at)
    assert same["first_divergent_step"] is None and same["near_tie"] is None and not asked
    out = bench.divergence("sampler", fused, [[3, 5, 4, 4], [3, 5, 9, 1]], logits_at)
    assert asked == [(1, [3, 5])]
    assert out["first_divergent_step"] == 2 and out["divergent_row"] == 1
    assert out["near_tie"] is True and out["chosen_tokens"] == {"fused": 4, "sampler": 9}
    short = bench.divergence("stream", fused, [[3, 5], [3, 5, 4, 4]], logits_at)
    assert short["first_divergent_step"] == 2 and short["near_tie"] is None


def figures(**extra) -> dict:
    base = {
        "first_token_s_median": 0.25,
        "decode_tokens_per_s_median": 12.5,
        "tokens_per_s_median": 11.0,
        "mbu": 0.3,
        "same_tokens_as_fused": True,
    }
    return base | extra


def test_the_table_says_where_and_why_tokens_differ():
    tie = bench.tie_check(logits_with({4: 12.3125, 9: 12.3125}), {"fused": 4, "sampler": 9})
    bug = bench.tie_check(logits_with({4: 12.3125, 9: 11.0}), {"fused": 4, "stream": 9})
    same = {"first_divergent_step": None, "near_tie": None, "top2_logits": None}
    result = {
        "engines": {
            "fused": figures(**same),
            "sampler": figures(same_tokens_as_fused=False, first_divergent_step=25, **tie),
            "stream": figures(same_tokens_as_fused=False, first_divergent_step=7, **bug),
            "reference": figures(decode_tokens_per_s_median=None, mbu=None, **same),
        },
    }
    lines = bench_engines_table(result)
    cells = {line.split(" | ")[0][2:]: line.split(" | ")[-1][:-2] for line in lines[2:]}
    assert cells["fused"] == "identical" == cells["reference"]
    assert cells["sampler"] == (
        "diverge at step 25 (near-tie: top-2 logits 12.3125 vs 12.3125, within 1 bf16 ulp)"
    )
    assert cells["stream"].startswith("diverge at step 7 (NOT a tie: top-2 logits 12.3125 vs 11")
    assert "stream 11" in cells["stream"] and "1 bf16 ulp = 0.0625" in cells["stream"]
    assert "| reference | 0.2500 | — | — |" in lines[-1]  # no decode figure: no crash


def test_an_older_bench_engines_json_still_renders():
    old = {
        "engines": {
            "fused": figures(),
            "sampler": figures(same_tokens_as_fused=False),
        },
        "config": {
            "model": "gemma3_270m",
            "dtype": "bfloat16",
            "tokens": 128,
            "batch_size": 1,
            "prompt_tokens": 26,
            "cache_length": 2048,
            "rounds": 3,
        },
        "env": {"device_kind": "cpu", "device_count": 1, "cpu_read_bytes_per_s": 18.9e9},
    }
    text = "\n".join(bench_engines_section(old))
    assert "| fused |" in text and text.endswith("| differ (step not recorded) |")
    assert "18.9 GB/s peak." in text
    assert divergence_text({"same_tokens_as_fused": True}) == "identical"
    old["env"] |= {
        "cpu_read_bytes_per_s_median": 15.0e9,
        "cpu_read_bytes_per_s_min": 14.0e9,
        "cpu_read_bytes_per_s_max": 18.9e9,
        "cpu_read_probe_rounds": 5,
        "cpu_read_probe_bytes": 256 * 2**20,
    }
    text = "\n".join(bench_engines_section(old))
    assert "18.9 GB/s peak, median 15.0 (min 14.0, max 18.9) over 5 rounds, 256 MiB" in text


def _numbers(value):
    """Every number in a nested record block."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


def test_one_and_two_tokens_end_to_end_with_no_negative_figure(tmp_path):
    """Acceptance: `-m tokens=1,2 engine=fused,sampler` exits 0, merges, and records no
    negative figure (the sampler's derived split gave negative or 49-405 tok/s rates)."""
    from sweep.results import merge
    from tests.conftest import records, run_sweep

    sweep = tmp_path / "sweep"
    proc = run_sweep(
        sweep, "experiment=quick", "runs.benchmark=2", "tokens=1,2", "engine=fused,sampler"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = records(sweep)
    assert [r["status"] for r in recs] == ["ok"] * 4
    for rec in recs:
        runs = [run for block in rec["phases"].values() for run in block["runs"]]
        assert all(x >= 0 for run in runs for x in _numbers(run)), rec["sweep"]["overrides"]
        derived = rec["config"]["engine"]["name"] == "sampler"
        assert all(run["first_token_derived"] is derived for run in runs)
        if rec["config"]["tokens"] == 1 or derived:  # no decode step, or too few to split
            assert all(run["decode_tokens_per_s"] is None for run in runs)
            assert all(run["mbu"] is None for run in runs)
        else:  # fused at tokens=2: one real decode step, timed inside the request
            assert all(run["decode_tokens_per_s"] > 0 for run in runs)
    out = tmp_path / "out"
    result = merge(
        [sweep], store=out / "metrics.json", markdown=out / "BENCHMARKS.md", plots_dir=out
    )
    assert result.added == 4 and not result.skipped
    table = (out / "BENCHMARKS.md").read_text()
    assert "| -" not in table.replace("| --- ", "")  # no negative cell
