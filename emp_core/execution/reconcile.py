"""Reconciliation: the execution journal against the venue's drop copy.

The venue mirrors every ExecutionReport it sends on an order session to its drop-copy session.
:class:`DropCopyListener` is a FIX initiator on that session that records each mirrored report in the
outbox database's ``dropcopy`` journal (once per ExecID, like the execution journal). :func:`reconcile`
compares the two by ExecID:

- **missing**: a report the venue sent (in the drop copy) that the execution journal lacks;
- **extra**: a report in the journal the venue never sent;
- **mismatched**: the same ExecID with a different ClOrdID, Symbol, Side, OrdStatus, ExecType, LastQty, LastPx,
  CumQty or AvgPx (prices and quantities compared exactly: both sides parse the same decimal text).

Each finding is a row (kind, exec_id, clordid, field, journal value, drop-copy value); none means the
journal holds exactly what the venue reported. OrderCancelRejects are not mirrored by the drop copy and are
left out of the comparison.
"""

from __future__ import annotations

import polars as pl

from emp_core.execution.executor import fail_stop, journal_row
from emp_core.execution.fix import CancelReject, ExecReport, FixApplication, FixSession, parse
from emp_core.execution.outbox import Outbox

COMPARED = ("clordid", "symbol", "side", "ord_status", "exec_type", "last_qty", "last_px", "cum_qty", "avg_px")
FINDINGS_SCHEMA = {"kind": pl.String, "exec_id": pl.String, "clordid": pl.String, "field": pl.String,
                   "journal": pl.String, "dropcopy": pl.String}


class _DropCopyApp(FixApplication):
    def __init__(self, listener: DropCopyListener) -> None:
        super().__init__()
        self.listener = listener

    def from_app(self, message, session_id):
        parsed = parse(message)
        if isinstance(parsed, ExecReport | CancelReject):
            try:
                self.listener.outbox.record([journal_row(parsed, self.listener.session_name)], into="dropcopy")
            except Exception as exc:  # as the executor: never acknowledge a report that was not recorded
                self.listener.on_journal_failure(exc)
                raise


class DropCopyListener:
    """A FIX initiator on the venue's drop-copy session, recording every mirrored report (module docstring)."""

    def __init__(self, settings, outbox: Outbox, *, on_journal_failure=None) -> None:
        self.outbox = outbox
        self.on_journal_failure = on_journal_failure or fail_stop  # the executor's fail-stop (its docstring)
        self.fix = FixSession(settings, _DropCopyApp(self), role="initiator")
        config = self.fix.settings.sessions[0]
        self.session_name = f"{config.sender}->{config.target}"

    def start(self) -> DropCopyListener:
        self.fix.start()
        return self

    def stop(self) -> None:
        self.fix.stop()

    def __enter__(self) -> DropCopyListener:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def reconcile(outbox: Outbox) -> pl.DataFrame:
    """Findings of the journal against the drop copy (module docstring); empty when they agree."""
    cols = ["exec_id", *COMPARED]
    journal = outbox.journal().filter(pl.col("msg_type") == "8").select(cols)
    copy = outbox.journal("dropcopy").filter(pl.col("msg_type") == "8").select(cols)
    rows = []
    for exec_id, clordid in copy.join(journal, on="exec_id", how="anti").select("exec_id", "clordid").rows():
        rows.append(("missing", exec_id, clordid, None, None, None))
    for exec_id, clordid in journal.join(copy, on="exec_id", how="anti").select("exec_id", "clordid").rows():
        rows.append(("extra", exec_id, clordid, None, None, None))
    both = journal.join(copy, on="exec_id", suffix="_copy")
    for row in both.iter_rows(named=True):
        for name in COMPARED:
            if row[name] != row[f"{name}_copy"]:
                rows.append(("mismatched", row["exec_id"], row["clordid"], name, str(row[name]),
                             str(row[f"{name}_copy"])))
    return pl.DataFrame(rows, schema=FINDINGS_SCHEMA, orient="row")
