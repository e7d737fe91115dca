import dagster as dg

from emp_dagster.defs.evolution.jobs import evolution_job

weekly_evolution = dg.ScheduleDefinition(
    job=evolution_job, cron_schedule="0 8 * * 0", execution_timezone="America/New_York",
    description="Sunday morning: evolve on the week's data; the promotion gate decides whether a champion is named.")
