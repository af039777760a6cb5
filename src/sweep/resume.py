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
import functools
import itertools
import json
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
    ErrorInfo,
    Record,
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
    except Exception as exc:  # RecordError; anything else read_record let through: the same
        log.warning(
            "[job %s] %s exists but is unreadable (%s): it will be kept as %s.prev-<time> "
            "and the job runs again",
            job,
            path,
            exc,
            RECORD_NAME,
        )
        return Previous(preserve=True, status="unreadable")
    status = old.get("status")
    try:
        same_config = _hash_of(old) == new_hash and old.get("schema_version") == SCHEMA_VERSION
    except Exception:  # a config that cannot be hashed is not this job's config
        same_config = False
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


def save_record(path: Path, record: Record, *, preserve: bool, job: Any) -> bool:
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
            record.fail("failed", ErrorInfo.of(exc, f"record not writable: {exc}"))
            record.phases = {}
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
    record.fail("failed", ErrorInfo.of(exc, f"could not write the record {path}{hint}: {exc}"))
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
# Override strings, read with Hydra's own grammar: quoting, `a,b`, `choice()`, `range()`,
# `glob()`, `+`/`++`/`~` prefixes and `key@package` mean here what they mean to Hydra.

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# A range() longer than this is compared as written rather than value by value.
_MAX_SWEEP_VALUES = 10_000


@functools.cache
def _parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def parse_override(text: str) -> Any:
    """Hydra's `Override` for one override string, or None when Hydra's grammar cannot read it
    (callers then fall back to the raw string; Hydra itself reports the error when it runs)."""
    try:
        (override,) = _parser().parse_overrides([str(text)])
    except Exception:  # OverrideParseException, or anything odd (deep nesting): not ours
        return None
    return override


def override_key(text: str) -> str:
    """The config key or group an override sets, without its `+`/`++`/`~` prefix."""
    override = parse_override(text)
    if override is not None:
        return override.key_or_group
    return str(text).split("=", 1)[0].lstrip("+~")


def group_options(group: str) -> list[str]:
    """The configs of the config group `group` (conf/<group>/*.yaml), sorted as Hydra lists
    them; what `glob()` matches against."""
    directory = CONF_DIR / group
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []


def override_values(override: Any) -> list[Any] | None:
    """Every value an override gives its key, one per job it makes, in the order Hydra runs
    them: [value] for a plain override; the values of `a,b`, `choice()`, `range()` and
    `shuffle()` (as written), and the group's configs that `glob()` matches. Quotes are
    removed (`'text'` is `text`). None when they cannot be listed: a deletion without a value,
    an `interval()`, or a range too long to list."""
    from hydra.core.override_parser.types import ChoiceSweep, Glob, IntervalSweep, RangeSweep

    if override.value_type is None:
        return None
    value = override.value()
    if isinstance(value, Glob):
        return value.filter(group_options(override.key_or_group))
    if isinstance(value, ChoiceSweep):
        return [override._convert_value(v) for v in value.list]
    if isinstance(value, RangeSweep):
        values = list(itertools.islice(value.range(), _MAX_SWEEP_VALUES + 1))
        return None if len(values) > _MAX_SWEEP_VALUES else values
    if isinstance(value, IntervalSweep):
        return None
    return [value]


def sweep_jobs(overrides: list[str]) -> list[list[str]] | None:
    """Each job's overrides as Hydra's basic sweeper expands `overrides` (the sweeper's
    `params` first, then the command line's): the product of every sweep's values, in the
    order Hydra runs them; a key given twice keeps its first place and its last value. None
    when a value list cannot be expanded (an `interval()`, a range too long, a parse error)."""
    from hydra.core.override_parser.types import Glob

    by_key: dict[str, list[str]] = {}
    for text in overrides:
        override = parse_override(text)
        if override is None:
            return None
        key = override.get_key_element()
        if not override.is_sweep_override():
            by_key[key] = [f"{key}={override.get_value_element_as_str()}"]
            continue
        if isinstance(override.value(), Glob):  # needs the config loader: list conf/<group>
            values = override_values(override)
            if values is None:
                return None
            by_key[key] = [f"{key}={v}" for v in values]
            continue
        if not override.is_discrete_sweep():
            return None
        try:
            values = override.sweep_string_iterator()
            strings = list(itertools.islice(values, _MAX_SWEEP_VALUES + 1))
        except Exception:
            return None
        if len(strings) > _MAX_SWEEP_VALUES:
            return None
        by_key[key] = [f"{key}={v}" for v in strings]
    return [list(job) for job in itertools.product(*by_key.values())]


def canonical(text: str) -> str:
    """One spelling per meaning, for comparing two sweeps' overrides: `mode='text'` reads as
    `mode=text`, and `tokens=4,8`, `tokens=choice(4,8)` and `tokens=range(4,9,4)` read the same
    (as do `topology=glob(v6e-1*)` and `topology=v6e-1,v6e-16`). The raw string when Hydra's
    grammar cannot read it, or the values cannot be listed."""
    override = parse_override(text)
    if override is None:
        return str(text)
    key = override.get_key_element()
    if override.value_type is None:
        return key  # `~key`
    values = override_values(override)
    if values is None:
        return f"{key}={override.get_value_string()}"
    try:
        return f"{key}={json.dumps(values, sort_keys=True, default=str)}"
    except (TypeError, ValueError, RecursionError):
        return str(text)


# ------------------------------------------------------------------------------------------
# `resume=true` with the same command: find the sweep to continue


def _ignored(override: str) -> bool:
    key = override_key(override)
    return any(key == k or key.startswith((f"{k}.", f"{k}/")) for k in _IGNORED_OVERRIDE_KEYS)


def comparable(overrides: list[str]) -> list[str]:
    """The overrides that decide a sweep's jobs, each in its `canonical` spelling (order kept:
    it numbers the jobs)."""
    return [canonical(o) for o in overrides if not _ignored(o)]


def wants_resume(overrides: list[str]) -> bool:
    """Whether the last `resume=` override asks for it (`true`, `True`, `yes`, `'true'`, 1)."""
    wanted = False
    for text in overrides:
        override = parse_override(text)
        if override is None:  # not Hydra's grammar: read it as plain key=value
            key, sep, raw = str(text).partition("=")
            if sep and key.lstrip("+~") == "resume":
                wanted = raw.strip().strip("'\"").lower() in _TRUE
            continue
        if override.key_or_group != "resume" or override.package is not None:
            continue
        if override.is_delete() or override.is_sweep_override():
            wanted = False  # a sweep over resume itself: no single answer; start a new sweep
            continue
        value = override.value()
        wanted = isinstance(value, str | int) and str(value).strip().lower() in _TRUE
    return wanted


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
    overrides = [a for a in args if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    if not wants_resume(overrides):
        return None
    multirun = any(a in ("-m", "--multirun") for a in args)
    dir_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if any(override_key(o) == dir_key for o in overrides):
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
