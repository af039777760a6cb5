"""Reliability: resume, crash isolation, interruption, atomic records and bad input.

Signals and crashes are injected into real job processes with the `SWEEP_FAULT` hook module
(tests/faults.py, loaded through SWEEP_HOOKS); a signal "from outside" is sent by the test once
the job's log shows it is in the phase the fault holds it in.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from sweep import job as job_mod
from sweep import outcomes, resume
from sweep.callbacks import parallel_launcher_problem
from sweep.config import ASSETS_DIR
from sweep.record import PhaseBlock, config_hash, read_record
from tests import faults
from tests.conftest import REPO, records, run_sweep, sweep_env

CONF = REPO / "conf"
FAST = ("experiment=quick", "runs.benchmark=1")
MARKER = "SWEEP_FAULT: injecting"


# ------------------------------------------------------------------------------------------
# helpers


def start_sweep(sweep_dir: Path, *overrides: str, env: dict[str, str], logs: Path):
    """`python -m sweep.run -m ...` in the background; output goes to files under `logs`."""
    logs.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "sweep.run", "-m", f"hydra.sweep.dir={sweep_dir}"]
    args += ["merge.on_end=false", *overrides]
    out = (logs / "stdout").open("w")
    err = (logs / "stderr").open("w")
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=err)


def wait_for_fault(job_dir: Path, proc: subprocess.Popen, logs: Path, timeout: float = 400):
    """Block until the job's log says the injected fault has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log_file in job_dir.glob("*.log"):
            if MARKER in log_file.read_text(errors="replace"):
                time.sleep(0.3)  # let it get into the sleep/hang
                return
        if proc.poll() is not None:
            pytest.fail(f"sweep ended ({proc.returncode}) before the fault: {stderr(logs)[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no fault marker in {job_dir} after {timeout} s")


def stderr(logs: Path) -> str:
    return (logs / "stderr").read_text(errors="replace")


def statuses(sweep_dir: Path) -> dict[int, str]:
    return {int(p.parent.name): read_record(p)["status"] for p in sweep_dir.glob("*/metrics.json")}


def assert_no_partial_records(root: Path) -> None:
    """Every metrics.json under root is a complete, valid record."""
    for path in root.rglob("metrics.json"):
        read_record(path)  # raises on a partial or invalid file


