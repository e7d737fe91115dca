"""Compliance as assets. ``compliance/audit_verification``: the whole audit trail verified where it is stored,
against the head the previous verification saw (kept in this asset's metadata, outside the log); its check
``audit_chain_intact`` is blocking, and the trading plan waits on it, so an altered audit trail stops the next
trading run.

Compliance on what the execution journal says was traded: the post-trade compliance report, the MiFIR
transaction reports, the Dodd-Frank trade records and the ROI report. Each is materialised after the trading
journal (``compliance_reports`` job; ``emp demo`` runs it after its paper session) and carries a Markdown
report in its metadata. The work is emp_core's (``emp_core.compliance``); these are thin wrappers.

Blocking checks: ``post_trade_clean`` (a breach recorded here also stops the next trading plan, through the
intents' ``compliance_clear`` gate, until a compliance officer resolves it: ``emp compliance resolve``),
``transaction_reports_valid`` and ``trade_records_complete``.
"""


from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from emp_core.clock import utcnow
from emp_core.compliance import audit_store, mifid, recordkeeping
from emp_core.compliance.roi import load_costs, pnl_chart, roi, summary_markdown
from emp_core.compliance.trade import (
    BREACHES,
    CHECKS_TABLE,
    DEFAULT_COMPLIANCE_POLICY,
    RESOLUTIONS,
    fills_for_rules,
    load_compliance_policy,
    open_breaches,
    post_trade,
    record_breaches,
    summary,
)
from emp_core.compliance.witness import next_witness, witness_from
from emp_core.config import settings
from emp_core.errors import EmpError
from emp_core.execution.outbox import open_outbox
from emp_core.trading.book import PAPER_CAPITAL, read_market
from emp_dagster.defs.market_data.resources import StoreResource, store_kind
from emp_dagster.defs.trading.assets import AUDIT_VERIFICATION
from emp_dagster.defs.trading.assets import KEYS as TRADING_KEYS
from emp_dagster.defs.trading.assets import TABLES as TRADING_TABLES

GROUP = "compliance"
KEYS = {"audit_verification": AUDIT_VERIFICATION}
AUDIT_CHAIN_INTACT = "audit_chain_intact"


def _previous_witness(context: dg.AssetExecutionContext) -> tuple[int, str] | None:
    event = context.instance.get_latest_materialization_event(KEYS["audit_verification"])
    if event is None or event.asset_materialization is None:
        return None
    return witness_from({k: v.value for k, v in event.asset_materialization.metadata.items()})


@dg.asset(key=KEYS["audit_verification"], group_name=GROUP, kinds={store_kind()},
          description="The audit trail (audit.log) verified end to end: every entry's hash recomputed, every "
                      "link and number checked, and the head the previous verification saw still there.",
          check_specs=[dg.AssetCheckSpec(AUDIT_CHAIN_INTACT, asset=KEYS["audit_verification"], blocking=True,
                                         description="No entry of the audit trail was edited, deleted, inserted "
                                                     "or reordered, and its end was not cut off.")])
def audit_verification(context: dg.AssetExecutionContext, store: StoreResource):
    witness = _previous_witness(context)
    result = audit_store.verify(store.store(), witness=witness)
    kept = next_witness(result, witness)
    figures = {"entries": result.entries, "head_seq": result.head_seq, "head_hash": result.head_hash,
               "bad_seq": result.bad_seq, "problem": result.problem,
               "checked_against": f"{witness[0]}:{witness[1]}" if witness else "no earlier verification"}
    metadata = {"table": audit_store.TABLE, "dagster/row_count": result.entries,
                **{k: v for k, v in figures.items() if v is not None},
                **({"witness_seq": kept[0], "witness_hash": kept[1]} if kept else {})}
    description = (f"{result.entries} entries intact; head {result.head_seq}" if result.ok
                   else f"NOT INTACT: {result.problem}")
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[dg.AssetCheckResult(check_name=AUDIT_CHAIN_INTACT, passed=result.ok,
                                           description=description,
                                           metadata={k: v for k, v in figures.items() if v is not None})])


