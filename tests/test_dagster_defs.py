"""The Dagster graph: its shape, its checks as gates, its schedules and backfills."""

from datetime import datetime

import dagster as dg
import polars as pl
import pytest

from emp_core.market_data.macro import macro_series_checks
from emp_core.store import DuckDBStore
from emp_dagster.definitions import defs
from emp_dagster.defs.market_data import assets as A
from emp_dagster.defs.market_data.resources import MarketDataResource, StoreResource
from emp_dagster.defs.market_data.schedules import daily_bars_ingest, weekly_trailing_backfill
from emp_dagster.edge import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG

SENSORY = ("why", "how", "what", "when", "anomaly", "fused")
EXPECTED_ASSETS = {
    "market/bars_1d", "market/bars_1h", "market/universe",
    "macro/series", "macro/treasury_curve",
    *(f"sensory/{n}" for n in SENSORY), "sensory/calibration",
    *(f"evolution/{n}"
      for n in ("catalogue", "experiment_log", "lineage", "population", "fitness_runs", "trials", "decision",
                "champion")),
}
PLATFORM = {"platform/backup", "platform/failover_catch_up", "platform/health"}
TRADING = {f"trading/{n}" for n in ("intents", "risk_decisions", "approved_orders", "executions", "positions",
                                    "pnl", "var", "reconciliation")}
COMPLIANCE = {"compliance/audit_verification", "compliance/compliance_report", "compliance/transaction_reports",
              "compliance/trade_records", "compliance/roi_report", "compliance/kyc_case_book"}
BAR_CHECKS = {"schema_and_types", "unique_symbol_ts", "ohlc_consistency", "calendar_gaps", "freshness"}


def test_graph_snapshot():
    d = defs()
    repo = d.get_repository_def()
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} == (EXPECTED_ASSETS | PLATFORM | TRADING
                                                                                | COMPLIANCE)
    assert {(k.asset_key.to_user_string(), k.name) for k in repo.asset_graph.asset_check_keys
            if k.asset_key.path[0] == "compliance"} == {
        ("compliance/audit_verification", "audit_chain_intact"), ("compliance/compliance_report", "post_trade_clean"),
        ("compliance/transaction_reports", "transaction_reports_valid"),
        ("compliance/trade_records", "trade_records_complete"), ("compliance/roi_report", "roi_reconciled"),
        ("compliance/kyc_case_book", "kyc_cases_match_audit"), ("compliance/kyc_case_book", "kyc_decisions_pending")}
    trading = {(k.asset_key.to_user_string(), k.name) for k in repo.asset_graph.asset_check_keys
               if k.asset_key.path[0] == "trading"}
    assert trading == {("trading/intents", "signals_fresh"), ("trading/intents", "strategy_ready"),
                       ("trading/intents", "compliance_clear"), ("trading/risk_decisions", "risk_ready"),
                       ("trading/reconciliation", "journal_reconciled")}
    checks = {(k.asset_key.to_user_string(), k.name) for k in repo.asset_graph.asset_check_keys}
    assert {n for a, n in checks if a == "market/bars_1d"} == BAR_CHECKS
    assert {n for a, n in checks if a == "macro/series"} == {
        "unique_series_period", "point_in_time", "values_finite"}
    # A refusal to promote is an outcome (a warning on the decision), not a gate that fails the run.
    # cases waiting for a person's decision inform (WARN) and stop nothing
    gates = {k for k in repo.asset_graph.asset_check_keys if k.name not in ("drift", "promotion_gate",
                                                                             "kyc_decisions_pending")
             and k.asset_key.path[0] != "platform"}
    assert not repo.asset_graph.get_check_spec(
        dg.AssetCheckKey(dg.AssetKey(["compliance", "kyc_case_book"]), "kyc_decisions_pending")).blocking
    platform = {(k.asset_key.to_user_string(), k.name): repo.asset_graph.get_check_spec(k).blocking
                for k in repo.asset_graph.asset_check_keys if k.asset_key.path[0] == "platform"}
    # the platform's gates block; health and retention inform (WARN): a stale feed must not stop a backup
    assert {c for c, blocking in platform.items() if blocking} == {
        ("platform/backup", "restore_parity"), ("platform/failover_catch_up", "parity")}
    assert len(platform) == 11
    assert ("evolution/decision", "promotion_gate") in checks
    assert ("evolution/champion", "promoted_by_gates") in checks
    assert all(repo.asset_graph.get_check_spec(k).blocking for k in gates)
    drift = {k.asset_key.to_user_string() for k in repo.asset_graph.asset_check_keys if k.name == "drift"}
    assert drift == {f"sensory/{n}" for n in SENSORY}
    assert not repo.asset_graph.get_check_spec(
        dg.AssetCheckKey(dg.AssetKey(["evolution", "decision"]), "promotion_gate")).blocking
    assert not any(repo.asset_graph.get_check_spec(k).blocking for k in repo.asset_graph.asset_check_keys
                   if k.name == "drift")
    parents = {n: {k.to_user_string() for k in repo.asset_graph.get(dg.AssetKey(["sensory", n])).parent_keys}
               for n in SENSORY}
    assert parents["why"] == {"market/bars_1d", "market/bars_1h", "macro/series",
                              "macro/treasury_curve"}
    assert parents["anomaly"] >= {f"sensory/{n}" for n in ("why", "how", "what", "when")}
    assert parents["fused"] == {f"sensory/{n}" for n in SENSORY[:-1]}
    assert {j.name for j in d.resolve_all_job_defs()} >= {"emp_demo", "market_data_ingest", "evolution_weekly"}
    assert {s.name: s.cron_schedule for s in repo.schedule_defs} == {
        "daily_bars_ingest": "30 18 * * 1-5", "weekly_trailing_backfill": "0 6 * * 6",
        "evolution_weekly_schedule": "0 8 * * 0", "nightly_backup": "30 2 * * *",
        "health_every_15_minutes": "*/15 * * * *"}
    assert {s.name for s in repo.sensor_defs} >= {"landing_files", "ingest_retry", "failover_recovery",
                                                  "execution_journal", "compliance_after_journal"}
    universe = repo.asset_graph.get(dg.AssetKey(["market", "universe"]))
    assert {k.to_user_string() for k in universe.parent_keys} == {"market/bars_1d", "market/bars_1h"}


