import dagster as dg

from emp_core.clock import utcnow
from emp_core.config import settings
from emp_core.market_data.ingest import DATASETS
from emp_core.market_data.landing import pending, years_spanned
from emp_dagster.defs.market_data.assets import BAR_KEYS
from emp_dagster.defs.market_data.jobs import ingest_job
from emp_dagster.edge import partition_range_tags


@dg.sensor(job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Bar files dropped into $EMP_HOME/landing/<dataset>/ (CSV or Parquet): one ingest run per "
                       "file over the years it spans; the run moves it to processed/ or rejected/ (with the reason).")
def landing_files(context: dg.SensorEvaluationContext):
    home = settings().home
    found = 0
    for name in DATASETS:
        for f in pending(home, name):
            found += 1
            years = years_spanned(f.path, name) or (utcnow().year,) * 2  # unusable: its run rejects it, with why
            first, last = f"{years[0]:04d}", f"{years[1]:04d}"
            op = BAR_KEYS[name].to_python_identifier()
            tags = {"emp/trigger": "landing", "emp/landing_file": f.path.name}
            range_or_key = {"tags": {**tags, **partition_range_tags(first, last)}} if first != last else {
                "tags": tags, "partition_key": first}
            yield dg.RunRequest(run_key=f.run_key, asset_selection=[BAR_KEYS[name]],
                                run_config={"ops": {op: {"config": {"landing_file": str(f.path)}}}}, **range_or_key)
    if not found:
        yield dg.SkipReason(f"no files waiting in {home / 'landing'}/<dataset>/")
