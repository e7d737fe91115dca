"""The code location: the definitions under ``defs/`` (each domain folder registers its own assets, checks,
jobs, schedules and resources), merged with the project-wide settings kept here."""

from pathlib import Path

import dagster as dg

import emp_dagster.defs

# The embedded tier's DuckDB file takes one writer process: steps run in the run's
# own process, one after another.
EXECUTOR = dg.in_process_executor


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_defs(defs_root=emp_dagster.defs, project_root=Path(__file__).resolve().parents[1])
    return dg.Definitions.merge(loaded, dg.Definitions(executor=EXECUTOR))
