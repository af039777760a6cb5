"""wandb tracking, best effort: never blocks, prompts, or changes a benchmark's result.

The job's `metrics.json` stays the source of truth; wandb mirrors it. Interface used by run.py:

    tracker = start(config, record, ctx)        # one new wandb run per Hydra job
    tracker.log_run(phase, run_index, run)      # every run of every phase, as one step
    record["wandb"] = tracker.finish(record)    # summaries, samples table, text, record file

and by the multirun callback, after the merge: `log_sweep_summary(sweep_dir, ...)`, one
`job_type=summary` run per sweep holding the merged table and the plots.

Mode (`wandb.mode`): `online` / `offline` / `disabled` are taken as given; `auto` respects
`WANDB_MODE` (and `WANDB_DISABLED`) when set, else goes online when an API key is configured
(`WANDB_API_KEY`, an identity token file, a netrc entry for the server, or wandb's settings
file) and offline otherwise. Nothing here ever prompts: online is only tried with a key, after
a TCP check of the server (bounded by `wandb.init_timeout`, DNS included), and a failed online
start (unreachable server, bad key, `wandb.init` timing out) falls back to offline for the rest
of this process (with the basic launcher: the rest of the sweep; with joblib/Ray/submitit or
isolated jobs, each worker process finds out once). The record's `wandb` block says what
happened: {mode, run_id, path, status, reason, group, init_s, finish_s}, where status is one of
`ok`, `offline-fallback`, `disabled`, `error` (wandb failed; the benchmark did not) or
`running` (started; the job ended before `finish`).

Only process 0 of a multi-host job tracks, and only with a job dir to keep the run's files in
(`ctx["job_dir"]`; never the cwd). Secrets never reach a wandb config: the config is
built from the record (which holds none) and keys that look like credentials are dropped.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sweep.metrics import RUN_METRICS, STATS
from sweep.record import PHASE_CACHE_COUNTS, PHASES, RECORD_NAME, read_record, write_record

log = logging.getLogger("sweep")

MODES = ("online", "offline", "disabled")
_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline"}
_ENV_MODES |= {"disabled": "disabled"}
_TRUE = ("1", "true", "yes", "on")
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
# Key names that look like credentials ("tokens" and "tokenizer" are not).
_SECRET_KEY = re.compile(
    r"(api[_-]?key|secret|passw|credential|auth|cookie|(^|[_\-])token$|(^|[_\-])key$)", re.I
)
_PHASE_BLOCK_KEYS = ("compiles", "compile_s", *PHASE_CACHE_COUNTS, "wall_s")
_TABLE_EXTRA = ("new_tokens", "prompt_tokens", "batch_size")
_SUMMARY_COLUMNS = (
    "first_token_s_mean",
    "first_token_s_median",
    "first_token_s_p90",
    "decode_tokens_per_s_mean",
    "decode_tokens_per_s_median",
    "decode_tokens_per_s_p90",
    "tokens_per_s_mean",
    "mbu_mean",
    "mfu_mean",
)

# Process-wide state. Once an online init fails, every later run of this process goes offline.
_fallback_reason: str | None = None
# Trackers started and not yet finished (a job that raised before `finish`).
_active: list[Tracker] = []
_atexit_registered = False


# --------------------------------------------------------------------------- mode resolution


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _base_url() -> str:
    url = os.environ.get("WANDB_BASE_URL")
    if url:
        return url.rstrip("/")
    try:
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url).rstrip("/")
    except Exception:
        return "https://api.wandb.ai"


def api_key_configured() -> bool:
    """Whether wandb would find credentials without asking: env, netrc, or its settings file.

    Uses wandb's own lookup with prompting off; never asks, never contacts the server.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = _base_url()
    try:
        from wandb.sdk.lib import wbauth

        auth = wbauth.authenticate_session(
            host=host, source="sweep", prompt=False, update_session=False
        )
        return auth is not None
    except Exception:  # a malformed key counts as configured: online init will say what's wrong
        return _netrc_has(host)


def _netrc_has(host: str) -> bool:
    import netrc
    from urllib.parse import urlsplit

    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        creds = netrc.netrc(path).authenticators(urlsplit(host).netloc)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(creds and creds[2])


