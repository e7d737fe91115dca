"""The sensory cortex: against a bar-by-bar reference, point in time, signs, and bad input."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import polars.selectors as cs
import pytest

from emp_core.errors import EmpError
from emp_core.sensory import DIMENSIONS, FeatureInputError, MacroInputs, compute_features
from emp_core.sensory.fusion import check_weights
from tests.sensory_reference import reference_features
from tests.support import SHIPPED

# Floats are compared as |fast - reference| <= TOL * (1 + |reference|): the two differ only in
# summation order (Polars updates rolling sums incrementally, the reference sums each window).
TOL = 1e-9


@pytest.fixture(scope="module")
def hourly() -> pl.DataFrame:
    return pl.read_parquet(SHIPPED / "bars_hourly.parquet")


def assert_frames_match(fast: pl.DataFrame, ref: pl.DataFrame) -> None:
    assert fast.height == ref.height
    assert set(fast.columns) <= set(ref.columns), set(fast.columns) - set(ref.columns)
    for col in fast.columns:
        a, r = fast.get_column(col), ref.get_column(col)
        if a.dtype.is_float():
            r = r.cast(pl.Float64)
            assert (a.is_null() == r.is_null()).all(), f"{col}: defined on different bars"
            both = a.is_not_null()
            worst = ((a - r).abs() / (1.0 + r.abs())).filter(both).max()
            assert worst is None or worst <= TOL, f"{col}: differs by {worst:.3g}"
        else:
            r = r.cast(a.dtype)
            bad = ~a.eq_missing(r)
            assert not bad.any(), f"{col}: {a.filter(bad).head(3).to_list()} != {r.filter(bad).head(3).to_list()}"


def assert_defined(frame: pl.DataFrame) -> None:
    """No NaN or inf anywhere; scores in [-1, 1]; confidences in [0, 1]; a null score has confidence 0."""
    floats = frame.select(cs.float())
    assert floats.select(pl.all().is_nan().any()).sum_horizontal().item() == 0
    assert floats.select(pl.all().is_infinite().any()).sum_horizontal().item() == 0
    for d in (*DIMENSIONS, "signal"):
        score = f"{d}_score" if d != "signal" else "signal"
        conf = f"{d}_confidence" if d != "signal" else "signal_confidence"
        s, c = frame.get_column(score), frame.get_column(conf)
        assert ((s >= -1) & (s <= 1)).fill_null(True).all(), score
        assert ((c >= 0) & (c <= 1)).all(), conf
        if d != "signal":
            assert (c.filter(s.is_null()) == 0).all(), f"{conf} not 0 where {score} is null"


# -- against the reference ---------------------------------------------------------------


def test_daily_features_match_the_reference(daily, macro):
    bars = daily.filter(pl.col("symbol").is_in(["IBM", "SPX"]) & pl.col("ts").is_between(
        datetime(2007, 6, 1), datetime(2009, 12, 31)))
    fast = compute_features(bars, macro, calendar="XNYS")
    assert_frames_match(fast, reference_features(bars, macro, calendar="XNYS"))
    # The comparison means something only if the columns are mostly defined.
    assert fast.get_column("anomaly_mahalanobis").is_not_null().mean() > 0.8
    assert fast.get_column("why_real_rate").is_not_null().mean() > 0.9
    assert fast.get_column("anomaly_flag").sum() > 0


def test_intraday_features_match_the_reference(hourly, macro):
    bars = hourly.head(1200)
    fast = compute_features(bars, macro)
    assert fast.get_column("when_session").n_unique() == 5
    assert_frames_match(fast, reference_features(bars, macro, intraday=True))


def test_gappy_features_match_the_reference(daily, macro):
    """NaN closes, zero volumes and missing highs take the null-aware paths; still equal, never NaN/inf."""
    bars = daily.filter((pl.col("symbol") == "MSFT") & pl.col("ts").is_between(datetime(2008, 1, 1),
                                                                              datetime(2010, 6, 30)))
    rng = np.random.default_rng(7)
    picks = rng.choice(bars.height, 30, replace=False)
    bars = bars.with_row_index("k").with_columns(
        pl.when(pl.col("k").is_in(picks[:10].tolist())).then(float("nan")).otherwise("close").alias("close"),
        pl.when(pl.col("k").is_in(picks[10:20].tolist())).then(0.0).otherwise("volume").alias("volume"),
        pl.when(pl.col("k").is_in(picks[20:].tolist())).then(None).otherwise("high").alias("high"),
    ).drop("k")
    fast = compute_features(bars, macro)
    assert fast.height == bars.height
    assert_defined(fast)
    assert_frames_match(fast, reference_features(bars, macro))


def test_custom_weights_match_the_reference(daily):
    bars = daily.filter((pl.col("symbol") == "GOOG") & (pl.col("ts") < datetime(2006, 6, 1)))
    weights = {"what": 1.0, "anomaly": -0.5, "how": 0.25}
    assert_frames_match(compute_features(bars, None, weights=weights), reference_features(bars, None, weights=weights))


# -- point in time -----------------------------------------------------------------------


@pytest.mark.parametrize("cut", [datetime(2003, 3, 14), datetime(2008, 9, 15), datetime(2012, 7, 2)])
def test_truncating_the_future_leaves_the_past_unchanged(daily, macro, cut):
    """Every bar < cut, every column, bit for bit: history after the cut (of any symbol) changes nothing."""
    full = compute_features(daily, macro, calendar="XNYS")
    truncated = compute_features(daily.filter(pl.col("ts") < cut), macro, calendar="XNYS")
    past = full.filter(pl.col("ts") < cut)
    assert past.height == truncated.height > 0
    assert past.equals(truncated), _first_difference(past, truncated)


def test_truncating_intraday_leaves_the_past_unchanged(hourly, macro):
    cut = datetime(2017, 6, 14, 13)
    full = compute_features(hourly, macro).filter(pl.col("ts") < cut)
    assert full.equals(compute_features(hourly.filter(pl.col("ts") < cut), macro))


def test_macro_reaches_a_bar_only_after_its_release(daily, macro):
    """WHY at bars before t is the same when every macro value released from t - 1 day on is removed."""
    cut = datetime(2008, 10, 1)
    late = cut.date() - timedelta(days=1)
    known = MacroInputs(curve=macro.curve.filter(pl.col("available_at") < late),
                        series=macro.series.filter(pl.col("available_at") < late))
    why_cols = [c for c in compute_features(daily.head(10), None).columns if c.startswith("why_")]
    full = compute_features(daily, macro).filter(pl.col("ts") < cut).select("symbol", "ts", *why_cols)
    cut_macro = compute_features(daily, known).filter(pl.col("ts") < cut).select("symbol", "ts", *why_cols)
    assert full.get_column("why_slope").is_not_null().sum() > 1000
    assert full.equals(cut_macro), _first_difference(full, cut_macro)


def _first_difference(a: pl.DataFrame, b: pl.DataFrame) -> str:
    for col in a.columns:
        diff = ~a.get_column(col).eq_missing(b.get_column(col))
        if diff.any():
            i = diff.arg_true()[0]
            return f"{col} at {a.row(i, named=True)['symbol']} {a.row(i, named=True)['ts']}: " \
                   f"{a.get_column(col)[i]!r} != {b.get_column(col)[i]!r}"
    return "frames differ in shape or dtype"


# -- signs -------------------------------------------------------------------------------


def synthetic(drift: float, noise: float, n: int = 600, seed: int = 1, symbol: str = "SYN") -> pl.DataFrame:
    """Daily bars from log-returns N(drift, noise), with a consistent high/low and log-normal volume."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(drift, noise, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0, noise, n)) + 1e-4
    ts = [datetime(2010, 1, 4) + timedelta(days=i) for i in range(n)]
    return pl.DataFrame({
        "symbol": symbol, "ts": ts, "open": open_, "close": close,
        "high": np.maximum(open_, close) * (1 + spread), "low": np.minimum(open_, close) * (1 - spread),
        "volume": np.exp(rng.normal(13, 0.3, n)),
    })


