"""Warmup / benchmark / final phases: per-run timings and per-phase compile accounting.

Compiles are counted from `jax.monitoring` events while a phase runs. Warmup is where they
belong; the benchmark and final phases must show 0 (a compile there sits inside a timed
window: the job is marked failed, its samples kept for inspection).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from sweep import programs
from sweep.costs import CostModel
from sweep.engine import Engine, Generation
from sweep.metrics import run_metrics, summarize
from sweep.record import CompileCounts, PhaseBlock
from sweep.request import Request

log = logging.getLogger("sweep")

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_TRACE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
)
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_CACHE_MISS = "/jax/compilation_cache/cache_misses"


class _CompileMonitor:
    """One process-wide jax.monitoring listener feeding whichever stats are active."""

    def __init__(self) -> None:
        self._active: list[CompileCounts] = []
        self._installed = False

    def _install(self) -> None:
        import jax

        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)
        self._installed = True

    def _on_duration(self, event: str, duration: float, **_: Any) -> None:
        for stats in self._active:
            if event == _COMPILE_EVENT:
                stats.compiles += 1
                stats.compile_s += duration
            elif event in _TRACE_EVENTS:
                stats.compile_s += duration

    def _on_event(self, event: str, **_: Any) -> None:
        for stats in self._active:
            if event == _CACHE_HIT:
                stats.cache_hits += 1
            elif event == _CACHE_MISS:
                stats.cache_misses += 1
            elif event == programs.HIT_EVENT:
                stats.program_hits += 1
            elif event == programs.MISS_EVENT:
                stats.program_misses += 1

    @contextlib.contextmanager
    def watch(self):
        if not self._installed:
            self._install()
        stats = CompileCounts()
        self._active.append(stats)
        try:
            yield stats
        finally:
            self._active.remove(stats)


compile_monitor = _CompileMonitor()


def generation_metrics(gen: Generation, request: Request, cost: CostModel | None) -> dict:
    """The per-run record of one timed request."""
    return run_metrics(
        total_s=gen.total_s,
        first_token_s=gen.first_token_s,
        new_tokens=gen.new_tokens,
        prompt_tokens=gen.prompt_tokens,
        batch_size=request.batch_size,
        cost=cost,
        first_token_derived=gen.first_token_derived,
    )


def run_phase(
    name: str,
    engine: Engine,
    request: Request,
    *,
    runs: int,
    cost: CostModel | None,
    on_run: Callable[[str, int, dict[str, Any]], None] | None = None,
) -> tuple[PhaseBlock, Generation]:
    """Time `runs` requests. Returns the phase block of the record and the last generation."""
    samples: list[dict[str, Any]] = []
    started = time.perf_counter()
    with compile_monitor.watch() as stats:
        for i in range(runs):
            gen = engine.generate(request)
            run = generation_metrics(gen, request, cost)
            samples.append(run)
            if on_run is not None:
                on_run(name, i, run)
            if runs > 1:
                decode = run["decode_tokens_per_s"]
                log.info(
                    "  %s %d/%d: first token %.4f s, decode %s tok/s",
                    name,
                    i + 1,
                    runs,
                    run["first_token_s"],
                    "—" if decode is None else f"{decode:.1f}",
                )
    block = PhaseBlock(
        runs=samples,
        summary=summarize(samples),
        **dataclasses.asdict(stats),  # compiles, compile_s, then PHASE_CACHE_COUNTS
        wall_s=time.perf_counter() - started,
    )
    return block, gen
