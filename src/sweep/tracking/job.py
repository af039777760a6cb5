"""The job's run: one wandb run per Hydra job. Interface used by `sweep.job`:

    tracker = start(config, record, ctx)        # one new wandb run per Hydra job
    tracker.log_run(phase, run_index, run)      # every run of every phase, as one step
    record["wandb"] = tracker.finish(record)    # summary, samples table, text, record file

Only process 0 of a multi-host job tracks, and only with somewhere to keep the run's files:
the job dir (`ctx["job_dir"]`), or `WANDB_DIR` when set; never the cwd.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from sweep.metrics import RUN_METRICS
from sweep.record import PHASES, RECORD_NAME, write_record
from sweep.tracking import runs
from sweep.tracking.content import phase_summary, run_name, sweep_id, wandb_config
from sweep.tracking.mode import resolve_mode

log = logging.getLogger("sweep")

_TABLE_EXTRA = ("new_tokens", "prompt_tokens", "batch_size")

# Trackers started and not yet finished (a job that raised before `finish`).
_active: list[Tracker] = []
_atexit_registered = False


def _samples_table(record: dict[str, Any]):
    import wandb

    columns = ["phase", "run_index", *RUN_METRICS, *_TABLE_EXTRA]
    rows = []
    for phase in PHASES:
        for i, run in enumerate(((record.get("phases") or {}).get(phase) or {}).get("runs", [])):
            rows.append([phase, i, *(run.get(c) for c in (*RUN_METRICS, *_TABLE_EXTRA))])
    return wandb.Table(columns=columns, data=rows)


class Tracker:
    """One wandb run for one Hydra job (or none: disabled / wandb unavailable)."""

    def __init__(self, run: Any, block: dict[str, Any]) -> None:
        self.run = run
        self.block = block
        self._log_error: str | None = None
        if run is not None:
            _active.append(self)
            _register_atexit()

    def log_run(self, phase: str, run_index: int, run: dict[str, Any]) -> None:
        """One step per run: `phase`, `run_index` and every numeric figure of the run."""
        if self.run is None or self._log_error is not None:
            return
        row: dict[str, Any] = {"phase": phase, "run_index": run_index}
        for key, value in run.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                row[key] = value
        try:
            self.run.log(row)
        except Exception as exc:
            self._log_error = f"log failed: {type(exc).__name__}: {runs.first_line(exc)}"
            log.warning("wandb: %s; not logging further runs of this job", self._log_error)

    def finish(self, record: dict[str, Any]) -> dict[str, Any]:
        """Summary, samples table, generated text and the record itself; then finish the run
        with exit code 0 (status ok) or 1 (anything else). Returns the record's wandb block."""
        if self in _active:
            _active.remove(self)
        block = dict(self.block)
        if self.run is None:
            return block
        if block["status"] == "running":
            block["status"] = "ok"
        if self._log_error:
            block.update(status="error", reason=self._log_error)
        t0 = time.perf_counter()
        try:
            self._log_record(record, block)
        except Exception as exc:
            block.update(status="error", reason=f"logging the record failed: {exc}")
            log.warning("wandb: %s", block["reason"])
        try:
            self.run.finish(exit_code=0 if record.get("status") == "ok" else 1)
        except Exception as exc:
            block.update(status="error", reason=f"finish failed: {type(exc).__name__}: {exc}")
            log.warning("wandb: %s", block["reason"])
        block["finish_s"] = time.perf_counter() - t0
        self.run = None
        where = block["path"]
        hint = f" (upload: wandb sync {where})" if block["mode"] == "offline" else ""
        log.info("wandb: %s run %s, %s%s", block["mode"], block["run_id"], block["status"], hint)
        return block

    def _log_record(self, record: dict[str, Any], block: dict[str, Any]) -> None:
        import wandb

        run = self.run
        # The environment block is final now (start saw it too; cost_model adds to it).
        env = wandb_config(record).get("env")
        if env:
            run.config.update({"env": env}, allow_val_change=True)
        runs.write_offline_config(run, block["mode"])
        logged: dict[str, Any] = {"samples": _samples_table(record)}
        if record.get("generated_text") is not None:
            logged["generated_text_table"] = wandb.Table(
                columns=["phase", "text"], data=[["final", record["generated_text"]]]
            )
        run.log(logged)
        run.summary.update(phase_summary(record))  # one summary record, not one per key
        # The record as it will be written (with this wandb block), as a file of the run.
        copy_ = dict(record, wandb=block)
        path = write_record(Path(run.dir) / RECORD_NAME, copy_)
        run.save(str(path), base_path=run.dir, policy="now")


def finish_dangling(reason: str) -> None:
    """Finish runs whose job ended without `finish` (it raised): marked failed, exit code 1."""
    while _active:
        tracker = _active.pop()
        if tracker.run is None:
            continue
        with contextlib.suppress(Exception):
            tracker.run.summary.update({"status": "failed", "error": reason})
            tracker.run.finish(exit_code=1)
        tracker.run = None


def _register_atexit() -> None:
    # Registered after wandb's own exit hooks exist, so it runs before wandb's teardown.
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(finish_dangling, "the process exited before the job finished its run")
        _atexit_registered = True


def start(config, record: dict[str, Any], ctx: dict[str, Any]) -> Tracker:
    """Start this job's wandb run (or none). Never raises, never prompts. Sets
    `record["wandb"]` to the run's block (status `running` until `finish`)."""
    finish_dangling("the job raised before finishing its run")
    cfg = config.wandb
    try:
        mode, status, reason = resolve_mode(cfg.mode)
        job_dir = ctx.get("job_dir")
        if (record.get("env") or {}).get("process_index", 0) not in (0, None):
            mode, status, reason = "disabled", "disabled", "not process 0 of a multi-host job"
        root = runs.files_root(job_dir) if job_dir else runs.wandb_dir_env()
        if root is None:  # never wandb files in whatever the cwd is (the repo root)
            mode, status, reason = "disabled", "disabled", "no job dir to keep wandb files in"
        run, block = runs.open_run(
            cfg,
            status=status,
            mode=mode,
            reason=reason,
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group or sweep_id(ctx.get("sweep_dir"), job_dir),
            job_type=config.mode.name,
            name=run_name(ctx.get("overrides") or [], job_dir),
            tags=list(cfg.tags) or None,
            config=wandb_config(record, ctx),
            dir=str(root or "."),
        )
    except Exception as exc:  # never let tracking fail a job
        run = None
        block = {"mode": None, "run_id": None, "path": None, "status": "error"}
        block["reason"] = f"{type(exc).__name__}: {exc}"
        log.warning("wandb: %s", block["reason"])
    if run is not None:
        with contextlib.suppress(Exception):  # rewritten at finish, with the final env block
            runs.write_offline_config(run, block["mode"])
        if block["status"] == "ok":
            block["status"] = "running"  # an offline-fallback status stays as it is
    record["wandb"] = dict(block)
    return Tracker(run, block)
