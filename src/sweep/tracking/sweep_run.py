"""The sweep's summary run: after the merge, one `job_type=summary` run per sweep (same group
as its jobs) with a row per job, a decode tokens/s vs tokens chart, the plots and BENCHMARKS.md.

One run per sweep dir, however often the sweep is resumed: the first summary's run id is kept
in `<sweep dir>/wandb-summary-run.json` and later summaries resume that run
(`resume="allow"`). Offline, a later summary replaces the earlier one's offline dir (when that
was never synced), so `wandb sync` uploads the sweep's summary once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sweep.record import RECORD_NAME, read_record
from sweep.tracking import runs
from sweep.tracking.content import run_name, sweep_id
from sweep.tracking.job import finish_dangling
from sweep.tracking.mode import resolve_mode

log = logging.getLogger("sweep")

ID_FILE = "wandb-summary-run.json"
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
_COLUMNS = (
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
)


def _sweep_rows(sweep_dir: Path) -> list[list[Any]]:
    """A row per job of the sweep (`_COLUMNS`), in job order: the figures from
    `sweep.results.load_phases` (its benchmark rows; every job, failed ones too), the run name
    and wandb run id from the job's record (the frames carry neither)."""
    from sweep.results import load_phases

    phases = load_phases(sweep_dir, history=True, warn=_warn)  # history: every job, not cells
    bench = phases[phases["phase"] == "benchmark"].sort_values("job_num", kind="stable")
    links = _job_links(sweep_dir)
    rows = []
    for row in bench.to_dict("records"):
        row = {k: _plain(v) for k, v in row.items()}
        name, run_id = links.get(row["job_num"], (None, None))
        axes = ("status", "model", "mode", "engine", "topology", "tokens", "batch_size")
        rows.append(
            [
                row["job_num"],
                name,
                *(row.get(c) for c in axes),
                *(row.get(c) for c in _SUMMARY_COLUMNS),
                run_id,
            ]
        )
    return rows


def _job_links(sweep_dir: Path) -> dict[int, tuple[str, str | None]]:
    """job_num -> (run name, wandb run id), from the sweep's job records."""
    links = {}
    for path in sweep_dir.glob(f"*/{RECORD_NAME}"):
        with contextlib.suppress(Exception):  # load_phases has warned about a bad record
            record = read_record(path)
            sweep = record.get("sweep") or {}
            name = run_name(sweep.get("overrides") or [], path.parent)
            links[sweep.get("job_num")] = (name, (record.get("wandb") or {}).get("run_id"))
    return links


def _plain(value: Any) -> Any:
    """A frame cell as a plain Python value for wandb.Table: None for NA/NaN, int for Int64."""
    import pandas as pd

    if not isinstance(value, list | tuple | dict) and pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _warn(message: str) -> None:
    log.warning("wandb summary: %s", message)


def _previous(sweep_dir: Path) -> dict[str, Any]:
    """What the sweep's last summary run left in its id file ({} if none or unreadable)."""
    try:
        data = json.loads((sweep_dir / ID_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("run_id"), str) else {}


def _remember(sweep_dir: Path, block: dict[str, Any], previous: dict[str, Any]) -> None:
    """Keep the run id for the next summary; drop the previous offline dir of the same run
    when it was never synced (this run supersedes it)."""
    old = previous.get("path")
    if previous.get("mode") == "offline" and old and old != block["path"]:
        old_dir, run_id = Path(old), block["run_id"]
        ours = old_dir.name.endswith(f"-{run_id}") and (old_dir / f"run-{run_id}.wandb").is_file()
        if ours and not (old_dir / f"run-{run_id}.wandb.synced").exists():
            shutil.rmtree(old_dir, ignore_errors=True)
    keep = {k: block[k] for k in ("run_id", "mode", "path", "group")}
    (sweep_dir / ID_FILE).write_text(json.dumps(keep, indent=2) + "\n", encoding="utf-8")


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
    finish_dangling("the job raised before finishing its run")
    try:
        known = {f.name for f in dataclasses.fields(WandbConfig)}
        cfg = WandbConfig(**{k: v for k, v in (wandb_cfg or {}).items() if k in known})
        mode, status, reason = resolve_mode(cfg.mode)
        group = cfg.group or sweep_id(sweep_dir)
        previous = _previous(sweep_dir)
        run, block = runs.open_run(
            cfg,
            status=status,
            mode=mode,
            reason=reason,
            run_id=previous.get("run_id"),
            resume="allow",
            project=cfg.project,
            entity=cfg.entity,
            group=group,
            job_type="summary",
            name=f"summary {group}",
            tags=list(cfg.tags) or None,
            dir=str(runs.files_root(sweep_dir)),
        )
        if run is None:
            return block
        with contextlib.suppress(OSError):
            _remember(sweep_dir, block, previous)
        try:
            rows = _sweep_rows(sweep_dir)
            # After init: a resumed run's config may hold an older sweep's job count.
            config = {"sweep_dir": str(sweep_dir), "jobs": len(rows)}
            run.config.update(config, allow_val_change=True)
            runs.write_offline_config(run, block["mode"])
            _log_summary(run, rows, markdown_path, list(plot_paths))
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


def _log_summary(run, rows, markdown_path, plot_paths) -> None:
    import wandb

    logged: dict[str, Any] = {"sweep_table": wandb.Table(columns=list(_COLUMNS), data=rows)}
    col = {name: i for i, name in enumerate(_COLUMNS)}
    ok_rows = [r for r in rows if r[col["status"]] == "ok"]
    if ok_rows:
        y = col["benchmark/decode_tokens_per_s_median"]
        chart_table = wandb.Table(
            columns=["tokens", "decode_tokens_per_s", "mode"],
            data=sorted(
                [[r[col["tokens"]], r[y], _line_label(r, col)] for r in ok_rows],
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
        logged["benchmarks_md"] = wandb.Html(
            f"<pre>{html.escape(text, quote=False)}</pre>", data_is_not_path=True
        )
        copy_path = Path(run.dir) / markdown_path.name
        copy_path.write_text(text, encoding="utf-8")
        run.save(str(copy_path), base_path=run.dir, policy="now")
    run.log(logged)
    run.summary.update({"jobs": len(rows), "jobs_ok": len(ok_rows)})


def _line_label(row: list[Any], col: dict[str, int]) -> str:
    return "/".join(str(row[col[name]]) for name in ("mode", "engine", "model"))
