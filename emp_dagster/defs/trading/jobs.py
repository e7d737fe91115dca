"""The trading jobs: ``paper_trading`` (intents -> decisions -> approved orders into the outbox) and
``trading_journal`` (what the execution journal says came back: executions, positions, PnL, VaR,
reconciliation with the drop copy)."""

import dagster as dg

from emp_dagster.defs.compliance.assets import KEYS as COMPLIANCE_KEYS
from emp_dagster.defs.trading.assets import KEYS

PLAN = ("intents", "risk_decisions", "approved_orders")
JOURNAL = ("executions", "positions", "pnl", "var", "reconciliation")

paper_trading_job = dg.define_asset_job(
    "paper_trading", selection=dg.AssetSelection.assets(COMPLIANCE_KEYS["audit_verification"],
                                                         *(KEYS[n] for n in PLAN)),
    description="Verify the audit trail, plan the strategy's orders on the latest signals, judge them with the "
                "risk policy and put the approved ones in the outbox (the audit and readiness checks block the "
                "outbox when they fail).")
trading_journal_job = dg.define_asset_job(
    "trading_journal", selection=dg.AssetSelection.assets(*(KEYS[n] for n in JOURNAL)),
    description="Materialise executions, positions, PnL, VaR and the reconciliation from the execution journal.")