@pytest.fixture
def resources(tmp_path, data_dir):
    return {"store": StoreResource(path=str(tmp_path / "emp.duckdb")),
            "market_data": MarketDataResource(data_dir=str(data_dir))}


def materialize(resources, partition_key="2010", run_config=None):
    with dg.instance_for_test() as instance:
        return dg.materialize([A.bars_1d, A.universe], partition_key=partition_key, resources=resources,
                              instance=instance, raise_on_error=False, run_config=run_config)


def evaluations(result):
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_partition_materialises_with_every_check_passing(resources):
    result = materialize(resources)
    assert result.success
    assert set(evaluations(result)) == BAR_CHECKS and all(e.passed for e in evaluations(result).values())
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    assert set(mats) == {"market/bars_1d", "market/universe"}
    meta = mats["market/bars_1d"].materialization.metadata
    assert meta["dagster/row_count"].value == 6 * 252  # six symbols x 252 NYSE sessions in 2010
    store = DuckDBStore(resources["store"].path)
    assert store.query("SELECT count(*) FROM market.universe WHERE dataset = 'bars_1d'").item() == 6


def test_a_failed_blocking_check_stops_the_downstream_asset(resources, data_dir):
    path = data_dir / "bars_daily.parquet"
    pl.read_parquet(path).filter(~((pl.col("symbol") == "IBM") & (pl.col("ts") == datetime(2010, 1, 12)))) \
        .write_parquet(path)
    result = materialize(resources, run_config={"ops": {"market__bars_1d": {"config": {"max_gap_ratio": 0}}}})
    gaps = evaluations(result)["calendar_gaps"]
    assert not gaps.passed and gaps.severity == dg.AssetCheckSeverity.ERROR
    assert gaps.metadata["missing_bars"].value == 1
    materialised = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert "market/universe" not in materialised
    assert DuckDBStore(resources["store"].path).query("SELECT count(*) FROM market.universe").item() == 0


def test_macro_assets_materialise_with_point_in_time_checks(resources):
    with dg.instance_for_test() as instance:
        result = dg.materialize([A.macro_series, A.treasury_curve], resources=resources, instance=instance)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    store = DuckDBStore(resources["store"].path)
    assert {c.name: c.passed for c in macro_series_checks(store)}["point_in_time"]  # each series' lag, re-read
    assert store.query("SELECT count(*) FROM macro.treasury_curve").item() == 6816


def test_daily_schedule_targets_the_year_to_date_partition():
    for when, key in ((datetime(2026, 11, 24, 18, 30), "2026"), (datetime(2027, 1, 4, 18, 30), "2027")):
        with dg.instance_for_test() as instance:
            ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
            request = daily_bars_ingest(ctx)
        assert request.partition_key == key
        assert request.run_key == f"daily-{when:%Y-%m-%d}"


