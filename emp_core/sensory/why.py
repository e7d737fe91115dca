"""WHY: the macro backdrop, from the Treasury curve, inflation and the symbol's volatility regime.

Point in time: a macro value dated D (``available_at``, its publication date)
reaches bars from D + 1 day on. Release times within the day are not in the
data, and the Treasury curve is published after the close, so the next day is
the first bar that could have acted on it. A value older than its staleness
limit (curve 10 days, monthly series 62 days) is treated as missing. A month's
inflation figures read earlier months, so they reach bars only once every earlier
month is public too (a month published late holds back the months after it).

Components:

- ``why_slope``: term spread y10 - m3 (decimal), the classic recession /
  growth indicator (Estrella and Mishkin 1998). Positive evidence.
- ``why_slope_change``: slope minus slope 63 curve days earlier (steepening is
  positive evidence).
- ``why_real_rate``: y10 minus year-on-year core CPI inflation ln(P_m / P_{m-12})
  (ex-post real yield). Negative evidence: tighter real conditions.
- ``why_inflation_trend``: change of year-on-year inflation over 6 months.
  Negative evidence.
- ``why_vol_regime``: z-score of ln(21-bar return volatility) against its last
  252 bars, per symbol. Negative evidence: a high-volatility regime is risk-off.

Each macro component is z-scored against its own trailing history on its own
timeline (curve: 1260 days, at least 252; inflation: 60 months, at least 24),
so a bar sees only z-scores computed from values public by then.
Evidence: signed mean of the z-scores; score tanh(evidence); confidence = share
of the five components present. **The composition is stable**: a component whose
input was given (the curve's three, the inflation trend, the volatility regime)
must be present at the bar once that input has started (its first value is
public), else WHY says nothing there (null, confidence 0). An
average that silently lost members jumped: when the shipped Treasury curve ends
(29 March 2017), SPX's score went from -0.158 on 7 April to +0.623 on 10 April as
the mean fell back on inflation and volatility alone. Components whose input was
not given at all (``--no-macro``) are simply not part of the composition: WHY is
then the volatility regime, with confidence 0.2.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from emp_core.errors import EmpError
from emp_core.sensory.base import RET, Context, log, score_and_confidence, trailing, weighted_mean, zscore

SLOPE_CHANGE_DAYS = 63
CURVE_Z = (1260, 252)
MONTHLY_Z = (60, 24)
INFLATION_SERIES = "core_cpi"
CURVE_STALE = timedelta(days=10)
MONTHLY_STALE = timedelta(days=62)
VOL_WINDOW = 21
VOL_Z_WINDOW = 252
SIGNS = {"slope": 1.0, "slope_change": 1.0, "real_rate": -1.0, "inflation_trend": -1.0, "vol_regime": -1.0}
MACRO_COMPONENTS = ("why_slope", "why_slope_change", "why_real_rate", "why_inflation_trend")
COMPONENTS = (*MACRO_COMPONENTS, "why_vol_regime")


@dataclass(frozen=True)
class MacroInputs:
    """Macro data for WHY and WHEN. ``curve``: date, [available_at], m3, y10 in decimals.
    ``series``: series_id, period_start, available_at, value (long format, as ``macro.series``)."""

    curve: pl.DataFrame | None = None
    series: pl.DataFrame | None = None


def _z(x: str, window: tuple[int, int]) -> pl.Expr:
    n, m = window
    col = pl.col(x)
    std = col.rolling_std(n, min_samples=m)
    return pl.when(std > 0).then((col - col.rolling_mean(n, min_samples=m)) / std)


def _known_from(frame: pl.DataFrame, date_col: str) -> pl.Expr:
    published = pl.col("available_at") if "available_at" in frame.columns else pl.col(date_col)
    return (published.cast(pl.Date) + pl.duration(days=1)).cast(pl.Datetime("us")).alias("known_from")


def inflation_timeline(series: pl.DataFrame | None) -> pl.DataFrame | None:
    """Monthly year-on-year core inflation and its 6-month change, keyed by the day they became usable."""
    if series is None:
        return None
    cpi = series.filter((pl.col("series_id") == INFLATION_SERIES) & pl.col("value").is_finite() & (pl.col("value") > 0))
    if cpi.height == 0:
        return None
    if cpi.select(_month().is_duplicated().any()).item():
        raise EmpError(f"macro series {INFLATION_SERIES!r}: more than one value for a period "
                       "(expected one per month, as the macro table stores them)")
    # A month's figures read earlier months (12 and 18 back, and the z-score's window), so they are usable only once
    # every earlier month is public too: the latest publication so far, in period order. With publication lags
    # that grow with the period (the shipped rules) this is each month's own date; a month published late holds
    # back the months after it instead of letting them read it early.
    cpi = cpi.sort("period_start").with_columns(_known_from(cpi, "period_start").cum_max())
    # 12 and 6 calendar months back, by the period's date (a missing month is a gap, not a shorter lag)
    yoy = (pl.col("value") / _months_back(cpi, "value", 12)).log().alias("inflation_yoy")
    cpi = cpi.with_columns(yoy)
    return (
        cpi.select("known_from", "inflation_yoy",
                   (pl.col("inflation_yoy") - _months_back(cpi, "inflation_yoy", 6)).alias("why_inflation_trend"))
        .with_columns(_z("why_inflation_trend", MONTHLY_Z).alias("_z_inflation_trend"))
        .unique("known_from", keep="last", maintain_order=True)  # months known on one day: the latest one
    )


def _months_back(frame: pl.DataFrame, column: str, months: int) -> pl.Series:
    """``column`` of the row whose period is ``months`` calendar months before each row's (null if none), by
    year and month (periods stamped at month ends match too: no day-of-month arithmetic)."""
    earlier = frame.select(_month() + months, pl.col(column).alias("_earlier"))
    return frame.select(_month()).join(earlier, on="_m", how="left", maintain_order="left").get_column("_earlier")


def _month() -> pl.Expr:
    """The period's calendar month as a count of months (year * 12 + month)."""
    return (pl.col("period_start").dt.year().cast(pl.Int64) * 12 + pl.col("period_start").dt.month()).alias("_m")