def resolve_mode(requested: str) -> tuple[str, str, str]:
    """(mode, status, reason) for a config's `wandb.mode`, before any wandb call.

    status is `ok`, `disabled` or `offline-fallback` (online was wanted but cannot be had).
    """
    if requested not in (*MODES, "auto"):
        return "offline", "offline-fallback", f"unknown wandb.mode={requested!r}"
    if requested == "auto":
        env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
        if _env_flag("WANDB_DISABLED"):
            mode, reason = "disabled", "WANDB_DISABLED is set"
        elif env_mode:
            if env_mode not in _ENV_MODES:
                return "offline", "offline-fallback", f"unknown WANDB_MODE={env_mode!r}"
            mode, reason = _ENV_MODES[env_mode], f"WANDB_MODE={env_mode}"
        elif api_key_configured():
            mode, reason = "online", "auto: API key configured"
        else:
            mode, reason = "offline", "auto: no API key configured (`wandb login`, then sync)"
    else:
        mode, reason = requested, f"wandb.mode={requested}"
    if mode == "disabled":
        return mode, "disabled", reason
    if mode == "online":
        if _fallback_reason is not None:
            return "offline", "offline-fallback", f"earlier online init failed: {_fallback_reason}"
        if not api_key_configured():
            return "offline", "offline-fallback", "no API key configured (never prompting)"
    return mode, "ok", reason


# --------------------------------------------------------------------------- naming and config


def sweep_id(sweep_dir: str | os.PathLike | None, job_dir: str | os.PathLike | None = None) -> str:
    """Group name for a sweep: its output dir's last two parts (`<date>_<time>`), or the job
    dir's for a single run. Only [A-Za-z0-9_.-], at most 128 characters."""
    base = Path(sweep_dir or job_dir or ".").absolute()
    parts = [p for p in base.parts[-2:] if p not in ("/", "")] or ["sweep"]
    text = re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(parts)).strip("-")
    return text[-128:] or "sweep"


def run_name(overrides: Iterable[str], job_dir: str | os.PathLike | None = None) -> str:
    """The job's overrides (without hydra./wandb. plumbing), e.g. `tokens=256 mode=image`."""
    kept = [
        o
        for o in overrides
        if not o.lstrip("+~").startswith(("hydra.", "hydra/", "wandb.", "merge_on_end"))
    ]
    name = " ".join(kept) or (Path(job_dir).name if job_dir else "") or "defaults"
    return name[:128]


