"""The whole graph as one job: what ``emp demo`` and ``emp backfill`` run."""

import dagster as dg

from emp_dagster.defs.market_data.partitions import BAR_PARTITIONS

demo_job = dg.define_asset_job(
    "emp_demo", selection=dg.AssetSelection.all(), partitions_def=BAR_PARTITIONS,
    description="Materialise the whole graph for a range of months (what `emp demo` runs).",
)
