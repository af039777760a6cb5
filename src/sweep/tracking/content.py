"""What a run holds: its name and group, its config (nested, secrets dropped) and its summary
under stable names. Pure functions of the record; no wandb import."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sweep.metrics import STATS
from sweep.record import PHASE_CACHE_COUNTS, PHASES

# Key names that look like credentials ("tokens" and "tokenizer" are not).
_SECRET_KEY = re.compile(
    r"(api[_-]?key|secret|passw|credential|auth|cookie|(^|[_\-])token$|(^|[_\-])key$)", re.I
)
_PHASE_BLOCK_KEYS = ("compiles", "compile_s", *PHASE_CACHE_COUNTS, "wall_s")


def sweep_id(sweep_dir: str | os.PathLike | None, job_dir: str | os.PathLike | None = None) -> str:
    """Group name for a sweep: its output dir's last two parts (`<date>_<time>`), or the job
    dir's for a single run. Only [A-Za-z0-9_.-], at most 128 characters."""
    base = Path(sweep_dir or job_dir or ".").absolute()
    parts = [p for p in base.parts[-2:] if p not in ("/", "")] or ["sweep"]
    text = re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(parts)).strip("-")
    return text[-128:] or "sweep"


def run_name(overrides: Iterable[str], job_dir: str | os.PathLike | None = None) -> str:
    """The job's overrides less plumbing (hydra, wandb, merge, resume, isolate), e.g.
    `tokens=256 mode=image`."""
    plumbing = ("hydra.", "hydra/", "wandb.", "merge.", "merge=", "merge_on_end", "resume=")
    plumbing += ("isolate=",)
    kept = [o for o in overrides if not o.lstrip("+~").startswith(plumbing)]
    name = " ".join(kept) or (Path(job_dir).name if job_dir else "") or "defaults"
    return name[:128]


def is_secret_key(key: str) -> bool:
    return any(_SECRET_KEY.search(part) for part in re.split(r"[./]", str(key)))


def _secret_values() -> set[str]:
    """Values of environment variables whose names look like credentials."""
    return {v for k, v in os.environ.items() if v and len(v) >= 8 and is_secret_key(k)}


def scrub(value: Any, secrets: set[str]) -> Any:
    """`value` with credential-like keys and secret values dropped, at any depth."""
    if isinstance(value, dict):
        return {
            str(k): scrub(v, secrets)
            for k, v in value.items()
            if not is_secret_key(str(k)) and not (isinstance(v, str) and v in secrets)
        }
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value if not (isinstance(v, str) and v in secrets)]
    return value


def wandb_config(record: dict[str, Any], ctx: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's config, nested as wandb's Hydra guide logs it: the resolved job config
    (`tokens`, `batch_size`, `model: {name, arch, ...}`, `engine: {...}`; the `wandb` node
    left out), the Hydra choices under `choices` (`choices.model`), the environment under `env`
    (`env.device_kind`, `env.versions.jax`), `job_num` and `overrides`. Keys that look like
    credentials, and values equal to a secret environment variable, are dropped at any depth."""
    out = {k: v for k, v in (record.get("config") or {}).items() if k != "wandb"}
    for block in ("choices", "env"):
        if record.get(block):
            out[block] = record[block]
    sweep = record.get("sweep") or {}
    out["job_num"] = sweep.get("job_num", (ctx or {}).get("job_num"))
    out["overrides"] = " ".join(sweep.get("overrides") or (ctx or {}).get("overrides") or [])
    return scrub(out, _secret_values())


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
