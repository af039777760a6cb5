"""The environment block of a record, the persistent compile cache, and the CPU bandwidth probe.

Only named variables are recorded (never the whole environment): no API key or token may reach
a record, a log, BENCHMARKS.md or wandb.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

RECORDED_VARS = ("XLA_FLAGS", "LIBTPU_INIT_ARGS", "TPU_NAME", "CUDA_VISIBLE_DEVICES")
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
_PACKAGES = ("jax", "jaxlib", "flax", "gemma", "hydra-core", "omegaconf", "wandb")


def recorded_env_vars() -> dict[str, str]:
    """XLA/TPU flags and JAX_* settings, minus anything that looks like a secret."""
    names = [n for n in os.environ if n in RECORDED_VARS or n.startswith("JAX_")]
    return {
        n: os.environ[n]
        for n in sorted(names)
        if not any(word in n.upper() for word in _SECRET_WORDS)
    }


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{out}-dirty" if dirty else out


def collect_env() -> dict[str, Any]:
    devices = jax.devices()
    return {
        "versions": {pkg: _version(pkg) for pkg in _PACKAGES}
        | {"python": platform.python_version()},
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "hosts": jax.process_count(),
        "process_index": jax.process_index(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "git_commit": git_commit(),
        "env_vars": recorded_env_vars(),
        "compile_cache_dir": jax.config.jax_compilation_cache_dir,
    }


_cache_dir_set: str | None = None


def setup_compile_cache(cache_dir: str | None) -> None:
    """Turn the persistent XLA compilation cache on (every program, however small) or off."""
    global _cache_dir_set
    if cache_dir == _cache_dir_set:
        return
    if cache_dir:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    else:
        jax.config.update("jax_compilation_cache_dir", None)
    _cache_dir_set = cache_dir


@functools.cache
def probe_read_bandwidth(nbytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Bytes/s the host reads, the best of two jitted read patterns (best of `repeats` each).

    A reduction and a float32 matvec (the decode's own pattern, which XLA may spread over
    threads) over 256 MiB, 8x the 32 MiB L3 seen here, so caches do not flatter it. The faster
    one is the peak: a decode must never be measured above it. Probed once per process.
    """
    x = jnp.ones((nbytes // 4,), jnp.float32)
    m = x.reshape(-1, 1024)
    v = jnp.ones((1024,), jnp.float32)
    best = float("inf")
    for fn, args in ((jax.jit(jnp.sum), (x,)), (jax.jit(jnp.dot), (m, v))):
        fn(*args).block_until_ready()  # compile outside the timing
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*args).block_until_ready()
            best = min(best, time.perf_counter() - start)
    del x, m
    return nbytes / best


def host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
