"""Resume a sweep, and never lose a record that is already on disk.

`resume=true` reruns a sweep in the same directory (the same command finds its latest earlier
sweep under `multirun/`; or pass `hydra.sweep.dir=<an existing sweep>`): a job whose record is
`ok`, of this tool's schema version and of the same config (`config_hash`) is kept as it is and
not run again; failed, oom, skipped, crashed, interrupted and missing jobs run again.

An existing record is never overwritten silently: with `resume=false` (the default), or when
the config in a job dir differs from the job's, the old record is kept next to the new one as
`metrics.json.prev-<UTC time>` (the merge reads only `metrics.json`) and a warning says so.
With `resume=true`, a not-ok record of the same config is simply replaced by the rerun.

Writing a record never ends the sweep: when it fails (a full disk: ENOSPC), the job counts as
failed, the previous record stays intact, and the error is logged.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sweep import interrupt
from sweep.record import (
    NON_IDENTITY_KEYS,
    RECORD_NAME,
    SCHEMA_VERSION,
    RecordError,
    config_hash,
    read_record,
    write_record,
)

log = logging.getLogger("sweep")

_TRUE = ("true", "yes", "on", "1")
# Overrides that neither change which jobs a sweep has nor what they measure.
_IGNORED_OVERRIDE_KEYS = (*NON_IDENTITY_KEYS, "hydra")


@dataclass
class Previous:
    """What a job dir already holds."""

    kept: dict[str, Any] | None = None  # an ok record of this config: do not rerun
    preserve: bool = False  # a record that must be kept aside before writing the new one
    status: str | None = None


def check_previous(path: Path, new_hash: str, *, resume: bool, job: Any) -> Previous:
    """Decide, before a job runs, what to do with the record already at `path`."""
    if not path.exists():
        return Previous()
    try:
        old = read_record(path)
    except RecordError as exc:
        log.warning(
            "[job %s] %s exists but is unreadable (%s): it will be kept as %s.prev-<time>",
            job,
            path,
            exc,
            RECORD_NAME,
        )
        return Previous(preserve=True, status="unreadable")
    status = old.get("status")
    same_config = _hash_of(old) == new_hash and old.get("schema_version") == SCHEMA_VERSION
    if resume and same_config and status == "ok":
        log.info(
            "[job %s] resume: kept the ok record from %s (%s); not run again",
            job,
            old.get("started_at", "?"),
            path,
        )
        return Previous(kept=old, status=status)
    if resume and same_config:
        log.info("[job %s] resume: the previous record ended %s; running again", job, status)
        return Previous(status=status)
    why = "resume=false" if not resume else "its config differs from this job's"
    log.warning(
        "[job %s] %s already holds a %s record (%s): it will be kept as %s.prev-<time>, "
        "not overwritten (resume=true keeps ok records and reruns only the others)",
        job,
        path,
        status,
        why,
        RECORD_NAME,
    )
    return Previous(preserve=True, status=status)


def _hash_of(record: dict[str, Any]) -> str | None:
    if record.get("config_hash"):
        return record["config_hash"]
    config = record.get("config")
    return config_hash(config) if isinstance(config, dict) else None


def save_record(path: Path, record: dict[str, Any], *, preserve: bool, job: Any) -> bool:
    """Write the job's record (signals held back meanwhile); keep the old one aside first when
    `preserve`. On failure, marks `record` failed, leaves the old file intact, returns False."""
    failure: BaseException | None = None
    kept: Path | None = None
    with interrupt.deferred():
        try:
            if preserve and path.exists():
                kept = _keep_aside(path)
            write_record(path, record)
            if kept is not None:
                log.warning("[job %s] previous record kept as %s", job, kept)
            return True
        except (ValueError, TypeError) as exc:  # NaN/inf or a non-JSON value: a bug; keep the rest
            record["status"] = "failed"
            record["error"] = {"type": type(exc).__name__, "message": f"record not writable: {exc}"}
            record["phases"] = {}
            log.error("[job %s] %s; writing it without its phases", job, exc)
            try:
                write_record(path, record)
                if kept is not None:
                    log.warning("[job %s] previous record kept as %s", job, kept)
                return True
            except (OSError, ValueError, TypeError) as again:
                failure = again
        except OSError as exc:
            failure = exc
    if kept is not None:  # the old record is still in place: no copy needed
        kept.unlink(missing_ok=True)
    exc = failure
    hint = " (disk full)" if getattr(exc, "errno", None) == errno.ENOSPC else ""
    record["status"] = "failed"
    record["error"] = {
        "type": type(exc).__name__,
        "message": f"could not write the record {path}{hint}: {exc}",
    }
    log.error(
        "[job %s] could not write %s%s: %s; the job counts as failed and any previous record "
        "there is unchanged",
        job,
        path,
        hint,
        exc,
    )
    return False


def _keep_aside(path: Path) -> Path:
    """Hard-link (or copy) `path` to `<path>.prev-<UTC time>`; `path` itself stays in place
    until the new record replaces it atomically."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.prev-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.prev-{stamp}-{n}")
        n += 1
    try:
        os.link(path, target)
    except OSError:
        try:
            shutil.copy2(path, target)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    return target


