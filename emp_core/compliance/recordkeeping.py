"""Dodd-Frank recordkeeping: per trade, the full, complete and systematic record the CFTC's rules ask for
(17 CFR 1.31 on keeping records readily accessible; 23.202 on a swap dealer's daily trading records: the orders,
their execution, the pre-execution communications, each with its time), and a check that nothing is missing.

**One record per order** (:func:`trade_records`, :data:`RECORD_SCHEMA`), keyed by its ClOrdID:

- the order as approved: idem_key, strategy, symbol, side, quantity, type, limit, session, policy version, the
  time it entered the outbox (``order_received_at``: the approval) and the time the executor handed it to its
  FIX session (``order_sent_at``);
- the pre-trade communications: the risk decision that approved it (``trading.risk_decisions`` rows with its
  idem_key, or the decision JSON the outbox keeps with the order): how many checks, whether it approved, under
  which policy; and the FIX identifiers: the ClOrdID, the FIX session(s), the venue's OrderID(s), the ClOrdIDs
  of cancel requests;
- the executions: every ExecutionReport and OrderCancelReject journaled for it (their ExecIDs, in order), the
  fills (count, quantity, average price), the venue's times of the first and last fill (TransactTime), the
  times we received the first and last report, and the last OrdStatus.

Times are UTC text with microseconds and a ``Z`` (``emp_core.compliance.mifid.utc_text``). A journal report for
an order the outbox does not hold gets a record too (``in_outbox`` false), so a fill with no order shows.

**Completeness** (:func:`completeness`): a finding per trade and missing record: no order on file, no time the
order was received, an order sent with no send time or with reports but never marked sent, sent with no
execution report after ``grace``, a fill with no execution time, fills beyond the order's quantity, no risk
decision on file, a decision that did not approve. **Retrieval**: :func:`trade_record` (one trade, with its
journal reports when given the journal).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import polars as pl

from emp_core.clock import utcnow
from emp_core.compliance.mifid import parse_time, utc_text
from emp_core.errors import EmpError

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "clordid": pl.String(), "in_outbox": pl.Boolean(), "idem_key": pl.String(), "strategy": pl.String(),
    "symbol": pl.String(), "side": pl.String(), "qty": pl.Float64(), "ord_type": pl.String(),
    "limit_price": pl.Float64(), "session": pl.String(), "policy_version": pl.String(), "state": pl.String(),
    "order_received_at": pl.String(), "order_sent_at": pl.String(),
    "decision_checks": pl.Int64(), "decision_approved": pl.Boolean(), "decision_policy_version": pl.String(),
    "fix_sessions": pl.String(), "venue_order_ids": pl.String(), "exec_ids": pl.String(),
    "cancel_clordids": pl.String(),
    "execution_reports": pl.Int64(), "fills": pl.Int64(), "fills_without_time": pl.Int64(),
    "filled_qty": pl.Float64(), "avg_fill_px": pl.Float64(), "first_fill_at": pl.String(),
    "last_fill_at": pl.String(), "first_report_received_at": pl.String(), "last_report_received_at": pl.String(),
    "last_ord_status": pl.String(),
}
FINDING_SCHEMA = {"clordid": pl.String(), "symbol": pl.String(), "record": pl.String(), "problem": pl.String()}
_JOURNAL_NEEDS = ("seq", "session", "exec_id", "order_id", "clordid", "msg_type", "exec_type", "ord_status",
                  "last_qty", "last_px", "transact_time", "received_at")
_ORDER_NEEDS = ("clordid", "idem_key", "created_at", "strategy", "symbol", "side", "qty", "ord_type",
                "limit_price", "session", "policy_version", "state", "sent_at")


class RecordkeepingError(EmpError):
    """Trade records that cannot be built or retrieved; the message names the input and the problem."""


def _require(frame: pl.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RecordkeepingError(f"{what}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")


def _time(value, what: str) -> str | None:
    try:
        return utc_text(value, what=what)
    except EmpError as exc:
        raise RecordkeepingError(str(exc)) from None


def trade_records(journal: pl.DataFrame, orders: pl.DataFrame, decisions: pl.DataFrame | None = None
                  ) -> pl.DataFrame:
    """One record per order (:data:`RECORD_SCHEMA`; module docstring), in outbox order, then the journal's
    orders the outbox does not hold. ``journal``: ``Outbox.journal()``; ``orders``: ``Outbox.entries()``
    (a ``decision`` column, the JSON the outbox keeps, is used when ``decisions`` is None); ``decisions``: the
    risk decisions (``trading.risk_decisions``: idem_key, approved, policy_version, one row per check)."""
    _require(journal, _JOURNAL_NEEDS, "execution journal")
    _require(orders, _ORDER_NEEDS, "outbox orders")
    if decisions is not None:
        _require(decisions, ("idem_key", "approved"), "risk decisions")
    key = pl.coalesce(pl.col("order_clordid"), pl.col("clordid")) if "order_clordid" in journal.columns \
        else pl.col("clordid")
    reports: dict[str, list[dict]] = {}
    for r in journal.with_columns(key.alias("_order")).sort("seq").iter_rows(named=True):
        reports.setdefault(r["_order"], []).append(r)
    verdicts = _decisions(decisions) if decisions is not None else None
    rows = []
    for o in orders.iter_rows(named=True):
        decision = (verdicts.get(o["idem_key"], (0, None, None)) if verdicts is not None
                    else _outbox_decision(o.get("decision")))
        rows.append(_record(o["clordid"], o, decision, reports.pop(o["clordid"], [])))
    for clordid, mine in reports.items():  # reports of an order the outbox does not hold
        symbol = next((r.get("symbol") for r in mine if r.get("symbol")), None)
        rows.append(_record(clordid, {"symbol": symbol}, (None, None, None), mine, in_outbox=False))
    return pl.DataFrame(rows, schema=RECORD_SCHEMA)


def _decisions(decisions: pl.DataFrame) -> dict[str, tuple[int, bool, str | None]]:
    out = {}
    version = "policy_version" in decisions.columns
    for key, group in decisions.group_by("idem_key", maintain_order=True):
        out[key[0]] = (group.height, bool(group["approved"].all()),
                       group["policy_version"][0] if version else None)
    return out


def _outbox_decision(text) -> tuple[int | None, bool | None, str | None]:
    """(checks, approved, policy version) from the outbox's decision JSON (``Decision.as_rows()``)."""
    if text is None:
        return None, None, None
    try:
        rows = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        raise RecordkeepingError(f"outbox decision {str(text)[:40]!r}...: not JSON") from None
    if not rows:
        return 0, None, None
    return len(rows), all(bool(r.get("approved")) for r in rows), rows[0].get("policy_version")


