"""`python -m sweep.run [-m] key=value ...`: the Hydra edge. One benchmark job per Hydra job.

`_hydra_main` hands each composed config to `sweep.job.run_job`, a plain function tests call;
`main` turns how the jobs ended into the exit status: 0 all ok (or skipped), 1 a job did not
end ok (named on stderr), 2 the sweep was refused, 130/143 interrupted.

Reliability (docs/troubleshooting.md): `resume=true` keeps jobs whose record is ok for the same
config and reruns the rest (resume.py); `isolate=true` runs each job in a child process, so a
native crash becomes a `crashed` record (isolate.py); SIGTERM/SIGINT stop the sweep after
recording the running job as `interrupted`, a second signal exits at once (interrupt.py).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sweep import interrupt, resume
from sweep.job import run_job
from sweep.outcomes import JOB_RESULTS, JobResult, SweepStopped

log = logging.getLogger("sweep")
# JAX logs at INFO that it looked for a TPU and a proxy backend: noise on every other machine.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    run_job(cfg)


def main() -> int:
    """Run Hydra, then exit non-zero when any job of this process (or sweep) did not end ok."""
    from sweep import callbacks

    JOB_RESULTS.clear()
    # A full disk must not bury its one message under a logging traceback per log line.
    logging.raiseExceptions = False
    # resume=true without an output dir: continue the latest earlier run of this command.
    shown = _show_multirun(sys.argv)
    if shown is not None:  # `-m` with --cfg/--info: Hydra shows configs, runs no job
        return shown
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
    except SweepStopped as exc:  # the disk filled up: no further job can write its files
        return _stopped(exc)
    # The sweep's view (records + how this process's jobs ended) when there was a multirun,
    # else this process's own jobs (a single run).
    not_ok = _print_not_ok(callbacks.SWEEP_RESULTS or JOB_RESULTS)
    # Skipped jobs (cannot run on this machine, by design) are listed but are not failures.
    return 1 if any(r.status != "skipped" for r in not_ok) else 0


def _show_multirun(argv: list[str]) -> int | None:
    """`-m` with `--cfg`/`--info`/`--shell-completion`, which Hydra refuses together (a
    traceback): show what Hydra shows for each job of the sweep (`--cfg`; `--info`: the first
    job only), without running any. None when `argv` asks for something else."""
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(argv[1:])
    except SystemExit:  # a usage error: Hydra itself says what is wrong
        return None
    if not args.multirun or not (args.cfg or args.info is not None or args.shell_completion):
        return None
    overrides = list(args.overrides)
    flags = [a for a in argv[1:] if a not in ("-m", "--multirun")]
    for override in overrides:
        flags.remove(override)
    jobs = resume.sweep_jobs(overrides) or [overrides]
    what = "the config of each" if args.cfg else "shown for the first"
    print(f"# -m: {what} of the sweep's {len(jobs)} job(s); no job runs", flush=True)
    if not args.cfg:
        jobs = jobs[:1]
    saved = sys.argv
    try:
        for num, job in enumerate(jobs):
            if len(jobs) > 1:
                print(f"# job {num}: {' '.join(job) or '(defaults)'}", flush=True)
            sys.argv = [argv[0], *job, *flags]
            _hydra_main()
    finally:
        sys.argv = saved
    return 0


def _stopped(exc: SweepStopped) -> int:
    """The sweep stopped before its end (Hydra then skips its end-of-sweep callback): remove
    the empty files a failed write left, say so once, and summarise the jobs that did run, as
    the callback would have."""
    from sweep import callbacks

    sweep = dict(callbacks.ACTIVE_SWEEP)
    callbacks.ACTIVE_SWEEP.clear()
    root = Path(sweep["sweep_dir"]) if sweep else None
    removed = remove_empty_files(root)
    print(
        f"sweep stopped: {exc}. Records already written are intact"
        + (f"; removed {removed} empty file(s)" if removed else "")
        + ". Free space (or pick another hydra.sweep.dir) and rerun the same command with "
        "resume=true to run the rest.",
        file=sys.stderr,
    )
    if root is not None:
        callbacks.summarize_sweep(root, merge=sweep["merge"], wandb_cfg=sweep["wandb_cfg"])
        callbacks.release_sweep_lock()
    _print_not_ok(callbacks.SWEEP_RESULTS if root is not None else JOB_RESULTS)
    return 1


def remove_empty_files(sweep_dir: Path | None) -> int:
    """Remove the 0-byte config and log files that writes on a full disk leave in the sweep's
    job dirs (never a file with content)."""
    if sweep_dir is None or not sweep_dir.is_dir():
        return 0
    removed = 0
    for path in [*sweep_dir.glob("*/.hydra/*.yaml"), *sweep_dir.glob("*/*.log")]:
        try:
            if path.is_file() and path.stat().st_size == 0:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def _print_not_ok(results: list[JobResult]) -> list[JobResult]:
    not_ok = [r for r in results if r.status != "ok"]
    if not_ok:
        print(f"{len(not_ok)} of {len(results)} job(s) did not end ok:", file=sys.stderr)
        for r in not_ok:
            print(
                f"  {r.status}: {r.label}" + (f" ({r.detail})" if r.detail else ""), file=sys.stderr
            )
    return not_ok


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


if __name__ == "__main__":
    sys.exit(main())
