"""The trading path's readiness gates, as domain outcomes (the Dagster assets make them blocking checks).

- ``signals_fresh``: the intents were planned on current signals. Fails when a symbol has a bar on the day
  traded on but no fused signal there (its sensory features lag its bars: it would trade on old
  information), when the store
  holds bars after the signals and no earlier bar was asked for (the sensory assets have not caught up), or,
  on a live session, when the bar traded on is more than ``max_age_days`` old. A paper session may replay
  an earlier bar on purpose (``as_of``): its age is reported, not judged (a live session's ``as_of`` is
  judged like any other). It also fails when no symbol has a bar and a signal at ``as_of``. A symbol with
  no bar on the day (its history ended earlier) is not traded and is named, without failing.
- ``strategy_ready``: a promoted champion, or a strategy the policy lets trade on this session (the
  paper-only catalogue genome on a paper session); a live session without a promoted champion fails.
- ``risk_ready``: the book the policy judged is sound: the execution journal reconciles with the venue's
  drop copy (no missing, extra or mismatched report), equity is positive, and every intent with an order got
  exactly one decision (none dropped, none judged twice).
- ``compliance_clear``: no post-trade compliance breach is open (found on a fill, not yet resolved by a
  compliance officer), and the compliance report has judged every fill in the journal.
- ``journal_reconciled``: the reconciliation asset's gate: no finding between journal and drop copy. A
  journal with reports and an empty drop copy fails (every report is "extra"): the drop-copy listener is not
  running. Both empty is agreement on nothing, and says so.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from emp_core.market_data.quality import CheckOutcome


def signals_fresh(stale: dict[str, datetime], as_of: datetime, latest_bar: datetime | None, *,
                  replay: bool, session: str, now: datetime, max_age_days: float,
                  not_trading: dict[str, datetime] | None = None, tradable: int | None = None) -> CheckOutcome:
    name = "signals_fresh"
    not_trading = not_trading or {}
    age = (now - as_of).total_seconds() / 86400
    figures = {"as_of": str(as_of), "latest_bar": str(latest_bar), "stale_symbols": len(stale),
               "symbols_without_a_bar": len(not_trading), "age_days": round(age, 2), "replay": replay}
    problems = []
    if stale:
        shown = ", ".join(f"{s} (last signal {str(t)[:10]})" for s, t in sorted(stale.items())[:10])
        problems.append(f"{len(stale)} symbol(s) have no signal at {str(as_of)[:10]}: {shown}")
    if latest_bar is not None and latest_bar > as_of and not replay:
        problems.append(f"the store holds bars up to {str(latest_bar)[:10]} but signals only to "
                        f"{str(as_of)[:10]}: materialise the sensory assets first")
    if session == "live" and age > max_age_days:
        problems.append(f"the bar traded on, {str(as_of)[:10]}, is {age:.1f} days old (a live session allows "
                        f"{max_age_days:g})")
    if tradable == 0:
        problems.append(f"no symbol has both a bar and a signal at {as_of} (not a bar time?): nothing to plan")
    if problems:
        return CheckOutcome(name, False, "; ".join(problems), figures)
    what = f"replaying {str(as_of)[:10]} on a paper session" if replay else f"signals current to {str(as_of)[:10]}"
    gone = ("; not traded, no bar on that day: " + ", ".join(f"{s} (last bar {str(t)[:10]})" for s, t in
                                                             sorted(not_trading.items()))) if not_trading else ""
    return CheckOutcome(name, True, f"{what}; every symbol with a bar on that day has a signal{gone}", figures)


def strategy_ready(name: str, promoted: bool, ready: bool, source: str, readiness: str) -> CheckOutcome:
    figures = {"strategy": name, "promoted_champion": promoted}
    return CheckOutcome("strategy_ready", ready, f"{source}. {readiness}", figures)


def risk_ready(findings: pl.DataFrame, *, equity: float, orders: int, judged: int) -> CheckOutcome:
    figures = {"reconciliation_findings": findings.height, "equity": round(equity, 2), "intents_with_orders": orders,
               "intents_judged": judged}
    problems = []
    if findings.height:
        kinds = findings.group_by("kind").len().sort("kind").rows()
        problems.append("the execution journal does not reconcile with the drop copy ("
                        + ", ".join(f"{n} {k}" for k, n in kinds) + "): see trading/reconciliation")
    if equity <= 0:
        problems.append(f"equity is {equity:,.2f}: nothing that adds risk may trade")
    if judged != orders:
        problems.append(f"{orders} intent(s) with an order but {judged} decision(s)")
    if problems:
        return CheckOutcome("risk_ready", False, "; ".join(problems), figures)
    return CheckOutcome("risk_ready", True, f"journal reconciled, equity {equity:,.2f}, {judged} intent(s) judged "
                        "once each", figures)


def journal_reconciled(findings: pl.DataFrame, *, journal_reports: int, dropcopy_reports: int) -> CheckOutcome:
    figures = {"findings": findings.height, "journal_reports": journal_reports, "dropcopy_reports": dropcopy_reports}
    if findings.height:
        kinds = findings.group_by("kind").len().sort("kind").rows()
        hint = " (the drop copy is empty: is the drop-copy listener running?)" if not dropcopy_reports else ""
        return CheckOutcome("journal_reconciled", False, ", ".join(f"{n} {k}" for k, n in kinds)
                            + f" report(s) between the journal and the drop copy{hint}", figures)
    if not journal_reports:
        return CheckOutcome("journal_reconciled", True, "no execution reports yet in the journal or the drop copy",
                            figures)
    return CheckOutcome("journal_reconciled", True, f"all {journal_reports} execution reports match the drop copy",
                        figures)


def compliance_clear(open_breaches: pl.DataFrame, unjudged: list[str] | None = None) -> CheckOutcome:
    """No post-trade compliance breach is open (found on a fill and not yet resolved by a compliance officer:
    ``emp compliance resolve``), and every fill in the journal has been judged (``unjudged``: the ExecIDs the
    compliance report has not seen): until both hold, nothing new may trade."""
    unjudged = unjudged or []
    figures = {"open_breaches": open_breaches.height, "unjudged_fills": len(unjudged)}
    problems = []
    if open_breaches.height:
        shown = "; ".join(f"{r['breach_id']} {r['rule']} on {r['symbol']} ({r['exec_id']})"
                          for r in open_breaches.head(5).iter_rows(named=True))
        problems.append(f"{open_breaches.height} open post-trade compliance breach(es): {shown}; review each and "
                        "resolve it with `emp compliance resolve BREACH_ID --by NAME --reason TEXT`")
    if unjudged:
        problems.append(f"{len(unjudged)} fill(s) not yet judged on the compliance rules ({', '.join(unjudged[:5])}"
                        f"{', ...' if len(unjudged) > 5 else ''}): materialise compliance/compliance_report")
    if problems:
        return CheckOutcome("compliance_clear", False, "; ".join(problems), figures)
    return CheckOutcome("compliance_clear", True, "no open post-trade compliance breach; every fill judged",
                        figures)