# ------------------------------------------------------------------------------------------
# `resume=true` with the same command: find the sweep to continue


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _ignored(override: str) -> bool:
    key = _key(override)
    return any(key == k or key.startswith((f"{k}.", f"{k}/")) for k in _IGNORED_OVERRIDE_KEYS)


def comparable(overrides: list[str]) -> list[str]:
    """The overrides that decide a sweep's jobs (order kept: it numbers the jobs)."""
    return [o for o in overrides if not _ignored(o)]


def wants_resume(overrides: list[str]) -> bool:
    values = [o.split("=", 1)[1] for o in overrides if _key(o) == "resume" and "=" in o]
    return bool(values) and values[-1].strip().lower() in _TRUE


def find_previous(root: Path, overrides: list[str], *, multirun: bool) -> Path | None:
    """The latest earlier run dir under `root` (multirun/ or outputs/) started with the same
    overrides (resume/isolate/wandb/hydra ones aside), or None."""
    from omegaconf import OmegaConf

    want = comparable(overrides)
    pattern = "*/*/multirun.yaml" if multirun else "*/*/.hydra/overrides.yaml"
    candidates = sorted(root.glob(pattern), reverse=True)  # <date>/<time> names sort by time
    for marker in candidates:
        try:
            saved = OmegaConf.load(marker)
            task = saved.hydra.overrides.task if multirun else saved
            task = [str(o) for o in OmegaConf.to_container(task)]
        except Exception:  # not ours or unreadable: not a sweep to resume
            continue
        if comparable(task) == want:
            return marker.parent if multirun else marker.parent.parent
    return None


def redirect_argv(argv: list[str]) -> str | None:
    """With `resume=true` and no explicit output dir, point Hydra at the latest earlier run of
    the same command (appends `hydra.sweep.dir=` / `hydra.run.dir=` to argv). Returns a line
    for the user, or None when resume is not asked for."""
    args = argv[1:]
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    if not wants_resume(overrides):
        return None
    multirun = any(a in ("-m", "--multirun") for a in args)
    dir_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if any(_key(o) == dir_key for o in overrides):
        return None  # the user named the dir to resume
    root = Path("multirun" if multirun else "outputs")
    found = find_previous(root, overrides, multirun=multirun)
    if found is None:
        return f"resume=true: no earlier run of this command under {root}/: starting a new one"
    argv.append(f"{dir_key}={_quote(str(found))}")
    return f"resume=true: continuing {found} (jobs with an ok record are kept)"


def _quote(value: str) -> str:
    safe = all(c.isalnum() or c in "/._-+:" for c in value)
    return value if safe else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def announce(line: str | None) -> None:
    if line:
        print(line, file=sys.stderr, flush=True)
