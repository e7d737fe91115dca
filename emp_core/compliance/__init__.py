"""Compliance: the audit trail (hash-chained, append-only), trade compliance, KYC/AML cases, transaction
reports and the ROI evidence (issue 13)."""
