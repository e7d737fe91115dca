"""WHEN scores calendar effects, not drift: no effect gives a score near 0, a planted one is found on the
bars that forecast it (the bar before the day of the effect)."""

from datetime import date, timedelta

import numpy as np
import polars as pl

from emp_core.sensory import compute_features


def bars(seed: int, drift: float = 0.0004, monday_extra: float = 0.0, years: int = 10,
         turn_extra: float = 0.0) -> pl.DataFrame:
    """Business-day bars whose return is drift + noise, plus ``monday_extra`` on every Monday's own return and
    ``turn_extra`` on the return of each turn-of-month day (the last business day of a month, the first three:
    days -1 to +3 of Lakonishok and Smidt), each effect on the day it belongs to."""
    rng = np.random.default_rng(seed)
    days = np.busday_offset("2005-01-03", np.arange(252 * years), roll="forward")
    d = days.astype("datetime64[D]")
    monday = (d.view("int64") - 4) % 7 == 0  # 1970-01-05 was a Monday
    month = d.astype("datetime64[M]")
    first3 = np.busday_count(month.astype("datetime64[D]"), d) < 3
    last = np.busday_count(d + 1, (month + 1).astype("datetime64[D]")) == 0
    r = drift + rng.normal(0, 0.012, days.size) + monday_extra * monday + turn_extra * (first3 | last)
    close = 100 * np.cumprod(1 + r)
    open_ = np.concatenate([[100.0], close[:-1]])
    return pl.DataFrame({"symbol": "SYN", "ts": days.astype("datetime64[us]"), "open": open_,
                         "high": np.maximum(open_, close) * 1.002, "low": np.minimum(open_, close) * 0.998,
                         "close": close, "volume": np.full(days.size, 1e6)})


def test_drift_alone_is_not_a_calendar_effect():
    """A drifting series with no calendar effect (daily drift 0.0004, sd 0.012, 8 seeds): the old WHEN, which
    tested each bucket's mean against zero, scored these 0.14 on average and up to 0.61 on one; the effect
    against the other bars scores 0.06 on average, none beyond 0.19 (sampling noise of the small buckets)."""
    means = [compute_features(bars(seed), None)["when_score"].drop_nulls().mean() for seed in range(8)]
    assert abs(np.mean(means)) < 0.1 and max(abs(m) for m in means) < 0.25, means


def test_a_planted_weekday_effect_is_found_with_its_sign():
    """Mondays' own returns carry the effect: the bars that forecast a Monday (Fridays, in the Monday bucket)
    score positive. Labelled by its own date, the Monday bar forecasts Tuesday and found nothing."""
    f = compute_features(bars(3, monday_extra=0.004), None).filter(pl.col("ts").dt.year() >= 2010)
    monday = f.filter(pl.col("when_weekday") == 1)
    assert (monday["ts"].dt.weekday() == 5).all()
    assert monday["when_score"].mean() > 0.3
    assert f.filter(pl.col("when_weekday") != 1)["when_score"].mean() < monday["when_score"].mean() - 0.3
    assert monday["when_t_weekday"].min() > 0


def test_the_turn_bucket_holds_the_returns_of_days_minus_one_to_plus_three():
    """The whole planted turn-of-month excess (0.003 on days -1..+3) is in the turn bucket's next-bar returns,
    8 seeds pooled: measured 0.0030; labelling each bar by its own date paired the turn with days +1..+4 and
    recovered about 0.0021 (day -1 missed, day +4 diluting)."""
    diffs = []
    for seed in range(8):
        b = bars(seed, turn_extra=0.003)
        f = compute_features(b, None).join(
            b.select("ts", (pl.col("close").shift(-1) / pl.col("close") - 1).alias("nxt")), on="ts").drop_nulls("nxt")
        turn = f.filter(pl.col("when_month_phase") == "turn")["nxt"].mean()
        rest = f.filter(pl.col("when_month_phase") == "rest")["nxt"].mean()
        diffs.append(turn - rest)
    assert abs(np.mean(diffs) - 0.003) < 0.0006, diffs


def test_a_small_bucket_with_an_effect_does_not_make_the_others_vote_against_it():
    """A planted turn-of-month effect (18% of days): the turn bars score positive, and the bar-weighted mean of
    the month-phase statistic stays near 0 (with the plain Welch t the other 82% of days voted sell)."""
    f = compute_features(bars(5, turn_extra=0.003), None).filter(pl.col("ts").dt.year() >= 2008)
    t = f["when_t_month_phase"].drop_nulls()
    turn = f.filter(pl.col("when_month_phase") == "turn")["when_t_month_phase"].mean()
    assert turn > 1.0
    assert abs(t.mean()) < 0.1 * turn


