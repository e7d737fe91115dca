"""Start the real Dagster webserver on a free loopback port and read the graph over GraphQL."""

import pytest
import requests

SCHEDULES = """{ schedulesOrError(repositorySelector: {repositoryName: "__repository__",
  repositoryLocationName: "emp_predator"}) { ... on Schedules { results { name cronSchedule } } } }"""
QUERY = """{
  assetNodes { assetKey { path } isPartitioned
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } } }
}"""


@pytest.mark.slow
def test_webserver_serves_the_asset_graph_and_checks(webserver):
    url = webserver
    reply = requests.post(f"{url}/graphql", json={"query": QUERY}, timeout=60)
    reply.raise_for_status()
    nodes = {"/".join(n["assetKey"]["path"]): n for n in reply.json()["data"]["assetNodes"]}
    assert set(nodes) == {"market/bars_1d", "market/bars_1h", "market/universe",
                          "macro/series", "macro/treasury_curve",
                          *(f"sensory/{n}" for n in ("why", "how", "what", "when", "anomaly", "fused",
                                                             "calibration")),
                          *(f"evolution/{n}" for n in ("catalogue", "experiment_log", "lineage",
                                                               "population", "fitness_runs", "trials",
                                                               "decision", "champion")),
                          "platform/backup", "platform/failover_catch_up", "platform/health",
                          *(f"trading/{n}" for n in ("intents", "risk_decisions", "approved_orders", "executions",
                                                     "positions", "pnl", "var", "reconciliation")),
                          *(f"compliance/{n}" for n in ("audit_verification", "kyc_case_book", "compliance_report",
                                                        "transaction_reports", "trade_records", "roi_report"))}
    gates = {c["name"]: c["blocking"] for c in nodes["trading/intents"]["assetChecksOrError"]["checks"]}
    assert gates == {"signals_fresh": True, "strategy_ready": True, "compliance_clear": True}
    kyc = {c["name"]: c["blocking"] for c in nodes["compliance/kyc_case_book"]["assetChecksOrError"]["checks"]}
    assert kyc == {"kyc_cases_match_audit": True, "kyc_decisions_pending": False}
    audit = {c["name"]: c["blocking"] for c in nodes["compliance/audit_verification"]["assetChecksOrError"]["checks"]}
    assert audit == {"audit_chain_intact": True}
    assert nodes["sensory/fused"]["isPartitioned"]
    drift = {c["name"]: c["blocking"] for c in nodes["sensory/what"]["assetChecksOrError"]["checks"]}
    assert drift == {"drift": False}
    assert nodes["market/bars_1d"]["isPartitioned"]
    checks = {c["name"]: c["blocking"] for c in nodes["market/bars_1d"]["assetChecksOrError"]["checks"]}
    assert checks == dict.fromkeys(
        ["schema_and_types", "unique_symbol_ts", "ohlc_consistency", "calendar_gaps", "freshness"], True)
    schedules = requests.post(f"{url}/graphql", json={"query": SCHEDULES}, timeout=60).json()
    assert {s["name"]: s["cronSchedule"] for s in schedules["data"]["schedulesOrError"]["results"]} == {
        "daily_bars_ingest": "30 18 * * 1-5", "weekly_trailing_backfill": "0 6 * * 6",
        "evolution_weekly_schedule": "0 8 * * 0", "nightly_backup": "30 2 * * *",
        "health_every_15_minutes": "*/15 * * * *"}
    # the instance settings turn Dagster's new-user modal off: the first screen is the graph
    nux = requests.post(f"{url}/graphql", json={"query": "{ shouldShowNux }"}, timeout=60).json()
    assert nux["data"]["shouldShowNux"] is False
