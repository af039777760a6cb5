"""Metric arithmetic, statistics and the record's file contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sweep.metrics import (
    CostModel,
    MetricError,
    decode_bytes,
    decode_limit,
    describe,
    limit_metrics,
    run_metrics,
    summarize,
)
from sweep.record import RecordError, read_record, write_record


def test_run_metrics_follow_the_definitions():
    run = run_metrics(total_s=2.0, first_token_s=0.5, new_tokens=31, prompt_tokens=20, batch_size=1)
    assert run["post_first_s"] == pytest.approx(1.5)
    assert run["total_s"] == pytest.approx(run["first_token_s"] + run["post_first_s"])
    assert run["tokens_per_s"] == pytest.approx(31 / 2.0)
    assert run["decode_tokens_per_s"] == pytest.approx(30 / 1.5)
    assert run["pre_first_tokens_per_s"] == pytest.approx(1 / 0.5)
    assert run["prefill_tokens_per_s"] == pytest.approx(20 / 0.5)


def test_batched_figures_count_every_sequence():
    run = run_metrics(total_s=2.0, first_token_s=0.5, new_tokens=31, prompt_tokens=20, batch_size=4)
    assert run["tokens_per_s"] == pytest.approx(4 * 31 / 2.0)
    assert run["decode_tokens_per_s"] == pytest.approx(4 * 30 / 1.5)
    assert run["decode_tokens_per_s_per_seq"] == pytest.approx(30 / 1.5)
    assert run["prefill_tokens_per_s"] == pytest.approx(4 * 20 / 0.5)
    assert run["pre_first_tokens_per_s"] == pytest.approx(4 / 0.5)  # the batch's first tokens


def test_one_token_has_no_decode_rate_rather_than_a_nan():
    run = run_metrics(total_s=0.5, first_token_s=0.5, new_tokens=1, prompt_tokens=5, batch_size=1)
    assert run["decode_tokens_per_s"] is None
    json.dumps(run, allow_nan=False)


def cost(**kw):
    base = dict(
        decode_weight_bytes=1_000_000,
        kv_bytes_per_position_global=100,
        kv_bytes_per_position_local=100,
        sliding_window=8,
        prefill_flops_per_token=2_000_000,
        peak_bytes_per_s=1e9,
        peak_flops=1e12,
    )
    return CostModel(**base | kw)


def test_mbu_counts_weights_and_the_kv_actually_attended():
    run = run_metrics(
        total_s=1.1, first_token_s=0.1, new_tokens=11, prompt_tokens=10, batch_size=1, cost=cost()
    )
    steps = 10
    mean_positions = 10 + (steps + 1) / 2  # 15.5; local layers capped at the window (8)
    bytes_per_step = 1_000_000 + 100 * mean_positions + 100 * 8
    assert run["mbu"] == pytest.approx(bytes_per_step * steps / 1.0 / 1e9)
    assert run["mfu"] == pytest.approx(2_000_000 * 10 / 0.1 / 1e12)


def brute_force_decode_bytes(c: CostModel, *, prompt_tokens, steps, batch_size) -> int:
    """Step by step: step i attends prompt_tokens + i positions, at most the window on
    sliding-window layers."""
    total = 0
    for i in range(1, steps + 1):
        positions = prompt_tokens + i
        local = min(positions, c.sliding_window) if c.sliding_window else positions
        kv = c.kv_bytes_per_position_global * positions + c.kv_bytes_per_position_local * local
        total += c.decode_weight_bytes + batch_size * kv
    return total


@pytest.mark.parametrize(
    ("prompt_tokens", "new_tokens", "window"),
    [(4, 11, 8), (1, 40, 16), (7, 2, 8), (8, 9, 8), (30, 9, 8), (3, 17, None), (0, 5, 2)],
)
def test_mbu_sums_the_kv_of_every_step_exactly(prompt_tokens, new_tokens, window):
    c = cost(
        kv_bytes_per_position_global=100, kv_bytes_per_position_local=300, sliding_window=window
    )
    steps, batch = new_tokens - 1, 3
    run = run_metrics(
        total_s=1.5,
        first_token_s=0.5,
        new_tokens=new_tokens,
        prompt_tokens=prompt_tokens,
        batch_size=batch,
        cost=c,
    )
    exact = brute_force_decode_bytes(c, prompt_tokens=prompt_tokens, steps=steps, batch_size=batch)
    assert decode_bytes(c, prompt_tokens=prompt_tokens, steps=steps, batch_size=batch) == exact
    assert run["mbu"] == pytest.approx(exact / 1.0 / 1e9, rel=1e-12)


def test_mbu_across_the_window_is_not_the_mean_position_capped():
    # Prompt 4, window 8, 10 steps: steps attend 5, 6, 7, then 8 (capped) positions. The mean
    # position (9.5) capped at 8 counts 80 local positions; the steps attend 74.
    c = cost(kv_bytes_per_position_global=0, kv_bytes_per_position_local=1000, sliding_window=8)
    run = run_metrics(
        total_s=1.1, first_token_s=0.1, new_tokens=11, prompt_tokens=4, batch_size=1, cost=c
    )
    assert run["mbu"] == pytest.approx((10 * 1_000_000 + 74 * 1000) / 1e9)
    assert run["mbu"] != pytest.approx((10 * 1_000_000 + 80 * 1000) / 1e9)


def test_the_bandwidth_limit_is_hand_arithmetic():
    # Prompt 10, 10 decode steps, batch 2, window 8: a step reads the weights (1e6 bytes) once,
    # plus per sequence 100 x (10 + i) global bytes (mean over the steps: 1550) and 100 x 8
    # local bytes: 1e6 + 2 x (1550 + 800) = 1_004_700 bytes per step, at 1e9 bytes/s.
    c = cost()
    limit = decode_limit(c, prompt_tokens=10, new_tokens=11, batch_size=2)
    assert limit == pytest.approx(2 * 1e9 / 1_004_700, rel=1e-12)  # 1990.6 tokens/s
    run = run_metrics(
        total_s=1.1, first_token_s=0.1, new_tokens=11, prompt_tokens=10, batch_size=2, cost=c
    )
    figures = limit_metrics(c, run)
    assert figures["limit_decode_tokens_per_s"] == limit
    # 1.0 s over 10 steps: 100 ms a step; the limit's step: 1_004_700 / 1e9 s = 1.0047 ms.
    assert figures["ms_per_step_above_limit"] == pytest.approx(100 - 1.0047, rel=1e-12)
    # The limit is where MBU reaches 1: decode tokens/s = MBU x limit.
    assert run["decode_tokens_per_s"] == pytest.approx(run["mbu"] * limit, rel=1e-12)


def test_the_limit_needs_a_peak_and_its_excess_a_timed_decode():
    assert (
        decode_limit(cost(peak_bytes_per_s=None), prompt_tokens=3, new_tokens=5, batch_size=1)
        is None
    )
    assert decode_limit(cost(), prompt_tokens=3, new_tokens=1, batch_size=1) is None
    one_token = run_metrics(
        total_s=0.5, first_token_s=0.5, new_tokens=1, prompt_tokens=3, batch_size=1, cost=cost()
    )
    assert limit_metrics(cost(), one_token) == dict.fromkeys(
        ("limit_decode_tokens_per_s", "ms_per_step_above_limit")
    )
    # A derived first-token time and one decode step: the limit is known, the split is noise.
    derived = run_metrics(
        total_s=0.6,
        first_token_s=0.5,
        new_tokens=2,
        prompt_tokens=3,
        batch_size=1,
        cost=cost(),
        first_token_derived=True,
    )
    figures = limit_metrics(cost(), derived)
    assert figures["limit_decode_tokens_per_s"] == pytest.approx(1e9 / (1e6 + 100 * 4 * 2))
    assert figures["ms_per_step_above_limit"] is None
    assert limit_metrics(None, derived)["limit_decode_tokens_per_s"] is None


@pytest.mark.parametrize(
    ("new_tokens", "total_s", "first_token_s", "derived", "decodes"),
    [
        (1, 0.5, 0.5, False, False),  # no decode step
        (1, 0.4, 0.5, True, False),  # derived TTFT after the total: negative split
        (2, 0.6, 0.5, False, True),  # one decode step, observed TTFT: defined
        (2, 0.6, 0.5, True, False),  # one decode step after a derived TTFT: noise
        (2, 0.45, 0.5, True, False),
        (3, 0.7, 0.5, True, True),  # two decode steps: defined
        (3, 0.45, 0.5, True, False),  # but never from a negative time
        (8, 0.5, 0.5, False, False),  # nor from a zero one
    ],
)
def test_decode_figures_only_from_a_real_decode_time(
    new_tokens, total_s, first_token_s, derived, decodes
):
    run = run_metrics(
        total_s=total_s,
        first_token_s=first_token_s,
        new_tokens=new_tokens,
        prompt_tokens=5,
        batch_size=2,
        cost=cost(peak_bytes_per_s=1e12),
        first_token_derived=derived,
    )
    assert run["first_token_derived"] is derived
    if derived and not decodes:  # a split of two requests that is noise: null, not a time
        assert run["post_first_s"] is None
    else:  # kept as measured
        assert run["post_first_s"] == pytest.approx(total_s - first_token_s)
    decode = ("decode_tokens_per_s", "decode_tokens_per_s_per_seq", "mbu")
    assert all((run[k] is not None) == decodes for k in decode), run
    figures = [v for v in run.values() if isinstance(v, float)]
    assert all(v >= 0 for v in figures), run  # no negative figure at all
    json.dumps(run, allow_nan=False)
    summarize([run])


def test_the_read_probe_reports_its_peak_median_and_spread():
    from sweep.env import PROBE_ROUNDS, cpu_read_peak, probe_read

    probe = cpu_read_peak(33_700_000)  # the tiny model's decode (cached for its jobs too)
    size = 36 * 2**20
    assert probe["cpu_read_probe_bytes"] == size
    assert probe["cpu_read_probe_rounds"] == PROBE_ROUNDS
    peak, median = probe["cpu_read_bytes_per_s"], probe["cpu_read_bytes_per_s_median"]
    low, high = probe["cpu_read_bytes_per_s_min"], probe["cpu_read_bytes_per_s_max"]
    assert 0 < low <= median <= high == peak  # the peak is the best read of every round
    again = probe_read(size)
    assert again is probe_read(size)  # probed once per process and size
    assert cpu_read_peak(33_700_000) == probe and probe_read(size).peak == peak
    assert len(again.rounds) == PROBE_ROUNDS


def test_mbu_above_one_is_a_counting_bug():
    with pytest.raises(MetricError, match="mbu"):
        run_metrics(
            total_s=0.002,
            first_token_s=0.001,
            new_tokens=11,
            prompt_tokens=1,
            batch_size=1,
            cost=cost(),
        )


def test_unknown_peaks_give_no_mbu():
    run = run_metrics(
        total_s=1,
        first_token_s=0.1,
        new_tokens=5,
        prompt_tokens=3,
        batch_size=1,
        cost=cost(peak_bytes_per_s=None, peak_flops=None),
    )
    assert run["mbu"] is None and run["mfu"] is None


def test_describe_matches_numpy():
    rng = np.random.default_rng(0)
    xs = list(rng.random(37))
    stats = describe(xs)
    assert stats["mean"] == pytest.approx(np.mean(xs))
    assert stats["median"] == pytest.approx(np.median(xs))
    assert stats["p90"] == pytest.approx(np.percentile(xs, 90))
    assert stats["p99"] == pytest.approx(np.percentile(xs, 99))
    assert stats["stdev"] == pytest.approx(np.std(xs, ddof=1))
    assert (stats["min"], stats["max"]) == (min(xs), max(xs))
    assert describe([None, None]) is None


def test_summarize_keeps_counts():
    runs = [
        run_metrics(total_s=t, first_token_s=0.1, new_tokens=8, prompt_tokens=4, batch_size=1)
        for t in (1.0, 2.0, 3.0)
    ]
    summary = summarize(runs)
    assert summary["runs"] == 3
    assert summary["total_s"]["median"] == 2.0


def test_records_are_written_atomically_and_reject_nan(tmp_path):
    path = tmp_path / "metrics.json"
    good = {"schema_version": 1, "value": 1.5}
    write_record(path, good)
    with pytest.raises(ValueError):
        write_record(path, {"schema_version": 1, "value": math.nan})
    assert json.loads(path.read_text()) == good  # the old record survives
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"schema_version": 1, "status": "ok"', "not valid JSON"),
        ("not json at all", "not valid JSON"),
        ("", "empty"),
        ('{"schema_version": 99}', "newer"),
        ('{"schema_version": 1, "x": NaN}', "not valid JSON"),
        ('{"schema_version": 1}', "missing keys"),
    ],
)
def test_bad_record_files_say_why(tmp_path, content, reason):
    path = tmp_path / "metrics.json"
    path.write_text(content)
    with pytest.raises(RecordError, match=reason):
        read_record(path)


def test_the_bandwidth_probe_is_the_decodes_size_within_bounds():
    from sweep.env import PROBE_MAX_BYTES, PROBE_STEP_BYTES, probe_bytes_for

    assert probe_bytes_for(1) == PROBE_STEP_BYTES
    assert probe_bytes_for(33_700_000) == 36 * 2**20  # rounded up to whole 4 MiB steps
    assert probe_bytes_for(36 * 2**20) == 36 * 2**20
    assert probe_bytes_for(536_000_000) == PROBE_MAX_BYTES  # 270M: DRAM, not the caches


def test_a_derived_split_faster_than_the_hardware_is_noise_not_a_counting_bug():
    """gemma's Sampler on a loaded machine: the separate 1-token request took nearly as long
    as the whole one, so the split implies an impossible decode. Null, and the job goes on;
    the same split measured inside one request is still a counting bug."""
    kw = dict(total_s=0.1000, first_token_s=0.0999, new_tokens=8, prompt_tokens=5, batch_size=1)
    slow_link = cost(peak_bytes_per_s=1e9)
    run = run_metrics(**kw, cost=slow_link, first_token_derived=True)
    assert run["post_first_s"] is None and run["decode_tokens_per_s"] is None
    assert run["mbu"] is None and run["tokens_per_s"] > 0
    with pytest.raises(MetricError, match="mbu"):
        run_metrics(**kw, cost=slow_link, first_token_derived=False)
