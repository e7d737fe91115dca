"""What the platform writes to the audit trail, and where: every risk decision, compliance breach, order,
execution and KYC case transition becomes one entry of ``audit.log`` (``emp_core.compliance.audit_store``).

Kinds and payloads (canonical JSON; ``emp audit verify`` checks them, any SQL client reads them):

==========================  ====================================================================================
kind                        payload
==========================  ====================================================================================
``risk.decision``           run_id, idem_key, clordid, strategy, symbol, side, quantity, approved, the risk and
                            compliance policy versions, the failing checks and the decision's reason
``compliance.breach``       the breach record (``emp_core.compliance.trade.BREACH_SCHEMA``)
``order``                   clordid, idem_key, strategy, symbol, side, qty, session, run_id: written before the
                            outbox holds the order, once per ClOrdID
``execution``               the ExecutionReport as journaled (exec_id, order, status, quantities, prices, times)
``kyc.case_transition``     written by the KYC case book
==========================  ====================================================================================

**Where.** The log lives in the tier's primary store and nowhere else: on the institutional tier an entry is
never written to the failover DuckDB file (a second chain there would fork the trail), so a step that must
audit fails while PostgreSQL is down rather than audit somewhere else.

**Once.** Executions are appended once each (by session and ExecID, ``audited_exec_ids``), orders once per
ClOrdID and breaches once per breach id (``emp_core.compliance.trade.record_breaches``), read back from the
log, so a re-run adds only what is new. Decisions are events of the run that made them: a re-run that decides
again is audited again.

**First.** An order is audited before the outbox holds it, a breach or a resolution before its table row: the
log is the record, the tables its projection.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

import polars as pl

from emp_core.compliance import audit_store

# the kinds the platform writes; `emp audit append` refuses them, so an entry of these kinds was made by the
# platform's own step (a forged case transition or breach resolution cannot be appended from the command line)
PLATFORM_KINDS = ("risk.decision", "compliance.breach", "compliance.resolution", "order", "execution",
                  "kyc.case_transition")


def primary(store):
    """The store the audit trail is written to: the primary under any cache or failover wrapper."""
    seen = set()
    while id(store) not in seen:
        seen.add(id(store))
        if hasattr(store, "primary") and hasattr(store, "fallback"):  # FailoverStore
            store = store.primary
        elif type(store).__name__ == "CachedStore":
            store = store.store
    return store


def record(store, events: Iterable[tuple[str, object]]) -> list[int]:
    """Append ``events`` (kind, payload) to the audit trail of ``store``'s primary, as one group."""
    return audit_store.append(primary(store), events)


def _plain(value):
    if isinstance(value, float) and math.isnan(value):  # canonical JSON refuses NaN
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _rows(frame: pl.DataFrame) -> list[dict]:
    return [{k: _plain(v) for k, v in r.items()} for r in frame.iter_rows(named=True)]


def decision_events(decisions: pl.DataFrame) -> list[tuple[str, dict]]:
    """One ``risk.decision`` per order judged (decision rows, ``RUN_DECISION_SCHEMA``: the risk checks and any
    ``compliance/`` rules)."""
    from emp_core.execution.outbox import clordid_for

    events = []
    if decisions.is_empty():
        return events
    for (idem_key,), rows in decisions.group_by("idem_key", maintain_order=True):
        first = rows.row(0, named=True)
        versions = sorted(set(rows["policy_version"].to_list()))
        failed = rows.filter(pl.col("verdict") == "fail")
        events.append(("risk.decision", {
            "run_id": first["run_id"], "idem_key": idem_key, "clordid": clordid_for(idem_key),
            "strategy": first["strategy"], "symbol": first["symbol"], "side": first["side"],
            "quantity": first["quantity"], "approved": bool(first["approved"]), "policy_versions": versions,
            "failed": failed["check"].to_list(), "reasons": failed["reason"].to_list(),
            "checks": rows.height}))
    return events


def breach_events(breaches: pl.DataFrame) -> list[tuple[str, dict]]:
    return [("compliance.breach", r) for r in _rows(breaches)]


def order_events(orders: pl.DataFrame) -> list[tuple[str, dict]]:
    return [("order", r) for r in _rows(orders)]


def entries(store, *kinds: str) -> list[tuple[str, dict]]:
    """(kind, payload) of the log's entries of ``kinds``, in log order."""
    log = audit_store.read(primary(store))
    if log.is_empty():
        return []
    mine = log.filter(pl.col("kind").is_in(list(kinds))).sort("seq")
    return [(k, json.loads(p)) for k, p in mine.select("kind", "payload").iter_rows()]


def audited(store, kind: str, field: str) -> set:
    """The values of ``field`` in the payloads of the log's ``kind`` entries."""
    return {e.get(field) for _, e in entries(store, kind)} - {None}


def audited_exec_ids(store) -> set[str]:
    """The reports of the ``execution`` entries already in the log, as ``session|exec_id`` (an ExecID is unique
    within its FIX session, as the journal keys it)."""
    return {f"{e['session']}|{e['exec_id']}" for _, e in entries(store, "execution")}


def execution_events(journal: pl.DataFrame, already: set[str]) -> list[tuple[str, dict]]:
    """One ``execution`` per journaled report not in ``already`` (``session|exec_id``), in journal order."""
    if journal.is_empty():
        return []
    key = pl.concat_str("session", "exec_id", separator="|")
    new = journal.filter(~key.is_in(list(already))).sort("seq")
    return [("execution", r) for r in _rows(new.drop("seq"))]
