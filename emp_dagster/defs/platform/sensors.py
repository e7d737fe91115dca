import dagster as dg

from emp_core.config import settings
from emp_core.store import DuckDBStore
from emp_core.store.failover import pending
from emp_core.store.postgres_store import PostgresStore
from emp_dagster.defs.market_data.jobs import ingest_job
from emp_dagster.defs.market_data.partitions import BAR_PARTITIONS
from emp_dagster.defs.platform.jobs import catch_up_job
from emp_dagster.edge import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, partition_range_tags

MAX_RETRIES = 2


@dg.run_failure_sensor(monitored_jobs=[ingest_job], request_job=ingest_job,
                       default_status=dg.DefaultSensorStatus.STOPPED,
                       description=f"An ingest run failed: run its partitions again, with one more year of look-back "
                                   f"(late or corrected data before the window), at most {MAX_RETRIES} times.")
def ingest_retry(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    attempt = int(run.tags.get("emp/retry", "0")) + 1
    if attempt > MAX_RETRIES:
        return dg.SkipReason(f"run {run.run_id} was retry {attempt - 1}; not retrying again")
    first = run.tags.get(PARTITION_RANGE_START_TAG) or run.tags.get("dagster/partition")
    last = run.tags.get(PARTITION_RANGE_END_TAG) or first
    if not first:
        return dg.SkipReason(f"run {run.run_id} names no partition")
    keys = BAR_PARTITIONS.get_partition_keys()
    earlier = keys[max(keys.index(first) - 1, 0)] if first in keys else first  # not before the first partition
    return dg.RunRequest(run_key=f"retry-{run.run_id}", run_config=run.run_config,
                         tags={**partition_range_tags(earlier, last), "emp/retry": str(attempt),
                               "emp/retry_of": run.run_id, "emp/trigger": "retry"})


CATCH_UP_ATTEMPTS = 5


def catch_up_key(todo) -> str:
    """The run key of a catch-up of these pending writes (the same writes: the same key)."""
    seqs = [str(s) for s in todo["seq"].to_list()]
    return f"catch-up-{todo['decided_at'].max():%Y%m%dT%H%M%S%f}-{len(seqs)}-{seqs[0] if seqs else ''}-{seqs[-1]}"


@dg.sensor(job=catch_up_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="After an outage: once PostgreSQL answers and the failover log holds writes not caught up, "
                       f"run the catch-up (and its parity check); a catch-up run that failed (PostgreSQL went away "
                       f"again) is run again, at most {CATCH_UP_ATTEMPTS} times. A conflict waits for the operator.")
def failover_recovery(context: dg.SensorEvaluationContext):
    cfg = settings()
    path = cfg.home / "failover.duckdb"
    if cfg.tier != "institutional" or not path.exists():
        return dg.SkipReason("no failover log here")
    todo = pending(DuckDBStore(path))
    if not todo.height:
        return dg.SkipReason("nothing to catch up")
    primary = PostgresStore(cfg.pg_url)
    up = primary.exists()
    primary.dispose()
    if not up:
        return dg.SkipReason(f"{todo.height} write(s) wait; PostgreSQL is still unreachable")
    base = catch_up_key(todo)
    for attempt in range(CATCH_UP_ATTEMPTS):
        key = base if attempt == 0 else f"{base}-retry{attempt}"
        runs = context.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": key}), limit=1)
        if not runs:
            return dg.RunRequest(run_key=key)
        ran = runs[0].status == dg.DagsterRunStatus.FAILURE and context.instance.all_logs(
            runs[0].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)  # failed its check, not its step
        ended = runs[0].status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
        if not ended or ran:  # queued, running, or done: its check says the rest
            return dg.SkipReason(f"the catch-up of these {todo.height} write(s) ran ({runs[0].run_id}, "
                                 f"{runs[0].status.value}); what it left pending waits for a decision")
    return dg.SkipReason(f"the catch-up of these {todo.height} write(s) failed {CATCH_UP_ATTEMPTS} times; "
                         "see those runs, then run `emp db catch-up`")
