"""The typed record: what the job fills is what metrics.json holds, and back."""

from __future__ import annotations

import json

import pytest

from sweep.record import ErrorInfo, Record, RecordError, load_record


def test_every_record_of_a_real_sweep_round_trips_through_the_typed_record(quick_sweep):
    paths = sorted(quick_sweep.glob("*/metrics.json"))
    assert len(paths) == 4
    for path in paths:
        data = json.loads(path.read_text())
        record = load_record(path)
        assert record.to_dict() == data  # nothing lost, nothing added
        assert record.ok and record.model.num_params > 0
        assert record.phases["benchmark"].runs == data["phases"]["benchmark"]["runs"]
        assert record.sweep.overrides == data["sweep"]["overrides"]


def test_a_block_of_the_wrong_shape_is_a_bad_record(quick_sweep):
    data = json.loads(next(quick_sweep.glob("*/metrics.json")).read_text())
    for key, value in (("model", [1, 2]), ("error", "boom"), ("sweep", 3)):
        with pytest.raises(RecordError, match=key):
            Record.from_dict(data | {key: value})
    with pytest.raises(RecordError, match=r"phases\.warmup"):
        Record.from_dict(data | {"phases": data["phases"] | {"warmup": {"summary": {}}}})


def test_an_older_record_without_newer_fields_reads_them_as_null(quick_sweep):
    data = json.loads(next(quick_sweep.glob("*/metrics.json")).read_text())
    older = data | {"model": {"name": "tiny", "source": "random-init (seed 0)"}}
    older.pop("crash")
    record = Record.from_dict(older)
    assert record.model.name == "tiny" and record.model.load_s is None and record.crash is None


def test_one_error_block_builder():
    try:
        raise ValueError("bad value")
    except ValueError as exc:
        err = ErrorInfo.of(exc)
    assert (err.type, err.message) == ("ValueError", "bad value")
    assert ErrorInfo.of(OSError(28, "full"), "could not write").message == "could not write"
    assert ErrorInfo.of("JobCrashed", "SIGKILL").summary() == "JobCrashed: SIGKILL"
