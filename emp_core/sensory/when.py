"""WHEN: timing. Calendar position of the day a bar forecasts, signed by how its return *differs*.

Bar t's score is about r_{t+1}, the return of the next bar, so its daily buckets
describe the **next trading day** on the dataset's calendar (:func:`emp_core.calendars.trading_dates`:
NYSE sessions for US equities, Monday to Friday for FX and for data without a
calendar, every day for 24/7 markets; scheduled days, known in advance, so no
later bar is read):

- daily bars: ``when_weekday`` (the next trading day's weekday, 1 = Monday: a
  Friday bar is in the Monday bucket), ``when_month_phase`` (``turn`` when the next
  trading day is the last of its month or one of the first three of the month, the
  turn-of-month window of Lakonishok and Smidt 1988, days -1 to +3; else ``rest``),
  ``when_release_eve`` (a scheduled macro release falls after the bar's date and
  no later than the next trading day, and that day is not in the turn of the month,
  so the two effects are told apart). Labelling a bar by its own date instead
  would pair the turn with the returns of days +1 to +4: it missed day -1 and
  recovered 70% of a planted turn effect.
- intraday bars: ``when_session`` (``asia``, ``london``, ``new_york``,
  ``overlap`` = London and New York both open, ``off``; from local hours
  Tokyo 09-18, London 08-17, New York 08-17 with daylight saving) and
  ``when_weekday`` of the bar itself (the next bar is, but for the session's last,
  in the same session and day), ``when_release_eve`` (a release after the bar's date
  and no later than the next Monday-to-Friday day; no month phase to separate it from).

The release calendar is the ``available_at`` dates of the monthly and quarterly
macro series. On the shipped series these follow conservative publication-lag
rules (:mod:`emp_core.market_data.macro`: period end + 1 to 35 days), not the
agencies' announced release days, so there the eve marks the days before those
dates; given series stamped with the agencies' scheduled dates it marks the real
eves (an unscheduled delay recorded in ``available_at`` would be known early). The
eve is read from the releases stored: on the latest bar of a live run, a release
the next day is seen only if the macro table already holds it (the shipped rules
stamp each value when it is loaded, so a backtest sees eves a live run may not).

For each bucket family f, the calendar *effect* is estimated point in time: over
the earlier bars s < t of the same symbol, the next-bar returns r_{s+1} (each
known by bar s + 1 <= t) of the bars in t's bucket (n_b, mean m_b, variance v_b)
against those of every other bar (n_o, m_o, v_o): the bucket's excess over the mean
of all of them, m_b - m_all = (1 - p_b)(m_b - m_o) with p_b = n_b / (n_b + n_o), in
units of the Welch standard error of the difference,
t_f = (1 - p_b) (m_b - m_o) / sqrt(v_b / n_b + v_o / n_o), once both samples hold 20
bars. The asset's drift is in both means and cancels: a bucket scores only by being
different (testing m_b against zero, as this module first did, scored the drift).
The factor (1 - p_b) keeps the bars' average at zero: with the plain Welch t a
bucket and its complement get equal and opposite statistics, so a real effect in
a small bucket (the turn of the month, 18% of days) made the other 82% vote
against it; with the factor a two-bucket family's bar-weighted mean is exactly 0,
and one of equal buckets (weekdays) about 0.
Evidence: mean of the t_f present divided by 2 (a conventionally significant
effect, |t| = 2, gives tanh(1) = 0.76); confidence = mean over families of
min(1, n_b / 250), 0 for a family without an estimate.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from emp_core.calendars import trading_dates
from emp_core.sensory.base import POS, RET, Context, ordered_mean, score_and_confidence
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


def per_date(dates: pl.LazyFrame, macro: MacroInputs | None, calendar: str | None = None,
             *, intraday: bool = False) -> pl.LazyFrame:
    """Add to each bar time in ``dates`` (sorted) ``when_days_to_release``, calendar days from the bar's
    date to the next scheduled release after it, and for daily bars the next trading day's buckets on
    ``calendar`` (``_next_weekday``, ``_next_turn``) and ``_next_gap``, the calendar days to it."""
    if not intraday:
        dates = dates.with_columns(_next_trading_day(dates, calendar))
    releases = release_dates(macro)
    if releases is None:
        return dates.with_columns(pl.lit(None, pl.Int64).alias("when_days_to_release"))
    return (
        dates.with_columns((pl.col("ts").dt.date() + pl.duration(days=1)).alias("_after"))
        .join_asof(releases.lazy(), left_on="_after", right_on="release", strategy="forward")
        .with_columns((pl.col("release") - pl.col("ts").dt.date()).dt.total_days().alias("when_days_to_release"))
        .drop("_after", "release")
    )


def _next_trading_day(dates: pl.LazyFrame, calendar: str | None) -> list[pl.Expr]:
    """The first trading day after each date, its weekday, whether it is in the turn of the month (fewer
    than three of its month's trading days before it, or none after it), and how many calendar days away."""
    first, last = dates.select(pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last")).collect().row(0)
    if first is None:
        return [pl.lit(None, pl.Int8).alias("_next_weekday"), pl.lit(None, pl.Boolean).alias("_next_turn"),
                pl.lit(None, pl.Int64).alias("_next_gap")]
    # every calendar has a trading day within 15 days of any date; the next one's month is held whole
    days = pl.lit(trading_dates(calendar, first.date().replace(day=1), _month_end(last.date() + timedelta(days=15))))
    d = pl.col("ts").dt.date()
    nxt = days.gather(days.search_sorted(d, side="right"))
    before = days.search_sorted(nxt, side="left") - days.search_sorted(nxt.dt.month_start(), side="left")
    after = days.search_sorted(nxt.dt.month_end(), side="right") - days.search_sorted(nxt, side="right")
    return [nxt.dt.weekday().alias("_next_weekday"), ((before < 3) | (after == 0)).alias("_next_turn"),
            (nxt - d).dt.total_days().alias("_next_gap")]


def _month_end(d: date) -> date:
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


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


def _running_sums(bucket: str | None) -> list[pl.Expr]:
    """n, sum and sum of squares of r_{s+1} over the earlier bars s < t of the same symbol and bucket
    (every bucket when ``bucket`` is None)."""
    # Inside .over() every expression runs per (symbol, bucket) group, so the next
    # bar's return is taken beforehand, on the flat frame (column _fwd).
    x = pl.col(FWD).fill_null(0.0)
    seen = pl.col(FWD).is_not_null().cast(pl.Int64)
    keys = ["symbol"] if bucket is None else ["symbol", f"when_{bucket}"]
    name = bucket or "all"
    # Exclusive sums as the previous row's running sum (not "running sum minus own value",
    # whose rounding would depend on r_{t+1}).
    return [
        seen.cum_sum().shift(1, fill_value=0).over(keys).alias(f"_n_{name}"),
        x.cum_sum().shift(1, fill_value=0.0).over(keys).alias(f"_s1_{name}"),
        (x * x).cum_sum().shift(1, fill_value=0.0).over(keys).alias(f"_s2_{name}"),
    ]


def _t_stat(bucket: str) -> pl.Expr:
    """The bucket's excess over the mean of all earlier bars in units of Welch's standard error (module
    docstring); null below MIN_OBS bars on either side or at zero variance."""
    n, s1, s2 = pl.col(f"_n_{bucket}"), pl.col(f"_s1_{bucket}"), pl.col(f"_s2_{bucket}")
    no, s1o, s2o = pl.col("_n_all") - n, pl.col("_s1_all") - s1, pl.col("_s2_all") - s2
    var, var_o = (s2 - s1 * s1 / n) / (n - 1), (s2o - s1o * s1o / no) / (no - 1)
    t = (no / (n + no)) * (s1 / n - s1o / no) / (var / n + var_o / no).sqrt()
    return pl.when((n >= MIN_OBS) & (no >= MIN_OBS) & (var > 0) & (var_o > 0)).then(t).alias(f"when_t_{bucket}")


def stages(ctx: Context) -> list[list[pl.Expr]]:
    families = INTRADAY_FAMILIES if ctx.intraday else DAILY_FAMILIES
    same_next = pl.col(POS).shift(-1) == pl.col(POS) + 1
    buckets = [pl.when(same_next).then(pl.col(RET).shift(-1)).alias(FWD)]
    if ctx.intraday:
        eve = (pl.col("when_days_to_release") <= _next_business_day_gap()).fill_null(False)
        buckets += [pl.col("ts").dt.weekday().alias("when_weekday"), _session().alias("when_session"),
                    eve.alias("when_release_eve")]
    else:
        turn = pl.col("_next_turn")
        eve = (pl.col("when_days_to_release") <= pl.col("_next_gap")).fill_null(False)
        buckets += [pl.col("_next_weekday").alias("when_weekday"),
                    pl.when(turn).then(pl.lit("turn")).otherwise(pl.lit("rest")).alias("when_month_phase"),
                    (eve & ~turn).alias("when_release_eve")]
    sums = [e for f in (None, *families) for e in _running_sums(f)]
    tstats = [_t_stat(f) for f in families]
    evidence = ordered_mean([pl.col(f"when_t_{f}") for f in families]) / 2.0
    confidence = ordered_mean([
        pl.when(pl.col(f"when_t_{f}").is_not_null()).then((pl.col(f"_n_{f}") / FULL_OBS).clip(upper_bound=1.0))
        .otherwise(0.0)
        for f in families
    ])
    return [buckets, sums, tstats, *score_and_confidence("when", evidence, confidence)]


def components(intraday: bool) -> tuple[str, ...]:
    families = INTRADAY_FAMILIES if intraday else DAILY_FAMILIES
    return ("when_weekday", "when_session" if intraday else "when_month_phase", "when_release_eve",
            "when_days_to_release", *(f"when_t_{f}" for f in families))
