"""`python -m sweep.run [-m] key=value ...`: one benchmark job per Hydra job.

`main` is a thin `@hydra.main` over `run_job`, a plain function tests call. A job never raises
into Hydra: whatever happens, it writes its record (status ok | failed | oom | skipped |
interrupted) and the sweep goes on; the process exits non-zero at the end if any job did not
end `ok`, naming them.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from sweep import preflight
from sweep.config import Config, ConfigError, validate
from sweep.record import PHASES, RECORD_NAME, SCHEMA_VERSION, error_block, run_key, write_record

log = logging.getLogger("sweep")
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# (job label, status, error summary) of every job this process ran; read by `main`.
JOB_RESULTS: list[tuple[str, str, str]] = []


class SkipJob(Exception):
    """The job cannot run here (e.g. topology/devices mismatch); recorded as `skipped`."""


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hydra_context(cfg: DictConfig) -> dict[str, Any]:
    """Choices, overrides and dirs from Hydra, or plain defaults when called without Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hc = HydraConfig.get()
        choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/")}
        multirun = str(hc.mode) == "RunMode.MULTIRUN"
        return {
            "choices": dict(choices),
            "overrides": list(hc.overrides.task),
            "job_dir": hc.runtime.output_dir,
            "sweep_dir": hc.sweep.dir if multirun else None,
            "job_num": hc.job.num if multirun else 0,
        }
    return {
        "choices": {
            g: OmegaConf.select(cfg, f"{g}.name") for g in ("model", "topology", "mode", "engine")
        },
        "overrides": [],
        "job_dir": None,
        "sweep_dir": None,
        "job_num": 0,
    }


def _classify(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if "RESOURCE_EXHAUSTED" in text or isinstance(exc, MemoryError):
        return "oom"
    if isinstance(exc, SkipJob):
        return "skipped"
    return "failed"


def run_job(cfg: DictConfig, job_dir: str | Path | None = None) -> dict[str, Any]:
    """Run one benchmark job and write `<job_dir>/metrics.json`. Never raises (but ^C)."""
    ctx = _hydra_context(cfg)
    job_dir = Path(job_dir or ctx["job_dir"] or ".")
    label = " ".join(ctx["overrides"]) or "(defaults)"
    config_dict = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    config_dict.pop("hydra", None)
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "status": "failed",
        "error": None,
        "run_key": None,
        "started_at": _utc_now(),
        "finished_at": None,
        "config": config_dict,
        "choices": ctx["choices"],
        "sweep": {
            "dir": ctx["sweep_dir"],
            "job_num": ctx["job_num"],
            "overrides": ctx["overrides"],
        },
        "env": {},
        "model": {},
        "engine": {},
        "phases": {},
        "generated_text": None,
        "wandb": {"mode": None, "run_id": None, "path": None, "status": "not started"},
    }
    log.info("[job %s] start: %s", ctx["job_num"], label)
    started = time.perf_counter()
    tracker = None
    interrupted: BaseException | None = None
    try:
        config = validate(cfg)
        tracker = _run(config, record, ctx)
        record["status"] = "ok"
    except KeyboardInterrupt as exc:
        record["status"], record["error"] = "interrupted", error_block(exc)
        interrupted = exc
    except Exception as exc:  # one job's failure must never end the sweep
        record["status"], record["error"] = _classify(exc), error_block(exc)
        if not isinstance(exc, ConfigError | SkipJob):
            log.exception("[job %s] %s", ctx["job_num"], record["status"])
    record["run_key"] = run_key(_identity(config_dict), record["env"])
    record["finished_at"] = _utc_now()
    record["wall_s"] = time.perf_counter() - started
    if tracker is not None:
        record["wandb"] = tracker.finish(record)
    write_record(job_dir / RECORD_NAME, record)
    JOB_RESULTS.append((label, record["status"], _error_summary(record)))
    log.info("[job %s] %s", ctx["job_num"], _headline(record))
    if interrupted is not None:
        raise interrupted
    return record


