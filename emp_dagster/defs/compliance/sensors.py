"""After the trading journal: when ``trading/executions`` is materialised (by the execution-journal sensor's
runs, or by hand), run the compliance reports on what was traded, so every fill is judged before the next
trading plan (its ``compliance_clear`` gate fails while a fill is unjudged)."""

import dagster as dg

from emp_dagster.defs.compliance.jobs import compliance_reports_job
from emp_dagster.defs.trading.assets import KEYS as TRADING_KEYS


@dg.asset_sensor(asset_key=TRADING_KEYS["executions"], job=compliance_reports_job, minimum_interval_seconds=30,
                 default_status=dg.DefaultSensorStatus.STOPPED,
                 description="Runs the compliance reports (post-trade rules, transaction reports, trade records, "
                             "ROI, audit verification) after each materialisation of trading/executions.")
def compliance_after_journal(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    return dg.RunRequest(run_key=f"compliance-{asset_event.run_id}")