def test_steady_uptrend_scores_what_positive_and_downtrend_negative():
    up = compute_features(synthetic(0.002, 0.004), None)
    down = compute_features(synthetic(-0.002, 0.004), None)
    assert up.get_column("what_score").is_not_null().sum() > 500
    assert up.get_column("what_score").min() > 0
    assert down.get_column("what_score").max() < 0
    assert up.get_column("signal").drop_nulls().mean() > 0.2
    assert down.get_column("signal").drop_nulls().mean() < -0.2


def test_flat_series_scores_about_zero():
    """A driftless, mean-reverting series: no direction on average in WHAT or the fused signal."""
    rng = np.random.default_rng(5)
    flat = synthetic(0.0, 0.01).with_columns(close=100.0 * np.exp(rng.normal(0, 0.01, 600)))
    flat = flat.with_columns(open=pl.col("close").shift(1).fill_null(100.0)).with_columns(
        high=pl.max_horizontal("open", "close") * 1.002, low=pl.min_horizontal("open", "close") * 0.998)
    out = compute_features(flat, None)
    assert abs(out.get_column("what_score").mean()) < 0.05
    assert abs(out.get_column("signal").mean()) < 0.05
    assert out.get_column("what_trend_126").drop_nulls().abs().max() < 0.5


@pytest.mark.parametrize("move", [1.03, 0.97])
def test_volume_spike_is_flagged_with_its_explanation_and_direction(move):
    bars = synthetic(0.0, 0.01, n=400, seed=11)
    k = 300
    prev_close = bars.get_column("close")[k - 1]
    spiked = bars.with_row_index("k").with_columns(
        volume=pl.when(pl.col("k") == k).then(pl.col("volume") * 40).otherwise("volume"),
        open=pl.when(pl.col("k") == k).then(prev_close).otherwise("open"),
        close=pl.when(pl.col("k") == k).then(prev_close * move).otherwise("close"),
    ).with_columns(
        high=pl.when(pl.col("k") == k).then(pl.max_horizontal("open", "close") * 1.001).otherwise("high"),
        low=pl.when(pl.col("k") == k).then(pl.min_horizontal("open", "close") * 0.999).otherwise("low"),
    ).drop("k")
    row = compute_features(spiked, None).row(k, named=True)
    assert row["anomaly_flag"] is True
    assert "volume z=+" in row["anomaly_explanation"]
    assert row["anomaly_volume_z"] > 10
    assert np.sign(row["anomaly_score"]) == np.sign(move - 1)
    # The bars before the spike are not flagged for volume.
    before = compute_features(spiked, None).head(k)
    assert not before.get_column("anomaly_explanation").drop_nulls().str.contains("volume z=+1[0-9]").any()