NAMES = ("compliance_report", "transaction_reports", "trade_records", "roi_report")
KYC = dg.AssetKey(["compliance", "kyc_case_book"])
KYC_MATCHES_AUDIT, KYC_PENDING = "kyc_cases_match_audit", "kyc_decisions_pending"
REPORT_KEYS = {name: dg.AssetKey(["compliance", name]) for name in NAMES}
KEYS |= REPORT_KEYS | {"kyc_case_book": KYC}
TABLES = {"checks": CHECKS_TABLE, "transaction_reports": "compliance.transaction_reports",
          "not_reported": "compliance.not_reported", "trade_records": "compliance.trade_records",
          "roi_fills": "compliance.roi_fills", "roi_strategies": "compliance.roi_strategies"}
POST_TRADE_CLEAN, REPORTS_VALID, RECORDS_COMPLETE, ROI_RECONCILED = (
    "post_trade_clean", "transaction_reports_valid", "trade_records_complete", "roi_reconciled")


class ComplianceConfig(dg.Config):
    compliance_policy: str = ""  # trade compliance rules; empty: policies/compliance-v1.yaml
    cost_model: str = ""  # ROI cost model; empty: policies/costs-v1.yaml
    capital: float = PAPER_CAPITAL  # the paper account's starting capital
    roi_end: str = ""  # the ROI report's end (ISO time, UTC); empty: the last fill (so a re-run gives the same)
    mark_as_of: str = ""  # held positions marked at the last close at or before this (ISO); empty: the latest bar
    session: str = "paper"  # the ROI of this kind's orders (paper and live are separate books, as trading/pnl's)


def _reference_prices(db, entries: pl.DataFrame) -> pl.DataFrame:
    """clordid -> the reference price (the last close when the order was decided) and the session kind of each
    outbox order."""
    schema = {"clordid": pl.String, "idem_key": pl.String, "session": pl.String, "reference_price": pl.Float64}
    if entries.is_empty():
        return pl.DataFrame(schema=schema)
    orders = entries.select("clordid", "idem_key", "session").cast(pl.String)
    if TRADING_TABLES["intents"] not in set(db.tables()):
        return orders.with_columns(pl.lit(None, pl.Float64).alias("reference_price"))
    planned = (db.query(f"SELECT idem_key, reference_price, planned_at FROM {TRADING_TABLES['intents']} "
                        "WHERE status = 'order' ORDER BY planned_at")
               .unique("idem_key", keep="last", maintain_order=True).drop("planned_at"))
    return orders.join(planned, on="idem_key", how="left").select(list(schema)).cast(schema)


def _md(frame: pl.DataFrame, rows: int = 20) -> str:
    return frame.head(rows).to_pandas().to_markdown(index=False) if frame.height else "(none)"


def _lost(db, table: str, column: str, frame: pl.DataFrame) -> list[str]:
    """The ``column`` values stored in ``table`` that ``frame`` no longer holds: a report or record kept before
    must not vanish (an outbox replaced or emptied would otherwise pass, and the kept table be overwritten)."""
    if table not in set(db.tables()):
        return []
    kept = set(db.query(f"SELECT DISTINCT {column} FROM {table}")[column].drop_nulls().to_list())
    return sorted(kept - set(frame[column].to_list()))


def _stamp(frame: pl.DataFrame, run_id: str) -> pl.DataFrame:
    return frame.with_columns(pl.lit(run_id).alias("run_id"), pl.lit(utcnow()).alias("written_at"))


@dg.asset(key=REPORT_KEYS["compliance_report"], group_name=GROUP, kinds={store_kind()},
          deps=[TRADING_KEYS["executions"]],
          description="The compliance report: every fill in the execution journal judged on the trade compliance "
                      "rules (trade and daily notional, daily trades, restricted list, price collar, wash trades), "
                      "the new breaches recorded in compliance.breaches and the audit trail, with the pre-trade "
                      "breaches the risk path recorded.",
          check_specs=[dg.AssetCheckSpec(POST_TRADE_CLEAN, asset=REPORT_KEYS["compliance_report"], blocking=True,
                                         description="No post-trade breach is open: none found, or each "
                                                     "resolved by a compliance officer.")])
