"""The sensory assets in Dagster: partitions written idempotently, calibration, drift checks that warn."""

from datetime import datetime

import dagster as dg
import numpy as np
import polars as pl
import pytest
from scipy import stats

from emp_core.sensory import compute_features
from emp_core.sensory.calibration import MIN_EFFECTIVE, calibrate, drift, ks, psi
from emp_core.sensory.pipeline import load_macro
from emp_core.store import DuckDBStore
from emp_dagster.defs.evolution.resources import spark_resource
from emp_dagster.defs.market_data import assets as market
from emp_dagster.defs.market_data.resources import MarketDataResource, StoreResource
from emp_dagster.defs.sensory import assets as sensory
from emp_dagster.defs.sensory import checks as sensory_checks

ALL = [market.bars_1d, market.bars_1h, market.macro_series, market.treasury_curve,
       sensory.sensory_cortex, sensory.calibration, sensory_checks.sensory_drift]


@pytest.fixture
def resources(tmp_path, data_dir):
    return {"store": StoreResource(path=str(tmp_path / "emp.duckdb")),
            "market_data": MarketDataResource(data_dir=str(data_dir)), "pyspark": spark_resource()}


def run(resources, first: str, last: str, instance, run_config=None):
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    return dg.materialize(ALL, resources=resources, instance=instance, tags=tags, raise_on_error=False,
                          run_config=run_config)


def test_partitions_write_exactly_the_full_history_result(resources):
    """Two runs over consecutive ranges store what one computation over the whole history gives."""
    with dg.instance_for_test() as instance:
        assert run(resources, "2009", "2009", instance).success
        first = run(resources, "2010", "2010", instance)
        again = run(resources, "2010", "2010", instance)  # idempotent
    assert first.success and again.success
    store = DuckDBStore(resources["store"].path)
    bars = store.read_bars("bars_1d", start=datetime(2009, 1, 1), end=datetime(2011, 1, 1))
    stored = store.query("SELECT * EXCLUDE (dataset, run_id) FROM sensory.what WHERE dataset = 'bars_1d' "
                         "ORDER BY symbol, ts")
    assert stored.height == bars.height  # no window written twice
    expected = compute_features(bars, load_macro(store)).select(stored.columns)
    assert stored.equals(expected)
    mats = {m.asset_key.to_user_string(): m.materialization.metadata for m in first.get_asset_materialization_events()}
    assert mats["sensory/anomaly"]["dagster/row_count"].value == store.query(
        "SELECT count(*) FROM sensory.anomaly WHERE ts >= '2010-01-01'").item()
    assert "flagged_bars" in mats["sensory/anomaly"]


@pytest.mark.spark
def test_the_spark_compute_stores_what_in_process_stores(resources, tmp_path, data_dir, spark):
    """The asset's spark path (symbol groups on the pyspark resource's executors) writes every sensory table
    exactly as the in-process path does."""
    spark_store = tmp_path / "spark.duckdb"
    on_spark = {**resources, "store": StoreResource(path=str(spark_store))}
    config = {"ops": {"sensory_cortex": {"config": {"compute": "spark"}}}}
    with dg.instance_for_test() as instance:
        assert run(resources, "2009", "2010", instance).success
        assert run(on_spark, "2009", "2010", instance, run_config=config).success
    local, distributed = DuckDBStore(resources["store"].path), DuckDBStore(spark_store)
    for name in ("why", "how", "what", "when", "anomaly", "fused"):
        sql = f"SELECT * EXCLUDE (run_id) FROM sensory.{name} ORDER BY dataset, symbol, ts"
        assert distributed.query(sql).equals(local.query(sql)), name


