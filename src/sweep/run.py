"""`python -m sweep.run [-m] key=value ...`: one benchmark job per Hydra job.

`main` is a thin `@hydra.main` over `run_job`, a plain function tests call. A job never raises
into Hydra: whatever happens, it writes its record (status ok | failed | oom | skipped |
crashed | interrupted) and the sweep goes on; the process exits non-zero at the end if any job
did not end `ok`, naming them.

Reliability (docs/troubleshooting.md): `resume=true` keeps jobs whose record is ok for the same
config and reruns the rest, and an existing record is never overwritten silently (resume.py);
`isolate=true` runs each job's device work in a child process, so a native crash becomes a
`crashed` record (isolate.py); SIGTERM/SIGINT stop the sweep after recording the running job
as `interrupted`, a second signal exits at once (interrupt.py); `SWEEP_FAULT` injects faults
for the tests (faults.py).
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

from sweep import distributed, faults, interrupt, isolate, preflight, resume
from sweep.callbacks import parallel_launcher_problem
from sweep.config import Config, ConfigError, validate
from sweep.record import (
    PHASES,
    RECORD_NAME,
    SCHEMA_VERSION,
    config_hash,
    error_block,
    run_key,
)

log = logging.getLogger("sweep")
# JAX logs at INFO that it looked for a TPU and a proxy backend: noise on every other machine.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# (job label, status, error summary) of every job this process ran; read by `main`.
JOB_RESULTS: list[tuple[str, str, str]] = []


class SkipJob(Exception):
    """The job cannot run here (e.g. topology/devices mismatch); recorded as `skipped`."""


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory so far (all jobs it ran, not this job alone)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes; Linux: KiB


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
            # What runs the jobs (a local parallel launcher must not share accelerators).
            "launcher": {k: hc.launcher.get(k) for k in ("_target_", "n_jobs")},
        }
    return {
        "choices": {
            g: OmegaConf.select(cfg, f"{g}.name") for g in ("model", "topology", "mode", "engine")
        },
        "overrides": [],
        "job_dir": None,
        "sweep_dir": None,
        "job_num": 0,
        "launcher": None,
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
    ctx["job_dir"] = str(job_dir)  # tracking keeps the job's wandb files there
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
    identity = _identity(config_dict)
    record["config_hash"] = config_hash(identity)  # what resume=true compares
    path = job_dir / RECORD_NAME
    previous = resume.check_previous(
        path, record["config_hash"], resume=_resume_wanted(cfg), job=ctx["job_num"]
    )
    if previous.kept is not None:  # resume=true: this job already has an ok record
        JOB_RESULTS.append((label, "ok", ""))
        return previous.kept
    log.info("[job %s] start: %s", ctx["job_num"], label)
    if isolate.wanted(cfg) and _valid(cfg):
        interrupted = isolate.run_in_child(config_dict, record, ctx, job_dir)
        if record["finished_at"] is None:  # the child died before finishing its record
            record["run_key"] = run_key(identity, record["env"])
            record["finished_at"] = _utc_now()
    else:
        interrupted = _execute(cfg, record, ctx)
    # multi-host: process 0 writes; the others ran with it (an isolated job's child says which)
    if distributed.is_writer() and (record.get("env") or {}).get("process_index") in (0, None):
        resume.save_record(path, record, preserve=previous.preserve, job=ctx["job_num"])
    JOB_RESULTS.append((label, record["status"], _error_summary(record)))
    log.info("[job %s] %s", ctx["job_num"], _headline(record))
    interrupted = interrupted or interrupt.pending()  # a signal held back while writing
    if interrupted is not None:
        raise interrupted
    return record


def _resume_wanted(cfg: DictConfig) -> bool:
    if not cfg.get("resume", False):
        return False
    if (OmegaConf.select(cfg, "topology.num_hosts", default=1) or 1) > 1:
        # Every host must run the same jobs, and only process 0 has records to go by.
        log.warning("resume=true is ignored for multi-host topologies: every job runs again")
        return False
    return True


def _valid(cfg: DictConfig) -> bool:
    try:
        validate(cfg)
    except Exception:  # recorded by `_execute`, in this process: no child needed for that
        return False
    return True


def _execute(cfg: DictConfig, record: dict[str, Any], ctx: dict[str, Any]) -> BaseException | None:
    """Validate and run one job, filling `record` (here, or in an isolated job's own process).
    Never raises; returns the KeyboardInterrupt that stopped the job, if one did."""
    started = time.perf_counter()
    trackers: list = []  # _run adds its wandb tracker as soon as it has one
    interrupted: BaseException | None = None
    try:
        config = validate(cfg)
        _run(config, record, ctx, trackers)
        record["status"] = "ok"
    except KeyboardInterrupt as exc:
        record["status"], record["error"] = "interrupted", error_block(exc)
        interrupted = exc
    except Exception as exc:  # one job's failure must never end the sweep
        record["status"], record["error"] = _classify(exc), error_block(exc)
        if not isinstance(exc, ConfigError | SkipJob):
            log.exception("[job %s] %s", ctx["job_num"], record["status"])
    record["run_key"] = run_key(_identity(record["config"]), record["env"])
    record["finished_at"] = _utc_now()
    record["wall_s"] = time.perf_counter() - started
    record["process_peak_rss_bytes"] = peak_rss_bytes()
    for tracker in trackers:  # also when _run raised after starting it: the run is marked failed
        with interrupt.deferred():
            record["wandb"] = tracker.finish(record)
    return interrupted


def _checkpoint(phase: str, record: dict[str, Any], ctx: dict[str, Any]) -> None:
    """A phase boundary: an isolated job saves its progress; SWEEP_FAULT (tests) may fire."""
    isolate.progress(record, phase)
    faults.inject(phase, ctx.get("job_num"))


def _run(config: Config, record: dict[str, Any], ctx: dict[str, Any], trackers: list) -> None:
    """The expensive part, after the config is known to be valid."""
    from sweep import tracking
    from sweep.engine import get_engine
    from sweep.env import collect_env, setup_compile_cache
    from sweep.models import load_model, model_spec
    from sweep.phases import run_phase

    problem = parallel_launcher_problem(ctx.get("launcher"), config.topology)
    if problem:  # before anything touches the chips
        raise ConfigError("hydra/launcher", (ctx["launcher"] or {}).get("_target_"), problem)
    _checkpoint("start", record, ctx)
    setup_compile_cache(config.compile_cache_dir)
    distributed.initialize(config.topology)  # multi-host: join before any device use
    record["env"] = collect_env()
    preflight.check_paths(config)
    image = preflight.load_image(config.mode.image) if config.mode.name == "image" else None
    reason = preflight.fit_problem(config)
    if reason:
        raise SkipJob(reason)
    reason = preflight.topology_mismatch(config.topology, record["env"])
    if reason:
        raise SkipJob(reason)
    # Sized against the KV cache from the module and tokenizer alone: a prompt + tokens that
    # cannot fit fails here, not after the weights are built.
    request = preflight.build_request(config, model_spec(config.model), image)

    t0 = time.perf_counter()
    _checkpoint("load", record, ctx)
    model, model_reused = load_model(
        config.model,
        seed=config.seed,
        quant=config.quant,
        mesh=preflight.make_mesh(config.topology),
    )
    load_s = time.perf_counter() - t0
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
    trackers.append(tracker)
    for phase in PHASES:
        runs = getattr(config.runs, phase)
        log.info("[job %s] %s: %d run(s)", ctx["job_num"], phase, runs)
        _checkpoint(phase, record, ctx)
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
        f"job {record['wall_s']:.1f} s, process peak RSS {_peak_rss(record)}"
    )


def _peak_rss(record: dict[str, Any]) -> str:
    peak = record["process_peak_rss_bytes"]
    return "unknown" if peak is None else preflight.gib(peak)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    run_job(cfg)


def main() -> int:
    """Run Hydra, then exit non-zero when any job of this process (or sweep) did not end ok."""
    from sweep import callbacks

    JOB_RESULTS.clear()
    # resume=true without an output dir: continue the latest earlier run of this command.
    resume.announce(resume.redirect_argv(sys.argv))
    interrupt.install()  # SIGTERM/SIGINT: the running job records itself; a second one exits
    try:
        _hydra_main()
    except KeyboardInterrupt:
        _print_not_ok(JOB_RESULTS)
        print(
            f"interrupted ({_signal_name(interrupt.exit_code() - 128)}): the sweep stopped; "
            "records already written are intact. Rerun the same command with resume=true to "
            "run the rest.",
            file=sys.stderr,
        )
        return interrupt.exit_code()
    except callbacks.SweepRefused as exc:
        print(f"sweep refused: {exc}", file=sys.stderr)
        return 2
    # This process's own jobs first: they include a job whose record could not be written.
    results = JOB_RESULTS or callbacks.SWEEP_RESULTS
    not_ok = _print_not_ok(results)
    # Skipped jobs (cannot run on this machine, by design) are listed but are not failures.
    return 1 if any(status != "skipped" for _, status, _ in not_ok) else 0


def _print_not_ok(results: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    not_ok = [r for r in results if r[1] != "ok"]
    if not_ok:
        print(f"{len(not_ok)} of {len(results)} job(s) did not end ok:", file=sys.stderr)
        for label, status, detail in not_ok:
            print(f"  {status}: {label}" + (f" ({detail})" if detail else ""), file=sys.stderr)
    return not_ok


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


if __name__ == "__main__":
    sys.exit(main())
