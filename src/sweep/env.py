"""The environment block of a record, the persistent compile cache, and the CPU bandwidth probe.

Only named variables are recorded (never the whole environment): no API key or token may reach
a record, a log, BENCHMARKS.md or wandb.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import socket
import statistics
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


# The ISA extensions that decide how fast XLA's CPU code runs (x86 /proc/cpuinfo "flags", Arm
# "Features"): vector width, FMA, and the bf16/int8 dot-product and matrix units.
CPU_FLAGS = frozenset(
    {
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "avx_vnni",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
        "amx_fp16",
        "asimd",
        "asimddp",
        "sve",
        "sve2",
        "bf16",
        "i8mm",
        "sme",
    }
)


def cpu_identity(cpuinfo: str | None = None) -> dict[str, Any]:
    """`cpu_model` (/proc/cpuinfo's "model name", else platform.processor(), else None) and
    `cpu_flags` (the CPU_FLAGS this CPU has, sorted). `cpuinfo`: the file's text (tests)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    model, flags = None, set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if not sep:
            continue
        if key == "model name" and model is None and value.strip():
            model = " ".join(value.split())
        elif key in ("flags", "features"):
            flags |= set(value.split()) & CPU_FLAGS
    model = model or platform.processor().strip() or None
    return {"cpu_model": model, "cpu_flags": sorted(flags)}


def collect_env() -> dict[str, Any]:
    devices = jax.devices()
    backend = jax.default_backend()
    # On CPU the processor is the device: its model and ISA flags are part of the machine's
    # identity (two CPU machines' results are kept apart by the merge).
    cpu = cpu_identity() if backend == "cpu" else {}
    return {
        "versions": {pkg: _version(pkg) for pkg in _PACKAGES}
        | {"python": platform.python_version()},
        "backend": backend,
        "device_kind": devices[0].device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "hosts": jax.process_count(),
        "process_index": jax.process_index(),
        "hostname": socket.gethostname(),
        **cpu,
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


PROBE_MAX_BYTES = 256 * 2**20  # 8x the 32 MiB L3 seen here: caches cannot flatter it
PROBE_STEP_BYTES = 4 * 2**20


def probe_bytes_for(working_set_bytes: int) -> int:
    """The probe's buffer size for a decode that reads `working_set_bytes` per step.

    The decode's own size (rounded up to 4 MiB), capped at PROBE_MAX_BYTES: a model that fits
    in the caches, or nearly (the tiny one: 32 MiB of bf16 embeddings), is read faster than
    DRAM, and measured against a DRAM-sized probe its MBU could pass 100%.
    """
    rounded = -(-working_set_bytes // PROBE_STEP_BYTES) * PROBE_STEP_BYTES
    return max(PROBE_STEP_BYTES, min(PROBE_MAX_BYTES, rounded))


PROBE_ROUNDS = 5
# Reads of each pattern over all rounds: at least 1.25 GiB (5 reads of 256 MiB), and at least
# 2 per round, so that a round's best is a best of several reads.
PROBE_BYTES_PER_PATTERN = 5 * PROBE_MAX_BYTES
PROBE_MIN_READS_PER_ROUND = 2


@dataclasses.dataclass(frozen=True)
class ReadProbe:
    """One process's read-bandwidth probe of an `nbytes` buffer, in bytes/s.

    `rounds` holds each round's best read. `peak` is the best read of all (the max over the
    rounds): MBU's denominator, so that no decode in this process can be measured above it.
    The median and min over the rounds say how steady the machine was while probing.
    """

    nbytes: int
    rounds: tuple[float, ...]

    @property
    def peak(self) -> float:
        return max(self.rounds)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def min(self) -> float:
        return min(self.rounds)

    @property
    def max(self) -> float:
        return max(self.rounds)

    def env(self) -> dict[str, Any]:
        """The record's env keys (the sweep's and tools/bench_engines.py's alike)."""
        return {
            "cpu_read_bytes_per_s": self.peak,
            "cpu_read_bytes_per_s_median": self.median,
            "cpu_read_bytes_per_s_min": self.min,
            "cpu_read_bytes_per_s_max": self.max,
            "cpu_read_probe_rounds": len(self.rounds),
            "cpu_read_probe_bytes": self.nbytes,
        }


@functools.cache
def probe_read(nbytes: int, rounds: int = PROBE_ROUNDS) -> ReadProbe:
    """Read an `nbytes` buffer with three jitted patterns, in `rounds` rounds.

    The patterns are a reduction, a float32 matrix-vector and a vector-matrix product (the
    decode's own patterns, which XLA may spread over threads). Each round reads the buffer
    with every pattern in turn, several times (every pattern reads at least 1.25 GiB over all
    rounds: more reads of a smaller buffer), and keeps its fastest read; rounds follow each
    other, so a machine busy for part of the probe shows as a spread between rounds. Probed
    once per process, size and round count (about a second for 256 MiB, compiles included).
    """
    if nbytes % PROBE_STEP_BYTES:
        raise ValueError(f"probe size {nbytes} is not a multiple of {PROBE_STEP_BYTES} bytes")
    if rounds < 1:
        raise ValueError(f"probe rounds must be at least 1, not {rounds}")
    reads = max(PROBE_MIN_READS_PER_ROUND, -(-PROBE_BYTES_PER_PATTERN // (nbytes * rounds)))
    x = jnp.ones((nbytes // 4,), jnp.float32)
    patterns = (
        (jax.jit(jnp.sum), (x,)),
        (jax.jit(jnp.dot), (x.reshape(-1, 1024), jnp.ones((1024,), jnp.float32))),
        (jax.jit(jnp.dot), (jnp.ones((256,), jnp.float32), x.reshape(256, -1))),
    )
    for fn, args in patterns:
        fn(*args).block_until_ready()  # compile outside the timing
    bests = []
    for _ in range(rounds):
        best = float("inf")
        for _ in range(reads):
            for fn, args in patterns:
                start = time.perf_counter()
                fn(*args).block_until_ready()
                best = min(best, time.perf_counter() - start)
        bests.append(nbytes / best)
    del x, patterns
    return ReadProbe(nbytes=nbytes, rounds=tuple(bests))


def cpu_read_peak(decode_weight_bytes: int) -> dict[str, Any]:
    """The host read bandwidth for a decode reading `decode_weight_bytes` per step, as the
    record's env keys: `cpu_read_bytes_per_s` (the peak: MBU's denominator on CPU),
    `cpu_read_bytes_per_s_median`, `_min`, `_max` (over the rounds), `cpu_read_probe_rounds`
    and `cpu_read_probe_bytes`. One probe per process and size (cached): the sweep
    (costs.cost_model) and tools/bench_engines.py call this same function."""
    return probe_read(probe_bytes_for(decode_weight_bytes)).env()


def host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