def job(tmp_path: Path, *overrides: str, job_dir: Path | None = None) -> dict:
    """One in-process job (no Hydra runtime) into `job_dir`."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*FAST, "compile_cache_dir=null", *overrides])
    return job_mod.run_job(cfg, job_dir=job_dir or tmp_path / "job").to_dict()


@pytest.fixture
def fake_device_work(monkeypatch):
    """Replace the device work of an in-process job by a stub that records a call count."""
    calls = []

    def fake_run(config, record, ctx, trackers):
        calls.append(config.tokens)
        record.env = {"backend": "cpu", "device_kind": "cpu", "device_count": 1, "hosts": 1}
        summary = {"first_token_s": {"median": 0.01}, "decode_tokens_per_s": {"median": 99.0}}
        record.phases = {
            p: PhaseBlock(runs=[{"total_s": 0.1}], summary=summary)
            for p in ("warmup", "benchmark", "final")
        }
        return None

    monkeypatch.setattr(job_mod, "_run", fake_run)
    return calls


# ------------------------------------------------------------------------------------------
# fast, in-process


def test_fault_spec_parses_and_bad_specs_say_what_is_allowed():
    assert faults.parse("benchmark:sleep:1.5@2, warmup:abort") == [
        ("benchmark", "sleep", "1.5", 2),
        ("warmup", "abort", None, None),
    ]
    for bad in ("bench:raise", "warmup:explode", "warmup:sleep:x", "warmup:raise@two"):
        with pytest.raises(faults.FaultSpecError, match="SWEEP_FAULT"):
            faults.parse(bad)


def test_config_hash_ignores_settings_that_do_not_change_the_measurement():
    base = {"tokens": 8, "model": {"name": "tiny"}, "wandb": {"mode": "offline"}}
    same = base | {"resume": True, "isolate": True, "merge": {"on_end": False}, "wandb": {}}
    assert config_hash(base) == config_hash(same)
    assert config_hash(base) != config_hash(base | {"tokens": 16})


def test_resume_keeps_ok_records_and_reruns_the_rest(tmp_path, fake_device_work):
    ok_dir, failed_dir = tmp_path / "ok", tmp_path / "failed"
    first = job(tmp_path, "tokens=4", job_dir=ok_dir)
    assert first["status"] == "ok" and first["config_hash"]
    failed = job(tmp_path, "tokens=0", job_dir=failed_dir)
    assert failed["status"] == "failed"
    before = (ok_dir / "metrics.json").read_bytes()

    kept = job(tmp_path, "tokens=4", "resume=true", job_dir=ok_dir)
    assert fake_device_work == [4]  # not run again
    assert kept == first and (ok_dir / "metrics.json").read_bytes() == before
    assert outcomes.JOB_RESULTS[-1].status == "ok"

    # Another config in the same dir: rerun, the old ok record kept aside.
    other = job(tmp_path, "tokens=5", "resume=true", job_dir=ok_dir)
    assert other["config"]["tokens"] == 5 and fake_device_work == [4, 5]
    (prev,) = ok_dir.glob("metrics.json.prev-*")
    assert prev.read_bytes() == before

    # A failed job of the same config reruns and its record is replaced (no copy kept).
    rerun = job(tmp_path, "tokens=0", "resume=true", job_dir=failed_dir)
    assert rerun["status"] == "failed" and not list(failed_dir.glob("*.prev-*"))


def test_without_resume_an_existing_record_is_kept_aside_not_overwritten(
    tmp_path, fake_device_work
):
    first = job(tmp_path, "tokens=4")
    old = (tmp_path / "job" / "metrics.json").read_bytes()
    second = job(tmp_path, "tokens=4")
    assert fake_device_work == [4, 4]
    assert second["started_at"] != first["started_at"]
    (prev,) = (tmp_path / "job").glob("metrics.json.prev-*")
    assert prev.read_bytes() == old
    assert read_record(tmp_path / "job" / "metrics.json")["started_at"] == second["started_at"]


def test_a_full_disk_fails_the_job_cleanly_and_keeps_the_old_record(
    tmp_path, fake_device_work, monkeypatch
):
    job(tmp_path, "tokens=4")
    path = tmp_path / "job" / "metrics.json"
    old = path.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    rec = job(tmp_path, "tokens=4")  # returns, does not raise
    assert rec["status"] == "failed"
    assert "disk full" in rec["error"]["message"]
    assert "No space left" in rec["error"]["message"]
    assert outcomes.JOB_RESULTS[-1].status == "failed"
    assert path.read_bytes() == old  # the previous record, untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]  # no tmp, no prev


def test_isolate_files_left_by_a_killed_run_are_removed_when_the_job_runs_again(
    tmp_path, fake_device_work
):
    # What `kill -9` of an isolate=true sweep leaves: its spec and partial result files.
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    left = [job_dir / ".isolate-x1y2.json", job_dir / ".isolate-x1y2.result.json"]
    for path in left:
        path.write_text("{}")
    rec = job(tmp_path, "tokens=4", "resume=true", job_dir=job_dir)
    assert rec["status"] == "ok" and fake_device_work == [4]
    assert not any(path.exists() for path in left)
    assert sorted(p.name for p in job_dir.iterdir()) == ["metrics.json"]


def test_merge_reads_only_complete_records(tmp_path):
    from sweep.results.load import load_inputs

    job_dir = tmp_path / "sweep" / "0"
    job_dir.mkdir(parents=True)
    (job_dir / ".metrics.json.abc123.tmp").write_text('{"schema_version": 1, "stat')
    (job_dir / "metrics.json.prev-20260101T000000000000Z").write_text("{}")
    warnings = []
    found, skipped = load_inputs([tmp_path / "sweep"], warnings.append)
    assert found == [] and skipped == [] and warnings == []


def test_a_record_with_nan_is_written_as_failed(tmp_path, monkeypatch):
    def nan_run(config, record, ctx, trackers):
        record.phases = {"warmup": PhaseBlock(runs=[{"total_s": float("nan")}], summary={})}

    monkeypatch.setattr(job_mod, "_run", nan_run)
    rec = job(tmp_path, "tokens=4")
    assert rec["status"] == "failed" and "record not writable" in rec["error"]["message"]
    assert read_record(tmp_path / "job" / "metrics.json")["status"] == "failed"


def test_resume_finds_the_latest_sweep_of_the_same_command(tmp_path):
    def saved(name: str, task: list[str]) -> Path:
        d = tmp_path / "multirun" / name
        d.mkdir(parents=True)
        (d / "multirun.yaml").write_text(json.dumps({"hydra": {"overrides": {"task": task}}}))
        return d

    saved("2026-01-01/10-00-00-000000", ["tokens=4,8", "mode=text"])
    newer = saved("2026-01-02/09-00-00-000000", ["tokens=4,8", "mode=text", "resume=true"])
    saved("2026-01-03/09-00-00-000000", ["tokens=4,8", "mode=image"])
    ask = ["tokens=4,8", "mode=text", "resume=true", "wandb.mode=offline"]
    assert resume.find_previous(tmp_path / "multirun", ask, multirun=True) == newer
    assert resume.find_previous(tmp_path / "multirun", ["tokens=4"], multirun=True) is None

    argv = ["sweep.run", "-m", *ask]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        line = resume.redirect_argv(argv)
    finally:
        os.chdir(cwd)
    assert (
        argv[-1] == f"hydra.sweep.dir={Path('multirun') / newer.relative_to(tmp_path / 'multirun')}"
    )
    assert "continuing" in line
    assert resume.redirect_argv(["sweep.run", "-m", "tokens=4"]) is None  # no resume asked


def test_sweep_dirs_are_unique_below_the_second():
    text = (CONF / "hydra" / "default.yaml").read_text()
    assert "multirun/${now:%Y-%m-%d}/${now:%H-%M-%S-%f}" in text


def test_parallel_launcher_is_refused_only_for_accelerators():
    joblib = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
    tpu = {"name": "v6e-1", "platform": "tpu"}
    problem = parallel_launcher_problem(joblib | {"n_jobs": -1}, tpu)
    assert "joblib" in problem and "exclusive" in problem and "n_jobs=1" in problem
    assert parallel_launcher_problem(joblib | {"n_jobs": 1}, tpu) is None
    assert parallel_launcher_problem(joblib | {"n_jobs": 4}, {"platform": "cpu"}) is None
    assert parallel_launcher_problem(joblib | {"n_jobs": 2}, {"name": "h100", "platform": "gpu"})
    basic = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
    assert parallel_launcher_problem(basic, tpu) is None


# ------------------------------------------------------------------------------------------
# real sweeps with injected faults


def test_killed_and_interrupted_sweep_resumes_to_all_ok(tmp_path):
    """Acceptance 1 and 3: SIGKILL during job 3 of 4; resume runs jobs 3-4 and is stopped by
    SIGTERM during job 4 (an `interrupted` record, no partial file, exit 143); a second resume
    runs job 4 only; the merge shows 4 ok."""
    sweep = tmp_path / "sweep"
    grid = (*FAST, "tokens=2,3,4,5")

    logs = tmp_path / "run1"
    proc = start_sweep(
        sweep, *grid, env=sweep_env(**faults.fault_env("benchmark:sleep:600@2")), logs=logs
    )
    wait_for_fault(sweep / "2", proc, logs)
    proc.send_signal(signal.SIGKILL)  # a preempted VM: no handler runs
    proc.wait(timeout=30)
    assert statuses(sweep) == {0: "ok", 1: "ok"}
    assert_no_partial_records(sweep)
    kept = {n: (sweep / str(n) / "metrics.json").read_bytes() for n in (0, 1)}

    logs = tmp_path / "run2"
    env = sweep_env(**faults.fault_env("benchmark:sleep:600@3"))
    proc = start_sweep(sweep, *grid, "resume=true", env=env, logs=logs)
    wait_for_fault(sweep / "3", proc, logs)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, stderr(logs)[-3000:]
    err = stderr(logs)
    assert "interrupted (SIGTERM)" in err and "resume=true" in err
    assert statuses(sweep) == {0: "ok", 1: "ok", 2: "ok", 3: "interrupted"}
    assert_no_partial_records(sweep)
    assert not list(sweep.rglob("*.tmp"))
    assert {n: (sweep / str(n) / "metrics.json").read_bytes() for n in (0, 1)} == kept
    out = (logs / "stdout").read_text()
    assert out.count("resume: kept the ok record") == 2
    assert "[job 2] start" in out and "[job 0] start" not in out and "[job 1] start" not in out
    interrupted = read_record(sweep / "3" / "metrics.json")
    assert "SIGTERM" in interrupted["error"]["message"]

    proc = run_sweep(sweep, *grid, "resume=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[job 3] start" in proc.stdout and "[job 2] start" not in proc.stdout
    assert statuses(sweep) == {0: "ok", 1: "ok", 2: "ok", 3: "ok"}

    from sweep.results import merge

    store = tmp_path / "store" / "metrics.json"
    merge([sweep], store=store, markdown=tmp_path / "B.md", plots_dir=tmp_path / "plots")
    merged = json.loads(store.read_text())["records"]
    assert sorted(r["config"]["tokens"] for r in merged) == [2, 3, 4, 5]
    assert {r["status"] for r in merged} == {"ok"}


def test_isolated_abort_is_a_crashed_record_and_the_next_job_runs(tmp_path):
    """Acceptance 2."""
    env = sweep_env(**faults.fault_env("start:abort@0"))
    proc = run_sweep(tmp_path, *FAST, "tokens=2,3", "isolate=true", env=env)
    assert proc.returncode == 1
    crashed, ok = records(tmp_path)
    assert crashed["status"] == "crashed"
    assert crashed["isolate"]["signal"] == "SIGABRT" and crashed["isolate"]["exit_code"] == -6
    assert "SIGABRT" in crashed["error"]["message"]
    assert any("Aborted" in line for line in crashed["crash"]["output"])  # faulthandler's words
    assert crashed["run_key"] and crashed["finished_at"]
    assert ok["status"] == "ok", ok["error"]
    assert ok["isolate"]["exit_code"] == 0
    assert "crashed:" in proc.stderr and "SIGABRT" in proc.stderr
    assert not [p for p in tmp_path.rglob(".isolate-*")]  # hand-over files cleaned up


def _write_bad_inputs(root: Path) -> dict[str, tuple[str, str]]:
    """Config presets for every bad input: name -> (expected status, key words)."""
    data = root / "data"
    data.mkdir()
    (data / "empty_ckpt").mkdir()
    (data / "unreadable_ckpt").mkdir()
    (data / "unreadable_ckpt" / "x").write_text("x")
    (data / "unreadable_ckpt").chmod(0)
    (data / "file_ckpt").write_text("not a checkpoint")
    (data / "zero.png").write_bytes(b"")
    (data / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    png = (ASSETS_DIR / "default_image.png").read_bytes()
    (data / "truncated.png").write_bytes(png[: len(png) // 2])
    (data / "image_dir.png").mkdir()
    presets = {
        "missing_checkpoint": ("model:\n  checkpoint: {d}/nope\n", "directory not found"),
        "empty_checkpoint": ("model:\n  checkpoint: {d}/empty_ckpt\n", "empty directory"),
        "unreadable_checkpoint": (
            "model:\n  checkpoint: {d}/unreadable_ckpt\n",
            "directory not readable",
        ),
        "file_checkpoint": ("model:\n  checkpoint: {d}/file_ckpt\n", "not a directory"),
        "missing_image": ("mode:\n  image: {d}/nope.png\n", "file not found"),
        "zero_byte_image": ("mode:\n  image: {d}/zero.png\n", "empty file (0 bytes)"),
        "corrupt_image": ("mode:\n  image: {d}/corrupt.png\n", "not a readable image"),
        "truncated_image": ("mode:\n  image: {d}/truncated.png\n", "not a readable image"),
        "directory_as_image": ("mode:\n  image: {d}/image_dir.png\n", "not a file"),
        "image_on_text_only_model": (
            "defaults:\n  - override /model: gemma3_1b\n",
            "text-only: use mode=text",
        ),
        "prompt_longer_than_cache": (
            "tokens: 8\nengine:\n  cache_length: 16\n",
            "more than engine.cache_length=16",
        ),
        "topology_not_here": (
            "defaults:\n  - override /topology: v6e-1\n",
            "expects platform tpu",
        ),
    }
    group = root / "conf" / "bad"
    group.mkdir(parents=True)
    expected = {}
    for name, (body, words) in presets.items():
        image_mode = "image" in name
        head = "# @package _global_\n"
        if image_mode and "defaults" not in body:
            head += "defaults:\n  - override /mode: image\n"
        elif image_mode:
            body = body.replace("defaults:\n", "defaults:\n  - override /mode: image\n")
        (group / f"{name}.yaml").write_text(head + body.format(d=data))
        expected[name] = ("skipped" if name == "topology_not_here" else "failed", words)
    return expected


def test_every_bad_input_fails_fast_with_a_clear_message(tmp_path):
    """Acceptance 4: one sweep, one job per bad input; exit 1, key words, never `ok`."""
    expected = _write_bad_inputs(tmp_path)
    env = sweep_env()
    if os.geteuid() == 0:  # root reads any directory: make os.access say what a user would see
        shim = tmp_path / "shim"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(
            "import os\n_access = os.access\n"
            "def _fake(path, mode, *a, **k):\n"
            "    if 'unreadable_ckpt' in os.fspath(path):\n        return False\n"
            "    return _access(path, mode, *a, **k)\n"
            "os.access = _fake\n"
        )
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))
    sweep = tmp_path / "sweep"
    names = sorted(expected, key=lambda n: n.startswith(("prompt", "topology")))  # cheap first
    proc = run_sweep(
        sweep,
        *FAST,
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "+bad=" + ",".join(names),
        env=env,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    recs = {r["choices"]["bad"]: r for r in records(sweep)}
    assert set(recs) == set(expected)
    for name, (status, words) in expected.items():
        rec = recs[name]
        assert rec["status"] == status, (name, rec["error"])
        assert words in rec["error"]["message"], (name, rec["error"]["message"])
        assert words in proc.stderr, name  # the summary names every job and why
        if name not in ("prompt_longer_than_cache",):
            assert not rec["model"], name  # refused before any model was built
    assert "warmup" not in proc.stdout  # no job reached a phase
    assert f"{len(expected)} of {len(expected)} job(s) did not end ok" in proc.stderr


def test_joblib_with_several_workers_on_an_accelerator_host_is_refused(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    start = time.perf_counter()
    proc = run_sweep(tmp_path, *FAST, "hydra/launcher=joblib", "topology=v6e-1", "tokens=2,3")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "sweep refused" in proc.stderr
    assert "hydra/launcher=joblib" in proc.stderr and "exclusive" in proc.stderr
    assert not list(tmp_path.rglob("metrics.json"))  # refused before any job
    assert time.perf_counter() - start < 60


# ------------------------------------------------------------------------------------------
# slow: more crash kinds, second signal, parallel CPU, the same command resumed


@pytest.mark.slow
@pytest.mark.parametrize(("action", "sig"), [("segv", "SIGSEGV"), ("kill", "SIGKILL")])
def test_isolated_native_crashes_name_the_signal(tmp_path, action, sig):
    env = sweep_env(**faults.fault_env(f"warmup:{action}@0"))
    proc = run_sweep(tmp_path, *FAST, "tokens=2,3", "isolate=true", env=env)
    assert proc.returncode == 1
    crashed, ok = records(tmp_path)
    assert crashed["status"] == "crashed" and crashed["isolate"]["signal"] == sig
    assert crashed["crash"]["phase"] == "warmup"
    assert crashed["model"] and crashed["env"]  # what the child had done before it died
    assert ok["status"] == "ok", ok["error"]


@pytest.mark.slow
def test_sigterm_to_an_isolated_job_records_it_interrupted(tmp_path):
    sweep, logs = tmp_path / "sweep", tmp_path / "logs"
    env = sweep_env(**faults.fault_env("benchmark:sleep:600@0"))
    proc = start_sweep(sweep, *FAST, "tokens=2,3", "isolate=true", env=env, logs=logs)
    wait_for_fault(sweep / "0", proc, logs)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, stderr(logs)[-3000:]
    assert statuses(sweep) == {0: "interrupted"}
    rec = read_record(sweep / "0" / "metrics.json")
    assert rec["isolate"]["exit_code"] == 0  # the child recorded itself
    assert "warmup" in rec["phases"]


@pytest.mark.slow
@pytest.mark.parametrize("isolated", [False, True])
def test_a_second_signal_exits_even_when_the_job_hangs(tmp_path, isolated):
    sweep, logs = tmp_path / "sweep", tmp_path / "logs"
    env = sweep_env(**faults.fault_env("start:hang@1"))
    extra = ("isolate=true",) if isolated else ()
    proc = start_sweep(sweep, *FAST, "tokens=2,3", *extra, env=env, logs=logs)
    wait_for_fault(sweep / "1", proc, logs)
    ok_record = (sweep / "0" / "metrics.json").read_bytes()
    proc.send_signal(signal.SIGTERM)
    time.sleep(2)
    assert proc.poll() is None  # stuck in native code: the first signal cannot stop it
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert "second SIGTERM: exiting now" in stderr(logs)
    assert statuses(sweep) == {0: "ok"}
    assert (sweep / "0" / "metrics.json").read_bytes() == ok_record
    if isolated:  # the hung child went with its parent, leaving its spec files; a resume
        # of that job removes them
        assert list((sweep / "1").glob(".isolate-*"))
        again = run_sweep(sweep, *FAST, "tokens=2,3", "isolate=true", "resume=true")
        assert again.returncode == 0, again.stderr[-3000:]
        assert statuses(sweep) == {0: "ok", 1: "ok"}
        assert not list((sweep / "1").glob(".isolate-*"))


@pytest.mark.slow
def test_joblib_on_cpu_runs_in_parallel(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    proc = run_sweep(
        tmp_path, *FAST, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "tokens=2,3"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["status"] for r in records(tmp_path)] == ["ok", "ok"]


@pytest.mark.slow
def test_the_same_command_with_resume_continues_its_latest_sweep(tmp_path):
    """No hydra.sweep.dir: `resume=true` finds multirun/<date>/<time> of the same command."""

    def sweep_here(*extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
        env = sweep_env(**(faults.fault_env(fault) if fault else {}))
        args = [sys.executable, "-m", "sweep.run", "-m", "merge.on_end=false", *FAST]
        args += ["tokens=2,3", *extra]
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)

    first = sweep_here(fault="benchmark:raise@1")
    assert first.returncode == 1
    (sweep,) = {p.parent.parent for p in (tmp_path / "multirun").rglob("metrics.json")}
    assert statuses(sweep) == {0: "ok", 1: "failed"}
    again = sweep_here("resume=true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"continuing {sweep.relative_to(tmp_path)}" in again.stderr
    assert statuses(sweep) == {0: "ok", 1: "ok"}
    assert len(list((tmp_path / "multirun").glob("*/*"))) == 1  # no second sweep dir