def compliance_report(context: dg.AssetExecutionContext, config: ComplianceConfig, store: StoreResource):
    db = store.store()
    rules = load_compliance_policy(config.compliance_policy or DEFAULT_COMPLIANCE_POLICY)
    box = open_outbox()
    journal, entries = box.journal(), box.entries()
    fills = fills_for_rules(journal, _reference_prices(db, entries))
    checks, found = post_trade(fills, rules)
    db.overwrite_table(TABLES["checks"], _stamp(checks, context.run_id))
    new = record_breaches(db, found)
    still_open = open_breaches(db)
    recorded = (db.query(f"SELECT * FROM {BREACHES} ORDER BY \"at\"") if BREACHES in set(db.tables())
                else found.head(0))
    pre = recorded.filter(pl.col("stage") == "pre_trade")
    resolved = (db.query(f"SELECT * FROM {RESOLUTIONS} ORDER BY resolved_at") if RESOLUTIONS in set(db.tables())
                else pl.DataFrame())
    report = (summary(checks, found, rules) + "\n\n## Open post-trade breaches\n\n" + _md(
        still_open.select("at", "rule", "symbol", "side", "exec_id", "detail"))
        + "\n\n## Resolved\n\n" + _md(resolved) + "\n\n## Pre-trade breaches (orders refused)\n\n"
        + _md(pre.select("at", "rule", "symbol", "side", "order_ref", "detail")))
    passed = still_open.is_empty()
    description = (f"{fills.height} fill(s) judged on every rule of {rules.version}; no open breach"
                   + (f" ({found.height} breach(es) found, all resolved)" if found.height else "") if passed else
                   f"{still_open.height} open breach(es) (resolve each: emp compliance resolve): "
                   + "; ".join(f"{r['breach_id']} {r['rule']} on {r['exec_id']}"
                               for r in still_open.head(5).iter_rows(named=True)))
    return dg.MaterializeResult(
        metadata={"table": TABLES["checks"], "dagster/row_count": checks.height, "policy": rules.version,
                  "fills": fills.height, "post_trade_breaches": found.height, "new_breaches": new.height,
                  "open_breaches": still_open.height,
                  "pre_trade_breaches": pre.height, "report": dg.MetadataValue.md(report)},
        check_results=[dg.AssetCheckResult(check_name=POST_TRADE_CLEAN, passed=passed, description=description,
                                           metadata={"fills": fills.height, "breaches": found.height,
                                                     "open": still_open.height})])


@dg.asset(key=REPORT_KEYS["transaction_reports"], group_name=GROUP, kinds={store_kind()},
          deps=[TRADING_KEYS["executions"]],
          description="MiFIR transaction reports (RTS 22), one per fill: validated (LEI and ISIN check digits, "
                      "codes, UTC microsecond times) and exported as CSV and ISO 20022 auth.016 XML; fills in "
                      "symbols that are not financial instruments are listed with the reason.",
          check_specs=[dg.AssetCheckSpec(REPORTS_VALID, asset=REPORT_KEYS["transaction_reports"], blocking=True,
                                         description="Every report passes validation, and every fill is either "
                                                     "reported or listed as not reportable.")])