def test_the_turn_of_month_is_counted_in_trading_days_and_kept_apart_from_release_eves():
    """A bar is in the turn when the trading day it forecasts (the next) is the month's last or one of its first
    three."""
    from emp_core.sensory.cli import shipped_macro

    f = compute_features(bars(4, years=2), shipped_macro())
    phase = dict(zip(f["ts"].dt.date().to_list(), f["when_month_phase"].to_list(), strict=True))
    assert phase[date(2005, 1, 28)] == "turn"  # forecasts Monday 31 January, the month's last business day
    assert phase[date(2005, 1, 31)] == phase[date(2005, 2, 2)] == "turn"  # forecast 1 and 3 February
    assert phase[date(2005, 2, 3)] == "rest" and phase[date(2005, 1, 27)] == "rest"
    # 1-2 October 2005 were a weekend: the 5th is the third trading day (calendar days 1-3 would miss it)
    assert phase[date(2005, 10, 4)] == "turn" and phase[date(2005, 10, 5)] == "rest"
    eves = f.filter(pl.col("when_release_eve"))
    assert eves.height > 20 and (eves["when_month_phase"] == "rest").all()
    # a release on the forecast day is an eve only outside the turn; inside it counts as the turn
    assert f.filter((pl.col("when_days_to_release") <= 1) & (pl.col("when_month_phase") == "turn")).height > 0
    # a release on a weekend reaches Monday's return: Friday is its eve
    weekend = f.filter((pl.col("ts").dt.weekday() == 5) & pl.col("when_days_to_release").is_in([1, 2])
                       & (pl.col("when_month_phase") == "rest"))
    assert weekend.height > 0 and weekend["when_release_eve"].all()


def test_the_turn_of_month_is_counted_in_the_exchange_s_sessions():
    """On XNYS the window moves with the holidays; Monday to Friday it does not (no bars needed on those days)."""
    days = pl.date_range(date(2017, 12, 1), date(2018, 4, 30), eager=True)
    bars = pl.DataFrame({"symbol": "SYN", "ts": days.cast(pl.Datetime("us")), "open": 100.0, "high": 101.0,
                         "low": 99.0, "close": 100.0, "volume": 1e6}).filter(pl.col("ts").dt.weekday() <= 5)
    phase = {cal: dict(zip(f["ts"].dt.date().to_list(), f["when_month_phase"].to_list(), strict=True))
             for cal in ("XNYS", None)
             for f in [compute_features(bars, None, calendar=cal, intraday=False)]}
    # Good Friday 30 March 2018 closed the exchange: its last session in March was Thursday the 29th
    assert phase["XNYS"][date(2018, 3, 28)] == "turn" and phase[None][date(2018, 3, 28)] == "rest"
    # New Year's Day 2018 was a Monday holiday: the first three sessions are 2-4 January
    assert phase["XNYS"][date(2018, 1, 3)] == "turn" and phase[None][date(2018, 1, 3)] == "rest"
    assert phase["XNYS"][date(2018, 1, 4)] == "rest"
    # Presidents' Day (19 February) is mid-month: the window is 1, 2 and 5 February (a weekend between)
    assert phase["XNYS"][date(2018, 2, 2)] == "turn" and phase["XNYS"][date(2018, 2, 5)] == "rest"
    assert phase["XNYS"][date(2018, 2, 27)] == "turn"
    # every day trades on 24/7: bars whose next day is one of the first three calendar days or the last
    crypto = compute_features(pl.DataFrame({"symbol": "BTC", "ts": days.cast(pl.Datetime("us")), "open": 1.0,
                                            "high": 1.1, "low": 0.9, "close": 1.0, "volume": 1.0}),
                              None, calendar="24/7", intraday=False)
    turn = set(crypto.filter(pl.col("when_month_phase") == "turn")["ts"].dt.date().to_list())
    assert turn == {d for d in days.to_list()
                    if (d + timedelta(days=1)).day <= 3 or (d + timedelta(days=2)).day == 1}


def test_an_unscheduled_closure_is_not_known_before_it_is_announced():
    """The exchange closed on 29-30 October 2012 for hurricane Sandy, decided on the 28th: the bar of Friday the
    26th forecasts Monday the 29th, as scheduled, and its buckets do not change with the closure."""
    days = pl.date_range(date(2012, 10, 1), date(2012, 11, 30), eager=True)
    bars = pl.DataFrame({"symbol": "SYN", "ts": days.cast(pl.Datetime("us")), "open": 100.0, "high": 101.0,
                         "low": 99.0, "close": 100.0, "volume": 1e6}).filter(pl.col("ts").dt.weekday() <= 5)
    f = compute_features(bars.filter(~pl.col("ts").dt.day().is_in([29, 30]) | (pl.col("ts").dt.month() != 10)),
                         None, calendar="XNYS", intraday=False)
    friday = f.filter(pl.col("ts") == pl.datetime(2012, 10, 26)).row(0, named=True)
    assert friday["when_weekday"] == 1 and friday["when_month_phase"] == "rest"
