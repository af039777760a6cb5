"""Multi-host slices: one job spread over several processes (one per host) with
`jax.distributed.initialize()`.

Every process of a multi-host job runs the same command (the same sweep, the same jobs in the
same order); JAX joins their devices into one global mesh and each jitted program runs on all of
them at once. Only process 0 writes records, merges and tracks to wandb (`is_writer`).

Setup, in `initialize(topology)`, only when `topology.num_hosts > 1`:
- explicit: `JAX_COORDINATOR_ADDRESS` (host:port of process 0), `JAX_NUM_PROCESSES` and
  `JAX_PROCESS_ID` in every process's environment (any host, any platform; CPU tests use it);
- otherwise JAX's own cluster detection (Cloud TPU VM slices, GKE TPU, SLURM, Open MPI, ...).
When neither applies the job is left single-process and the preflight topology check reports
the mismatch (skipped), as for any topology that does not fit the machine.

On CPU the cross-process collectives use gloo (`jax_cpu_collectives_implementation`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax

log = logging.getLogger("sweep")

ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


class DistributedError(RuntimeError):
    """The multi-host setup cannot be done as configured; the message says why."""


def explicit_settings(environ: dict[str, str] | None = None) -> dict[str, Any] | None:
    """`jax.distributed.initialize` arguments from the JAX_* variables, or None when unset.

    All three must be set together; a partial or malformed set is a `DistributedError`.
    """
    environ = os.environ if environ is None else environ
    values = {name: environ.get(name) or None for name in ENV_VARS}
    if not any(values.values()):
        return None
    missing = [name for name, value in values.items() if value is None]
    if missing:
        raise DistributedError(
            f"multi-host setup needs all of {', '.join(ENV_VARS)}; missing {', '.join(missing)}"
        )
    try:
        num_processes = int(values["JAX_NUM_PROCESSES"])
        process_id = int(values["JAX_PROCESS_ID"])
    except ValueError:
        raise DistributedError(
            f"JAX_NUM_PROCESSES={values['JAX_NUM_PROCESSES']!r} and "
            f"JAX_PROCESS_ID={values['JAX_PROCESS_ID']!r} must be integers"
        ) from None
    if not 0 <= process_id < num_processes:
        raise DistributedError(
            f"JAX_PROCESS_ID={process_id} must be in [0, JAX_NUM_PROCESSES={num_processes})"
        )
    return {
        "coordinator_address": values["JAX_COORDINATOR_ADDRESS"],
        "num_processes": num_processes,
        "process_id": process_id,
    }


def _backends_initialized() -> bool:
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def initialize(topology) -> bool:
    """Join the multi-host job when `topology.num_hosts > 1`, once per process.

    Must run before the first device use of the process. Returns True when this process is part
    of an initialized multi-process job; False when the topology is single-host, or is for
    another platform, or no cluster was found (the topology check that follows then skips the
    job). `DistributedError` when the setup is wrong or comes too late in this process.
    """
    if topology.num_hosts <= 1:
        return False
    if jax.distributed.is_initialized():
        return True
    settings = explicit_settings()
    if settings is not None and settings["num_processes"] != topology.num_hosts:
        raise DistributedError(
            f"topology={topology.name} has num_hosts={topology.num_hosts}, but "
            f"JAX_NUM_PROCESSES={settings['num_processes']}"
        )
    if _backends_initialized():
        if jax.default_backend() != topology.platform:
            return False  # not this machine's kind of chips: the topology check skips the job
        raise DistributedError(
            f"topology={topology.name} spans {topology.num_hosts} hosts, but this process "
            "already used its devices on its own (an earlier job of the same sweep), and JAX "
            "can join a multi-host job only before that: run multi-host topologies in a sweep "
            "of their own"
        )
    previous = jax.config.jax_cpu_collectives_implementation
    if topology.platform == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if settings is None:
        try:
            jax.distributed.initialize()  # cluster auto-detection (TPU VM slice, GKE, SLURM...)
        except ValueError as exc:  # no cluster detected: nothing to join
            jax.config.update("jax_cpu_collectives_implementation", previous)
            log.warning(
                "topology=%s spans %d hosts but no cluster was detected (%s); set %s to join one",
                topology.name,
                topology.num_hosts,
                exc,
                "/".join(ENV_VARS),
            )
            return False
    else:
        log.info(
            "jax.distributed: process %d of %d, coordinator %s",
            settings["process_id"],
            settings["num_processes"],
            settings["coordinator_address"],
        )
        jax.distributed.initialize(**settings)
    return True


def is_writer() -> bool:
    """Whether this process writes records, merges and tracks: process 0, or any process that
    is not part of a multi-process job (does not touch devices in that case)."""
    if not jax.distributed.is_initialized():
        return True
    return jax.process_index() == 0
