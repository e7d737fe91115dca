import datetime as dt

import dagster as dg

from emp_core.market_data.ingest import Partition

# Monthly windows: a backfill of any range runs as one job run (single-run policy),
# the journal keeps one row per month, and the daily schedule refreshes the
# month-to-date partition. Symbols are a run-config selection, not a partition axis:
# Dagster's multi-partition ranges are not contiguous, so a (month x symbol) grid
# would turn a 20-year backfill into thousands of runs.
BAR_PARTITIONS = dg.MonthlyPartitionsDefinition(start_date="1990-01-01", end_offset=1)
BAR_BACKFILL = dg.BackfillPolicy.single_run()


def partitions_of(keys: list[str]) -> list[Partition]:
    """emp_core partitions (key, [start, end)) for Dagster partition keys, in time order."""
    out = []
    for key in sorted(keys):
        window = BAR_PARTITIONS.time_window_for_partition_key(key)
        out.append(Partition(key, _naive_utc(window.start), _naive_utc(window.end)))
    return out


def _naive_utc(ts: dt.datetime) -> dt.datetime:
    return ts.astimezone(dt.UTC).replace(tzinfo=None) if ts.tzinfo else ts
