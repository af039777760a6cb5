"""`isolate=true`: each job's device work runs in a child process of its own.

A native crash (abort, segfault, SIGKILL from the kernel's OOM killer, a library calling
exit()) then ends only that child: the job gets a `crashed` record naming the signal or exit
code, the phase it was in and the last lines the process printed, and the sweep goes on.

The parent (the Hydra job, sweep/job.py) validates the config, checks for a record to resume,
starts `python -m sweep.isolate <spec>` and writes the record the child hands back (through a
file in the job dir). The child imports the job function named in the spec (`module:function`,
e.g. `sweep.job:execute_dict`): this module runs a function in a child and knows nothing of
jobs. The parent never touches a device, so the child can open the chips (a TPU is held by one
process at a time). The price: every job builds its model again (no model cache across jobs;
the persistent compilation cache still applies).

While the child runs, it rewrites its partial record at each step of the job (a
`sweep.hooks` hook), so a crash keeps the environment, the model block and the phases already
finished. Spec and result files (`.isolate-*.json` in the job dir) are removed when the child
ends; ones left by a parent that was killed (-9) are removed when the job runs again.

The child runs in its own process group and dies with the parent (Linux PDEATHSIG). A
SIGTERM/SIGINT to the parent is passed on to the child as one SIGTERM (it records itself as
interrupted); if the child does not end within `GRACE_S`, or a second signal comes, it is
killed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sweep import hooks, interrupt
from sweep.record import CrashInfo, ErrorInfo, IsolateInfo

log = logging.getLogger("sweep")

GRACE_S = 20.0  # how long an interrupted child may take to record itself
TAIL_LINES = 20
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format

PREFIX = ".isolate-"  # spec and result files in the job dir


def wanted(cfg) -> bool:
    return bool(cfg.get("isolate", False))


def _as_json(record: Any) -> Any:
    return record.to_dict() if hasattr(record, "to_dict") else record


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------
# Parent side


def run_in_child(
    config: dict[str, Any],
    record: dict[str, Any],
    ctx: dict[str, Any],
    job_dir: Path,
    *,
    target: str,
) -> tuple[dict[str, Any], BaseException | None]:
    """Run `target(config, record, ctx)` ("module:function", returning (record, interrupt)) in
    a child process. Returns the record it handed back (or `record` amended with how the child
    died), and the interrupt (to be re-raised after the record is written) when this process
    was told to stop, else None."""
    job_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(job_dir)
    fd, name = tempfile.mkstemp(dir=job_dir, prefix=PREFIX, suffix=".json")
    spec_path = Path(name)
    result_path = spec_path.with_name(spec_path.stem + ".result.json")
    spec = {
        "target": target,
        "config": config,
        "record": record,
        "ctx": ctx,
        "result": str(result_path),
        "log_files": _log_files(),
        "parent_pid": os.getpid(),
    }
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(spec, f, default=str)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    started = time.perf_counter()
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "sweep.isolate", str(spec_path)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # Its own process group: a ^C in the terminal reaches this process only, which passes
        # exactly one SIGTERM on (two would make the child exit before recording itself).
        start_new_session=True,
    )
    reader = threading.Thread(target=_relay, args=(proc.stderr, tail), daemon=True)
    reader.start()
    forget = interrupt.on_exit(proc.kill)  # a second signal: do not leave the child behind
    interrupted: BaseException | None = None
    try:
        try:
            code = proc.wait()
        except KeyboardInterrupt as exc:
            interrupted = exc
            code = _stop(proc)
        reader.join(timeout=5)
        result = _read_json(result_path)
    finally:
        forget()
        for path in (spec_path, result_path, result_path.with_name(result_path.name + ".tmp")):
            path.unlink(missing_ok=True)
    wall_s = time.perf_counter() - started
    sig = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else None
    block = dataclasses.asdict(IsolateInfo(pid=proc.pid, exit_code=code, signal=sig, wall_s=wall_s))
    if result and result.get("final"):
        record = result["record"] | {"isolate": block}
        if code != 0:  # e.g. a native library crashing at interpreter exit
            log.warning(
                "[job %s] the job's process exited with %s after handing back its record",
                ctx.get("job_num"),
                sig or code,
            )
        return record, interrupted
    # The child died before handing its record back: keep what it saved at its last step.
    record = dict(result["record"]) if result else dict(record)
    phase = (result or {}).get("phase")
    record["isolate"] = block
    record["wall_s"] = wall_s
    if interrupted is not None:
        record["status"] = "interrupted"
        record["error"] = dataclasses.asdict(ErrorInfo.of(interrupted))
    else:
        error = ErrorInfo.of("JobCrashed", _crash_message(code, sig, phase))
        record["status"] = "crashed"
        record["error"] = dataclasses.asdict(error)
        crash = CrashInfo(signal=sig, exit_code=code, phase=phase, output=list(tail))
        record["crash"] = dataclasses.asdict(crash)
        log.error("[job %s] %s", ctx.get("job_num"), error.message)
        for line in tail:
            log.error("[job %s]   | %s", ctx.get("job_num"), line)
    wandb = record.get("wandb") or {}
    if wandb.get("status") == "running":
        record["wandb"] = wandb | {
            "status": "error",
            "reason": "the job's process ended before finishing its wandb run",
        }
    return record, interrupted


def remove_leftovers(job_dir: Path) -> list[Path]:
    """Remove spec/result files an earlier run of this job left behind (its parent was killed
    with -9, so its `finally` never ran). One job dir belongs to one job at a time (the sweep
    dir is locked), so any such file here is stale."""
    removed = []
    if not job_dir.is_dir():
        return removed
    for path in job_dir.glob(f"{PREFIX}*"):
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    if removed:
        log.info("removed %d file(s) left by an earlier isolated run in %s", len(removed), job_dir)
    return removed


def _crash_message(code: int, sig: str | None, phase: str | None) -> str:
    where = {
        None: " as it started",
        "start": " before touching a device",
        "load": " while building the model",
    }.get(phase, f" during the {phase} phase")
    if sig:
        hint = {
            "SIGKILL": " (killed from outside: the kernel's OOM killer, or a preempted VM?)",
            "SIGABRT": " (a native library aborted: see the output below)",
            "SIGSEGV": " (a native library crashed: see the output below)",
        }.get(sig, "")
        return f"the job's process died from {sig} (exit code {code}){where}{hint}"
    return f"the job's process exited with code {code}{where} without handing back its record"


def _stop(proc: subprocess.Popen) -> int:
    """Pass the stop on to the child and wait for it to record itself (or kill it)."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _relay(stream, tail: collections.deque[str]) -> None:
    """Copy the child's stderr to ours, keeping its last lines for a crash report."""
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", errors="replace")
        with contextlib.suppress(Exception):
            sys.stderr.write(text)
            sys.stderr.flush()
        if text.strip():
            tail.append(text.rstrip()[:500])
    stream.close()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _log_files() -> list[str]:
    return [
        h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)
    ]


# ------------------------------------------------------------------------------------------
# Child side: python -m sweep.isolate <spec.json>


def _configure_logging(log_files: list[str]) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    formatter = logging.Formatter(LOG_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    handlers += [logging.FileHandler(path, mode="a") for path in log_files]
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)


def _die_with_parent(parent_pid: int | None) -> None:
    """Linux: get SIGKILL when the parent dies (so no orphan keeps holding the chips)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        return
    if parent_pid and os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    _die_with_parent(spec.get("parent_pid"))
    _configure_logging(spec.get("log_files") or [])
    interrupt.install()
    result = Path(spec["result"])

    def save_progress(step: str | None, record: Any, job_num: int | None = None) -> None:
        _write_json(result, {"final": False, "phase": step, "record": _as_json(record)})

    save_progress(None, spec["record"])
    unregister = hooks.register(save_progress)
    try:
        record, _ = _resolve(spec["target"])(spec["config"], spec["record"], spec["ctx"])
    finally:
        unregister()
    _write_json(result, {"final": True, "phase": None, "record": record})
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
