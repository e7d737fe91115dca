import tempfile

import dagster as dg

from emp_core.config import settings
from emp_core.errors import EmpError
from emp_core.store.failover import drill
from emp_dagster.defs.platform.assets import BACKUP_KEY, CATCH_UP_KEY, HEALTH_KEY

backup_job = dg.define_asset_job("platform_backup", selection=dg.AssetSelection.assets(BACKUP_KEY),
                                 description="Back up the institutional store and rehearse its restore.")
catch_up_job = dg.define_asset_job("failover_catch_up", selection=dg.AssetSelection.assets(CATCH_UP_KEY),
                                   description="Bring what was written during an outage back to PostgreSQL.")
health_job = dg.define_asset_job("platform_health", selection=dg.AssetSelection.assets(HEALTH_KEY),
                                 description="Measure the platform's health now.")


@dg.op(description="A failover rehearsal on a scratch database: an unreachable primary, ingest into the "
                   "fallback with the decision logged, catch-up, parity. Touches none of the platform's data.")
def failover_drill_op(context: dg.OpExecutionContext) -> dict:
    cfg = settings()
    with tempfile.TemporaryDirectory(prefix="emp-drill-") as work:
        result = drill(cfg.pg_url, work)
    context.log_event(dg.AssetObservation(asset_key=CATCH_UP_KEY, metadata={
        "drill_passed": result["passed"], "drill": dg.MetadataValue.json(result)}))
    if not result["passed"]:
        raise EmpError(f"failover drill failed: {result}")
    return result


@dg.job(description="Rehearse failover and catch-up on demand (a scratch database; no platform data touched).")
def failover_drill():
    failover_drill_op()
