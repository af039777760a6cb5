"""wandb tracking, best effort: never blocks, prompts, or changes a benchmark's result.

Interface used by run.py: `start(config, record, ctx) -> Tracker`; `Tracker.log_run(phase,
run_index, run)`; `Tracker.finish(record) -> dict` (the record's `wandb` block).
"""

from __future__ import annotations

from typing import Any


class Tracker:
    def log_run(self, phase: str, run_index: int, run: dict[str, Any]) -> None:
        pass

    def finish(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"mode": "disabled", "run_id": None, "path": None, "status": "not implemented"}


def start(config, record: dict[str, Any], ctx: dict[str, Any]) -> Tracker:
    return Tracker()
