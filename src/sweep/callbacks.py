"""Hydra callback: refuse a sweep that cannot run here; when a multirun ends, collect every
job's status and merge the records.

It runs in the launching process for every launcher (basic, joblib, Ray, submitit), so it reads
statuses from the records on disk rather than from memory. Failures here are logged, never
raised (Hydra would turn them into warnings anyway) — except `SweepRefused`, raised before any
job starts when a local parallel launcher would share one host's accelerators.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sweep.record import PHASE_CACHE_COUNTS, RECORD_NAME, RecordError, read_record

log = logging.getLogger("sweep")

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Launchers that run several jobs at once on the local host.
_LOCAL_PARALLEL = ("joblib", "submitit_local", "LocalLauncher")


class SweepRefused(BaseException):
    """The sweep must not start; the message says why and what to do instead.

    A BaseException on purpose: Hydra turns an Exception raised in a callback into a warning
    and goes on; this one reaches `sweep.run.main`, which prints it and exits 2.
    """


def _local_parallelism(launcher: Any) -> tuple[str, int | None] | None:
    """(launcher name, concurrent jobs or None for "all") when `launcher` runs several jobs at
    once on this host, else None."""
    target = str(_get(launcher, "_target_") or "")
    if "joblib" in target.lower():
        n_jobs = _get(launcher, "n_jobs")
        n_jobs = 1 if n_jobs is None else int(n_jobs)  # joblib: None means 1
        return None if n_jobs == 1 else ("joblib", None if n_jobs < 0 else n_jobs)
    if "submitit" in target.lower() and "LocalLauncher" in target:
        return ("submitit_local", None)
    return None


def _get(node: Any, key: str) -> Any:
    """`key` of a dict, DictConfig or dataclass (None when absent)."""
    if node is None:
        return None
    if hasattr(node, "get"):
        return node.get(key)
    return getattr(node, key, None)


def parallel_launcher_problem(launcher: Any, topology: Any) -> str | None:
    """Why `launcher` must not run jobs of `topology` on one host (accelerators are held by one
    process at a time), or None. CPU topologies may run in parallel."""
    platform = str(_get(topology, "platform") or "cpu")
    found = _local_parallelism(launcher)
    if platform == "cpu" or found is None:
        return None
    name, n = found
    at_once = "one job per CPU" if n is None else f"{n} jobs"
    return (
        f"hydra/launcher={name} runs {at_once} at once on this host, but "
        f"topology={_get(topology, 'name')} uses its {platform} chips, which one process holds "
        "exclusively (chips are exclusive: a second process cannot open a TPU, and on GPU each "
        "process preallocates most of the memory). Use the default basic launcher (drop "
        "hydra/launcher=...) or hydra.launcher.n_jobs=1; to spread jobs over several machines "
        "use hydra/launcher=ray or submitit_slurm"
    )


def _swept_topologies(config: DictConfig) -> list[Any]:
    """The topology of the primary config and of every `topology=a,b` value in the overrides."""
    topologies = [config.get("topology")]
    try:
        task = list(config.hydra.overrides.task)
    except Exception:
        task = []
    for override in task:
        key, _, value = str(override).partition("=")
        if key.lstrip("+~") != "topology":
            continue
        for name in value.replace("[", "").replace("]", "").split(","):
            path = CONF_DIR / "topology" / f"{name.strip()}.yaml"
            if path.is_file():
                from omegaconf import OmegaConf

                topologies.append(OmegaConf.load(path))
    return [t for t in topologies if t is not None]


# (job label, status, error summary) for the last multirun of this process; read by run.main.
SWEEP_RESULTS: list[tuple[str, str, str]] = []


def _read_sweep(sweep_dir: Path) -> list[tuple[Path, dict | RecordError]]:
    """Each job's record (or why it could not be read), in job order."""
    entries: list[tuple[Path, dict | RecordError]] = []
    for path in sorted(sweep_dir.glob(f"*/{RECORD_NAME}"), key=lambda p: _job_order(p.parent)):
        try:
            entries.append((path, read_record(path)))
        except RecordError as exc:
            entries.append((path, exc))
    return entries


def _statuses(entries: list[tuple[Path, dict | RecordError]]) -> list[tuple[str, str, str]]:
    results = []
    for path, record in entries:
        if isinstance(record, RecordError):
            results.append((str(path.parent), "unreadable record", str(record)))
            continue
        label = " ".join(record.get("sweep", {}).get("overrides") or []) or path.parent.name
        err = record.get("error") or {}
        detail = f"{err.get('type', '')}: {err.get('message', '')}" if err else ""
        results.append((label, record["status"], detail))
    return results


def compile_share(records: list[dict]) -> dict[str, float]:
    """Compile time (trace + lower + XLA, every phase) against job wall time, over a sweep.

    What a warm persistent compile cache can save at most: a sweep that is mostly decoding
    cannot get much faster from it, and the summary line says so with these figures.
    """
    total = {"compile_s": 0.0, "wall_s": 0.0, **dict.fromkeys(PHASE_CACHE_COUNTS, 0)}
    for record in records:
        total["wall_s"] += record.get("wall_s") or 0.0
        for phase in (record.get("phases") or {}).values():
            for key in ("compile_s", *PHASE_CACHE_COUNTS):
                total[key] += phase.get(key) or 0
    return total


def _job_order(job_dir: Path) -> tuple[int, str]:
    return (int(job_dir.name), "") if job_dir.name.isdigit() else (1 << 30, job_dir.name)


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SWEEP_RESULTS.clear()
        launcher = config.hydra.get("launcher")
        for topology in _swept_topologies(config):
            problem = parallel_launcher_problem(launcher, topology)
            if problem:
                raise SweepRefused(problem)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        entries = _read_sweep(sweep_dir)  # read once: statuses and the compile share
        results = _statuses(entries)
        SWEEP_RESULTS[:] = results
        ok = sum(1 for _, status, _ in results if status == "ok")
        log.info("sweep %s: %d/%d job(s) ok", sweep_dir, ok, len(results))
        share = compile_share([r for _, r in entries if not isinstance(r, RecordError)])
        if share["wall_s"] > 0:
            log.info(
                "compiling took %.1f s of %.1f s of job time (%.1f%%; compile cache: %d hit(s), "
                "%d miss(es); stored programs: %d loaded, %d traced): a warm cache can shorten "
                "this sweep by at most that share",
                share["compile_s"],
                share["wall_s"],
                100 * share["compile_s"] / share["wall_s"],
                share["cache_hits"],
                share["cache_misses"],
                share["program_hits"],
                share["program_misses"],
            )
        from sweep import distributed

        # Multi-host: only process 0 merges (the others would race it on benchmarks/).
        if config.get("merge_on_end", True) and distributed.is_writer():
            from omegaconf import OmegaConf

            from sweep import merge, tracking

            try:
                merge.merge_after_sweep(sweep_dir)
            except Exception:  # a merge problem must not hide the sweep's own results
                log.exception("merge after the sweep failed; run tools/merge_benchmarks.py")
            try:
                tracking.log_sweep_summary(
                    sweep_dir,
                    markdown_path=Path(merge.DEFAULT_MARKDOWN),
                    plot_paths=sorted(Path(merge.DEFAULT_PLOTS_DIR).glob("*.png")),
                    wandb_cfg=OmegaConf.to_container(config.wandb, resolve=True),
                )
            except Exception:
                log.exception("wandb sweep summary failed (records and BENCHMARKS.md are fine)")
