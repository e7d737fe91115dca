import datetime as dt

import dagster as dg

from emp_core.errors import EmpError
from emp_core.market_data.ingest import Partition

# Yearly windows. A year of bars is the unit the data has (about 252 daily bars, the longest feature
# window) and the unit a re-ingest is cheap at (a year of every shipped symbol ingests in well under a
# second); Dagster writes two events per partition per asset of a run (planned, materialised) into its
# SQLite event log at ~10 ms each, so 20 years of 8 assets cost 320 events, not the 3,840 monthly keys
# did, which outweighed the work of the run they described. A backfill of any range runs as one job run
# (single-run policy), the journal keeps one row per year, and the daily schedule refreshes the
# year-to-date partition. Symbols are a run-config selection, not a partition axis: Dagster's
# multi-partition ranges are not contiguous, so a (year x symbol) grid would turn a backfill into many runs.
BAR_PARTITIONS = dg.TimeWindowPartitionsDefinition(cron_schedule="0 0 1 1 *", start="1990", fmt="%Y", end_offset=1)
BAR_BACKFILL = dg.BackfillPolicy.single_run()


def partition_key(at: dt.datetime | dt.date) -> str:
    """The key of the partition holding ``at`` (its year)."""
    return f"{at.year:04d}"


def partition_keys(start: dt.datetime | dt.date, end: dt.datetime | dt.date) -> tuple[str, str]:
    """First and last keys of the partitions holding ``start`` .. ``end`` (inclusive); both must exist."""
    first, last = partition_key(start), partition_key(end)
    valid = BAR_PARTITIONS.get_partition_keys()
    for key in (first, last):
        if key not in valid:
            raise EmpError(f"year {key} is outside the partitions ({valid[0]} to {valid[-1]})")
    if last < first:
        raise EmpError(f"--end {end:%Y-%m-%d} is before --start {start:%Y-%m-%d}")
    return first, last


def partitions_of(keys: list[str]) -> list[Partition]:
    """emp_core partitions (key, [start, end)) for Dagster partition keys, in time order."""
    out = []
    for key in sorted(keys):
        window = BAR_PARTITIONS.time_window_for_partition_key(key)
        out.append(Partition(key, _naive_utc(window.start), _naive_utc(window.end)))
    return out


def _naive_utc(ts: dt.datetime) -> dt.datetime:
    return ts.astimezone(dt.UTC).replace(tzinfo=None) if ts.tzinfo else ts
