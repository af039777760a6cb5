"""SIGTERM / SIGINT: stop the running job cleanly; a second signal exits at once.

`install()` (done by `sweep.run.main` and by an isolated job's process) makes the first
SIGTERM or SIGINT raise `Interrupted` (a KeyboardInterrupt) in the main thread: the running job
records itself as `interrupted`, records already written stay as they are, no further job
starts, and the process exits with 128 + the signal number.

A second signal exits immediately (`os._exit(128 + signum)`), also when the main thread is
stuck in native code that never returns to Python (a hung device call): a watcher thread reads
the signal numbers from `signal.set_wakeup_fd`, so it sees them even then.

While a record is being written (`deferred()`), the first signal waits until the write is done:
a record that was complete is never lost to an interrupt. Records are written atomically
anyway, so even a second signal (or SIGKILL) cannot leave a partial file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """The sweep was asked to stop by a signal."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} received: the sweep stops")


_lock = threading.Lock()
_state: dict = {"signum": None, "deferred": 0, "pending": None, "installed": False}
# Called (best effort) right before a second signal exits: e.g. kill an isolated job's process.
_before_exit: list[Callable[[], None]] = []


def install() -> bool:
    """Install the handlers (main thread only; returns False elsewhere or when done before)."""
    if _state["installed"] or threading.current_thread() is not threading.main_thread():
        return False
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    threading.Thread(target=_watch, args=(read_fd,), name="sweep-signals", daemon=True).start()
    _state["installed"] = True
    return True


def received() -> int | None:
    """The first signal received, or None."""
    return _state["signum"]


def exit_code() -> int:
    """128 + the signal number (130 for SIGINT, 143 for SIGTERM); 130 when none was seen."""
    return 128 + (_state["signum"] or signal.SIGINT)


def on_exit(callback: Callable[[], None]) -> Callable[[], None]:
    """Run `callback` before a second signal exits the process; returns an un-register."""
    _before_exit.append(callback)
    return lambda: _before_exit.remove(callback) if callback in _before_exit else None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold the first signal until the block is done (it is then raised by `pending()`)."""
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1


def pending() -> Interrupted | None:
    """The interrupt held back by `deferred()`, once (None when there is none)."""
    signum, _state["pending"] = _state["pending"], None
    return None if signum is None else Interrupted(signum)


def _handler(signum: int, frame) -> None:
    if _state["signum"] is not None:
        _exit_now(signum)
    _state["signum"] = signum
    if _state["deferred"]:
        _state["pending"] = signum
        return
    raise Interrupted(signum)


def _watch(read_fd: int) -> None:
    seen = 0
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:
            return
        for signum in data:
            if signum in SIGNALS:
                seen += 1
                if seen >= 2:
                    _exit_now(signum)


def _exit_now(signum: int) -> None:
    with _lock:
        name = signal.Signals(signum).name
        for callback in list(_before_exit):
            with contextlib.suppress(Exception):
                callback()
        with contextlib.suppress(Exception):
            message = f"\nsecond {name}: exiting now (records already written are intact)\n"
            os.write(2, message.encode())
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(128 + signum)
