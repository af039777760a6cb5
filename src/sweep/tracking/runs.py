"""Opening a wandb run (online falls back to offline; never raises) and where its files go."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from sweep.tracking import mode as modes

log = logging.getLogger("sweep")


def wandb_dir_env() -> Path | None:
    """`WANDB_DIR` as an absolute path, when set."""
    env = os.environ.get("WANDB_DIR", "").strip()
    return Path(env).expanduser().absolute() if env else None


def files_root(default: str | os.PathLike) -> Path:
    """Where a run's `wandb/` dir goes: `WANDB_DIR` when set, else `default` (the job dir, or
    the sweep dir for the summary run)."""
    return wandb_dir_env() or Path(default)


def new_run_id() -> str | None:
    try:
        from wandb.sdk.lib.runid import generate_id

        return generate_id()
    except Exception:
        return None


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def _settings(init_timeout: float, finish_timeout: float):
    import wandb

    return wandb.Settings(
        init_timeout=float(init_timeout),
        finish_timeout=float(finish_timeout),
        console="off",  # leave stdout/stderr alone
        silent=True,  # we log one line ourselves
        save_code=False,
    )


def _init(mode: str, settings, run_id: str | None, **kwargs):
    import wandb

    Path(kwargs["dir"]).mkdir(parents=True, exist_ok=True)
    # An explicit id and reinit=create_new: never a previous run (nor WANDB_RUN_ID's).
    return wandb.init(mode=mode, id=run_id, reinit="create_new", settings=settings, **kwargs)


def _init_offline(settings, run_id: str | None, **kwargs):
    """Offline with `run_id` (a fresh one if none); should wandb still hold that id (an online
    start with it failed in this process: "run ID ... is in use"), with a fresh one."""
    try:
        return _init("offline", settings, run_id or new_run_id(), **kwargs)
    except Exception as exc:
        if run_id is None:
            raise
        log.warning("wandb: run id %s unavailable offline (%s); a new run", run_id, exc)
        return _init("offline", settings, new_run_id(), **kwargs)


def open_run(
    cfg, *, status: str, mode: str, reason: str, run_id: str | None = None, **kwargs
) -> tuple[Any, dict[str, Any]]:
    """wandb.init in `mode` (kwargs go to it; `dir` is the run files' root); online falls back
    to offline. Returns (run or None, the record's wandb block). Never raises."""
    block: dict[str, Any] = {
        "mode": mode,
        "run_id": None,
        "path": None,
        "status": status,
        "reason": reason,
        "group": kwargs.get("group"),
        "init_s": None,
        "finish_s": None,
    }
    if mode == "disabled":
        return None, block
    t0 = time.perf_counter()
    run = None
    try:
        settings = _settings(cfg.init_timeout, cfg.finish_timeout)
        if mode == "online":
            try:
                unreachable = modes.probe(modes.base_url(), cfg.init_timeout)
                if unreachable:
                    raise ConnectionError(unreachable)
                run = _init("online", settings, run_id or new_run_id(), **kwargs)
            except Exception as exc:  # unreachable server, bad key, timeout
                modes.mark_online_failed(f"{type(exc).__name__}: {first_line(exc)}")
                block.update(mode="offline", status="offline-fallback")
                block["reason"] = f"online init failed: {modes._fallback_reason}"
                log.warning("wandb: %s; offline from now on in this process", block["reason"])
        if run is None:
            run = _init_offline(settings, run_id, **kwargs)
    except Exception as exc:  # wandb is best effort: the benchmark goes on without it
        block.update(mode=None, status="error", reason=f"{type(exc).__name__}: {exc}")
        log.warning("wandb: could not start a run (%s); the benchmark goes on", block["reason"])
        run = None
    block["init_s"] = time.perf_counter() - t0
    if run is not None:
        block["run_id"] = run.id
        block["path"] = run.url if block["mode"] == "online" else str(run.settings.sync_dir)
    return run, block


def write_offline_config(run, mode: str | None) -> None:
    """An offline run's `files/config.yaml`, in wandb's format (`key: {value: ...}`), as an
    online run has it. wandb-core writes it only when it uploads (online, or `wandb sync`,
    which rewrites it): offline, this is the run's config readable on disk."""
    if mode != "offline":
        return
    import yaml

    config = {k: {"value": v} for k, v in dict(run.config).items() if not k.startswith("_")}
    text = "wandb_version: 1\n"
    if config:
        text += "\n" + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    path = Path(run.dir) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
