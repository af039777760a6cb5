"""Fault injection for the tests: make a real job abort, crash, hang or raise on demand.

A `sweep.hooks` module: a test sets `SWEEP_HOOKS=tests.faults` (see `fault_env`) and
`SWEEP_FAULT` to one or more comma-separated `<phase>:<action>[@<job>]` items:

    SWEEP_FAULT=warmup:abort@1          job 1 calls os.abort() when its warmup phase starts
    SWEEP_FAULT=benchmark:raise         every job raises RuntimeError in its benchmark phase
    SWEEP_FAULT=benchmark:sleep:60@2    job 2 sleeps 60 s at the start of its benchmark phase

Phases (the job's hook steps, in order): `start` (before anything touches a device),
`load` (before the model is built), `warmup`, `benchmark`, `final` (at the start of each phase,
after the wandb run has started). `<job>` is Hydra's job number (0 in a single run); without
it the fault fires in every job.

Actions: `raise` (RuntimeError), `abort` (SIGABRT, like a failed native CHECK), `segv` (a real
segmentation fault), `kill` (SIGKILL to the job's own process, like the kernel's OOM killer
or a preempted VM), `term` (SIGTERM to itself), `sleep:<seconds>`, `exit:<code>` (os._exit,
like a native library calling exit()), `hang` (blocks in a native call with SIGTERM/SIGINT
masked in that thread, like a stuck device call that never returns to Python), `fill` (writes
`<sweep dir>/.fill` until the disk is full, like a disk filling up mid-sweep).

The job processes import this module from the repo root (their working directory).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from sweep import hooks

ENV = "SWEEP_FAULT"
PHASES = hooks.STEPS
ACTIONS = ("raise", "abort", "segv", "kill", "term", "sleep", "exit", "hang", "fill")

log = logging.getLogger("sweep")


class FaultSpecError(ValueError):
    """SWEEP_FAULT does not parse; the message says what is allowed."""


def parse(spec: str) -> list[tuple[str, str, str | None, int | None]]:
    """[(phase, action, argument, job or None)] of a SWEEP_FAULT value."""
    faults = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        body, _, job = item.partition("@")
        phase, _, rest = body.partition(":")
        action, _, arg = rest.partition(":")
        if phase not in PHASES or action not in ACTIONS:
            raise FaultSpecError(
                f"{ENV}={spec!r}: expected <phase>:<action>[@<job>] with phase in "
                f"{', '.join(PHASES)} and action in {', '.join(ACTIONS)}"
            )
        if action in ("sleep", "exit") and not _is_number(arg):
            raise FaultSpecError(f"{ENV}={spec!r}: {action} needs a number ({action}:<n>)")
        if job and not job.isdigit():
            raise FaultSpecError(f"{ENV}={spec!r}: @<job> must be a job number")
        faults.append((phase, action, arg or None, int(job) if job else None))
    return faults


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def fault_env(spec: str) -> dict[str, str]:
    """The environment variables that make a job process fire the faults in `spec` (from any
    working directory: the repo root goes on PYTHONPATH so that this module imports)."""
    repo = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    return {"SWEEP_HOOKS": __name__, ENV: spec, "PYTHONPATH": path}


def _on_step(step: str, record, job: int | None) -> None:
    inject(step, job, sweep_dir=getattr(getattr(record, "sweep", None), "dir", None))


def inject(phase: str, job: int | None, *, sweep_dir: str | None = None) -> None:
    """Fire the faults set for `phase` of job number `job` (no-op when SWEEP_FAULT is unset)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for f_phase, action, arg, f_job in parse(spec):
        if f_phase == phase and (f_job is None or f_job == job):
            _fire(phase, action, arg, job, sweep_dir)


def _fire(phase: str, action: str, arg: str | None, job: int | None, sweep_dir=None) -> None:
    what = action + (f":{arg}" if arg else "")
    # The marker tests wait for (in the job's log file) before sending a signal from outside.
    pid = os.getpid()
    log.warning("%s: injecting %s in phase %s of job %s (pid %d)", ENV, what, phase, job, pid)
    for handler in logging.getLogger().handlers:
        handler.flush()
    if action == "raise":
        raise RuntimeError(f"{ENV}: injected failure in phase {phase}")
    if action == "abort":
        os.abort()
    if action == "segv":
        import ctypes

        ctypes.string_at(0)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "term":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in here
    if action == "sleep":
        time.sleep(float(arg or 0))
    if action == "exit":
        os._exit(int(float(arg or 1)))
    if action == "hang":
        _hang()
    if action == "fill":
        _fill(Path(sweep_dir or "."))


def _fill(directory: Path) -> None:
    """Write zeros until the file system says it is full (ENOSPC)."""
    import errno

    chunk = b"\0" * 2**20
    with (directory / ".fill").open("wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return
                chunk = chunk[: len(chunk) // 2]


def _hang() -> None:
    import ctypes

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    libc = ctypes.CDLL(None)
    while True:  # pause() never returns: the signals go to other threads
        libc.pause()


hooks.register(_on_step)
