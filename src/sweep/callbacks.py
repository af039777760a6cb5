"""Hydra callback: refuse a sweep that cannot run here; when a multirun ends, collect every
job's status and merge the records.

It runs in the launching process for every launcher (basic, joblib, Ray, submitit), so it reads
statuses from the records on disk rather than from memory. Failures here are logged, never
raised (Hydra would turn them into warnings anyway) — except `SweepRefused`, raised before any
job starts when a local parallel launcher would share one host's accelerators, when another
sweep is running into the same `hydra.sweep.dir`, or when that dir cannot be written.

One sweep per dir: `<sweep dir>/.sweep.lock` is locked (`flock`) by the launching process for
the whole sweep and names its holder (pid, host, start time, command). A second sweep into the
same dir is refused, naming the first; the lock goes away with its process, so the lock file of
a killed sweep is simply taken over (and logged). The file stays, empty, after a clean end.
"""

from __future__ import annotations

import atexit
import dataclasses
import fcntl
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sweep import outcomes, progress
from sweep.outcomes import JobResult
from sweep.progress import get_key
from sweep.record import PHASE_CACHE_COUNTS, RECORD_NAME, Record, RecordError, load_record
from sweep.resume import override_values, parse_override

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
    target = str(get_key(launcher, "_target_") or "")
    if "joblib" in target.lower():
        n_jobs = get_key(launcher, "n_jobs")
        n_jobs = 1 if n_jobs is None else int(n_jobs)  # joblib: None means 1
        return None if n_jobs == 1 else ("joblib", None if n_jobs < 0 else n_jobs)
    if "submitit" in target.lower() and "LocalLauncher" in target:
        return ("submitit_local", None)
    return None


def parallel_launcher_problem(launcher: Any, topology: Any) -> str | None:
    """Why `launcher` must not run jobs of `topology` on one host (accelerators are held by one
    process at a time), or None. CPU topologies may run in parallel."""
    platform = str(get_key(topology, "platform") or "cpu")
    found = _local_parallelism(launcher)
    if platform == "cpu" or found is None:
        return None
    name, n = found
    at_once = "one job per CPU" if n is None else f"{n} jobs"
    return (
        f"hydra/launcher={name} runs {at_once} at once on this host, but "
        f"topology={get_key(topology, 'name')} uses its {platform} chips, which one process holds "
        "exclusively (chips are exclusive: a second process cannot open a TPU, and on GPU each "
        "process preallocates most of the memory). Use the default basic launcher (drop "
        "hydra/launcher=...) or hydra.launcher.n_jobs=1; to spread jobs over several machines "
        "use hydra/launcher=ray or submitit_slurm"
    )


def _swept_topologies(config: DictConfig) -> list[Any]:
    """The topology of the primary config and of every value a `topology=` override sweeps
    (`a,b`, `choice(a,b)`, `glob(v6e*)`, quoted names; read with Hydra's own grammar), also
    from `hydra.sweeper.params`."""
    from omegaconf import OmegaConf

    topologies = [config.get("topology")]
    try:
        task = [str(o) for o in config.hydra.overrides.task]
    except Exception:
        task = []
    try:
        params = config.hydra.sweeper.get("params") or {}
        task += [f"{key}={value}" for key, value in params.items()]
    except Exception:
        pass
    for text in task:
        override = parse_override(text)
        if override is None or override.key_or_group != "topology" or override.package:
            continue
        if override.is_delete():
            continue
        for name in override_values(override) or []:
            path = CONF_DIR / "topology" / f"{name}.yaml"
            if isinstance(name, str) and path.is_file():
                topologies.append(OmegaConf.load(path))
    return [t for t in topologies if t is not None]


# ------------------------------------------------------------------------------------------
# One sweep per sweep dir
#
# flock(2) on a local file system. On NFS, flock is only as good as the NFS server's locking
# (Linux maps it to NFS byte-range locks, v4 or lockd); on a file system without locks the
# sweep runs with a warning that a second sweep into the dir would not be noticed.

LOCK_NAME = ".sweep.lock"


