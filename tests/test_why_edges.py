"""WHY edge cases: the minimum histories of the z-scores (curve 252 values, inflation trend 24 months), the
62-day staleness of monthly values (inclusive), the null z-score of a constant component, which CPI and curve rows
are usable, one-row inputs that have started, a curve without CPI, and the first bar that counts as given.
Expected values come from numpy / plain Python on the synthetic inputs, not from the code under test."""

import dataclasses
import math
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from emp_core.errors import EmpError
from emp_core.sensory import compute_features, why
from emp_core.sensory.why import MacroInputs
from tests.support import daily_bars


def curve(days: list[date], m3: list[float], y10: list[float]) -> pl.DataFrame:
    """A Treasury curve published on each ``date`` (no ``available_at``: the date is the publication)."""
    return pl.DataFrame({"date": pl.Series(days, dtype=pl.Date), "m3": pl.Series(m3, dtype=pl.Float64),
                         "y10": pl.Series(y10, dtype=pl.Float64)})


def cpi(months: list[date], values: list[float], published: list[date]) -> pl.DataFrame:
    """Core CPI in the long ``macro.series`` format."""
    n = len(months)
    return pl.DataFrame({"series_id": ["core_cpi"] * n, "period_start": pl.Series(months, dtype=pl.Date),
                         "available_at": pl.Series(published, dtype=pl.Date),
                         "value": pl.Series(values, dtype=pl.Float64), "frequency": ["M"] * n})


