"""The sensory cortex on Spark (local[2]): the same features as in-process, to the bit, whatever the grouping."""

from datetime import datetime
from itertools import pairwise

import numpy as np
import polars as pl
import pytest

from emp_core.errors import EmpError
from emp_core.market_data.ingest import ingest_bars, new_run_id
from emp_core.market_data.macro import load_macro_series, load_treasury_curve
from emp_core.market_data.sources import ShippedSource, generate_bars
from emp_core.sensory import FeatureInputError, compute_features
from emp_core.sensory.features import _complete, prepare
from emp_core.sensory.pipeline import TABLES, materialise_window
from emp_core.sensory.spark import (
    compute_features_spark,
    default_groups,
    plan_groups,
    spark_compute,
    spark_master,
)
from tests.support import SHIPPED

NOW = datetime(2026, 1, 1)


@pytest.fixture(scope="module")
def universe() -> pl.DataFrame:
    """Seven synthetic symbols on XNYS sessions, 2012-2015."""
    return generate_bars(7, datetime(2012, 1, 1), datetime(2016, 1, 1), calendar="XNYS", seed=3)


def assert_bit_identical(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """Same columns, dtypes, row order, nulls; floats equal bit for bit (NaN payloads and -0.0 included)."""
    assert got.schema == want.schema
    assert got.height == want.height
    for name in want.columns:
        a, b = got.get_column(name), want.get_column(name)
        assert a.is_null().equals(b.is_null()), f"{name}: nulls on different rows"
        if a.dtype.is_float():
            bits_a = a.fill_null(0.0).to_numpy().view(np.int64)
            bits_b = b.fill_null(0.0).to_numpy().view(np.int64)
            diff = np.flatnonzero(bits_a != bits_b)
            assert diff.size == 0, f"{name}: {diff.size} rows differ, first {a[int(diff[0])]!r} != {b[int(diff[0])]!r}"
        else:
            assert a.equals(b), f"{name} differs"
    assert got.equals(want)


# -- the same result as in-process ---------------------------------------------------------


@pytest.mark.spark
@pytest.mark.parametrize("groups", [None, 1, 4, 10])
def test_shipped_daily_features_equal_in_process(spark, daily, macro, groups):
    """The six shipped symbols (different histories: GOOG from 2004, SPX from 1999) in the default grouping
    (one group per core), one group, four, and more groups than symbols."""
    want = compute_features(daily, macro, calendar="XNYS")
    got = compute_features_spark(spark, daily, macro, groups=groups, calendar="XNYS")
    assert_bit_identical(got, want)
    assert got.get_column("anomaly_flag").sum() > 0 and got.get_column("why_real_rate").is_not_null().mean() > 0.5


@pytest.mark.spark
@pytest.mark.parametrize("groups", [1, 3, 7, 12])
def test_a_synthetic_universe_equals_in_process(spark, universe, macro, groups):
    want = compute_features(universe, macro, calendar="XNYS", weights={"what": 1.0, "anomaly": -0.5, "why": 0.3})
    got = compute_features_spark(spark, universe, macro, groups=groups, calendar="XNYS",
                                 weights={"what": 1.0, "anomaly": -0.5, "why": 0.3})
    assert_bit_identical(got, want)


@pytest.mark.spark
def test_shuffled_input_gives_the_sorted_in_process_result(spark, universe):
    shuffled = universe.sample(fraction=1.0, shuffle=True, seed=5)
    assert_bit_identical(compute_features_spark(spark, shuffled, None, groups=3), compute_features(shuffled, None))


@pytest.mark.spark
def test_an_incomplete_symbol_among_complete_ones(spark, universe, macro):
    """One symbol with NaN closes and zero volumes makes the whole frame incomplete (ANOMALY's medians take the
    null-aware kernel in-process); one symbol per group gives the other six complete groups (the kernel that
    fills nulls). The same bits either way."""
    first = universe.get_column("symbol").min()
    rng = np.random.default_rng(1)
    rows = universe.with_row_index("k")
    holes = pl.col("k").is_in(rng.choice(900, 40, replace=False).tolist()) & (pl.col("symbol") == first)
    gappy = rows.with_columns(
        pl.when(holes & (pl.col("k") % 2 == 0)).then(float("nan")).otherwise("close").alias("close"),
        pl.when(holes & (pl.col("k") % 2 == 1)).then(0.0).otherwise("volume").alias("volume"),
    ).drop("k")
    assert not _complete(prepare(gappy))
    assert _complete(prepare(gappy.filter(pl.col("symbol") != first)))
    want = compute_features(gappy, macro, calendar="XNYS")
    assert_bit_identical(compute_features_spark(spark, gappy, macro, groups=7, calendar="XNYS"), want)


@pytest.mark.spark
def test_intraday_is_inferred_from_the_whole_universe(spark, macro):
    """Three hourly symbols and one daily one: in-process the median spacing over all of them says intraday;
    the daily symbol alone in its group would say daily. The driver settles it on the whole frame."""
    hourly = generate_bars(3, datetime(2017, 1, 2), datetime(2017, 3, 1), interval="1h", seed=2)
    day = generate_bars(1, datetime(2016, 6, 1), datetime(2017, 3, 1), seed=4, prefix="DAY")
    mixed = pl.concat([hourly, day])
    want = compute_features(mixed, macro)
    assert "when_session" in want.columns  # intraday layout
    assert_bit_identical(compute_features_spark(spark, mixed, macro, groups=4), want)


# -- point in time -------------------------------------------------------------------------


@pytest.mark.spark
@pytest.mark.parametrize("cut", [datetime(2004, 8, 20), datetime(2008, 9, 15), datetime(2012, 7, 2)])
def test_truncating_the_future_leaves_the_past_unchanged_on_spark(spark, daily, macro, cut):
    """Features at bars < cut from the history up to the cut equal those from the full history, both on Spark
    (in a grouping other than the default), and equal the in-process truncated result."""
    full = compute_features_spark(spark, daily, macro, groups=3, calendar="XNYS")
    truncated = compute_features_spark(spark, daily.filter(pl.col("ts") < cut), macro, groups=3, calendar="XNYS")
    past = full.filter(pl.col("ts") < cut)
    assert past.height == truncated.height > 0
    assert_bit_identical(truncated, past)
    assert_bit_identical(truncated, compute_features(daily.filter(pl.col("ts") < cut), macro, calendar="XNYS"))


# -- from the store, through the pipeline ---------------------------------------------------


@pytest.mark.spark
def test_materialise_window_on_spark_stores_the_in_process_tables(spark, store):
    src = ShippedSource(SHIPPED)
    for name in ("bars_1d", "bars_1h"):
        ingest_bars(store, src, name, run_id=new_run_id("t"), now=NOW)
    load_macro_series(store, SHIPPED, run_id="m", now=NOW)
    load_treasury_curve(store, SHIPPED, run_id="m", now=NOW)
    window = (datetime(2009, 1, 1), datetime(2018, 1, 1))

    def tables() -> dict[str, pl.DataFrame]:
        return {t: store.query(f"SELECT * EXCLUDE (run_id) FROM {t} ORDER BY dataset, symbol, ts")
                for t in TABLES.values()}

    local = materialise_window(store, *window, run_id="local")
    want = tables()
    remote = materialise_window(store, *window, run_id="spark", compute=spark_compute(spark, groups=3))
    got = tables()
    assert [r.summaries for r in remote] == [r.summaries for r in local]
    assert {d: f.height for d, f in got.items()} == {d: f.height for d, f in want.items()}
    assert min(f.height for f in want.values()) > 10_000
    for table in TABLES.values():
        assert_bit_identical(got[table], want[table])
    assert store.query("SELECT DISTINCT run_id FROM sensory.fused").item() == "spark"


# -- errors, edges, planning ----------------------------------------------------------------


@pytest.mark.spark
def test_unusable_bars_raise_on_the_driver_as_in_process(spark, universe):
    dup = pl.concat([universe, universe.head(1)])
    with pytest.raises(FeatureInputError, match="duplicate bar") as in_process:
        compute_features(dup, None, name="x.csv")
    with pytest.raises(FeatureInputError, match="duplicate bar") as on_spark:
        compute_features_spark(spark, dup, None, name="x.csv")
    assert str(on_spark.value) == str(in_process.value)
    with pytest.raises(EmpError, match="unknown dimension"):
        compute_features_spark(spark, universe, None, weights={"who": 1.0})


@pytest.mark.spark
def test_an_empty_frame(spark, universe):
    empty = universe.clear()
    assert_bit_identical(compute_features_spark(spark, empty, None), compute_features(empty, None))


@pytest.mark.spark
def test_default_groups_follow_the_cores(spark):
    assert spark.sparkContext.defaultParallelism == 2
    assert default_groups(spark, 1000) == 2
    assert default_groups(spark, 9_000_000) == 5  # at most MAX_GROUP_ROWS bars a group


def test_groups_are_contiguous_non_empty_and_balanced():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(1, 500, rng.integers(1, 40))
        k = int(rng.integers(1, 50))
        plan = plan_groups(sizes, k)
        assert len(plan) == min(k, len(sizes))
        assert plan[0][0] == 0 and plan[-1][1] == len(sizes)
        assert all(a < b for a, b in plan) and all(p[1] == q[0] for p, q in pairwise(plan))
        rows = [int(sizes[a:b].sum()) for a, b in plan]
        assert max(rows) <= sizes.sum() / len(plan) + 2 * sizes.max()
    assert plan_groups(np.array([3270, 2148, 3270, 5031, 3270, 5031]), 2) == [(0, 3), (3, 6)]
    assert plan_groups(np.array([], dtype=np.int64), 3) == []
    with pytest.raises(ValueError, match="at least 1"):
        plan_groups(np.array([5]), 0)


def test_the_master_url_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("EMP_SPARK_MASTER", raising=False)
    assert spark_master() == "local[2]"
    monkeypatch.setenv("EMP_SPARK_MASTER", "spark://10.0.0.5:7077")
    assert spark_master() == "spark://10.0.0.5:7077"