@dataclass
class SweepLock:
    """The launching process's hold on a sweep dir (an open, flock'ed file)."""

    path: Path
    fd: int
    pid: int  # the process that took it (a forked child inherits the fd and the atexit hook)

    def release(self) -> None:
        """Empty the file (nobody holds it) and close it, which releases the lock."""
        if os.getpid() != self.pid:
            return  # a forked child: the lock and its file are its parent's
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        finally:
            os.close(self.fd)


# This process's lock on the sweep dir of its running multirun.
_HELD: SweepLock | None = None


def release_sweep_lock() -> None:
    global _HELD
    held, _HELD = _HELD, None
    if held is not None:
        held.release()


atexit.register(release_sweep_lock)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _unwritable(sweep_dir: Path, what: str, exc: OSError) -> SweepRefused:
    return SweepRefused(
        f"hydra.sweep.dir={sweep_dir} cannot be written: {what}: {_os_reason(exc)}; "
        "pick a writable dir (hydra.sweep.dir=...)"
    )


def _read_holder(fd: int, *, wait_s: float = 0.0) -> dict[str, Any]:
    """Who the lock file says holds it ({} when it is empty or unreadable). A holder writes
    itself right after taking the lock: `wait_s` gives it that moment."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            text = os.pread(fd, 1 << 16, 0).decode("utf-8", errors="replace")
        except OSError:
            text = ""
        if text.strip() or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if not text.strip():
        return {}
    try:
        holder = json.loads(text)
    except ValueError:
        return {"raw": text.strip()[:200]}
    return holder if isinstance(holder, dict) else {"raw": text.strip()[:200]}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "holder unknown: its lock file is empty"
    if "pid" not in holder:
        return f"lock file says {holder.get('raw', holder)!r}"
    return (
        f"pid {holder.get('pid')} on host {holder.get('host', '?')}, "
        f"started {holder.get('started', '?')}"
    )


def _process_index() -> int | None:
    """This process's index in a multi-process job, when its environment says (JAX_PROCESS_ID)."""
    try:
        return int(os.environ["JAX_PROCESS_ID"])
    except (KeyError, ValueError):
        return None


def lock_sweep_dir(sweep_dir: str | os.PathLike, *, multi_host: bool = False) -> SweepLock | None:
    """Create `sweep_dir` if needed and lock `<sweep_dir>/.sweep.lock` for this process.

    Raises `SweepRefused` when another live sweep holds the dir (naming it), or when the dir or
    the lock file cannot be created or written (naming the OS error). A lock file whose process
    is gone is taken over, and logged. Returns None, without locking, in the processes of a
    multi-host sweep other than process 0 (they run the same command into the same dir and
    write nothing), and where the file system cannot lock.
    """
    sweep_dir = Path(sweep_dir)
    if multi_host and _process_index() not in (None, 0):
        return None  # process 0 of this multi-host sweep holds the dir
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(sweep_dir, f"cannot create {sweep_dir}", exc) from None
    path = sweep_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise _unwritable(sweep_dir, f"cannot create the lock file {path}", exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd, wait_s=1.0)
        os.close(fd)
        if (
            multi_host
            and holder.get("multi_host")
            and holder.get("argv") == sys.argv[1:]
            and holder.get("host") != socket.gethostname()
        ):  # another host of this very multi-host sweep, on a shared file system
            log.info("sweep dir %s is held by this sweep's process on %s", sweep_dir, holder)
            return None
        raise SweepRefused(
            f"hydra.sweep.dir={sweep_dir} is in use by another sweep ({_describe(holder)}): "
            "wait for it to end, or pick another dir"
        ) from None
    except OSError as exc:  # ENOLCK, EOPNOTSUPP: a file system without flock
        os.close(fd)
        log.warning(
            "cannot lock %s (%s): a second sweep started into %s would not be noticed",
            path,
            _os_reason(exc),
            sweep_dir,
        )
        return None
    try:
        previous = _read_holder(fd)
        if previous:
            log.warning(
                "took over the stale lock of the sweep dir %s from %s: that sweep no longer "
                "holds it (it was killed or crashed)",
                sweep_dir,
                _describe(previous),
            )
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "argv": sys.argv[1:],
            "multi_host": multi_host,
        }
        data = (json.dumps(holder, indent=1) + "\n").encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        raise _unwritable(sweep_dir, f"cannot write the lock file {path}", exc) from None
    return SweepLock(path, fd, os.getpid())


