"""A real `-m` sweep into a temporary sweep dir: records, phases, honest counts."""

from __future__ import annotations

import json

import pytest

from sweep.record import PHASES, REQUIRED_KEYS
from tests.conftest import records, run_sweep


def test_quick_sweep_writes_one_ok_record_per_job(quick_sweep):
    recs = records(quick_sweep)
    assert len(recs) == 4
    seen = {(r["config"]["tokens"], r["choices"]["mode"]) for r in recs}
    assert seen == {(4, "text"), (8, "text"), (4, "image"), (8, "image")}
    for r in recs:
        assert set(REQUIRED_KEYS) <= set(r)
        assert r["status"] == "ok", r["error"]
        assert r["choices"]["model"] == "tiny" and r["choices"]["engine"] == "fused"
        assert [len(r["phases"][p]["runs"]) for p in PHASES] == [1, 2, 1]


def test_every_run_generates_exactly_the_requested_tokens(quick_sweep):
    for r in records(quick_sweep):
        for phase in PHASES:
            for run in r["phases"][phase]["runs"]:
                assert run["new_tokens"] == r["config"]["tokens"]
                assert run["total_s"] > run["first_token_s"] > 0
                assert run["total_s"] == run["first_token_s"] + run["post_first_s"]


def test_only_warmup_compiles(quick_sweep):
    for r in records(quick_sweep):
        assert r["phases"]["benchmark"]["compiles"] == 0
        assert r["phases"]["final"]["compiles"] == 0
    first = records(quick_sweep)[0]
    assert first["phases"]["warmup"]["compiles"] > 0  # the first job compiled its programs
    assert first["phases"]["warmup"]["compile_s"] > 0


def test_prompt_tokens_include_the_image_soft_tokens(quick_sweep):
    import sentencepiece as spm

    from sweep.request import CHAT_TEMPLATE
    from sweep.tokenizer import local_tokenizer_path

    sp = spm.SentencePieceProcessor(model_file=str(local_tokenizer_path()))
    for r in records(quick_sweep):
        text_ids = sp.encode(CHAT_TEMPLATE.format(prompt=r["config"]["mode"]["prompt"]))
        expected = 1 + len(text_ids)  # + BOS
        if r["choices"]["mode"] == "image":
            expected += 4 + 3  # tiny SigLIP: 4 soft tokens + \n\n, <end_of_image>, \n\n
        assert r["phases"]["benchmark"]["runs"][0]["prompt_tokens"] == expected


def test_final_phase_records_text_and_records_hold_no_nan(quick_sweep):
    for path in quick_sweep.glob("*/metrics.json"):
        text = path.read_text()
        json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        record = json.loads(text)
        assert record["generated_text"]


def test_model_is_built_once_per_sweep_process(quick_sweep):
    reused = [r["model"]["reused"] for r in records(quick_sweep)]
    assert reused == [False, True, True, True]


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    proc = run_sweep(tmp_path, "experiment=quick", "runs.benchmark=1", "tokens=4,0")
    assert proc.returncode != 0
    assert "tokens=0" in proc.stderr and "did not end ok" in proc.stderr
    by_tokens = {r["config"]["tokens"]: r for r in records(tmp_path)}
    assert by_tokens[4]["status"] == "ok"
    assert by_tokens[0]["status"] == "failed"
    assert by_tokens[0]["error"]["type"] == "ConfigError"


def test_records_carry_the_process_peak_rss(quick_sweep):
    peaks = [r["process_peak_rss_bytes"] for r in records(quick_sweep)]
    assert all(200 * 2**20 < p < 24 * 2**30 for p in peaks), peaks  # JAX + model: > 200 MiB
    assert peaks == sorted(peaks)  # one process ran the jobs in order: the peak only grows


def test_cpu_bandwidth_is_probed_over_a_buffer_the_size_of_the_decoded_weights(quick_sweep):
    """The tiny model's 32 MiB of embeddings sit partly in the caches: against a DRAM-sized
    probe its float32 decode measured MBU 1.01 and the job failed."""
    from sweep.env import probe_bytes_for

    for rec in records(quick_sweep):
        weight_bytes = rec["cost_model"]["decode_weight_bytes"]
        assert 32 * 2**20 < weight_bytes < 40 * 2**20  # the embedding table dominates
        assert rec["env"]["cpu_read_probe_bytes"] == probe_bytes_for(weight_bytes) == 36 * 2**20
        assert rec["cost_model"]["peak_bytes_per_s"] == rec["env"]["cpu_read_bytes_per_s"]
        assert 0 < rec["phases"]["benchmark"]["summary"]["mbu"]["max"] <= 1


def test_compile_share_adds_up_the_records(quick_sweep):
    from sweep.callbacks import compile_share
    from sweep.record import Record

    recs = records(quick_sweep)
    share = compile_share([Record.from_dict(r) for r in recs])
    assert share["wall_s"] == pytest.approx(sum(r["wall_s"] for r in recs))
    compile_s = sum(r["phases"][p]["compile_s"] for r in recs for p in PHASES)
    assert share["compile_s"] == pytest.approx(compile_s)
    assert 0 < share["compile_s"] < share["wall_s"]
    assert share["cache_hits"] + share["cache_misses"] > 0  # the persistent cache was consulted


def test_a_second_sweep_loads_its_programs_instead_of_tracing_them(quick_sweep, tmp_path):
    """Same model and shapes as `quick_sweep`, a new process: the traced programs come from
    disk (sweep/programs.py), and they generate the same text."""
    proc = run_sweep(
        tmp_path, "experiment=quick", "runs.benchmark=1", "tokens=8", "mode=text,image"
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    before = {(r["config"]["mode"]["name"], r["config"]["tokens"]): r for r in records(quick_sweep)}
    again = records(tmp_path)
    assert [r["status"] for r in again] == ["ok", "ok"]
    # Text prefill + the decode loop, then the image prefill (the decode loop is shared).
    assert [r["phases"]["warmup"]["program_hits"] for r in again] == [2, 1]
    assert all(r["phases"][p]["program_misses"] == 0 for r in again for p in PHASES)
    for r in again:
        assert r["generated_text"] == before[(r["config"]["mode"]["name"], 8)]["generated_text"]
    assert "stored programs: 3 loaded, 0 traced" in proc.stdout + proc.stderr