def _record(clordid: str, o: Mapping, decision: tuple, mine: list[dict], *, in_outbox: bool = True) -> dict:
    where = f"order {clordid}"
    fills = [r for r in mine if r["msg_type"] == "8" and r["exec_type"] == "F" and (r["last_qty"] or 0) > 0]
    qty = sum(float(r["last_qty"]) for r in fills)
    fill_times = [_time(r["transact_time"], f"{where}: fill {r['exec_id']} transact_time") for r in fills]
    received = [_time(r["received_at"], f"{where}: report {r['exec_id']} received_at") for r in mine]
    timed = sorted(t for t in fill_times if t)
    received_sorted = sorted(t for t in received if t)
    ers = [r for r in mine if r["msg_type"] == "8"]

    def joined(values) -> str | None:
        seen = list(dict.fromkeys(str(v) for v in values if v not in (None, "", "NONE")))
        return ";".join(seen) if seen else None

    return {
        "clordid": clordid, "in_outbox": in_outbox, "idem_key": o.get("idem_key"), "strategy": o.get("strategy"),
        "symbol": o.get("symbol"), "side": o.get("side"), "qty": None if o.get("qty") is None else float(o["qty"]),
        "ord_type": o.get("ord_type"),
        "limit_price": None if o.get("limit_price") is None else float(o["limit_price"]),
        "session": o.get("session"), "policy_version": o.get("policy_version"), "state": o.get("state"),
        "order_received_at": _time(o.get("created_at"), f"{where}: created_at"),
        "order_sent_at": _time(o.get("sent_at"), f"{where}: sent_at"),
        "decision_checks": decision[0], "decision_approved": decision[1], "decision_policy_version": decision[2],
        "fix_sessions": joined(r["session"] for r in mine), "venue_order_ids": joined(r["order_id"] for r in mine),
        "exec_ids": joined(r["exec_id"] for r in mine),
        "cancel_clordids": joined(r["clordid"] for r in mine if r["clordid"] != clordid),
        "execution_reports": len(ers), "fills": len(fills), "fills_without_time": sum(t is None for t in fill_times),
        "filled_qty": qty, "avg_fill_px": (sum(float(r["last_qty"]) * float(r["last_px"]) for r in fills) / qty
                                           if qty else None),
        "first_fill_at": timed[0] if timed else None, "last_fill_at": timed[-1] if timed else None,
        "first_report_received_at": received_sorted[0] if received_sorted else None,
        "last_report_received_at": received_sorted[-1] if received_sorted else None,
        "last_ord_status": ers[-1]["ord_status"] if ers else None,
    }


