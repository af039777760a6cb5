"""The record's memory block (weights, KV cache, programs, peak) and `profile=true`'s trace."""

from __future__ import annotations

from pathlib import Path

import jax
from hydra import compose, initialize_config_dir

from sweep.cache import MODELS
from sweep.job import run_job
from sweep.models import tree_bytes
from sweep.record import load_record
from tests.conftest import REPO

FAST = ["experiment=quick", "runs.benchmark=2", "compile_cache_dir=null", "tokens=4"]


def job(tmp_path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*FAST, *overrides])
    return run_job(cfg, job_dir=tmp_path / ("_".join(overrides) or "defaults"))


def _kv_bytes(model, batch_size: int, cache_length: int) -> int:
    dtype = model.params["embedder"]["input_embedding"].dtype
    shapes = jax.eval_shape(
        lambda: model.config.init_cache(
            batch_size=batch_size, dtype=dtype, cache_length=cache_length
        )
    )
    return tree_bytes(shapes)


def test_fused_record_has_weight_kv_program_and_peak_figures(tmp_path):
    record = job(tmp_path, "batch_size=2")
    assert record.status == "ok", record.error
    memory = record.memory
    model = MODELS.loaded
    assert memory.weight_bytes == model.param_bytes == record.model.param_bytes
    engine = next(e for e in MODELS.engines() if e.name == "fused")
    assert memory.kv_cache_bytes == _kv_bytes(model, 2, engine.cache_length) > 0
    assert memory.programs_reason is None
    for name in ("prefill", "decode"):
        figures = memory.programs[name]
        assert {"temp_bytes", "argument_bytes", "output_bytes"} <= set(figures), figures
        assert figures["argument_bytes"] >= memory.weight_bytes  # the params are an argument
    assert memory.programs["decode"]["temp_bytes"] > 0
    assert memory.peak_source in ("device", "process_rss")
    assert memory.peak_bytes >= memory.weight_bytes
    # Analysing the programs after the phases compiled nothing inside them.
    assert record.phases["benchmark"].compiles == 0 and record.phases["final"].compiles == 0
    # ...and the block is in the file, read back typed.
    assert load_record(tmp_path / "batch_size=2" / "metrics.json").memory == memory
    assert record.profile is None  # profile=false by default


def test_sampler_engine_has_no_program_figures_and_says_why(tmp_path):
    record = job(tmp_path, "engine=sampler")
    assert record.status == "ok", record.error
    memory = record.memory
    assert memory.programs is None
    assert "sampler" in memory.programs_reason
    assert memory.weight_bytes == record.model.param_bytes
    engine = next(e for e in MODELS.engines() if e.name == "sampler")
    assert memory.kv_cache_bytes == _kv_bytes(MODELS.loaded, 1, engine.cache_length)
    assert memory.peak_bytes >= memory.weight_bytes


def test_profile_writes_a_trace_named_in_the_record_and_compiles_nothing_timed(tmp_path):
    record = job(tmp_path, "profile=true")
    assert record.status == "ok", record.error
    trace_dir = Path(record.profile.dir)
    assert trace_dir == tmp_path / "profile=true" / "profile"
    paths = [trace_dir / f for f in record.profile.files]
    assert paths and all(p.is_file() for p in paths), record.profile
    assert any(p.name.endswith(".xplane.pb") for p in paths), record.profile.files
    assert any("perfetto" in p.name or "trace.json" in p.name for p in paths)
    assert record.phases["benchmark"].compiles == 0
    assert record.phases["final"].compiles == 0
    saved = load_record(tmp_path / "profile=true" / "metrics.json")
    assert saved.profile == record.profile


def test_an_older_record_without_the_blocks_still_reads():
    from sweep.record import Record

    data = Record(status="failed").to_dict()
    del data["memory"], data["profile"]
    typed = Record.from_dict(data)
    assert typed.memory is None and typed.profile is None
    data["memory"] = {"peak_bytes": 5}  # a block missing later keys reads them as null
    assert Record.from_dict(data).memory.weight_bytes is None
