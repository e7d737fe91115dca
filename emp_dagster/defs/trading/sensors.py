"""The execution-journal sensor: when the executor has journaled new reports, materialise executions,
positions, PnL, VaR and the reconciliation."""

import dagster as dg

from emp_core.execution.outbox import open_outbox
from emp_dagster.defs.trading.jobs import trading_journal_job


def journal_mark(outbox) -> str:
    """The journal's and the drop copy's sizes: a new report in either changes it."""
    return f"{outbox.journal_size()}-{outbox.journal_size('dropcopy')}"


@dg.sensor(job=trading_journal_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Watches the execution journal (and the drop copy): new reports since the last run "
                       "materialise executions, positions, PnL, VaR and the reconciliation.")
def execution_journal(context: dg.SensorEvaluationContext):
    box = open_outbox()
    mark = journal_mark(box)
    if mark == context.cursor:
        return dg.SkipReason(f"no new report since the last run ({box.journal_size()} in the journal)")
    context.update_cursor(mark)
    return dg.RunRequest(run_key=f"journal-{mark}")