def test_drift_checks_warn_with_their_numbers_and_never_block(resources):
    with dg.instance_for_test() as instance:
        result = run(resources, "2005", "2008", instance)
    assert result.success
    evaluations = {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()
                   if e.check_name == "drift"}
    assert set(evaluations) == {f"sensory/{n}" for n in ("why", "how", "what", "when", "anomaly", "fused")}
    assert all(e.severity == dg.AssetCheckSeverity.WARN for e in evaluations.values())
    for e in evaluations.values():
        numbers = e.metadata["datasets"].value["bars_1d"]
        if numbers.get("insufficient_data"):  # too few effective observations: not tested, and it says so
            assert numbers["effective_n"] < MIN_EFFECTIVE and "insufficient data: effective n = " in e.description
        else:
            assert {"psi", "ks_d", "ks_p", "n_reference", "n_current", "effective_n"} <= set(numbers)
            assert "alert_rate" in numbers or numbers["alert_rate_insufficient_data"]  # too few active bars
            assert numbers["effective_n"] >= MIN_EFFECTIVE
        # the smaller of the symbols' summed counts and the pooled size read on the reference
        assert numbers["effective_n_pooled"] is not None
        assert numbers["effective_n"] == min(numbers["effective_n_summed"], numbers["effective_n_pooled"])
        assert e.metadata["tested"].value == (0 if numbers.get("insufficient_data") else 1)
        assert e.metadata["seconds"].value >= 0  # each check's own time, which the demo benchmark counts as work
        if numbers.get("insufficient_data"):
            assert not e.passed and e.description.startswith("NOTHING TESTED")  # no data is no pass
        else:  # a tested month fails exactly when a limit is crossed
            assert e.passed == (numbers["psi"] < 0.25 and numbers["ks_d"] < 0.2
                                and numbers.get("alert_rate", 0.0) <= 0.05)
    # December 2008 (the run covers the partitions 2005 .. 2008) against the 36 months before, six daily
    # symbols: the persistent dimensions (lag-1 autocorrelation 0.93-0.99) hold too few effective observations,
    # under MIN_EFFECTIVE, and say they were not tested (WHY's summed count is 0.8). ANOMALY, silent on most
    # bars, sums 123.6 effective observations as if its six symbols were independent; they co-move (pooled
    # size 68), so its month is not tested either. WHEN's calendar buckets are tested.
    numbers = {n: e.metadata["datasets"].value["bars_1d"] for n, e in evaluations.items()}
    assert numbers["sensory/what"]["insufficient_data"] and numbers["sensory/why"]["insufficient_data"]
    anomaly = numbers["sensory/anomaly"]
    assert anomaly["insufficient_data"]
    assert anomaly["effective_n_pooled"] < MIN_EFFECTIVE <= anomaly["effective_n_summed"]
    assert not numbers["sensory/when"].get("insufficient_data")
    assert {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()} >= {
        "sensory/fused", "sensory/calibration"}


def test_calibration_thresholds_are_reference_quantiles(resources):
    with dg.instance_for_test() as instance:
        assert run(resources, "2009", "2012", instance).success
    store = DuckDBStore(resources["store"].path)
    cal = calibrate(store).filter((pl.col("dimension") == "how") & (pl.col("dataset") == "bars_1d")
                                  & (pl.col("symbol") == "IBM"))
    scores = store.query("SELECT abs(how_score) AS a FROM sensory.how WHERE symbol = 'IBM' AND dataset = 'bars_1d' "
                         "AND ts >= '2009-12-01' AND ts < '2012-12-01' AND how_score IS NOT NULL")["a"].to_numpy()
    assert cal["n"].item() == scores.size
    scores = scores[scores > 0]  # the thresholds are quantiles over the bars where the dimension is active
    assert cal["n_active"].item() == scores.size
    assert cal["warn"].item() == pytest.approx(np.quantile(scores, 0.95), rel=1e-12)
    assert cal["alert"].item() == pytest.approx(np.quantile(scores, 0.99), rel=1e-12)
    assert drift(store, "how").metadata["datasets"]["bars_1d"]["n_reference"] > 0


def test_psi_and_ks_against_independent_computations():
    rng = np.random.default_rng(0)
    ref, same, shifted = rng.normal(0, 1, 5000), rng.normal(0, 1, 800), rng.normal(0.8, 1, 800)
    assert psi(ref, same) < 0.05
    assert psi(ref, shifted) > 0.25
    for cur in (same, shifted):
        d, p = ks(ref, cur)
        expected = stats.ks_2samp(ref, cur, method="asymp")
        assert d == pytest.approx(expected.statistic, abs=1e-12)
        assert p == pytest.approx(expected.pvalue, abs=0.02)
    # PSI by hand on two bins: shares (0.5, 0.5) against (0.8, 0.2)
    hand = (0.8 - 0.5) * np.log(0.8 / 0.5) + (0.2 - 0.5) * np.log(0.2 / 0.5)
    assert psi(np.array([0.0, 1.0] * 50), np.array([0.0] * 80 + [1.0] * 20), bins=2) == pytest.approx(hand)