# How each job of the last multirun of this process ended; read by run.main.
SWEEP_RESULTS: list[JobResult] = []
# The multirun in progress (set when it starts): what run.main needs to summarise a sweep that
# Hydra stopped before its end (a full disk), since Hydra then skips on_multirun_end.
ACTIVE_SWEEP: dict[str, Any] = {}


def _read_sweep(sweep_dir: Path) -> list[tuple[Path, Record | RecordError]]:
    """Each job's record (or why it could not be read), in job order."""
    entries: list[tuple[Path, Record | RecordError]] = []
    for path in sorted(sweep_dir.glob(f"*/{RECORD_NAME}"), key=lambda p: _job_order(p.parent)):
        try:
            entries.append((path, load_record(path)))
        except RecordError as exc:
            entries.append((path, exc))
    return entries


def _statuses(
    entries: list[tuple[Path, Record | RecordError]], sweep_dir: Path | None = None
) -> list[JobResult]:
    """One result per job: how it ended in this process if it ran here (its record may be an
    older one that could not be replaced), else what its record says."""
    results: dict[Path, JobResult] = {}
    for path, record in entries:
        job_dir = path.parent
        if isinstance(record, RecordError):
            result = JobResult(label=str(job_dir), status="unreadable record", detail=str(record))
        else:
            result = JobResult(
                label=" ".join(record.sweep.overrides) or job_dir.name,
                status=record.status,
                detail=record.error.summary() if record.error else "",
                job_dir=str(job_dir),
            )
        results[job_dir.resolve()] = outcomes.ran_here(job_dir) or result
    if sweep_dir is not None:  # jobs of this sweep that ran here but left no record at all
        root = sweep_dir.resolve()
        for result in outcomes.JOB_RESULTS:
            job_dir = Path(result.job_dir).resolve() if result.job_dir else None
            if job_dir is not None and job_dir.parent == root and job_dir not in results:
                results[job_dir] = result
    return [results[d] for d in sorted(results, key=_job_order)]


def compile_share(records: list[Record]) -> dict[str, float]:
    """Compile time (trace + lower + XLA, every phase) against job wall time, over a sweep.

    What a warm persistent compile cache can save at most: a sweep that is mostly decoding
    cannot get much faster from it, and the summary line says so with these figures.
    """
    total = {"compile_s": 0.0, "wall_s": 0.0, **dict.fromkeys(PHASE_CACHE_COUNTS, 0)}
    for record in records:
        total["wall_s"] += record.wall_s or 0.0
        for phase in record.phases.values():
            for key in ("compile_s", *PHASE_CACHE_COUNTS):
                total[key] += getattr(phase, key) or 0
    return total


