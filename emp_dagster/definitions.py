"""The code location: every domain's definitions merged with project-wide settings."""

import dagster as dg

from emp_dagster.defs.evolution import assets as evolution_assets
from emp_dagster.defs.evolution import checks as evolution_checks
from emp_dagster.defs.evolution import resources as evolution_resources
from emp_dagster.defs.market_data import assets as market_assets
from emp_dagster.defs.market_data import jobs as market_jobs
from emp_dagster.defs.market_data import resources as market_resources
from emp_dagster.defs.market_data import schedules as market_schedules
from emp_dagster.defs.market_data.partitions import BAR_PARTITIONS
from emp_dagster.defs.sensory import assets as sensory_assets
from emp_dagster.defs.sensory import checks as sensory_checks

# The embedded tier's DuckDB file takes one writer process: steps run in the run's
# own process, one after another.
EXECUTOR = dg.in_process_executor

demo_job = dg.define_asset_job(
    "emp_demo", selection=dg.AssetSelection.all(), partitions_def=BAR_PARTITIONS,
    description="Materialise the whole graph for a range of months (what `emp demo` runs).",
)


@dg.definitions
def defs() -> dg.Definitions:
    domain = dg.Definitions(
        assets=dg.load_assets_from_modules([market_assets, sensory_assets, evolution_assets]),
        asset_checks=dg.load_asset_checks_from_modules([sensory_checks, evolution_checks]),
        jobs=[market_jobs.ingest_job, demo_job, evolution_assets.evolution_job],
        schedules=[market_schedules.daily_bars_ingest, market_schedules.weekly_trailing_backfill,
                   evolution_assets.weekly_evolution],
    )
    spark = dg.Definitions(resources={"pyspark": evolution_resources.spark_resource()})
    return dg.Definitions.merge(domain, market_resources.resources(), spark, dg.Definitions(executor=EXECUTOR))