def transaction_reports(context: dg.AssetExecutionContext, store: StoreResource):
    db = store.store()
    box = open_outbox()
    journal, entries = box.journal(), box.entries()
    firm, instruments = mifid.load_reference()
    skip = mifid.load_not_reportable(mifid.reference_dir() / "not_reportable.csv")
    reports = mifid.transaction_reports(journal, entries, firm, instruments, skip)
    unreported = mifid.not_reported(journal, skip)
    found = mifid.problems(reports)
    fills = fills_for_rules(journal)
    out = settings().home / "compliance" / "reports"
    out.mkdir(parents=True, exist_ok=True)
    csv_path, xml_path = out / "transaction_reports.csv", out / "transaction_reports.xml"
    mifid.to_csv(reports, csv_path)
    mifid.to_xml(reports, xml_path)
    lost = _lost(db, TABLES["transaction_reports"], "transaction_reference", reports)
    if not lost:  # never overwrite kept reports with fewer
        db.overwrite_table(TABLES["transaction_reports"], _stamp(reports, context.run_id))
        db.overwrite_table(TABLES["not_reported"], _stamp(unreported, context.run_id))
    covered = set(reports["exec_id"].to_list()) | set(unreported["exec_id"].to_list())
    accounted = covered == set(fills["exec_id"].to_list()) and reports.height + unreported.height == fills.height
    passed = found.is_empty() and accounted and not lost
    description = (f"{reports.height} report(s) valid, {unreported.height} fill(s) not reportable, of "
                   f"{fills.height} fill(s)" if passed else
                   f"{found.height} problem(s) in {found['transaction_reference'].n_unique() if found.height else 0} "
                   f"report(s)" + ("" if accounted else f"; {reports.height} reported + {unreported.height} not "
                                                        f"reportable do not cover the {fills.height} fills")
                   + (f"; {len(lost)} report(s) kept before are not in this journal ({', '.join(lost[:3])}): "
                      "not overwritten" if lost else ""))
    return dg.MaterializeResult(
        metadata={"table": TABLES["transaction_reports"], "dagster/row_count": reports.height,
                  "not_reportable": unreported.height, "problems": found.height, "csv": str(csv_path),
                  "xml": str(xml_path),
                  "report": dg.MetadataValue.md(mifid.summary_markdown(reports, found)
                                                + "\n\n## Not reportable\n\n" + _md(unreported))},
        check_results=[dg.AssetCheckResult(check_name=REPORTS_VALID, passed=passed, description=description,
                                           metadata={"problems": _md(found)})])


@dg.asset(key=REPORT_KEYS["trade_records"], group_name=GROUP, kinds={store_kind()},
          deps=[TRADING_KEYS["executions"], TRADING_KEYS["risk_decisions"]],
          description="Dodd-Frank recordkeeping: per order, the decision, the FIX ids, the execution reports and "
                      "every timestamp, retrievable by ClOrdID; checked for completeness.",
          check_specs=[dg.AssetCheckSpec(RECORDS_COMPLETE, asset=REPORT_KEYS["trade_records"], blocking=True,
                                         description="Every trade's record is complete: a decision, the order's "
                                                     "times, its execution reports; no fill without an order.")])
def trade_records(context: dg.AssetExecutionContext, store: StoreResource):
    db = store.store()
    box = open_outbox()
    # each order's own decision, as the outbox keeps it: the one that approved what was sent (a re-run's later
    # decision on the same key, or a manual order's, is not in the plan's decisions table)
    entries = box.entries()
    if entries.height:
        entries = entries.join(box.decisions(), on="clordid", how="left")
    records = recordkeeping.trade_records(box.journal(), entries)
    passed, findings = recordkeeping.completeness(records)
    lost = _lost(db, TABLES["trade_records"], "clordid", records)
    if not lost:  # never overwrite kept records with fewer
        db.overwrite_table(TABLES["trade_records"], _stamp(records, context.run_id))
    passed = passed and not lost
    description = (f"{records.height} trade record(s) complete" if passed else
                   f"{findings.height} finding(s) in {findings['clordid'].n_unique() if findings.height else 0} "
                   "trade(s): " + "; ".join(f"{r['clordid']}: {r['problem']}"
                                            for r in findings.head(3).iter_rows(named=True))
                   + (f"; {len(lost)} record(s) kept before are not in this outbox ({', '.join(lost[:3])}): "
                      "not overwritten" if lost else ""))
    return dg.MaterializeResult(
        metadata={"table": TABLES["trade_records"], "dagster/row_count": records.height,
                  "findings": findings.height,
                  "report": dg.MetadataValue.md(recordkeeping.summary_markdown(records, findings))},
        check_results=[dg.AssetCheckResult(check_name=RECORDS_COMPLETE, passed=passed, description=description,
                                           metadata={"findings": _md(findings)})])


@dg.asset(key=REPORT_KEYS["roi_report"], group_name=GROUP, kinds={store_kind()},
          deps=[TRADING_KEYS["executions"], TRADING_KEYS["pnl"]],
          description="ROI evidence: fees (the cost model's schedule) and slippage against the decision price, "
                      "the tier's infrastructure cost, capital efficiency, and each strategy's PnL gross and net "
                      "of costs, with a chart of cumulative gross and net PnL.",
          check_specs=[dg.AssetCheckSpec(ROI_RECONCILED, asset=REPORT_KEYS["roi_report"], blocking=True,
                                         description="Gross PnL equals the account's change in equity and the "
                                                     "trading/pnl asset's total; gross - fees - infrastructure = "
                                                     "net; the strategies add up to the totals.")])
