import datetime as dt

import dagster as dg

from emp_dagster.defs.market_data.jobs import ingest_job
from emp_dagster.defs.market_data.partitions import partition_key
from emp_dagster.edge import partition_range_tags

TRAILING_DAYS = 92  # the weekly re-ingest covers the partitions holding the last three months


@dg.schedule(job=ingest_job, cron_schedule="30 18 * * 1-5", execution_timezone="America/New_York",
             description="After the US close: refresh the newest (year-to-date) partition.")
def daily_bars_ingest(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    when = context.scheduled_execution_time
    return dg.RunRequest(run_key=f"daily-{when:%Y-%m-%d}", partition_key=partition_key(when),
                         tags={"emp/trigger": "daily"})


@dg.schedule(job=ingest_job, cron_schedule="0 6 * * 6", execution_timezone="America/New_York",
             description=f"Saturday: re-ingest the partitions holding the last {TRAILING_DAYS} days in one run, "
                         "picking up late or corrected data.")
def weekly_trailing_backfill(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    when = context.scheduled_execution_time
    start, end = partition_key(when - dt.timedelta(days=TRAILING_DAYS)), partition_key(when)
    return dg.RunRequest(
        run_key=f"trailing-{when:%Y-%m-%d}",
        tags={**partition_range_tags(start, end), "emp/trigger": "weekly-backfill"},
    )
