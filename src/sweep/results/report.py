"""The tables in the order BENCHMARKS.md and index.html show them (`tables`, `memory`)."""

from __future__ import annotations

import pandas as pd

from sweep.results.memory import memory_table
from sweep.results.tables import (
    SEED_COLUMNS,
    Table,
    compile_table,
    engine_table,
    environment_table,
    failed_table,
    inference_rows,
    percentile_table,
    utilization_table,
)


def extra_tables(phases: pd.DataFrame) -> list[Table]:
    """Every table after the seed's "Inference Runs"."""
    return [
        percentile_table(phases),
        compile_table(phases),
        utilization_table(phases),
        memory_table(phases),
        engine_table(phases),
        failed_table(phases),
        environment_table(phases),
    ]


def html_tables(phases: pd.DataFrame) -> list[Table]:
    main = Table(
        "Inference Runs",
        "One row per job and phase; click a column header to sort.",
        SEED_COLUMNS,
        inference_rows(phases),
        "No records.",
    )
    return [main, *extra_tables(phases)]