def completeness(records: pl.DataFrame, *, as_of: datetime | None = None,
                 grace: timedelta = timedelta(minutes=5)) -> tuple[bool, pl.DataFrame]:
    """(whether every trade's record is complete, the findings: one row per trade and missing record,
    :data:`FINDING_SCHEMA`). An order sent less than ``grace`` before ``as_of`` (default now, UTC) may still wait
    for its first execution report; after that, no report is a finding."""
    _require(records, RECORD_SCHEMA, "trade records")
    now = parse_time(as_of) if as_of is not None else utcnow().replace(tzinfo=UTC)
    out: list[dict] = []
    for r in records.iter_rows(named=True):
        def finding(record: str, problem: str, r=r) -> None:
            out.append({"clordid": r["clordid"], "symbol": r["symbol"], "record": record, "problem": problem})

        if not r["in_outbox"]:
            finding("order", f"the journal holds {r['execution_reports']} execution report(s) "
                             f"({r['exec_ids']}) for an order the outbox does not hold")
            continue
        if r["order_received_at"] is None:
            finding("order", "no time the order was received (created_at)")
        if r["state"] == "sent" and r["order_sent_at"] is None:
            finding("order", "marked sent with no send time (sent_at)")
        if r["state"] != "sent" and r["execution_reports"]:
            finding("order", f"{r['execution_reports']} execution report(s) for an order never marked sent")
        if r["state"] == "sent" and not r["execution_reports"]:
            sent = parse_time(r["order_sent_at"])
            if sent is None or now - sent > grace:
                finding("execution", f"sent at {r['order_sent_at']} and no execution report journaled by "
                                     f"{now.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}")
        if r["fills_without_time"]:
            finding("execution", f"{r['fills_without_time']} fill(s) without the venue's execution time "
                                 "(TransactTime)")
        if r["qty"] is not None and r["filled_qty"] > r["qty"] + 1e-9:
            finding("execution", f"fills of {r['filled_qty']:g} exceed the order quantity {r['qty']:g}")
        if not r["decision_checks"]:
            finding("decision", f"no risk decision on file for idem_key {r['idem_key']!r}")
        elif r["decision_approved"] is False:
            finding("decision", "the risk decision on file did not approve the order")
    found = pl.DataFrame(out, schema=FINDING_SCHEMA)
    return found.is_empty(), found


def trade_record(records: pl.DataFrame, clordid: str, journal: pl.DataFrame | None = None) -> dict:
    """The record of the trade ``clordid`` as a dict; with ``journal``, its reports too (``reports``: the
    journal rows of that order, in the order received). Raises :class:`RecordkeepingError` if there is none."""
    _require(records, ("clordid",), "trade records")
    found = records.filter(pl.col("clordid") == clordid)
    if found.is_empty():
        raise RecordkeepingError(f"no trade record for ClOrdID {clordid!r} ({records.height} records held)")
    record = found.row(0, named=True)
    if journal is not None:
        _require(journal, ("seq", "clordid"), "execution journal")
        key = pl.coalesce(pl.col("order_clordid"), pl.col("clordid")) if "order_clordid" in journal.columns \
            else pl.col("clordid")
        record["reports"] = journal.filter(key == clordid).sort("seq").to_dicts()
    return record


def summary_markdown(records: pl.DataFrame, findings: pl.DataFrame, *, first: int = 5) -> str:
    """Markdown for a materialisation: counts (trades, sent, filled, orphans), the findings (the first 20) and the
    first ``first`` records' main fields."""
    orphans = records.filter(~pl.col("in_outbox")).height if records.height else 0
    filled = records.filter(pl.col("fills") > 0).height if records.height else 0
    sent = records.filter(pl.col("state") == "sent").height if records.height else 0
    lines = [f"**{records.height}** trade record{'s' if records.height != 1 else ''}: {sent} sent, {filled} "
             f"with fills, {orphans} without an order on file; "
             + (f"**{findings.height} missing record{'s' if findings.height != 1 else ''}** in "
                f"{findings['clordid'].n_unique()} trade(s)" if findings.height else "complete"), ""]
    if findings.height:
        lines += ["| clordid | symbol | record | problem |", "|---|---|---|---|"]
        lines += [f"| {f['clordid']} | {f['symbol'] or ''} | {f['record']} | {_md(f['problem'])} |"
                  for f in findings.head(20).iter_rows(named=True)]
        lines.append("")
    if records.height:
        cols = ("clordid", "strategy", "symbol", "side", "qty", "order_received_at", "order_sent_at",
                "execution_reports", "filled_qty", "last_fill_at", "last_ord_status")
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_md(v) for v in r) + " |" for r in records.select(cols).head(first).iter_rows()]
    return "\n".join(lines)


def _md(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|").replace("\n", " ")