def curve_timeline(curve: pl.DataFrame | None, inflation: pl.DataFrame | None) -> pl.DataFrame | None:
    """Daily slope, slope change and real rate (with their z-scores), keyed by the day they became usable."""
    if curve is None:
        return None
    rows = curve.filter(pl.col("m3").is_finite() & pl.col("y10").is_finite())
    if rows.height == 0:
        return None
    rows = rows.sort("date").with_columns(_known_from(rows, "date"))
    frame = rows.select(
        "known_from", "y10", (pl.col("y10") - pl.col("m3")).alias("why_slope"),
    ).with_columns((pl.col("why_slope") - pl.col("why_slope").shift(SLOPE_CHANGE_DAYS)).alias("why_slope_change"))
    if inflation is not None:
        frame = frame.join_asof(inflation.select("known_from", "inflation_yoy"), on="known_from",
                                strategy="backward", tolerance=MONTHLY_STALE)
        frame = frame.with_columns((pl.col("y10") - pl.col("inflation_yoy")).alias("why_real_rate"))
    else:
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias("why_real_rate"))
    return frame.with_columns(
        _z("why_slope", CURVE_Z).alias("_z_slope"),
        _z("why_slope_change", CURVE_Z).alias("_z_slope_change"),
        _z("why_real_rate", CURVE_Z).alias("_z_real_rate"),
    ).select("known_from", "why_slope", "why_slope_change", "why_real_rate", "_z_slope", "_z_slope_change",
             "_z_real_rate")


def per_date(dates: pl.LazyFrame, macro: MacroInputs | None) -> pl.LazyFrame:
    """Add the macro components (and their z-scores) to each bar time in ``dates`` (sorted), point in time,
    and whether each input had started by the bar (``_why_curve_given``, ``_why_inflation_given``)."""
    macro = macro or MacroInputs()
    inflation = inflation_timeline(macro.series)
    curve = curve_timeline(macro.curve, inflation)
    # An input counts as given from its first value on (a bar before it cannot know it will come).
    dates = dates.with_columns(
        _started(curve).alias("_why_curve_given"), _started(inflation).alias("_why_inflation_given"))
    if curve is not None:
        dates = dates.join_asof(curve.lazy(), left_on="ts", right_on="known_from", strategy="backward",
                                tolerance=CURVE_STALE).drop("known_from")
    else:
        dates = dates.with_columns(pl.lit(None, pl.Float64).alias(c) for c in (
            "why_slope", "why_slope_change", "why_real_rate", "_z_slope", "_z_slope_change", "_z_real_rate"))
    if inflation is not None:
        dates = dates.join_asof(inflation.lazy().select("known_from", "why_inflation_trend", "_z_inflation_trend"),
                                left_on="ts", right_on="known_from", strategy="backward",
                                tolerance=MONTHLY_STALE).drop("known_from")
    else:
        dates = dates.with_columns(pl.lit(None, pl.Float64).alias(c)
                                   for c in ("why_inflation_trend", "_z_inflation_trend"))
    return dates


def _started(timeline: pl.DataFrame | None) -> pl.Expr:
    if timeline is None:
        return pl.lit(False)
    return pl.col("ts") >= timeline.get_column("known_from").min()


def stages(ctx: Context) -> list[list[pl.Expr]]:
    vol = trailing(pl.col(RET), VOL_WINDOW, "std").alias("_why_vol")
    regime = zscore(log(pl.col("_why_vol")), VOL_Z_WINDOW).alias("why_vol_regime")
    parts = {"slope": pl.col("_z_slope"), "slope_change": pl.col("_z_slope_change"),
             "real_rate": pl.col("_z_real_rate"), "inflation_trend": pl.col("_z_inflation_trend"),
             "vol_regime": pl.col("why_vol_regime")}
    curve, inflation = pl.col("_why_curve_given"), pl.col("_why_inflation_given")
    given = {"slope": curve, "slope_change": curve, "real_rate": curve & inflation, "inflation_trend": inflation,
             "vol_regime": pl.lit(True)}
    evidence, coverage = weighted_mean([(SIGNS[name], x) for name, x in parts.items()])
    complete = pl.all_horizontal([x.is_not_null() | ~given[name] for name, x in parts.items()])
    return [[vol], [regime], *score_and_confidence("why", pl.when(complete).then(evidence), coverage)]