def _job_order(job_dir: Path) -> tuple[int, str]:
    return (int(job_dir.name), "") if job_dir.name.isdigit() else (1 << 30, job_dir.name)


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _HELD
        SWEEP_RESULTS.clear()
        release_sweep_lock()  # an earlier multirun of this process that did not end cleanly
        launcher = config.hydra.get("launcher")
        topologies = _swept_topologies(config)
        for topology in topologies:
            problem = parallel_launcher_problem(launcher, topology)
            if problem:
                raise SweepRefused(problem)
        multi_host = any((get_key(t, "num_hosts") or 1) > 1 for t in topologies)
        _HELD = lock_sweep_dir(Path(config.hydra.sweep.dir), multi_host=multi_host)
        ACTIVE_SWEEP.clear()
        ACTIVE_SWEEP.update(
            sweep_dir=Path(config.hydra.sweep.dir),
            merge=merge_target(config),
            wandb_cfg=_wandb_cfg(config),
            jobs=_job_count(config),  # N of the `[k/N]` progress lines; None: unknown
        )
        progress.start_sweep(ACTIVE_SWEEP["jobs"])
        jobs = ACTIVE_SWEEP["jobs"]
        log.info(
            "sweep %s: %s job(s)%s",
            config.hydra.sweep.dir,
            "?" if jobs is None else jobs,
            " (dry run: listed, not run)" if config.get("dry_run") else "",
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("dry_run"):  # no record, nothing to summarise or merge
            log.info(
                "dry run: %s job(s) listed; no model built, no record written",
                ACTIVE_SWEEP.get("jobs") or "the",
            )
            ACTIVE_SWEEP.clear()
            progress.end_sweep()
            release_sweep_lock()
            return
        try:
            summarize_sweep(
                Path(config.hydra.sweep.dir),
                merge=ACTIVE_SWEEP.get("merge") or merge_target(config),
                wandb_cfg=_wandb_cfg(config),
            )
        finally:
            ACTIVE_SWEEP.clear()
            progress.end_sweep()
            release_sweep_lock()


def _job_count(config: DictConfig) -> int | None:
    """The sweep's number of jobs (basic sweeper: its params and the task overrides), or None."""
    try:
        task = [str(o) for o in config.hydra.overrides.task]
        return progress.job_count(config.hydra.get("sweeper"), task)
    except Exception:  # a count for progress lines must never stop a sweep
        log.debug("cannot count the sweep's jobs", exc_info=True)
        return None


def _wandb_cfg(config: DictConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    node = config.get("wandb")
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


@dataclasses.dataclass(frozen=True)
class MergeTarget:
    """Where a multirun merges its records when it ends (the `merge` config node), with
    relative paths resolved against the directory the sweep was launched from."""

    on_end: bool
    dir: Path
    markdown: Path


def merge_target(config: DictConfig, cwd: Path | None = None) -> MergeTarget:
    node = config.get("merge") or {}
    base = cwd or Path.cwd()  # read at the start of the multirun: the launch directory

    def resolve(value: Any, default: str) -> Path:
        path = Path(str(value or default)).expanduser()
        return path if path.is_absolute() else base / path

    return MergeTarget(
        on_end=bool(node.get("on_end", True)),
        dir=resolve(node.get("dir"), "benchmarks"),
        markdown=resolve(node.get("markdown"), "BENCHMARKS.md"),
    )


def summarize_sweep(
    sweep_dir: Path, *, merge: MergeTarget | None, wandb_cfg: dict[str, Any] | None
) -> list[JobResult]:
    """The end of a multirun: count how its jobs ended, say how much was compiling, merge the
    records where `merge` says (when `merge.on_end`) and log the wandb summary (each best
    effort). Also run by `sweep.run` for a sweep that Hydra stopped early (a full disk), whose
    on_multirun_end never comes."""
    entries = _read_sweep(sweep_dir)  # read once: statuses and the compile share
    results = _statuses(entries, sweep_dir)
    SWEEP_RESULTS[:] = results
    ok = sum(1 for r in results if r.status == "ok")
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

    # Multi-host: only process 0 merges (the others would race it on the outputs).
    if merge is not None and merge.on_end and distributed.is_writer():
        from sweep import tracking

        try:
            _merge(sweep_dir, merge)
        except Exception:  # a merge problem must not hide the sweep's own results
            log.exception("merge after the sweep failed; run tools/merge_benchmarks.py")
        try:
            tracking.log_sweep_summary(
                sweep_dir,
                markdown_path=merge.markdown,
                plot_paths=sorted(merge.dir.glob("*.png")),
                wandb_cfg=wandb_cfg or {},
            )
        except Exception:
            log.exception("wandb sweep summary failed (records and BENCHMARKS.md are fine)")
    return results


def _merge(sweep_dir: Path, target: MergeTarget) -> None:
    from sweep.results import merge_after_sweep

    line = merge_after_sweep(sweep_dir, merge_dir=target.dir, markdown=target.markdown)
    log.info("merged %s into %s and %s: %s", sweep_dir, target.dir, target.markdown, line)
