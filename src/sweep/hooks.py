"""Phase-boundary hooks: code that runs at each step of a job, without editing the job.

A job calls `fire(step, record, job_num)` as it reaches each step:

    start      before anything touches a device
    load       before the model is built
    warmup, benchmark, final    at the start of each phase (after the wandb run has started)

Hooks come from two places: `register(fn)` in this process (an isolated job's child saves its
partial record this way), and the modules named in `SWEEP_HOOKS` (comma-separated import
paths), imported once per process the first time a job fires. Such a module registers its
hooks when imported; e.g. a user can log host memory at every boundary, and the test suite
injects faults (tests/faults.py). A hook that raises fails the job like any other error.
Untimed: hooks run between phases, never inside a timed window.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

ENV = "SWEEP_HOOKS"
STEPS = ("start", "load", "warmup", "benchmark", "final")

# fn(step, record, job_num): `record` is the job's `sweep.record.Record` so far.
Hook = Callable[[str, Any, int | None], None]

_hooks: list[Hook] = []
_imported: set[str] = set()


class HookError(ImportError):
    """A module named in SWEEP_HOOKS cannot be imported."""


def register(fn: Hook) -> Callable[[], None]:
    """Call `fn` at every step of every job in this process; returns an un-register."""
    _hooks.append(fn)
    return lambda: _hooks.remove(fn) if fn in _hooks else None


def import_env_hooks(environ: dict[str, str] | None = None) -> None:
    """Import the modules named in SWEEP_HOOKS (once each per process)."""
    spec = (environ if environ is not None else os.environ).get(ENV, "")
    for name in (s.strip() for s in spec.split(",")):
        if not name or name in _imported:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise HookError(f"{ENV}={spec!r}: cannot import {name!r} ({exc})") from exc
        _imported.add(name)


def fire(step: str, record: Any, job_num: int | None) -> None:
    """Run every hook for `step` of job `job_num` (nothing to do when none is registered)."""
    import_env_hooks()
    for fn in list(_hooks):
        fn(step, record, job_num)