def test_quotes_and_book_sizes_replace_the_ohlc_estimators():
    """With bid/ask the spread is the quoted one; with sizes the pressure is the book imbalance."""
    bars = synthetic(0.0005, 0.01, n=300, seed=4)
    rng = np.random.default_rng(9)
    bid_size, ask_size = rng.uniform(100, 500, 300), rng.uniform(100, 500, 300)
    quoted = bars.with_columns(bid=pl.col("close") * (1 - 0.0005), ask=pl.col("close") * (1 + 0.0005),
                               bid_size=bid_size, ask_size=ask_size)
    out = compute_features(quoted, None)
    spread = out.get_column("how_spread").drop_nulls()
    assert spread.len() > 250 and (spread - 0.001).abs().max() < 1e-12
    imbalance = (bid_size - ask_size) / (bid_size + ask_size)
    t = 200
    assert out.get_column("how_pressure")[t] == pytest.approx(imbalance[t - 19: t + 1].mean(), rel=1e-12)
    ohlc = compute_features(bars, None)
    assert not np.allclose(ohlc.get_column("how_spread").drop_nulls().to_numpy(), 0.001)
    assert out.get_column("how_score").is_not_null().sum() > 0


# -- bad input ---------------------------------------------------------------------------


def test_missing_macro_data_lowers_why_confidence_without_failing(daily):
    out = compute_features(daily.filter(pl.col("symbol") == "SPX"), None)
    assert out.get_column("why_slope").is_null().all()
    assert out.get_column("why_confidence").max() == pytest.approx(0.2)  # one component of five
    assert out.get_column("why_score").is_not_null().sum() > 4000
    assert_defined(out)


