"""WHEN: timing. Calendar position of the bar, signed by the return that historically followed it.

Buckets of bar t (calendar facts known in advance, never read from later bars):

- daily bars: ``when_weekday`` (1 = Monday), ``when_month_phase`` (``early``:
  day 1-3, ``late``: day 25 on, else ``mid``: the turn-of-month effect, Ariel
  1987), ``when_release_eve`` (a scheduled macro release falls on the next
  business day; the release calendar is the ``available_at`` dates of the
  monthly and quarterly series, which are published in advance).
- intraday bars: ``when_session`` (``asia``, ``london``, ``new_york``,
  ``overlap`` = London and New York both open, ``off``; from local hours
  Tokyo 09-18, London 08-17, New York 08-17 with daylight saving),
  ``when_weekday`` and ``when_release_eve``.

For each bucket family f, the conditional next-bar return is estimated point in
time: over the earlier bars s < t of the same symbol in the same bucket, the
mean and standard deviation of r_{s+1} (each known by bar s + 1 <= t), and the
t-statistic t_f = mean / (sd / sqrt(n)) once n >= 20.
Evidence: mean of the t_f present divided by 2 (a conventionally significant
effect, |t| = 2, gives tanh(1) = 0.76); confidence = mean over families of
min(1, n_f / 250), 0 for a family without an estimate.
"""

from __future__ import annotations

import polars as pl

from emp_core.sensory.base import POS, RET, Context, score_and_confidence
from emp_core.sensory.why import MacroInputs

FWD = "_fwd"  # r_{t+1}: only ever summed over earlier bars s < t, whose r_{s+1} is known at t
MIN_OBS = 20
FULL_OBS = 250
SESSIONS = {"asia": ("Asia/Tokyo", 9, 18), "london": ("Europe/London", 8, 17),
            "new_york": ("America/New_York", 8, 17)}
DAILY_FAMILIES = ("weekday", "month_phase", "release_eve")
INTRADAY_FAMILIES = ("session", "weekday", "release_eve")


def release_dates(macro: MacroInputs | None) -> pl.DataFrame | None:
    """Publication dates of the monthly and quarterly macro series: the scheduled release calendar."""
    if macro is None or macro.series is None or "available_at" not in macro.series.columns:
        return None
    series = macro.series
    if "frequency" in series.columns:
        series = series.filter(pl.col("frequency") != "D")
    dates = series.select(pl.col("available_at").cast(pl.Date).unique().sort().alias("release"))
    return dates if dates.height else None


def per_date(dates: pl.LazyFrame, macro: MacroInputs | None) -> pl.LazyFrame:
    """Add ``when_days_to_release`` to each bar time in ``dates`` (sorted): calendar days from the
    bar's date to the next scheduled release after it."""
    releases = release_dates(macro)
    if releases is None:
        return dates.with_columns(pl.lit(None, pl.Int64).alias("when_days_to_release"))
    return (
        dates.with_columns((pl.col("ts").dt.date() + pl.duration(days=1)).alias("_after"))
        .join_asof(releases.lazy(), left_on="_after", right_on="release", strategy="forward")
        .with_columns((pl.col("release") - pl.col("ts").dt.date()).dt.total_days().alias("when_days_to_release"))
        .drop("_after", "release")
    )


def _session() -> pl.Expr:
    ts = pl.col("ts").dt.replace_time_zone("UTC")
    open_in = {name: ts.dt.convert_time_zone(tz).dt.hour().is_between(lo, hi, closed="left")
               for name, (tz, lo, hi) in SESSIONS.items()}
    return (
        pl.when(open_in["london"] & open_in["new_york"]).then(pl.lit("overlap"))
        .when(open_in["london"]).then(pl.lit("london"))
        .when(open_in["new_york"]).then(pl.lit("new_york"))
        .when(open_in["asia"]).then(pl.lit("asia"))
        .otherwise(pl.lit("off"))
    )


def _next_business_day_gap() -> pl.Expr:
    wd = pl.col("ts").dt.weekday()
    return pl.when(wd == 5).then(3).when(wd == 6).then(2).otherwise(1)


def _running_sums(bucket: str) -> list[pl.Expr]:
    """n, sum and sum of squares of r_{s+1} over the earlier bars s < t of the same symbol and bucket."""
    # Inside .over() every expression runs per (symbol, bucket) group, so the next
    # bar's return is taken beforehand, on the flat frame (column _fwd).
    x = pl.col(FWD).fill_null(0.0)
    seen = pl.col(FWD).is_not_null().cast(pl.Int64)
    keys = ["symbol", f"when_{bucket}"]
    # Exclusive sums as the previous row's running sum (not "running sum minus own value",
    # whose rounding would depend on r_{t+1}).
    return [
        seen.cum_sum().shift(1, fill_value=0).over(keys).alias(f"_n_{bucket}"),
        x.cum_sum().shift(1, fill_value=0.0).over(keys).alias(f"_s1_{bucket}"),
        (x * x).cum_sum().shift(1, fill_value=0.0).over(keys).alias(f"_s2_{bucket}"),
    ]


def _t_stat(bucket: str) -> pl.Expr:
    """t = mean / (sd / sqrt(n)) with sd^2 = (s2 - s1^2 / n) / (n - 1); null below MIN_OBS or at zero variance."""
    n, s1, s2 = pl.col(f"_n_{bucket}"), pl.col(f"_s1_{bucket}"), pl.col(f"_s2_{bucket}")
    var = (s2 - s1 * s1 / n) / (n - 1)
    t = (s1 / n) / (var / n).sqrt()
    return pl.when((n >= MIN_OBS) & (var > 0)).then(t).alias(f"when_t_{bucket}")


def stages(ctx: Context) -> list[list[pl.Expr]]:
    families = INTRADAY_FAMILIES if ctx.intraday else DAILY_FAMILIES
    day = pl.col("ts").dt.day()
    same_next = pl.col(POS).shift(-1) == pl.col(POS) + 1
    buckets = [
        pl.when(same_next).then(pl.col(RET).shift(-1)).alias(FWD),
        pl.col("ts").dt.weekday().alias("when_weekday"),
        (pl.col("when_days_to_release") <= _next_business_day_gap()).fill_null(False).alias("when_release_eve"),
    ]
    if ctx.intraday:
        buckets.append(_session().alias("when_session"))
    else:
        buckets.append(pl.when(day <= 3).then(pl.lit("early")).when(day >= 25).then(pl.lit("late"))
                       .otherwise(pl.lit("mid")).alias("when_month_phase"))
    sums = [e for f in families for e in _running_sums(f)]
    tstats = [_t_stat(f) for f in families]
    evidence = pl.mean_horizontal([pl.col(f"when_t_{f}") for f in families]) / 2.0
    confidence = pl.mean_horizontal([
        pl.when(pl.col(f"when_t_{f}").is_not_null()).then((pl.col(f"_n_{f}") / FULL_OBS).clip(upper_bound=1.0))
        .otherwise(0.0)
        for f in families
    ])
    return [buckets, sums, tstats, *score_and_confidence("when", evidence, confidence)]


def components(intraday: bool) -> tuple[str, ...]:
    families = INTRADAY_FAMILIES if intraday else DAILY_FAMILIES
    return ("when_weekday", "when_session" if intraday else "when_month_phase", "when_release_eve",
            "when_days_to_release", *(f"when_t_{f}" for f in families))