def month_starts(first: date, n: int) -> list[date]:
    return [date(first.year + (first.month - 1 + i) // 12, (first.month - 1 + i) % 12 + 1, 1) for i in range(n)]


def monthly_cpi(n: int, first: date = date(2000, 1, 1), scale: float = 100.0) -> tuple[pl.DataFrame, np.ndarray]:
    """n months of a CPI index with varying growth, each published on the 15th of the next month."""
    m = np.arange(n)
    values = scale * np.exp(np.cumsum(0.002 + 0.0015 * np.sin(0.7 * m) + 0.0004 * np.cos(1.9 * m)))
    months = month_starts(first, n)
    published = [(d + timedelta(days=32)).replace(day=15) for d in months]
    return cpi(months, values.tolist(), published), values


def known_from(d: date) -> datetime:
    """Midnight of the day after publication: the first bar that may use a value published on ``d``."""
    return datetime(d.year, d.month, d.day) + timedelta(days=1)


def bars_at(ts: list[datetime]) -> pl.LazyFrame:
    return pl.LazyFrame({"ts": pl.Series(ts, dtype=pl.Datetime("us"))})


def z_last(x: np.ndarray) -> float:
    """z-score of the last value against the whole sample (sample std, ddof 1)."""
    return float((x[-1] - x.mean()) / x.std(ddof=1))


# 1. CURVE_Z minimum of 252 values


def test_the_curve_z_score_needs_252_curve_values():
    n = 260
    days = [date(2010, 1, 1) + timedelta(days=i) for i in range(n)]
    i = np.arange(n)
    m3 = 0.01 + 0.002 * np.cos(0.3 * i)
    y10 = 0.03 + 0.004 * np.sin(0.11 * i)
    slope = y10 - m3
    t = why.curve_timeline(curve(days, m3.tolist(), y10.tolist()), None)
    z = t["_z_slope"].to_list()
    assert z[250] is None  # 251 values
    assert z[251] == pytest.approx(z_last(slope[:252]), rel=1e-9)  # 252 values
    assert z[259] == pytest.approx(z_last(slope[:260]), rel=1e-9)


# 2. MONTHLY_Z minimum of 24 trend values


def test_the_inflation_trend_z_score_needs_24_monthly_trend_values():
    series, p = monthly_cpi(50)
    yoy = np.log(p[12:] / p[:-12])  # yoy[k] is month k + 12
    trend = yoy[6:] - yoy[:-6]  # trend[k] is month k + 18
    t = why.inflation_timeline(series)
    assert t["why_inflation_trend"].to_list()[:18] == [None] * 18
    assert t["why_inflation_trend"].to_numpy()[18:] == pytest.approx(trend, rel=1e-9, abs=1e-12)
    z = t["_z_inflation_trend"].to_list()
    assert z[:41] == [None] * 41  # up to 23 defined trend values
    assert z[41] == pytest.approx(z_last(trend[:24]), rel=1e-9)  # the 24th defined trend value
    assert z[49] == pytest.approx(z_last(trend[:32]), rel=1e-9)


# 3. MONTHLY_STALE: a monthly value older than 62 days is missing (join_asof tolerance is inclusive: |l - r| <= tol)


def test_per_date_sees_the_inflation_trend_62_days_after_it_became_known_but_not_63():
    series, p = monthly_cpi(20)
    yoy = np.log(p[12:] / p[:-12])
    last_trend = yoy[-1] - yoy[-7]  # month 19: yoy of month 19 minus that of month 13
    k = known_from(series["available_at"][-1])
    out = why.per_date(bars_at([k, k + timedelta(days=62), k + timedelta(days=63)]),
                       MacroInputs(series=series)).collect()
    trend = out["why_inflation_trend"].to_list()
    assert trend[0] == pytest.approx(last_trend, rel=1e-9)
    assert trend[1] == pytest.approx(last_trend, rel=1e-9)
    assert trend[2] is None
    assert out["_why_inflation_given"].to_list() == [True, True, True]


def test_the_real_rate_uses_inflation_62_days_old_but_not_63():
    series, p = monthly_cpi(13)
    last_yoy = float(np.log(p[12] / p[0]))
    k = known_from(series["available_at"][-1])
    # curve values published 61 and 62 days after k reach bars k + 62 and k + 63 days
    days = [(k + timedelta(days=61)).date(), (k + timedelta(days=62)).date()]
    t = why.curve_timeline(curve(days, [0.01, 0.01], [0.04, 0.05]), why.inflation_timeline(series))
    assert t["known_from"].to_list() == [k + timedelta(days=62), k + timedelta(days=63)]
    real = t["why_real_rate"].to_list()
    assert real[0] == pytest.approx(0.04 - last_yoy, rel=1e-12)
    assert real[1] is None


# 4. _z: a constant component has zero std: its z-score is null, not NaN


def test_a_flat_slope_has_a_null_z_score_not_nan():
    n = 300
    days = [date(2010, 1, 1) + timedelta(days=i) for i in range(n)]
    t = why.curve_timeline(curve(days, [0.01] * n, [0.03] * n), None)
    for c in ("_z_slope", "_z_slope_change"):
        assert t[c].null_count() == n, c
        assert not t[c].is_nan().any(), c
    # at a bar: the z-score is missing (not NaN), the raw slope is there
    out = why.per_date(bars_at([known_from(days[-1])]), MacroInputs(curve=curve(days, [0.01] * n, [0.03] * n)))
    row = out.collect().row(0, named=True)
    assert row["_z_slope"] is None and row["why_slope"] == pytest.approx(0.02, rel=1e-12)


# 5. CPI rows: an index quoted as a fraction is as good as the same index times 100; a zero value is ignored


def test_a_cpi_index_quoted_as_a_fraction_gives_the_same_inflation_as_times_100():
    fraction, p = monthly_cpi(30, scale=0.95)  # 0.95 .. ~1.07: crosses 1
    assert p.min() < 1.0 < p.max()
    hundred, _ = monthly_cpi(30, scale=95.0)
    a, b = why.inflation_timeline(fraction), why.inflation_timeline(hundred)
    assert a.height == b.height == 30
    assert a["known_from"].equals(b["known_from"])
    expected = np.log(p[12:] / p[:-12])
    assert a["inflation_yoy"].to_numpy()[12:] == pytest.approx(expected, rel=1e-9)
    assert b["inflation_yoy"].to_numpy()[12:] == pytest.approx(expected, rel=1e-9)
    trend = expected[6:] - expected[:-6]
    assert a["why_inflation_trend"].to_numpy()[18:] == pytest.approx(trend, rel=1e-9, abs=1e-12)
    assert b["why_inflation_trend"].to_numpy()[18:] == pytest.approx(trend, rel=1e-9, abs=1e-12)


def test_a_zero_cpi_value_is_ignored():
    good, _ = monthly_cpi(20)
    last = good["period_start"][-1]
    bad_month = date(last.year + (last.month == 12), last.month % 12 + 1, 1)
    bad = cpi([bad_month], [0.0], [(bad_month + timedelta(days=32)).replace(day=15)])
    with_bad = why.inflation_timeline(pl.concat([good, bad]))
    assert with_bad.equals(why.inflation_timeline(good))
    for c in ("inflation_yoy", "why_inflation_trend", "_z_inflation_trend"):
        assert with_bad[c].drop_nulls().is_finite().all(), c


# 6. and 10. a one-row CPI series has started: inflation is given from the first bar at its known_from on


def test_a_one_row_cpi_series_is_given_from_midnight_after_its_publication():
    published = date(2012, 2, 15)
    series = cpi([date(2012, 1, 1)], [230.0], [published])
    k = known_from(published)
    out = why.per_date(bars_at([k - timedelta(days=1), k, k + timedelta(days=30)]), MacroInputs(series=series))
    out = out.collect()
    assert out["_why_inflation_given"].to_list() == [False, True, True]
    assert out["why_inflation_trend"].null_count() == 3 and out["_z_inflation_trend"].null_count() == 3


def test_with_a_one_row_cpi_series_why_is_silent_after_its_publication():
    """The inflation trend was given and is missing: WHY says nothing, instead of the volatility regime alone."""
    bars = daily_bars("SYN", datetime(2010, 1, 4), 360)
    ts = bars["ts"].to_list()
    published = ts[300].date()  # bars 0..300 are before the value is known, 301.. after
    f = compute_features(bars, MacroInputs(series=cpi([date(2010, 1, 1)], [230.0], [published])))
    before = f.filter(pl.col("ts") <= ts[300])
    after = f.filter(pl.col("ts") > ts[300])
    spoken = before.filter(pl.col("why_score").is_not_null())
    assert spoken.height > 20 and (spoken["why_confidence"] == 0.2).all()
    assert before.row(-1, named=True)["why_score"] is not None
    assert after.height == 59
    assert after["why_score"].null_count() == after.height and (after["why_confidence"] == 0).all()


# 7. a curve day with y10 or m3 NaN is dropped: the bar sees the previous day's slope


@pytest.mark.parametrize("missing", ["y10", "m3"])
def test_a_curve_day_with_a_nan_rate_is_skipped(missing):
    days = [date(2015, 3, 2), date(2015, 3, 3), date(2015, 3, 4)]
    rates = {"m3": [0.011, 0.012, 0.013], "y10": [0.031, 0.034, 0.037]}
    rates[missing][1] = float("nan")
    c = curve(days, rates["m3"], rates["y10"])
    t = why.curve_timeline(c, None)
    assert t.height == 2 and not t["why_slope"].is_nan().any()
    out = why.per_date(bars_at([known_from(d) for d in days]), MacroInputs(curve=c)).collect()
    slope = out["why_slope"].to_list()
    assert slope[0] == pytest.approx(0.031 - 0.011, rel=1e-12)
    assert slope[1] == pytest.approx(0.031 - 0.011, rel=1e-12)  # day 2 unusable: day 1's value, 1 day old
    assert slope[2] == pytest.approx(0.037 - 0.013, rel=1e-12)


# 8. and 10. a one-row curve has started


def test_a_one_row_curve_is_given_from_midnight_after_its_date():
    d = date(2016, 6, 1)
    k = known_from(d)
    out = why.per_date(bars_at([k - timedelta(days=1), k, k + timedelta(days=3)]),
                       MacroInputs(curve=curve([d], [0.0025], [0.0185]))).collect()
    assert out["_why_curve_given"].to_list() == [False, True, True]
    slope = out["why_slope"].to_list()
    assert slope[0] is None
    assert slope[1] == pytest.approx(0.016, rel=1e-12) and slope[2] == pytest.approx(0.016, rel=1e-12)


# 9. a curve without CPI: slope present, real rate null


def test_a_curve_without_cpi_has_a_slope_and_no_real_rate():
    n = 70
    days = [date(2011, 1, 3) + timedelta(days=i) for i in range(n)]
    m3 = [0.01 + 0.0001 * i for i in range(n)]
    y10 = [0.03 + 0.0002 * i for i in range(n)]
    c = curve(days, m3, y10)
    t = why.curve_timeline(c, None)
    assert t["why_real_rate"].null_count() == n and t["_z_real_rate"].null_count() == n
    assert t["why_slope"].to_numpy() == pytest.approx(np.array(y10) - np.array(m3), rel=1e-12)
    out = why.per_date(bars_at([known_from(days[-1])]), MacroInputs(curve=c)).collect().row(0, named=True)
    assert out["why_slope"] == pytest.approx(y10[-1] - m3[-1], rel=1e-12)
    assert out["why_slope_change"] == pytest.approx((y10[-1] - m3[-1]) - (y10[-64] - m3[-64]), rel=1e-9)
    assert out["why_real_rate"] is None and out["_z_real_rate"] is None
    assert out["_why_curve_given"] is True and out["_why_inflation_given"] is False


# 10. the first bar at the first known_from counts as given, for both inputs


def test_a_bar_exactly_at_the_first_known_from_counts_as_given():
    series, _ = monthly_cpi(3, first=date(2013, 1, 1))  # first published 15 Feb 2013
    days = [date(2013, 3, 4), date(2013, 3, 5)]
    macro = MacroInputs(curve=curve(days, [0.001, 0.001], [0.02, 0.021]), series=series)
    k_cpi, k_curve = known_from(date(2013, 2, 15)), known_from(days[0])
    out = why.per_date(bars_at([k_cpi - timedelta(days=1), k_cpi, k_curve - timedelta(days=1), k_curve]),
                       macro).collect()
    assert out["_why_inflation_given"].to_list() == [False, True, True, True]
    assert out["_why_curve_given"].to_list() == [False, False, False, True]


def _monthly_cpi(missing: tuple[int, ...] = (), months: int = 30) -> pl.DataFrame:
    """Core CPI growing 1% a month from January 2000 (year-on-year log inflation 12 ln 1.01), some months left out."""
    keep = [i for i in range(months) if i not in missing]
    start = [date(2000 + i // 12, i % 12 + 1, 1) for i in keep]
    return pl.DataFrame({"series_id": "core_cpi", "period_start": start,
                         "available_at": [d + timedelta(days=45) for d in start],
                         "value": [100.0 * 1.01 ** i for i in keep]})


def test_year_on_year_inflation_compares_calendar_months_across_a_missing_month():
    """ln(P_m / P_{m-12}) is 12 months back by date: a missing month leaves a gap (the months that would compare
    with it have no year-on-year value), it never stretches the lag to 13 months."""
    out = why.inflation_timeline(_monthly_cpi(missing=(5,)))
    yoy = out.get_column("inflation_yoy").to_list()
    defined = [v for v in yoy if v is not None]
    assert defined and all(v == pytest.approx(12 * math.log(1.01), rel=1e-12) for v in defined)
    # months 12..29 less the missing month 5 itself: month 17 (June 2001) has no June 2000 to compare with
    assert len(defined) == 30 - 12 - 1
    trend = [v for v in out.get_column("why_inflation_trend").to_list() if v is not None]
    assert trend and all(abs(v) < 1e-12 for v in trend)  # constant inflation: no trend, whatever the gap


def test_two_values_for_one_cpi_period_are_refused_with_the_series_named():
    cpi = _monthly_cpi()
    with pytest.raises(EmpError, match=r"core_cpi.*more than one value for a period"):
        why.inflation_timeline(pl.concat([cpi, cpi.tail(1)]))


def test_periods_stamped_at_month_ends_compare_the_same_months():
    """The lags are calendar months, whatever day of the month the periods carry (month ends: Sep 30 and Mar 31)."""
    starts = _monthly_cpi()
    ends = starts.with_columns(
        pl.col("period_start").dt.month_end(), pl.col("available_at").dt.offset_by("1mo"))
    a, b = why.inflation_timeline(starts), why.inflation_timeline(ends)
    for column in ("inflation_yoy", "why_inflation_trend"):
        assert a.get_column(column).null_count() == b.get_column(column).null_count() < a.height
        assert np.allclose(a.get_column(column).drop_nulls(), b.get_column(column).drop_nulls(), rtol=1e-12)


def test_macro_inputs_are_an_immutable_value():
    """MacroInputs is passed around and shared between the dimensions: it cannot be changed after it is made,
    and it can key a cache."""
    macro = MacroInputs()
    with pytest.raises(dataclasses.FrozenInstanceError):
        macro.curve = pl.DataFrame()  # type: ignore[misc]
    assert hash(macro) == hash(MacroInputs())


@pytest.mark.parametrize("late", [None, 12, 20])
def test_inflation_known_by_a_date_is_what_the_series_published_by_then_gives(late):
    """Point in time, by truncation: every row of the timeline known by a date is, value for value, the row the
    values published by then give, also when a month is published (or revised) late, after months that compare
    with it (month 12 is compared by month 24, month 20 by month 32 and by the trends of months 26 and 38). A
    month after a late one is held back until the late one is public (its z-score's window reads it), so the
    series published by a date may give rows the timeline does not show yet, never the other way round. The cuts
    fall on every publication date and the day after (a value dated D is known from D + 1), and the index grows at
    a varying rate, so the z-scores compared are not rounding noise."""
    cpi, _ = monthly_cpi(60)
    if late is not None:
        cpi = cpi.with_columns(
            available_at=pl.when(pl.int_range(pl.len()) == late).then(pl.col("available_at").dt.offset_by("14mo"))
            .otherwise("available_at"),
            value=pl.when(pl.int_range(pl.len()) == late).then(pl.col("value") * 1.05).otherwise("value"))
    full = why.inflation_timeline(cpi)
    known = full.get_column("known_from")
    assert known.is_sorted() and known.n_unique() == known.len()
    published = cpi.get_column("available_at")
    cuts = sorted({*pl.date_range(date(2000, 6, 1), date(2005, 6, 1), "1mo", eager=True), *published,
                   *(published + timedelta(days=1))})
    for cut in cuts:
        at = datetime.combine(cut, datetime.min.time())
        public = cpi.filter(pl.col("available_at") < cut)  # known from the next day: before the cut
        past = why.inflation_timeline(public) if public.height else None
        seen = full.filter(pl.col("known_from") <= at)
        if past is None:
            assert seen.height == 0
            continue
        assert set(seen.get_column("known_from")) <= set(past.get_column("known_from"))
        assert seen.equals(past.filter(pl.col("known_from").is_in(seen.get_column("known_from").implode()))), \
            f"{late}, {cut}"
