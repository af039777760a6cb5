"""One sweep per sweep dir (a lock), unwritable sweep dirs, overrides read with Hydra's own
grammar, and record files that no reader may crash on.

The lock tests start real `python -m sweep.run` processes; a refused sweep ends before any job
(about a second), a running one pays for one short job.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sweep import callbacks, resume
from sweep.callbacks import LOCK_NAME, SweepCallback, SweepRefused, lock_sweep_dir
from sweep.record import RecordError, read_record
from tests.conftest import REPO, records, sweep_env
from tests.faults import fault_env

FAST = ("experiment=quick", "tokens=8", "runs.benchmark=1")
DEEP = "[" * 100_000  # json.loads: RecursionError
JOBLIB = {
    "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "n_jobs": 2,
}


def sweep_args(sweep_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sweep.run",
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        "merge.on_end=false",
        *overrides,
    ]


def run(sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        sweep_args(sweep_dir, *overrides),
        cwd=REPO,
        env=sweep_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(autouse=True)
def _no_lock_left():
    yield
    callbacks.release_sweep_lock()


# ------------------------------------------------------------------------------------------
# the sweep-dir lock, in real processes


def test_a_live_sweep_dir_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    lock = sweep / LOCK_NAME
    holder = {"pid": os.getpid(), "host": "host-a", "started": "2026-12-01T10:00:00Z"}
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # this test plays the running sweep
        os.write(fd, json.dumps(holder | {"argv": ["-m", "tokens=4"]}).encode())
        refused = run(sweep, *FAST)
    finally:
        os.close(fd)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert (
        f"sweep refused: hydra.sweep.dir={sweep} is in use by another sweep "
        f"(pid {os.getpid()} on host host-a, started 2026-12-01T10:00:00Z): "
        "wait for it to end, or pick another dir"
    ) in refused.stderr
    assert not (sweep / "0").exists()  # refused before any job

    # Its process is gone (a killed sweep): the lock is taken over. The job dir also holds a
    # record no parser can read: resume=true treats it as missing, keeps it aside and reruns.
    gone = dead_pid()
    lock.write_text(json.dumps({"pid": gone, "host": "host-b", "started": "T", "argv": []}))
    (sweep / "0").mkdir()
    (sweep / "0" / "metrics.json").write_text(DEEP)
    proc = run(sweep, *FAST, "resume=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert f"took over the stale lock of the sweep dir {sweep} from pid {gone} on host" in out
    assert "exists but is unreadable" in out and "RecursionError" in out
    assert [r["status"] for r in records(sweep)] == ["ok"]
    (kept,) = (sweep / "0").glob("metrics.json.prev-*")
    assert kept.read_text() == DEEP
    assert lock.read_text() == ""  # released at the end: nobody holds it
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and not locked any more
    finally:
        os.close(fd)


def test_two_sweeps_started_at_once_into_one_dir_lose_no_record(tmp_path):
    sweep = tmp_path / "sweep"
    procs = {
        tokens: subprocess.Popen(
            sweep_args(sweep, *FAST, f"tokens={tokens}"),
            cwd=REPO,
            env=sweep_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tokens in (4, 5)
    }
    outs = {tokens: p.communicate(timeout=600) for tokens, p in procs.items()}
    codes = {tokens: p.returncode for tokens, p in procs.items()}
    # Every record a sweep that ended 0 wrote is still there: as metrics.json, or kept aside.
    found = [
        read_record(p)["config"]["tokens"]
        for p in sweep.glob("0/metrics.json*")
        if not p.name.endswith(".tmp")
    ]
    ran = sorted(tokens for tokens, code in codes.items() if code == 0)
    assert sorted(found) == ran, (codes, {t: o[1][-2000:] for t, o in outs.items()})
    refused = [tokens for tokens, code in codes.items() if code == 2]
    assert len(ran) + len(refused) == 2, codes
    for tokens in refused:
        assert f"hydra.sweep.dir={sweep} is in use by another sweep (pid" in outs[tokens][1]
    assert len(ran) >= 1


def _unshare_works() -> str | None:
    if not shutil.which("unshare"):
        return "no unshare(1) here"
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"user+mount namespaces are not allowed here: {probe.stderr.strip()}"
    return None


def test_a_read_only_sweep_dir_is_refused_with_one_clear_line(tmp_path):
    why = _unshare_works()
    if why:
        pytest.skip(f"needs a read-only mount in a user namespace: {why}")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    # As root, chmod does not make a dir read-only: a read-only tmpfs in a mount namespace
    # does. "existing" is an existing sweep dir (no lock file yet) on the read-only mount.
    script = (
        f'mount -t tmpfs -o size=4m tmpfs "{mnt}" && mkdir "{mnt}/existing" && '
        f'mount -o remount,ro "{mnt}" && '
        f'"$0" "$@" hydra.sweep.dir="{mnt}/new" ; echo "rc=$?" >&2; '
        f'"$0" "$@" hydra.sweep.dir="{mnt}/existing" ; echo "rc=$?" >&2'
    )
    args = [sys.executable, "-m", "sweep.run", "-m", "merge.on_end=false", *FAST]
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, *args],
        cwd=REPO,
        env=sweep_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = proc.stderr
    assert err.count("rc=2") == 2, err[-3000:]
    assert (
        f"sweep refused: hydra.sweep.dir={mnt}/new cannot be written: cannot create {mnt}/new: "
        "Read-only file system" in err
    )
    assert (
        f"sweep refused: hydra.sweep.dir={mnt}/existing cannot be written: cannot create the "
        f"lock file {mnt}/existing/{LOCK_NAME}: Read-only file system" in err
    )
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------
# the lock, in-process (flock conflicts between two open files of one process too)


def test_lock_names_its_holder_refuses_a_second_and_is_released_empty(tmp_path):
    held = lock_sweep_dir(tmp_path / "a" / "b")  # creates the dir
    holder = json.loads((tmp_path / "a" / "b" / LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid() and holder["argv"] == sys.argv[1:]
    assert {"host", "started"} <= holder.keys()
    with pytest.raises(SweepRefused, match=f"pid {os.getpid()} on host {holder['host']}"):
        lock_sweep_dir(tmp_path / "a" / "b")
    held.release()
    assert (tmp_path / "a" / "b" / LOCK_NAME).read_text() == ""
    lock_sweep_dir(tmp_path / "a" / "b").release()  # free again: no stale warning either


def test_multi_host_processes_share_the_dir_of_their_sweep(tmp_path, monkeypatch):
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert lock_sweep_dir(tmp_path, multi_host=True) is None  # process 0 holds the dir
    assert not (tmp_path / LOCK_NAME).exists()
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    held = lock_sweep_dir(tmp_path, multi_host=True)
    try:
        monkeypatch.delenv("JAX_PROCESS_ID")
        with pytest.raises(SweepRefused):  # the same host: another sweep, not a sibling
            lock_sweep_dir(tmp_path, multi_host=True)
        path = tmp_path / LOCK_NAME
        data = json.loads(path.read_text()) | {"host": "another-host"}
        os.pwrite(held.fd, json.dumps(data).encode().ljust(len(path.read_bytes())), 0)
        assert lock_sweep_dir(tmp_path, multi_host=True) is None  # the same sweep's host 0
        with pytest.raises(SweepRefused):
            lock_sweep_dir(tmp_path)  # a single-host sweep into it: refused
    finally:
        held.release()


def _config(tmp_path: Path, *task: str, launcher: dict | None = None):
    return OmegaConf.create(
        {
            "topology": {"name": "cpu", "platform": "cpu", "num_hosts": 1},
            "hydra": {
                "launcher": launcher or JOBLIB,
                "overrides": {"task": list(task)},
                "sweep": {"dir": str(tmp_path / "sweep")},
            },
        }
    )


@pytest.mark.parametrize(
    "override",
    ["topology=glob(v6e*)", "topology=choice(cpu,h200)", "topology='v5e-4'", "topology=[h100]"],
)
def test_the_launcher_check_sees_every_spelling_of_a_topology_sweep(tmp_path, override):
    config = _config(tmp_path, override)
    if override == "topology=[h100]":  # a list is not a sweep and names no config
        SweepCallback().on_multirun_start(config)
        return
    with pytest.raises(SweepRefused, match="hydra/launcher=joblib"):
        SweepCallback().on_multirun_start(config)
    assert not (tmp_path / "sweep").exists()  # refused before the dir is made


def test_a_cpu_sweep_with_joblib_runs_and_holds_its_dir(tmp_path):
    config = _config(tmp_path, "topology=glob(cpu*,exclude=cpu-2proc)", "tokens=range(2,4)")
    SweepCallback().on_multirun_start(config)
    assert callbacks._HELD is not None and (tmp_path / "sweep" / LOCK_NAME).read_text()
    with pytest.raises(SweepRefused, match="is in use by another sweep"):
        lock_sweep_dir(tmp_path / "sweep")  # what another sweep into that dir would meet
    SweepCallback().on_multirun_start(_config(tmp_path))  # this process's next multirun


# ------------------------------------------------------------------------------------------
# overrides, read as Hydra reads them


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("tokens=4,8", "tokens=choice(4,8)"),
        ("tokens=4,8", "tokens=range(4,9,4)"),
        ("tokens=4,8", "tokens=shuffle(4,8)"),  # compared as written; Hydra shuffles the jobs
        ("mode='text'", "mode=text"),
        ('mode="image",text', "mode=choice(image,'text')"),
        ("topology=glob(v6e-1*)", "topology=v6e-1,v6e-16"),
        ("topology=glob(*,exclude=[c*,v*,h100])", "topology=h200"),
        ("tokens=8", "tokens=choice(8)"),
    ],
)
def test_equivalent_spellings_compare_equal(a, b):
    assert resume.comparable([a]) == resume.comparable([b])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("tokens=4,8", "tokens=8,4"),  # the order numbers the jobs
        ("x=[1,2]", "x=1,2"),  # a list value is not a sweep
        ("tokens=8", "tokens='8'"),
        ("+x=1", "x=1"),
        ("topology=glob(v6e*)", "topology=v6e-1,v6e-4"),
    ],
)
def test_different_overrides_compare_different(a, b):
    assert resume.comparable([a]) != resume.comparable([b])


def test_overrides_hydra_cannot_parse_are_compared_raw_and_never_crash():
    for bad in ("bad=(", "a=b=c", "x=" + "[" * 5000, "tokens=range(0,1000000000)"):
        assert resume.comparable([bad]) == resume.comparable([bad])
        resume.wants_resume([bad])
        resume.override_key(bad)
    assert resume.comparable(["bad=("]) == ["bad=("]
    assert resume.override_key("a=b=c") == "a"


def test_ignored_overrides_and_resume_are_read_with_hydra_grammar():
    assert resume.comparable(["++resume=true", "~wandb.tags", "hydra/launcher=joblib"]) == []
    for yes in (["resume=true"], ["++resume=True"], ["resume='yes'"], ["resume=1"]):
        assert resume.wants_resume(yes), yes
    for no in (["resume=false"], ["resume=true", "resume=false"], ["resume=true,false"], []):
        assert not resume.wants_resume(no), no


def test_resume_redirect_recognises_the_dir_in_any_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["sweep.run", "-m", "resume=true", "++hydra.sweep.dir='/x y'"]
    assert resume.redirect_argv(list(argv)) is None  # the user named the dir
    saved = tmp_path / "multirun" / "2026-01-01" / "10-00-00-000000 it's"
    saved.mkdir(parents=True)
    task = ["tokens=4,8", "topology=glob(v6e-1*)", "resume=true"]
    (saved / "multirun.yaml").write_text(json.dumps({"hydra": {"overrides": {"task": task}}}))
    argv = ["sweep.run", "-m", "tokens=range(4,9,4)", "topology=v6e-1,v6e-16", "resume=yes"]
    assert "continuing" in resume.redirect_argv(argv)
    added = resume.parse_override(argv[-1])  # Hydra reads back the quoted path as it is
    assert added.key_or_group == "hydra.sweep.dir"
    assert added.value() == str(saved.relative_to(tmp_path))


# ------------------------------------------------------------------------------------------
# record files no reader may crash on


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (DEEP, "RecursionError"),
        ('{"a":' * 100_000, "RecursionError"),
        (b"\xff\xfe{", "unreadable"),
        ("NaN", "non-finite"),
        (
            json.dumps(
                {
                    "schema_version": 1,
                    "status": "ok",
                    "error": None,
                    "run_key": "k",
                    "config": {},
                    "choices": {},
                    "env": {},
                    "phases": {"warmup": []},
                    "generated_text": "",
                    "wandb": {},
                }
            ),
            "AttributeError",  # phases.warmup is a list, not a block
        ),
    ],
)
def test_read_record_turns_any_failure_into_a_record_error(tmp_path, content, reason):
    path = tmp_path / "metrics.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(RecordError, match=reason):
        read_record(path)


def test_read_record_turns_memory_error_into_a_record_error(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    path.write_text("{}")

    def no_memory(*args, **kwargs):
        raise MemoryError("too big")

    monkeypatch.setattr("sweep.record.json.loads", no_memory)
    with pytest.raises(RecordError, match="MemoryError: too big"):
        read_record(path)


def test_check_previous_reruns_a_job_whose_record_cannot_be_parsed(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(DEEP)
    previous = resume.check_previous(path, "hash", resume=True, job=0)
    assert previous.kept is None  # not kept: the job runs again
    assert previous.preserve and previous.status == "unreadable"  # the bad file is kept aside


def test_a_disk_filling_mid_sweep_stops_it_with_one_message_and_a_summary_that_agrees(
    tmp_path,
):
    why = _unshare_works()
    if why:
        pytest.skip(f"needs a small tmpfs in a user namespace: {why}")
    mnt = tmp_path / "small"
    mnt.mkdir()
    # Job 0 fills the disk as its final phase starts (a fault from tests/faults.py): its record
    # cannot be written, and job 1 could not even write its config. The tmpfs only exists in
    # the namespace, so the script lists what is left there before it goes.
    script = (
        f'mount -t tmpfs -o size=4m tmpfs "{mnt}" && "$0" "$@"; echo "rc=$?" >&2; '
        f'rm -f "{mnt}/sweep/.fill"; find "{mnt}" -type f -printf "file %s %P\\n" >&2'
    )
    args = [sys.executable, "-m", "sweep.run", "-m", f"hydra.sweep.dir={mnt}/sweep"]
    args += ["merge.on_end=false", "experiment=quick", "runs.benchmark=1", "tokens=2,3"]
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, *args],
        cwd=REPO,
        env=sweep_env(**fault_env("final:fill@0")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = proc.stderr
    assert "rc=1" in err, err[-3000:]
    assert "sweep stopped: the disk of the sweep dir is full" in err, err[-3000:]
    assert err.count("sweep stopped:") == 1 and "Traceback" not in err, err[-3000:]
    files = [line.split(" ", 2)[1:] for line in err.splitlines() if line.startswith("file ")]
    # No 0-byte config or log file; the released lock file is empty by design.
    empty = [name for size, name in files if size == "0" and name != f"sweep/{LOCK_NAME}"]
    assert files and not empty, files
    assert not [name for _, name in files if name.startswith("sweep/1/")]  # job 1 never began
    assert "metrics.json" not in {Path(name).name for _, name in files}
    # The summary and the exit list count the same jobs: job 0, failed on the full disk.
    assert f"sweep {mnt}/sweep: 0/1 job(s) ok" in proc.stdout + err, proc.stdout[-3000:]
    assert "1 of 1 job(s) did not end ok" in err
    assert "could not write the record" in err and "(disk full)" in err


def test_the_summary_counts_a_job_by_how_it_ended_not_by_an_older_record(
    quick_sweep, tmp_path, monkeypatch
):
    """A job whose new record could not be written leaves the older ok record on disk: the
    summary must say failed, as the exit list does (it said "2/2 ok" next to "2 of 2 did
    not end ok")."""
    from sweep import outcomes

    sweep = tmp_path / "sweep"
    shutil.copytree(quick_sweep, sweep)
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name))
    monkeypatch.setattr(outcomes, "JOB_RESULTS", [])
    outcomes.JOB_RESULTS.append(
        outcomes.JobResult(
            label="x", status="failed", detail="OSError: disk full", job_dir=str(jobs[1])
        )
    )
    # ...and one that ran here but has no record at all.
    outcomes.JOB_RESULTS.append(
        outcomes.JobResult(label="y", status="failed", detail="", job_dir=str(sweep / "9"))
    )
    results = callbacks.summarize_sweep(sweep, merge=None, wandb_cfg=None)
    assert [r.status for r in results] == ["ok", "failed", "ok", "ok", "failed"]
    assert results[1].detail == "OSError: disk full"
    assert results == callbacks.SWEEP_RESULTS
