"""One benchmark job as a plain function: validate -> preflight -> model -> engine -> phases ->
record. `sweep.run` is only the Hydra edge over `run_job`; `isolate=true` runs `execute` in a
child process (sweep/isolate.py); tests call both directly.

A job never raises into its caller (except a ^C/SIGTERM, after its record is written):
whatever happens, it writes its record (status ok | failed | oom | skipped | crashed |
interrupted) and the sweep goes on.

Data flows down once: the config is checked (`config.validate`), the input files and the
memory fit are checked (`preflight`), the request is sized against the model's module and
tokenizer before any weight exists (`request.build_request`), the model and engine come from
the process's one cache (`cache.MODELS`), the cost model from the loaded model (`costs`),
then the phases run (`phases`) and the record is written (`resume.save_record`). At each step
the job fires its hooks (`hooks`): an isolated job's child saves its partial record there,
and the tests inject faults there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweep import distributed, hooks, interrupt, isolate, memory, progress, resume
from sweep.callbacks import parallel_launcher_problem
from sweep.config import Config, ConfigError, validate
from sweep.outcomes import JOB_RESULTS, JobResult, SweepStopped, disk_problem
from sweep.record import (
    PHASES,
    RECORD_NAME,
    EngineInfo,
    ErrorInfo,
    MemoryInfo,
    ModelInfo,
    ProfileInfo,
    Record,
    SweepInfo,
    config_hash,
    run_key,
)

log = logging.getLogger("sweep")


class SkipJob(Exception):
    """The job cannot run here (e.g. topology/devices mismatch); recorded as `skipped`."""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hydra_context(cfg: DictConfig) -> dict[str, Any]:
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
            "launcher": {
                k: hc.launcher.get(k) for k in ("_target_", "n_jobs", "array_parallelism")
            },
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


def run_job(cfg: DictConfig, job_dir: str | Path | None = None) -> Record:
    """Run one benchmark job and write `<job_dir>/metrics.json`. Never raises (but ^C)."""
    began = time.perf_counter()
    ctx = hydra_context(cfg)
    job_dir = Path(job_dir or ctx["job_dir"] or ".")
    ctx["job_dir"] = str(job_dir)  # tracking keeps the job's wandb files there
    label = " ".join(ctx["overrides"]) or "(defaults)"
    config_dict = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    config_dict.pop("hydra", None)
    record = Record(
        started_at=utc_now(),
        config=config_dict,
        choices=ctx["choices"],
        sweep=SweepInfo(
            dir=ctx["sweep_dir"], job_num=ctx["job_num"], overrides=list(ctx["overrides"])
        ),
        config_hash=config_hash(identity(config_dict)),  # what resume=true compares
    )
    if cfg.get("dry_run", False):  # list the job: no model, no record (sweep/dryrun.py)
        return _dry_run(cfg, record, ctx, label)
    path = job_dir / RECORD_NAME
    isolate.remove_leftovers(job_dir)  # of an isolated run of this job killed with -9
    previous = resume.check_previous(
        path, record.config_hash, resume=_resume_wanted(cfg), job=ctx["job_num"]
    )
    if previous.kept is not None:  # resume=true: this job already has an ok record
        JOB_RESULTS.append(JobResult(label=label, status="ok", detail="", job_dir=str(job_dir)))
        progress.report_job(ctx["job_num"], label, "ok (kept)", time.perf_counter() - began)
        return Record.from_dict(previous.kept)
    log.info("[job %s] start: %s", ctx["job_num"], label)
    if isolate.wanted(cfg) and _valid(cfg):
        result, interrupted = isolate.run_in_child(
            config_dict, record.to_dict(), ctx, job_dir, target=f"{__name__}:execute_dict"
        )
        record = _from_child(result, record)
        if record.finished_at is None:  # the child died before finishing its record
            record.run_key = run_key(identity(record.config), record.env)
            record.finished_at = utc_now()
    else:
        interrupted = execute(cfg, record, ctx)
    # multi-host: process 0 writes; the others ran with it (an isolated job's child says which)
    written = True
    if distributed.is_writer() and record.env.get("process_index") in (0, None):
        written = resume.save_record(path, record, preserve=previous.preserve, job=ctx["job_num"])
    detail = record.error.summary() if record.error else ""
    JOB_RESULTS.append(
        JobResult(label=label, status=record.status, detail=detail, job_dir=str(job_dir))
    )
    log.info("[job %s] %s", ctx["job_num"], headline(record))
    progress.report_job(
        ctx["job_num"],
        label,
        record.status,
        time.perf_counter() - began,
        sweep_dir=ctx["sweep_dir"],
        parallel=(record.env.get("concurrent_jobs") or 1) != 1,
    )
    interrupted = interrupted or interrupt.pending()  # a signal held back while writing
    if interrupted is not None:
        raise interrupted
    problem = disk_problem(job_dir, written, more_jobs=ctx["sweep_dir"] is not None)
    if problem:  # before Hydra fails writing the next job's files, with a traceback
        raise SweepStopped(problem)
    return record


def _dry_run(cfg: DictConfig, record: Record, ctx: dict[str, Any], label: str) -> Record:
    """`dry_run=true`: log the job's line (overrides, fit verdict, weight + KV bytes) and
    return its record unwritten (`skipped`, "dry run"); nothing is built or compiled."""
    from sweep.dryrun import dry_run_line

    try:
        config = validate(cfg)
        import_model_library()
        line = dry_run_line(config, label, ctx["job_num"])
    except ConfigError as exc:
        line = dry_run_line(None, label, ctx["job_num"], problem=str(exc))
    except Exception as exc:  # a dry run lists every job, whatever one of them does
        problem = f"cannot estimate it: {type(exc).__name__}: {exc}"
        line = dry_run_line(None, label, ctx["job_num"], problem=problem)
    log.info("%s", line)
    record.fail("skipped", ErrorInfo.of("DryRun", "dry run: nothing was built or measured"))
    return record


def _from_child(result: dict[str, Any], fallback: Record) -> Record:
    """The record an isolated child handed back (or the parent's, amended by isolate)."""
    try:
        return Record.from_dict(result)
    except Exception as exc:  # a child that wrote nonsense: keep what the parent knows
        fallback.fail("crashed", ErrorInfo.of("JobCrashed", f"unusable record from child: {exc}"))
        return fallback


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
    except Exception:  # recorded by `execute`, in this process: no child needed for that
        return False
    return True


def execute_dict(config: dict[str, Any], record: dict[str, Any], ctx: dict[str, Any]):
    """`execute` over JSON-able arguments (what an isolated child receives). Returns (the
    record as a dict, the interrupt that stopped the job or None)."""
    typed = Record.from_dict(record)
    interrupted = execute(OmegaConf.create(config), typed, ctx)
    return typed.to_dict(), interrupted


def execute(cfg: DictConfig, record: Record, ctx: dict[str, Any]) -> BaseException | None:
    """Validate and run one job, filling `record` (here, or in an isolated job's own process).
    Never raises; returns the KeyboardInterrupt that stopped the job, if one did."""
    started = time.perf_counter()
    trackers: list = []  # _run adds its wandb tracker as soon as it has one
    interrupted: BaseException | None = None
    try:
        config = validate(cfg)
        if "kauldron.typing" in sys.modules:
            import_model_library()
        else:  # the first job of a process: ~10 s of imports (gemma, JAX, kauldron)
            with progress.step(ctx.get("job_num"), "importing gemma and JAX"):
                import_model_library()
        _run(config, record, ctx, trackers)
        record.status = "ok"
    except KeyboardInterrupt as exc:
        record.fail("interrupted", ErrorInfo.of(exc))
        interrupted = exc
    except Exception as exc:  # one job's failure must never end the sweep
        record.fail(_classify(exc), ErrorInfo.of(exc))
        if not isinstance(exc, ConfigError | SkipJob):
            log.exception("[job %s] %s", ctx["job_num"], record.status)
    record.run_key = run_key(identity(record.config), record.env)
    record.finished_at = utc_now()
    record.wall_s = time.perf_counter() - started
    record.process_peak_rss_bytes = memory.peak_rss_bytes()
    if record.memory is not None:  # the job got as far as a model (also a failed one's peak)
        record.memory.peak_bytes, record.memory.peak_source = memory.peak_bytes()
    for tracker in trackers:  # also when _run raised after starting it: the run is marked failed
        with interrupt.deferred():
            record.wandb = tracker.finish(record.to_dict())
    return interrupted


def import_model_library() -> None:
    """Import gemma here, in a frame that holds no model. kauldron (imported by gemma) keeps
    the stack of frames that created its module-level configs alive forever (for its error
    messages): imported from inside `_run`, that frame's locals, the first job's model and
    engine, could never be freed, and the process would hold two models from the second
    model on."""
    from sweep.gemma_lib import import_gemma

    import_gemma()  # also where tensorflow is absent (bare accelerator images)
    from kauldron.konfig import default_values  # noqa: F401  (imported lazily otherwise)


def _run(config: Config, record: Record, ctx: dict[str, Any], trackers: list) -> None:
    """The expensive part, after the config is known to be valid."""
    from sweep import preflight, tracking
    from sweep.cache import MODELS
    from sweep.costs import cost_model
    from sweep.env import collect_env, setup_compile_cache
    from sweep.models import make_mesh
    from sweep.phases import run_phase
    from sweep.request import build_request

    job_num = ctx.get("job_num")
    problem = parallel_launcher_problem(ctx.get("launcher"), config.topology)
    if problem:  # before anything touches the chips
        raise ConfigError("hydra/launcher", (ctx["launcher"] or {}).get("_target_"), problem)
    hooks.fire("start", record, job_num)
    # Input files first: host-only checks, before JAX is even initialised.
    preflight.check_paths(config)
    image = preflight.load_image(config.mode.image) if config.mode.name == "image" else None
    audio = None
    if config.mode.name == "audio":
        from sweep.audio import load_wav

        audio = load_wav(config.mode.audio)  # AudioError (mode.audio) before anything heavy
    setup_compile_cache(config.compile_cache_dir)
    distributed.initialize(config.topology)  # multi-host: join before any device use
    record.env = collect_env()
    # How many jobs ran at once on this host (a parallel launcher shares its CPUs/memory).
    record.env["concurrent_jobs"] = progress.concurrent_jobs(
        ctx.get("launcher"), progress.sweep_total() if ctx.get("sweep_dir") else 1
    )
    # The prompt and the KV cache it needs, from the module and tokenizer alone: a prompt +
    # tokens that cannot fit an explicit engine.cache_length fails here, before any weight.
    request = build_request(config, MODELS.spec(config.model), image, audio)
    reason = preflight.fit_problem(config, request.cache_length) or preflight.topology_mismatch(
        config.topology, record.env
    )
    if reason:
        raise SkipJob(reason)

    hooks.fire("load", record, job_num)
    what = _model_step(config)
    log.info("[job %s] model: %s ...", job_num, what)
    t0 = time.perf_counter()
    model, model_reused = MODELS.model(
        config.model, seed=config.seed, quant=config.quant, mesh=make_mesh(config.topology)
    )
    load_s = time.perf_counter() - t0
    done = "held from the previous job (reused)" if model_reused else f"{what}: done"
    log.info("[job %s] model: %s in %.1f s", job_num, done, load_s)
    engine, engine_reused = MODELS.engine(
        config.engine.name,
        model,
        cache_length=request.cache_length,
        image_tokens=request.image_tokens,
    )
    cost = cost_model(model, config.topology, record.env, batch_size=config.batch_size)
    record.model = ModelInfo(
        name=model.name,
        source=model.source,
        num_params=model.num_params,
        param_bytes=model.param_bytes,
        reused=model_reused,
        load_s=load_s,
    )
    record.engine = EngineInfo(
        name=engine.name, reused=engine_reused, cache_length=request.cache_length
    )
    record.cost_model = None if cost is None else dataclasses.asdict(cost)
    record.memory = MemoryInfo(
        weight_bytes=model.param_bytes, kv_cache_bytes=engine.kv_cache_bytes(request.batch_size)
    )

    view = record.to_dict()
    tracker = tracking.start(config, view, ctx)
    record.wandb = view["wandb"]
    trackers.append(tracker)
    for phase in PHASES:
        runs = getattr(config.runs, phase)
        hooks.fire(phase, record, job_num)
        what = f"{phase}: {runs} run(s)"
        if phase == "warmup":
            what += " (compiles prefill and decode on first use)"
        with progress.step(job_num, what):
            block, last = run_phase(
                phase, engine, request, runs=runs, cost=cost, on_run=tracker.log_run
            )
        record.phases[phase] = block
        if phase == "benchmark" and config.profile:  # untimed, between two timed phases
            record.profile = _profile(engine, request, Path(ctx["job_dir"] or "."), job_num)
        if phase == "final":
            record.generated_text = last.texts[0]
            record.generated_texts = list(last.texts)
            record.generated_token_ids = last.token_ids.tolist()
    # After every timed phase: lowering again is served from JAX's caches (no compile).
    _program_memory(engine, request, record.memory)
    for phase in ("benchmark", "final"):
        compiles = record.phases[phase].compiles
        if compiles:
            raise RuntimeError(
                f"{compiles} compile(s) during the {phase} phase: its timings include "
                "compilation (the engine recompiled for an input it had already seen)"
            )


def _profile(engine, request, job_dir: Path, job_num) -> ProfileInfo | None:
    """One untimed request under `jax.profiler.trace`, into `<job dir>/profile`. A profiler
    that fails costs the trace, not the job's figures (a warning, and no profile block)."""
    import jax

    from sweep.phases import compile_monitor

    trace_dir = job_dir / "profile"
    log.info("[job %s] profile: 1 untimed run traced into %s", job_num, trace_dir)
    try:
        trace = jax.profiler.trace(str(trace_dir), create_perfetto_trace=True)
        with compile_monitor.watch() as stats, trace:
            engine.generate(request)
    except Exception as exc:
        log.warning("[job %s] profiling failed (%s: %s)", job_num, type(exc).__name__, exc)
        return None
    if stats.compiles:
        log.warning("[job %s] the profiled run compiled %d time(s)", job_num, stats.compiles)
    files = sorted(p.relative_to(trace_dir).as_posix() for p in trace_dir.rglob("*") if p.is_file())
    return ProfileInfo(dir=str(trace_dir), files=files)


def _program_memory(engine, request, memory: MemoryInfo) -> None:
    """`memory.programs` from the engine's compiled programs, or why there are none."""
    from sweep.memory import programs_reason

    if not hasattr(engine, "program_memory"):
        memory.programs_reason = programs_reason(engine)
        return
    try:
        programs = engine.program_memory(request)
    except Exception as exc:  # the figures are diagnostics: never fail a measured job
        log.warning("memory analysis failed (%s: %s)", type(exc).__name__, exc)
        memory.programs_reason = f"memory_analysis failed: {type(exc).__name__}: {exc}"
        return
    missing = [name for name, figures in programs.items() if figures is None]
    memory.programs = programs
    if missing:
        memory.programs_reason = f"the backend gives no memory_analysis for {', '.join(missing)}"


def _model_step(config: Config) -> str:
    """What building the job's model does, for its progress line."""
    name = f"model={config.model.name}"
    if config.model.checkpoint:
        return f"loading the checkpoint {config.model.checkpoint} of {name}"
    return f"building random-init params of {name} (seed {config.seed})"


def identity(config_dict: dict[str, Any]) -> dict[str, Any]:
    """The config as identity: the image by content, not by where this checkout keeps it."""
    image = (config_dict.get("mode") or {}).get("image")
    if not image or not Path(image).is_file():
        return config_dict
    digest = hashlib.sha256(Path(image).read_bytes()).hexdigest()[:16]
    return config_dict | {"mode": config_dict["mode"] | {"image": f"sha256:{digest}"}}


def headline(record: Record) -> str:
    """The job's one-line result for the log."""
    if record.status != "ok":
        return f"{record.status}: {record.error.summary() if record.error else ''}"
    bench = record.phases["benchmark"].summary
    warm = record.phases["warmup"]
    return (
        f"ok: first token {_median(bench, 'first_token_s', '.4f')} s, "
        f"decode {_median(bench, 'decode_tokens_per_s', '.1f')} tok/s (medians), "
        f"warmup compiles {warm.compiles} ({warm.compile_s:.1f} s), "
        f"job {record.wall_s or 0.0:.1f} s, process peak RSS {_peak_rss(record)}"
    )


def _median(summary: dict[str, Any], metric: str, spec: str) -> str:
    """A statistic that may be undefined (no decode steps at tokens=1): '—' then."""
    stats = summary.get(metric)
    return "—" if not stats or stats.get("median") is None else format(stats["median"], spec)


def _peak_rss(record: Record) -> str:
    from sweep.preflight import gib

    peak = record.process_peak_rss_bytes
    return "unknown" if peak is None else gib(peak)