def test_constant_prices_give_null_scores_with_zero_confidence():
    bars = synthetic(0.0, 0.01, n=300).with_columns(open=100.0, high=100.0, low=100.0, close=100.0, volume=1e5)
    out = compute_features(bars, None)
    assert_defined(out)
    for d in DIMENSIONS:
        assert out.get_column(f"{d}_score").is_null().all(), d
        assert (out.get_column(f"{d}_confidence") == 0).all(), d
    assert out.get_column("signal").is_null().all()
    assert (out.get_column("signal_confidence") == 0).all()


def test_zero_volume_gives_null_liquidity_not_inf():
    out = compute_features(synthetic(0.001, 0.01, n=300).with_columns(volume=0.0), None)
    assert_defined(out)
    assert out.get_column("how_score").is_null().all()
    assert out.get_column("how_amihud").is_null().all()
    assert out.get_column("what_score").is_not_null().sum() > 200


def test_a_single_bar_and_an_empty_frame():
    one = compute_features(synthetic(0.0, 0.01, n=1), None)
    assert one.height == 1
    assert_defined(one)
    assert one.get_column("signal").is_null().all()
    empty = compute_features(synthetic(0.0, 0.01, n=1).clear(), None)
    assert empty.height == 0
    assert empty.columns == one.columns


def test_unsorted_input_gives_the_sorted_result(daily):
    bars = daily.filter(pl.col("symbol").is_in(["AAPL", "IBM"]) & (pl.col("ts") < datetime(2002, 1, 1)))
    assert compute_features(bars.sample(fraction=1.0, shuffle=True, seed=3), None).equals(
        compute_features(bars, None))


def test_zone_aware_timestamps_mean_the_same_instants(hourly):
    bars = hourly.head(300)
    aware = bars.with_columns(pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone("America/New_York"))
    assert compute_features(aware, None).equals(compute_features(bars, None))


@pytest.mark.parametrize(("change", "message"), [
    (lambda b: b.drop("volume"), "missing column(s) volume"),
    (lambda b: b.with_columns(pl.col("ts").cast(pl.String)), "column ts must be a datetime"),
    (lambda b: b.with_columns(pl.col("close").cast(pl.String) + "x"), "not numeric"),
    (lambda b: pl.concat([b, b.head(1)]), "duplicate bar(s), e.g. SYN at 2010-01-04"),
])
def test_unusable_frames_raise_a_clear_error(change, message):
    with pytest.raises(FeatureInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compute_features(change(synthetic(0.0, 0.01, n=50)), None, name="prices.csv")


def test_fusion_weights_are_checked():
    assert check_weights({"what": 1.0})["why"] == 0.0
    with pytest.raises(EmpError, match="unknown dimension"):
        check_weights({"momentum": 1.0})
    with pytest.raises(EmpError, match="every weight is zero"):
        check_weights({"what": 0.0})
    with pytest.raises(EmpError, match="not a finite number"):
        check_weights({"what": float("nan")})


def test_single_dimension_weight_passes_its_score_through(daily):
    out = compute_features(daily.filter(pl.col("symbol") == "IBM"), None, weights={"what": 1.0})
    sure = out.filter(pl.col("what_confidence") > 0)
    assert (sure.get_column("signal") - sure.get_column("what_score")).abs().max() < 1e-12