def _run(config: Config, record: dict[str, Any], ctx: dict[str, Any]):
    """The expensive part, after the config is known to be valid."""
    from sweep import tracking
    from sweep.engine import get_engine
    from sweep.env import collect_env, setup_compile_cache
    from sweep.models import load_model
    from sweep.phases import run_phase

    setup_compile_cache(config.compile_cache_dir)
    record["env"] = collect_env()
    preflight.check_paths(config)
    image = preflight.load_image(config.mode.image) if config.mode.name == "image" else None
    reason = preflight.fit_problem(config)
    if reason:
        raise SkipJob(reason)
    reason = preflight.topology_mismatch(config.topology, record["env"])
    if reason:
        raise SkipJob(reason)

    t0 = time.perf_counter()
    model, model_reused = load_model(
        config.model,
        seed=config.seed,
        quant=config.quant,
        mesh=preflight.make_mesh(config.topology),
    )
    load_s = time.perf_counter() - t0
    request = preflight.build_request(config, model, image)
    engine, engine_reused = get_engine(
        config.engine.name, model, cache_length=config.engine.cache_length
    )
    cost = preflight.cost_model(model, config.topology, record["env"])
    record["model"] = {
        "name": model.name,
        "source": model.source,
        "num_params": model.num_params,
        "param_bytes": model.param_bytes,
        "reused": model_reused,
        "load_s": load_s,
    }
    record["engine"] = {"name": engine.name, "reused": engine_reused}
    record["cost_model"] = None if cost is None else cost.__dict__

    tracker = tracking.start(config, record, ctx)
    for phase in PHASES:
        runs = getattr(config.runs, phase)
        log.info("[job %s] %s: %d run(s)", ctx["job_num"], phase, runs)
        block, last = run_phase(
            phase, engine, request, runs=runs, cost=cost, on_run=tracker.log_run
        )
        record["phases"][phase] = block
        if phase == "final":
            record["generated_text"] = last.texts[0]
            record["generated_texts"] = list(last.texts)
            record["generated_token_ids"] = last.token_ids.tolist()
    for phase in ("benchmark", "final"):
        compiles = record["phases"][phase]["compiles"]
        if compiles:
            raise RuntimeError(
                f"{compiles} compile(s) during the {phase} phase: its timings include "
                "compilation (the engine recompiled for an input it had already seen)"
            )
    return tracker


def _identity(config_dict: dict[str, Any]) -> dict[str, Any]:
    """The config as identity: the image by content, not by where this checkout keeps it."""
    image = (config_dict.get("mode") or {}).get("image")
    if not image or not Path(image).is_file():
        return config_dict
    digest = hashlib.sha256(Path(image).read_bytes()).hexdigest()[:16]
    return config_dict | {"mode": config_dict["mode"] | {"image": f"sha256:{digest}"}}


def _error_summary(record: dict[str, Any]) -> str:
    err = record.get("error") or {}
    return f"{err.get('type', '')}: {err.get('message', '')}" if err else ""


def _headline(record: dict[str, Any]) -> str:
    if record["status"] != "ok":
        return f"{record['status']}: {_error_summary(record)}"
    bench = record["phases"]["benchmark"]["summary"]
    warm = record["phases"]["warmup"]
    return (
        f"ok: first token {bench['first_token_s']['median']:.4f} s, "
        f"decode {bench['decode_tokens_per_s']['median']:.1f} tok/s (medians), "
        f"warmup compiles {warm['compiles']} ({warm['compile_s']:.1f} s), "
        f"job {record['wall_s']:.1f} s"
    )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    run_job(cfg)


def main() -> int:
    """Run Hydra, then exit non-zero when any job of this process (or sweep) did not end ok."""
    from sweep import callbacks

    JOB_RESULTS.clear()
    _hydra_main()
    results = callbacks.SWEEP_RESULTS or JOB_RESULTS
    not_ok = [r for r in results if r[1] != "ok"]
    if not_ok:
        print(f"{len(not_ok)} of {len(results)} job(s) did not end ok:", file=sys.stderr)
        for label, status, detail in not_ok:
            print(f"  {status}: {label}" + (f" ({detail})" if detail else ""), file=sys.stderr)
    # Skipped jobs (cannot run on this machine, by design) are listed but are not failures.
    return 1 if any(status != "skipped" for _, status, _ in not_ok) else 0


if __name__ == "__main__":
    sys.exit(main())