def roi_report(context: dg.AssetExecutionContext, config: ComplianceConfig, store: StoreResource):
    db = store.store()
    costs = load_costs(config.cost_model) if config.cost_model else load_costs()
    box = open_outbox()
    entries = box.entries()
    if entries.height:
        entries = entries.filter(pl.col("session") == config.session)
    journal = box.journal().filter(pl.col("order_clordid").is_in(entries["clordid"].to_list() if entries.height
                                                                 else []))
    symbols = sorted(set(journal["symbol"].drop_nulls().to_list())) if journal.height else []
    try:
        as_of = datetime.fromisoformat(config.mark_as_of) if config.mark_as_of else None
        marks = read_market(db, symbols=symbols, as_of=as_of).prices if symbols else {}
    except EmpError:  # no bars of them: the report marks each at its last fill and lists it
        marks = {}
    first, last = _fill_span(journal)
    # from the first order (or fill) to the last fill, so a re-run reports the same figures
    start = min([_time(t) for t in entries["created_at"].to_list()] + [t for t in (first,) if t] or [utcnow()])
    end = (datetime.fromisoformat(config.roi_end) if config.roi_end
           else max(last or start, start + timedelta(microseconds=1)))
    report = roi(journal, entries, _reference_prices(db, entries).select("idem_key", "reference_price")
                 .drop_nulls(), marks, config.capital, costs, settings().tier, (start, end))
    db.overwrite_table(TABLES["roi_fills"], _stamp(report.fills, context.run_id))
    db.overwrite_table(TABLES["roi_strategies"], _stamp(report.strategies, context.run_id))
    totals = report.totals
    chart = pnl_chart(report)
    text = summary_markdown(report) + f"\n\n![cumulative gross and net PnL]({chart})"
    figures = {k: round(v, 4) if isinstance(v, float) else v for k, v in totals.items()
               if isinstance(v, int | float | str) and not isinstance(v, bool)}
    problems = _roi_problems(db, report, config.capital)
    return dg.MaterializeResult(
        metadata={"table": TABLES["roi_strategies"], "dagster/row_count": report.strategies.height, **figures,
                  "report": dg.MetadataValue.md(text)},
        check_results=[dg.AssetCheckResult(
            check_name=ROI_RECONCILED, passed=not problems,
            description="; ".join(problems) if problems else
            f"gross PnL {totals['gross_pnl']:,.2f} = equity change = trading/pnl; net {totals['net_pnl']:,.2f}")])


def _roi_problems(db, report, capital: float) -> list[str]:
    """The ROI report's accounting identities, each within a cent: gross = the equity change of its fills =
    trading/pnl's total (its latest row, when it is of the same capital); gross - fees - infrastructure = net;
    the strategies' rows add up to the totals."""
    t, rows, problems = report.totals, report.strategies, []

    def off(a: float, b: float) -> bool:
        return abs(a - b) > 0.01

    if off(t["gross_pnl"], t["equity_change"]):
        problems.append(f"gross PnL {t['gross_pnl']:,.2f} != equity change {t['equity_change']:,.2f}")
    if off(t["gross_pnl"] - t["fees"] - t["infrastructure"], t["net_pnl"]):
        problems.append("gross - fees - infrastructure != net")
    for column in ("gross_pnl", "net_pnl", "fees", "infrastructure"):
        if off(float(rows[column].sum()), t[column]):
            problems.append(f"the strategies' {column} do not add up to the total")
    pnl_table = TRADING_TABLES["pnl"]
    if pnl_table in set(db.tables()):
        latest = db.query(f"SELECT capital, total_pnl FROM {pnl_table} ORDER BY written_at DESC LIMIT 1")
        if latest.height and latest["capital"][0] == capital and off(latest["total_pnl"][0], t["gross_pnl"]):
            problems.append(f"gross PnL {t['gross_pnl']:,.2f} != trading/pnl's {latest['total_pnl'][0]:,.2f}")
    return problems


