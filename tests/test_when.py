"""WHEN scores calendar effects, not drift: no effect gives a score near 0, a planted one is found."""

from datetime import date

import numpy as np
import polars as pl

from emp_core.sensory import compute_features


def bars(seed: int, drift: float = 0.0004, monday_extra: float = 0.0, years: int = 10,
         turn_extra: float = 0.0) -> pl.DataFrame:
    """Business-day bars whose return is drift + noise, plus ``monday_extra`` on the bar after a Monday and
    ``turn_extra`` on the bar after a turn-of-month day (the last business day of a month, the first three)."""
    rng = np.random.default_rng(seed)
    days = np.busday_offset("2005-01-03", np.arange(252 * years), roll="forward")
    after_monday = np.concatenate([[False], (days[:-1].astype("datetime64[D]").view("int64") - 4) % 7 == 0])
    d = days.astype("datetime64[D]")
    month = d.astype("datetime64[M]")
    first3 = np.busday_count(month.astype("datetime64[D]"), d) < 3
    last = np.busday_count(d + 1, (month + 1).astype("datetime64[D]")) == 0
    after_turn = np.concatenate([[False], (first3 | last)[:-1]])
    r = drift + rng.normal(0, 0.012, days.size) + monday_extra * after_monday + turn_extra * after_turn
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
    f = compute_features(bars(3, monday_extra=0.004), None).filter(pl.col("ts").dt.year() >= 2010)
    monday = f.filter(pl.col("when_weekday") == 1)["when_score"].mean()
    others = f.filter(pl.col("when_weekday") != 1)["when_score"].mean()
    assert monday > 0.3 and others < monday - 0.3
    assert f.filter(pl.col("when_weekday") == 1)["when_t_weekday"].min() > 0


def test_a_small_bucket_with_an_effect_does_not_make_the_others_vote_against_it():
    """A planted turn-of-month effect (18% of days): the turn bars score positive, and the bar-weighted mean of
    the month-phase statistic stays near 0 (with the plain Welch t the other 82% of days voted sell)."""
    f = compute_features(bars(5, turn_extra=0.003), None).filter(pl.col("ts").dt.year() >= 2008)
    t = f["when_t_month_phase"].drop_nulls()
    turn = f.filter(pl.col("when_month_phase") == "turn")["when_t_month_phase"].mean()
    assert turn > 1.0
    assert abs(t.mean()) < 0.1 * turn


def test_the_turn_of_month_is_counted_in_trading_days_and_kept_apart_from_release_eves():
    from emp_core.sensory.cli import shipped_macro

    f = compute_features(bars(4, years=2), shipped_macro())
    phase = dict(zip(f["ts"].dt.date().to_list(), f["when_month_phase"].to_list(), strict=True))
    assert phase[date(2005, 1, 31)] == "turn"  # the last business day of January
    assert phase[date(2005, 2, 1)] == phase[date(2005, 2, 3)] == "turn"  # the first three of February
    assert phase[date(2005, 2, 4)] == "rest" and phase[date(2005, 1, 28)] == "rest"
    # 1-2 October 2005 were a weekend: the 5th is the third trading day (calendar days 1-3 would miss it)
    assert phase[date(2005, 10, 5)] == "turn" and phase[date(2005, 10, 6)] == "rest"
    eves = f.filter(pl.col("when_release_eve"))
    assert eves.height > 20 and (eves["when_month_phase"] == "rest").all()
    # a release eve inside the turn of the month counts as the turn, not as an eve
    assert f.filter((pl.col("when_days_to_release") <= 1) & (pl.col("when_month_phase") == "turn")).height > 0


def test_the_turn_of_month_is_counted_in_the_exchange_s_sessions():
    """On XNYS the window moves with the holidays; Monday to Friday it does not (no bars needed on those days)."""
    days = pl.date_range(date(2017, 12, 1), date(2018, 4, 30), eager=True)
    bars = pl.DataFrame({"symbol": "SYN", "ts": days.cast(pl.Datetime("us")), "open": 100.0, "high": 101.0,
                         "low": 99.0, "close": 100.0, "volume": 1e6}).filter(pl.col("ts").dt.weekday() <= 5)
    phase = {cal: dict(zip(f["ts"].dt.date().to_list(), f["when_month_phase"].to_list(), strict=True))
             for cal in ("XNYS", None)
             for f in [compute_features(bars, None, calendar=cal, intraday=False)]}
    # Good Friday 30 March 2018 closed the exchange: its last session in March was Thursday the 29th
    assert phase["XNYS"][date(2018, 3, 29)] == "turn" and phase[None][date(2018, 3, 29)] == "rest"
    # New Year's Day 2018 was a Monday holiday: the first three sessions are 2-4 January
    assert phase["XNYS"][date(2018, 1, 4)] == "turn" and phase[None][date(2018, 1, 4)] == "rest"
    assert phase["XNYS"][date(2018, 1, 5)] == "rest"
    # Presidents' Day (19 February) is mid-month: the window is 1, 2 and 5 February (a weekend between)
    assert phase["XNYS"][date(2018, 2, 5)] == "turn" and phase["XNYS"][date(2018, 2, 6)] == "rest"
    assert phase["XNYS"][date(2018, 2, 28)] == "turn"
    # every day trades on 24/7: the first three calendar days and the last
    crypto = compute_features(pl.DataFrame({"symbol": "BTC", "ts": days.cast(pl.Datetime("us")), "open": 1.0,
                                            "high": 1.1, "low": 0.9, "close": 1.0, "volume": 1.0}),
                              None, calendar="24/7", intraday=False)
    turn = crypto.filter(pl.col("when_month_phase") == "turn")["ts"].dt.day().unique().sort().to_list()
    assert turn == [1, 2, 3, 28, 30, 31]
