import dagster as dg

from emp_dagster.defs.market_data.assets import BAR_KEYS, UNIVERSE_KEY
from emp_dagster.defs.market_data.partitions import BAR_PARTITIONS

ingest_job = dg.define_asset_job(
    "market_data_ingest",
    selection=dg.AssetSelection.assets(*BAR_KEYS.values(), UNIVERSE_KEY),
    partitions_def=BAR_PARTITIONS,
    description="Ingest bars for a year or a range of years (one run), then refresh the universe.",
)