def test_weekly_schedule_backfills_the_trailing_window_in_one_run(emp_home, data_dir, monkeypatch):
    monkeypatch.setenv("EMP_DATA_DIR", str(data_dir))
    with dg.instance_for_test() as instance:  # in June the last three months are this year's
        ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2010, 6, 5, 6, 0))
        request = weekly_trailing_backfill(ctx)
        assert request.tags[PARTITION_RANGE_START_TAG] == request.tags[PARTITION_RANGE_END_TAG] == "2010"
    when = datetime(2010, 3, 6, 6, 0)  # in early March they reach back into last year
    with dg.instance_for_test() as instance:
        ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
        request = weekly_trailing_backfill(ctx)
        assert request.tags[PARTITION_RANGE_START_TAG] == "2009"
        assert request.tags[PARTITION_RANGE_END_TAG] == "2010"
        job = defs().resolve_job_def(request.job_name or "market_data_ingest")
        result = job.execute_in_process(instance=instance, tags=request.tags)
    assert result.success
    journal = DuckDBStore(emp_home / "emp.duckdb").query(
        "SELECT dataset, list(partition_key ORDER BY partition_key) AS keys FROM market.ingest_journal "
        "GROUP BY dataset ORDER BY dataset")
    assert journal["keys"].to_list() == [["2009", "2010"]] * 2


def test_the_demo_stages_cover_the_graph_once_in_dependency_order():
    """emp demo's three runs: every asset in exactly one, none reading an asset of a later run, the history
    run the only partitioned one, and the drift checks in the run that builds the calibration they read."""
    from emp_dagster.defs.demo.jobs import STAGES

    graph = defs().get_repository_def().asset_graph
    assets = {name: selection.resolve(graph) for name, (selection, _) in STAGES.items()}
    checks = {name: selection.resolve_checks(graph) for name, (selection, _) in STAGES.items()}
    order = list(STAGES)
    seen = [k for keys in assets.values() for k in keys]
    # platform: operations, not the demo; trading and the compliance reports on its executions: the demo's paper
    # session runs their own three jobs
    from emp_dagster.defs.compliance.assets import REPORT_KEYS

    reports = set(REPORT_KEYS.values())
    apart = {k for k in graph.get_all_asset_keys() if k.path[0] in ("platform", "trading")} | reports
    assert len(seen) == len(set(seen)) and set(seen) == set(graph.get_all_asset_keys()) - apart
    for i, name in enumerate(order):
        later = {k for n in order[i + 1:] for k in assets[n]}
        for key in assets[name]:
            assert not (graph.get(key).parent_keys & later), (name, key)
        assert all(graph.get(k).is_partitioned == STAGES[name][1] for k in assets[name]), name
    calibration = dg.AssetKey(["sensory", "calibration"])
    drift = {k for keys in checks.values() for k in keys if k.name == "drift"}
    assert len(drift) == 6 and drift <= checks["emp_demo_research"] and calibration in assets["emp_demo_research"]
    all_checks = [k for keys in checks.values() for k in keys]
    research_checks = {k for k in graph.asset_check_keys if k.asset_key.path[0] not in ("platform", "trading")
                       and k.asset_key not in reports}
    assert len(all_checks) == len(set(all_checks)) and set(all_checks) == research_checks


def test_config_classes_follow_the_domain_settings_field_for_field():
    """edge.config_from: every field of the settings with its type and default (a factory stays a factory, a
    field without a default is required), and the settings come back out unchanged."""
    import dataclasses

    from emp_core.evolution.run import EvolutionSettings
    from emp_core.sensory.calibration import DriftLimits
    from emp_dagster.defs.evolution.assets import EvolutionConfig
    from emp_dagster.defs.sensory.checks import DriftConfig
    from emp_dagster.edge import config_from, settings_of

    for config, settings in ((EvolutionConfig, EvolutionSettings), (DriftConfig, DriftLimits)):
        fields = {f.name: f.default for f in dataclasses.fields(settings)}
        assert {n: config.model_fields[n].default for n in fields} == fields
        assert settings_of(config(), settings) == settings()
    changed = settings_of(EvolutionConfig(seed=7, population=12), EvolutionSettings)
    assert changed == dataclasses.replace(EvolutionSettings(), seed=7, population=12)

    @dataclasses.dataclass(frozen=True)
    class Example:
        needed: int
        names: list[str] = dataclasses.field(default_factory=list)
        rate: float = 0.5

    config = config_from(Example, "ExampleConfig", "An example.")
    with pytest.raises(Exception, match="needed"):
        config()
    a, b = config(needed=1), config(needed=2)
    assert a.names == [] and a.names is not b.names and a.rate == 0.5
    assert settings_of(a, Example) == Example(needed=1)
    with pytest.raises(ValueError, match="no field"):
        config_from(Example, "Bad", "typo", only=("rat",))