def _time(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _fill_span(journal: pl.DataFrame) -> tuple[datetime | None, datetime | None]:
    """The times of the journal's first and last fills (None, None without a fill)."""
    fills = fills_for_rules(journal)
    return (fills["at"].min(), fills["at"].max()) if fills.height else (None, None)


class KycConfig(dg.Config):
    dossiers: str = ""  # the onboarding dossiers (JSON); empty: the shipped sample
    sdn: str = ""  # the sanctions list in OFAC's SDN CSV layout; empty: the shipped synthetic sample
    alt: str = ""  # its aliases (alt.csv)
    as_of: str = ""  # the rating date (YYYY-MM-DD); empty: today (UTC)


@dg.asset(key=KYC, group_name=GROUP, kinds={store_kind()},
          description="The KYC case book: every onboarding dossier's customer and beneficial owners screened against "
                      "the sanctions list, rated (jurisdiction, entity type, hits, PEP, documents) with a review "
                      "date; a case opened for each new dossier and reopened when an approved one's rating rose "
                      "or its review is due (people escalate and decide), each transition in the audit trail.",
          check_specs=[
              dg.AssetCheckSpec(KYC_MATCHES_AUDIT, asset=KYC, blocking=True,
                                description="The stored case book is the audit trail's: every transition logged, "
                                            "none edited, and the case rules hold on replay."),
              dg.AssetCheckSpec(KYC_PENDING, asset=KYC,
                                description="No case waits for a person's decision (open or escalated)."),
          ])
def kyc_case_book(context: dg.AssetExecutionContext, config: KycConfig, store: StoreResource):
    from datetime import date

    from emp_core.compliance import kyc
    from emp_core.compliance.sanctions import load_sdn

    db = store.store()
    mismatches = kyc.audit_mismatches(db)  # before anything is added: an edited book is not built on
    if mismatches:
        return dg.MaterializeResult(
            metadata={"table": kyc.CASES_TABLE, "mismatches": len(mismatches)},
            check_results=[dg.AssetCheckResult(check_name=KYC_MATCHES_AUDIT, passed=False,
                                               description="; ".join(mismatches[:5])),
                           dg.AssetCheckResult(check_name=KYC_PENDING, passed=False,
                                               severity=dg.AssetCheckSeverity.WARN,
                                               description="not reviewed: the case book does not match the audit "
                                                           "trail")])
    sanctions = (load_sdn(config.sdn, config.alt or None) if config.sdn
                 else load_sdn(kyc.shipped("sdn.csv"), kyc.shipped("alt.csv")))
    day = date.fromisoformat(config.as_of) if config.as_of else utcnow().date()
    result = kyc.review(db, config.dossiers or kyc.shipped("dossiers.json"), sanctions,
                        kyc.load_jurisdictions(kyc.shipped("jurisdictions.json")), day)
    mismatches = kyc.audit_mismatches(db)
    waiting = result.waiting()
    ratings = {r: sum(x.rating == r for x in result.ratings) for r in kyc.RATINGS}
    return dg.MaterializeResult(
        metadata={"table": kyc.CASES_TABLE, "dagster/row_count": len(result.book.transitions),
                  "dossiers": len(result.dossiers), "screening_hits": result.screening.height,
                  "transitions_made": len(result.made), "waiting_for_decision": len(waiting),
                  **{f"rated_{k}": v for k, v in ratings.items()},
                  "report": dg.MetadataValue.md(kyc.summary_markdown(result.book, result.ratings, result.dossiers))},
        check_results=[
            dg.AssetCheckResult(check_name=KYC_MATCHES_AUDIT, passed=not mismatches,
                                description=(f"{len(result.book.transitions)} transition(s) match the audit trail"
                                             if not mismatches else "; ".join(mismatches[:5]))),
            dg.AssetCheckResult(check_name=KYC_PENDING, passed=not waiting, severity=dg.AssetCheckSeverity.WARN,
                                description=("no case waits for a decision" if not waiting else
                                             f"{len(waiting)} case(s) wait for a decision: "
                                             + ", ".join(f"{c} ({s})" for c, s in sorted(waiting.items())[:10])
                                             + " (emp kyc decide)"))])
