import dagster as dg

from emp_dagster.defs.platform.jobs import backup_job, health_job

nightly_backup = dg.ScheduleDefinition(
    name="nightly_backup",
    job=backup_job, cron_schedule="30 2 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly: back up the institutional store and rehearse its restore (keeps the newest 7).")

health_every_15_minutes = dg.ScheduleDefinition(
    name="health_every_15_minutes",
    job=health_job, cron_schedule="*/15 * * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every 15 minutes: measure freshness, rows, symbols, cache, stream lag and backup age.")