def is_secret_key(key: str) -> bool:
    return any(_SECRET_KEY.search(part) for part in re.split(r"[./]", str(key)))


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            if is_secret_key(str(key)):
                continue
            _flatten(sub, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def _drop_secret_values(flat: dict[str, Any]) -> dict[str, Any]:
    secrets = {v for k, v in os.environ.items() if v and len(v) >= 8 and is_secret_key(k)}
    return {k: v for k, v in flat.items() if not (isinstance(v, str) and v in secrets)}


def wandb_config(record: dict[str, Any], ctx: dict[str, Any] | None = None) -> dict[str, Any]:
    """Flat config for wandb's UI: the resolved config as dotted keys (`runs.benchmark`,
    `model.arch`; top-level ones bare: `tokens`, `batch_size`), the Hydra choices under their
    group names (`model`, `mode`, `topology`, `engine`, `experiment`), and `env.*`."""
    flat: dict[str, Any] = {}
    config = {k: v for k, v in (record.get("config") or {}).items() if k != "wandb"}
    _flatten(config, "", flat)
    for group, choice in (record.get("choices") or {}).items():
        if not is_secret_key(group):
            flat[group] = choice
    _flatten(record.get("env") or {}, "env", flat)
    sweep = record.get("sweep") or {}
    flat["job_num"] = sweep.get("job_num", (ctx or {}).get("job_num"))
    flat["overrides"] = " ".join(sweep.get("overrides") or (ctx or {}).get("overrides") or [])
    return _drop_secret_values(flat)


def phase_summary(record: dict[str, Any]) -> dict[str, Any]:
    """Stable summary names: `<phase>/<metric>_<stat>` (e.g. `benchmark/decode_tokens_per_s_mean`),
    `<phase>/runs`, `<phase>/compiles`, ...; plus the job's status and model figures."""
    out: dict[str, Any] = {}
    for phase in PHASES:
        block = (record.get("phases") or {}).get(phase)
        if not block:
            continue
        for metric, stats in (block.get("summary") or {}).items():
            if isinstance(stats, dict):
                for stat in ("n", *STATS):
                    if stats.get(stat) is not None:
                        out[f"{phase}/{metric}_{stat}"] = stats[stat]
            elif stats is not None:
                out[f"{phase}/{metric}"] = stats
        for key in _PHASE_BLOCK_KEYS:
            if block.get(key) is not None:
                out[f"{phase}/{key}"] = block[key]
    for key in ("num_params", "param_bytes", "load_s"):
        if (record.get("model") or {}).get(key) is not None:
            out[f"model/{key}"] = record["model"][key]
    out["status"] = record.get("status")
    err = record.get("error") or {}
    if err:
        out["error"] = f"{err.get('type', '')}: {err.get('message', '')}"
    for key in ("run_key", "wall_s"):
        if record.get(key) is not None:
            out[key] = record[key]
    if record.get("generated_text") is not None:
        out["generated_text"] = record["generated_text"]
    return out


def _samples_table(record: dict[str, Any]):
    import wandb

    columns = ["phase", "run_index", *RUN_METRICS, *_TABLE_EXTRA]
    rows = []
    for phase in PHASES:
        for i, run in enumerate(((record.get("phases") or {}).get(phase) or {}).get("runs", [])):
            rows.append([phase, i, *(run.get(c) for c in (*RUN_METRICS, *_TABLE_EXTRA))])
    return wandb.Table(columns=columns, data=rows)


# --------------------------------------------------------------------------- the job's run


def _settings(init_timeout: float, finish_timeout: float):
    import wandb

    return wandb.Settings(
        init_timeout=float(init_timeout),
        finish_timeout=float(finish_timeout),
        console="off",  # leave stdout/stderr alone
        silent=True,  # we log one line ourselves
        save_code=False,
    )


def _init(mode: str, settings, **kwargs):
    import wandb

    try:
        from wandb.sdk.lib.runid import generate_id

        run_id = generate_id()
    except Exception:
        run_id = None
    Path(kwargs["dir"]).mkdir(parents=True, exist_ok=True)
    # An explicit fresh id and reinit=create_new: never a previous run (nor WANDB_RUN_ID's).
    return wandb.init(mode=mode, id=run_id, reinit="create_new", settings=settings, **kwargs)


def _start_run(cfg, *, status: str, mode: str, reason: str, **kwargs) -> tuple[Any, dict]:
    """wandb.init in `mode`; online falls back to offline. Returns (run or None, block)."""
    global _fallback_reason
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
                unreachable = _probe(_base_url(), cfg.init_timeout)
                if unreachable:
                    raise ConnectionError(unreachable)
                run = _init("online", settings, **kwargs)
            except Exception as exc:  # unreachable server, bad key, timeout
                _fallback_reason = f"{type(exc).__name__}: {_first_line(exc)}"
                _stop_wandb_telemetry()
                block.update(mode="offline", status="offline-fallback")
                block["reason"] = f"online init failed: {_fallback_reason}"
                log.warning("wandb: %s; offline from now on in this process", block["reason"])
        if run is None:
            run = _init("offline", settings, **kwargs)
    except Exception as exc:  # wandb is best effort: the benchmark goes on without it
        block.update(mode=None, status="error", reason=f"{type(exc).__name__}: {exc}")
        log.warning("wandb: could not start a run (%s); the benchmark goes on", block["reason"])
        run = None
    block["init_s"] = time.perf_counter() - t0
    if run is not None:
        block["run_id"] = run.id
        block["path"] = run.url if block["mode"] == "online" else str(run.settings.sync_dir)
        _register_atexit()
    return run, block


def _stop_wandb_telemetry() -> None:
    """After a failed online start: no more of wandb's own usage telemetry to that server (its
    exporters would otherwise hold up process exit on their HTTP timeouts)."""
    with contextlib.suppress(Exception):
        from wandb.analytics.opentelemetry import opentelemetry_proxy

        opentelemetry_proxy.disable()


def _probe(url: str, timeout: float) -> str | None:
    """Why the server's TCP port cannot be reached within `timeout` (None: it can, or a proxy
    is configured and decides). Runs in a daemon thread: even a DNS lookup cannot hang us."""
    import socket
    import threading
    from urllib.parse import urlsplit

    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"bad server URL {url!r}"
    result: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as exc:
            result.append(f"cannot connect to {host}:{port}: {exc}")

    thread = threading.Thread(target=connect, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else f"no answer from {host}:{port} within {timeout:g} s"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


class Tracker:
    """One wandb run for one Hydra job (or none: disabled / wandb unavailable)."""

    def __init__(self, run: Any, block: dict[str, Any]) -> None:
        self.run = run
        self.block = block
        self._log_error: str | None = None
        if run is not None:
            _active.append(self)

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
            self._log_error = f"log failed: {type(exc).__name__}: {_first_line(exc)}"
            log.warning("wandb: %s; not logging further runs of this job", self._log_error)

    def finish(self, record: dict[str, Any]) -> dict[str, Any]:
        """Summaries, samples table, generated text and the record itself; then finish the run
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
        run.config.update(
            {k: v for k, v in wandb_config(record).items() if k.startswith("env.")},
            allow_val_change=True,
        )
        logged: dict[str, Any] = {"samples": _samples_table(record)}
        if record.get("generated_text") is not None:
            logged["generated_text_table"] = wandb.Table(
                columns=["phase", "text"], data=[["final", record["generated_text"]]]
            )
        run.log(logged)
        for key, value in phase_summary(record).items():
            run.summary[key] = value
        # The record as it will be written (with this wandb block), as a file of the run.
        copy_ = dict(record, wandb=block)
        path = write_record(Path(run.dir) / RECORD_NAME, copy_)
        run.save(str(path), base_path=run.dir, policy="now")


def _finish_dangling(reason: str) -> None:
    """Finish runs whose job ended without `finish` (it raised): marked failed, exit code 1."""
    while _active:
        tracker = _active.pop()
        if tracker.run is None:
            continue
        with contextlib.suppress(Exception):
            tracker.run.summary["status"] = "failed"
            tracker.run.summary["error"] = reason
            tracker.run.finish(exit_code=1)
        tracker.run = None


def _register_atexit() -> None:
    # Registered after wandb's own exit hooks exist, so it runs before wandb's teardown.
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_finish_dangling, "the process exited before the job finished its run")
        _atexit_registered = True


def start(config, record: dict[str, Any], ctx: dict[str, Any]) -> Tracker:
    """Start this job's wandb run (or none). Never raises, never prompts. Sets
    `record["wandb"]` to the run's block (status `running` until `finish`)."""
    _finish_dangling("the job raised before finishing its run")
    cfg = config.wandb
    try:
        mode, status, reason = resolve_mode(cfg.mode)
        if (record.get("env") or {}).get("process_index", 0) not in (0, None):
            mode, status, reason = "disabled", "disabled", "not process 0 of a multi-host job"
        if not ctx.get("job_dir"):  # never wandb files in whatever the cwd is (the repo root)
            mode, status, reason = "disabled", "disabled", "no job dir to keep wandb files in"
        job_dir = Path(ctx.get("job_dir") or ".")
        group = cfg.group or sweep_id(ctx.get("sweep_dir"), ctx.get("job_dir"))
        run, block = _start_run(
            cfg,
            status=status,
            mode=mode,
            reason=reason,
            project=cfg.project,
            entity=cfg.entity,
            group=group,
            job_type=config.mode.name,
            name=run_name(ctx.get("overrides") or [], ctx.get("job_dir")),
            tags=list(cfg.tags) or None,
            config=wandb_config(record, ctx),
            dir=str(job_dir),
        )
    except Exception as exc:  # never let tracking fail a job
        run = None
        block = {"mode": None, "run_id": None, "path": None, "status": "error"}
        block["reason"] = f"{type(exc).__name__}: {exc}"
        log.warning("wandb: %s", block["reason"])
    if run is not None and block["status"] == "ok":
        block["status"] = "running"  # an offline-fallback status stays as it is
    record["wandb"] = dict(block)
    return Tracker(run, block)


# --------------------------------------------------------------------------- the sweep's run


def _sweep_rows(sweep_dir: Path) -> tuple[list[str], list[list[Any]]]:
    columns = [
        "job_num",
        "name",
        "status",
        "model",
        "mode",
        "engine",
        "topology",
        "tokens",
        "batch_size",
        *(f"benchmark/{c}" for c in _SUMMARY_COLUMNS),
        "wandb_run_id",
    ]
    rows = []
    paths = sorted(sweep_dir.glob(f"*/{RECORD_NAME}"), key=lambda p: _job_order(p.parent))
    for path in paths:
        try:
            record = read_record(path)
        except Exception as exc:
            log.warning("wandb summary: skipping %s: %s", path, exc)
            continue
        cfg = record.get("config") or {}
        choices = record.get("choices") or {}
        summary = phase_summary(record)
        sweep = record.get("sweep") or {}
        rows.append(
            [
                sweep.get("job_num"),
                run_name(sweep.get("overrides") or [], path.parent),
                record.get("status"),
                choices.get("model"),
                choices.get("mode"),
                choices.get("engine"),
                choices.get("topology"),
                cfg.get("tokens"),
                cfg.get("batch_size"),
                *(summary.get(f"benchmark/{c}") for c in _SUMMARY_COLUMNS),
                (record.get("wandb") or {}).get("run_id"),
            ]
        )
    return columns, rows


def _job_order(job_dir: Path) -> tuple[int, str]:
    return (int(job_dir.name), "") if job_dir.name.isdigit() else (1 << 30, job_dir.name)


def log_sweep_summary(
    sweep_dir: Path,
    *,
    markdown_path: Path | None = None,
    plot_paths: Iterable[Path] = (),
    wandb_cfg: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One `job_type=summary` run for the whole sweep (same group as its jobs): a table with a
    row per job, a decode tokens/s vs tokens chart by mode, the plots and BENCHMARKS.md.
    Best effort, same mode and fallback rules as the jobs. Returns its wandb block."""
    from sweep.config import WandbConfig

    sweep_dir = Path(sweep_dir)
    _finish_dangling("the job raised before finishing its run")
    try:
        known = {f.name for f in dataclasses.fields(WandbConfig)}
        cfg = WandbConfig(**{k: v for k, v in (wandb_cfg or {}).items() if k in known})
        mode, status, reason = resolve_mode(cfg.mode)
        group = cfg.group or sweep_id(sweep_dir)
        columns, rows = _sweep_rows(sweep_dir)
        run, block = _start_run(
            cfg,
            status=status,
            mode=mode,
            reason=reason,
            project=cfg.project,
            entity=cfg.entity,
            group=group,
            job_type="summary",
            name=f"summary {group}",
            tags=list(cfg.tags) or None,
            config={"sweep_dir": str(sweep_dir), "jobs": len(rows)},
            dir=str(sweep_dir),
        )
        if run is None:
            return block
        try:
            _log_summary(run, columns, rows, markdown_path, list(plot_paths))
            run.finish(exit_code=0)
        except Exception as exc:
            block.update(status="error", reason=f"{type(exc).__name__}: {exc}")
            log.warning("wandb summary: %s", block["reason"])
            with contextlib.suppress(Exception):
                run.finish(exit_code=1)
        log.info("wandb: sweep summary: %s run %s", block["mode"], block["path"])
        return block
    except Exception as exc:
        log.warning("wandb summary: %s: %s", type(exc).__name__, exc)
        return {"mode": None, "run_id": None, "path": None, "status": "error", "reason": str(exc)}


def _log_summary(run, columns, rows, markdown_path, plot_paths) -> None:
    import wandb

    table = wandb.Table(columns=columns, data=rows)
    logged: dict[str, Any] = {"sweep_table": table}
    ok_rows = [r for r in rows if r[2] == "ok"]
    if ok_rows:
        y = "benchmark/decode_tokens_per_s_median"
        chart_table = wandb.Table(
            columns=["tokens", "decode_tokens_per_s", "mode"],
            data=sorted(
                [[r[7], r[columns.index(y)], f"{r[4]}/{r[5]}/{r[3]}"] for r in ok_rows],
                key=lambda r: (r[2], r[0] or 0),
            ),
        )
        logged["decode_tokens_per_s_vs_tokens"] = wandb.plot.line(
            chart_table,
            "tokens",
            "decode_tokens_per_s",
            stroke="mode",
            title="decode tokens/s (median) vs tokens, by mode/engine/model",
        )
    for path in plot_paths:
        path = Path(path)
        if not path.is_file():
            continue
        key = f"plots/{path.stem}"
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif"):
            logged[key] = wandb.Image(str(path))
        elif path.suffix.lower() == ".svg":
            logged[key] = wandb.Html(path.read_text(encoding="utf-8"), data_is_not_path=True)
        else:
            run.save(str(path), base_path=str(path.parent), policy="now")
    if markdown_path is not None and Path(markdown_path).is_file():
        markdown_path = Path(markdown_path)
        text = markdown_path.read_text(encoding="utf-8")
        logged["benchmarks_md"] = wandb.Html(f"<pre>{_escape(text)}</pre>", data_is_not_path=True)
        copy_path = Path(run.dir) / markdown_path.name
        copy_path.write_text(text, encoding="utf-8")
        run.save(str(copy_path), base_path=run.dir, policy="now")
    run.log(logged)
    run.summary["jobs"] = len(rows)
    run.summary["jobs_ok"] = len(ok_rows)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
