"""The compliance jobs: ``compliance_reports``, run after the trading journal (``emp demo`` runs it after its
paper session)."""

import dagster as dg

from emp_dagster.defs.compliance.assets import KEYS, REPORT_KEYS

compliance_reports_job = dg.define_asset_job(
    "compliance_reports",
    selection=dg.AssetSelection.assets(*REPORT_KEYS.values(), KEYS["audit_verification"]),
    description="After the trading journal: the compliance report, the transaction reports, the trade records, the "
                "ROI report, and the audit trail verified with the entries the trading run added.")
