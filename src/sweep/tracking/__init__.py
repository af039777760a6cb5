"""wandb tracking, best effort: never blocks, prompts, or changes a benchmark's result.

The job's `metrics.json` stays the source of truth; wandb mirrors it.

- `mode`: which mode a run gets (`resolve_mode`: `wandb.mode`, `WANDB_MODE`, an API key or
  not), the server probe, and the process-wide fallback to offline after a failed online start.
- `content`: what a run holds: names, the nested config (`wandb_config`, secrets dropped) and
  the summary under stable names (`phase_summary`).
- `runs`: opening a run (online falls back to offline, never raises) and where its files go
  (`WANDB_DIR` when set, else beside the job's record).
- `job`: the job's run (`start` -> `Tracker`: `log_run`, `finish`).
- `sweep_run`: the sweep's summary run (`log_sweep_summary`), one per sweep dir.

The record's `wandb` block says what happened: {mode, run_id, path, status, reason, group,
init_s, finish_s}, where status is one of `ok`, `offline-fallback`, `disabled`, `error` (wandb
failed; the benchmark did not) or `running` (started; the job ended before `finish`).
"""

from sweep.tracking import mode
from sweep.tracking.content import (
    is_secret_key,
    phase_summary,
    run_name,
    scrub,
    sweep_id,
    wandb_config,
)
from sweep.tracking.job import Tracker, start
from sweep.tracking.mode import MODES, api_key_configured, resolve_mode
from sweep.tracking.sweep_run import ID_FILE, log_sweep_summary

__all__ = [
    "ID_FILE",
    "MODES",
    "Tracker",
    "api_key_configured",
    "is_secret_key",
    "log_sweep_summary",
    "mode",
    "phase_summary",
    "resolve_mode",
    "run_name",
    "scrub",
    "start",
    "sweep_id",
    "wandb_config",
]
