import datetime as dt

import dagster as dg

from emp_dagster.defs.market_data.jobs import ingest_job
from emp_dagster.defs.market_data.partitions import BAR_PARTITIONS
from emp_dagster.edge import partition_range_tags

TRAILING_MONTHS = 3


def month_key(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-01")


@dg.schedule(job=ingest_job, cron_schedule="30 18 * * 1-5", execution_timezone="America/New_York",
             description="After the US close: refresh the newest (month-to-date) partition.")
def daily_bars_ingest(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    when = context.scheduled_execution_time
    return dg.RunRequest(run_key=f"daily-{when:%Y-%m-%d}", partition_key=month_key(when),
                         tags={"emp/trigger": "daily"})


@dg.schedule(job=ingest_job, cron_schedule="0 6 * * 6", execution_timezone="America/New_York",
             description=f"Saturday: re-ingest the trailing {TRAILING_MONTHS} months in one run, "
                         "picking up late or corrected data.")
def weekly_trailing_backfill(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    when = context.scheduled_execution_time
    end = month_key(when)
    keys = BAR_PARTITIONS.get_partition_keys(current_time=when)
    start = keys[max(0, keys.index(end) - (TRAILING_MONTHS - 1))]
    return dg.RunRequest(
        run_key=f"trailing-{when:%Y-%m-%d}",
        tags={**partition_range_tags(start, end), "emp/trigger": "weekly-backfill"},
    )
