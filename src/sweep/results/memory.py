"""The Memory table: what a job's weights, KV cache and compiled programs take, and its peak.

From the record's `memory` block (`frames.MEMORY` columns): `peak_bytes` is the process's
peak so far (every job it had run until then): the devices' `memory_stats()` peak where the
backend keeps one (`peak_source` "device"), else the process's peak RSS (`process_rss`, CPU);
the programs' temp/argument/output bytes are `compiled.memory_analysis()`'s. Records that
predate the block are left out of the table.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sweep.results.frames import MEMORY
from sweep.results.tables import IDENT, MISSING, Table, _ident, _jobs, _machine, py, rows_of

PEAK_SOURCES = {"device": "device memory_stats()", "process_rss": "process peak RSS"}
UNITS = ((2**30, "GiB", 2), (2**20, "MiB", 1), (2**10, "KiB", 1))


def size(value: Any) -> str:
    """Bytes, human-readable: `1.50 GiB`, `12.3 MiB`, `4.0 KiB`, `512 B`; `—` when unknown."""
    value = py(value)
    if value is None:
        return MISSING
    for scale, unit, digits in UNITS:
        if value >= scale:
            return f"{value / scale:.{digits}f} {unit}"
    return f"{value} B"


def memory_table(phases: pd.DataFrame) -> Table:
    """One row per job with a memory block, whatever its status (an oom job's figures are the
    ones that matter most)."""
    df = _jobs(phases)
    df = df[df[list(MEMORY)].notna().any(axis=1)]
    rows = []
    for row in rows_of(df):
        source = row["memory_peak_source"]
        programs = [
            size(row[f"memory_{program}_{kind}_bytes"])
            for program in ("prefill", "decode")
            for kind in ("temp", "argument", "output")
        ]
        rows.append(
            [
                *_ident(row),
                row["status"],
                size(row["memory_peak_bytes"]),
                PEAK_SOURCES.get(source, source) if source else MISSING,
                size(row["memory_weight_bytes"]),
                size(row["memory_kv_cache_bytes"]),
                *programs,
                row["memory_programs_reason"] or MISSING,
                _machine(row),
            ]
        )
    return Table(
        "Memory",
        "Per job, from the record's memory block. Peak: the process's peak so far (every job it "
        "had run until then), the devices' `memory_stats()` peak where the backend keeps one, "
        "else the process's peak RSS (CPU). Weights and KV Cache: the bytes of the parameters "
        "on the devices and of the KV cache the engine ran with. Prefill/Decode Temp, "
        "Args, Out: the compiled programs' temporary, argument and output buffers "
        "(`compiled.memory_analysis()`); `—` with the reason when the engine or backend gives "
        "none. GiB/MiB are binary (2^30, 2^20 bytes). Records that predate the memory block are "
        "left out.",
        (
            *IDENT,
            "Status",
            "Peak",
            "Peak Source",
            "Weights",
            "KV Cache",
            "Prefill Temp",
            "Prefill Args",
            "Prefill Out",
            "Decode Temp",
            "Decode Args",
            "Decode Out",
            "Programs Note",
            "Machine",
        ),
        rows,
        "No record has a memory block (records before it was added).",
    )
