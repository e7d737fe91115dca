"""Calibration thresholds that are never 0 and drift checks that see every shift and only real ones (issue 9)."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from emp_core.evolution.overfitting import effective_bars
from emp_core.sensory.calibration import (
    ALERT_QUANTILE,
    MIN_EFFECTIVE,
    THRESHOLD_FLOOR,
    WARN_QUANTILE,
    calibrate,
    drift,
    effective_size,
    psi,
)
from emp_core.store import DuckDBStore

LATEST = datetime(2017, 1, 1)  # the latest month begins here; the reference is the 36 months before


def ar1(n: int, rho: float, rng: np.random.Generator, burn: int = 300) -> np.ndarray:
    """A stationary AR(1) series with unit variance (persistent like the sensory scores)."""
    e = rng.normal(size=n + burn)
    x = np.empty(n + burn)
    x[0] = e[0] / np.sqrt(1 - rho**2)
    for t in range(1, n + burn):
        x[t] = rho * x[t - 1] + e[t]
    return x[burn:] * np.sqrt(1 - rho**2)


def hourly(start: datetime, n: int) -> list[datetime]:
    return [start + timedelta(hours=h) for h in range(n)]


def frame(dataset: str, symbol: str, reference: np.ndarray, current: np.ndarray, score: str) -> pl.DataFrame:
    """Reference scores hourly from 2016-03-01, current scores hourly from the latest month's start."""
    ts = hourly(datetime(2016, 3, 1), reference.size) + hourly(LATEST, current.size)
    return pl.DataFrame({"dataset": dataset, "symbol": symbol, "ts": ts,
                         score: np.concatenate([reference, current])})


def alarm(stats: dict) -> bool:
    return stats.get("psi", 0.0) >= 0.25 or stats.get("ks_d", 0.0) >= 0.2


def test_psi_sees_a_rise_beside_a_point_mass():
    """97.5% of the reference is exactly 0 (as anomaly_score is): 2.5% -> 27.5% positive is a major shift."""
    rng = np.random.default_rng(9)
    reference = np.zeros(4000)
    reference[:100] = rng.uniform(0.5, 3.0, 100)
    current = np.zeros(400)
    current[:110] = rng.uniform(0.5, 3.0, 110)
    assert psi(reference, current) >= 0.25  # 0.0000 when the decile edges collapsed onto the zero mass
    assert psi(reference, -current) >= 0.25  # the same rise on the negative side
    same = np.zeros(400)
    same[:10] = rng.uniform(0.5, 3.0, 10)
    assert psi(reference, same) < 0.1  # the reference's own mix is stable
    # a point mass is its own bin: by hand, bins {0}, (0, q1], ... hold the shares
    ref = np.array([0.0] * 90 + list(range(1, 11)), dtype=float)
    cur = np.array([0.0] * 60 + list(range(1, 11)) * 4, dtype=float)
    r_zero, c_zero = 0.9, 0.6
    others = (0.4 - 0.1) * np.log(0.4 / 0.1)  # the positive values, spread over bins in equal proportion
    assert psi(ref, cur) == pytest.approx((c_zero - r_zero) * np.log(c_zero / r_zero) + others, rel=1e-9)


def test_effective_size_counts_each_symbol_in_time_order():
    rng = np.random.default_rng(1)
    iid = rng.normal(size=400)
    assert effective_size(iid) == pytest.approx(400, rel=0.15)
    persistent = ar1(400, 0.9, rng)
    assert effective_size(persistent) < 100
    # a month of hourly scores as persistent as WHY and WHAT (rho 0.99) holds a handful of independent
    # observations; the Newey-West count alone (5 lags) saw over 100 and let a false alarm through on 75%
    very = ar1(744, 0.99, rng)
    assert effective_bars(very) > MIN_EFFECTIVE > 10 > effective_size(very)
    both = np.concatenate([iid, persistent])
    groups = np.array(["A"] * 400 + ["B"] * 400)
    assert effective_size(both, groups) == pytest.approx(effective_size(iid) + effective_size(persistent))


@pytest.fixture
def store(tmp_path):
    return DuckDBStore(tmp_path / "emp.duckdb")


def test_no_false_alarm_on_thirty_persistent_values(store):
    """Same distribution, 30 AR(1) current values (rho 0.9), 200 seeds: at most 5% false alarms, and the
    untested ones say so. (Before the effective-size rule: 98% of seeds raised an alarm.)"""
    reference = ar1(2000, 0.9, np.random.default_rng(12345))
    seeds = 200
    parts = [frame(f"seed{s:03d}", "SYN", reference, ar1(30, 0.9, np.random.default_rng(s)), "what_score")
             for s in range(seeds)]
    store.overwrite_table("sensory.what", pl.concat(parts))
    outcome = drift(store, "what")
    datasets = outcome.metadata["datasets"]
    assert len(datasets) == seeds
    alarms = sum(alarm(s) for s in datasets.values())
    assert alarms <= 0.05 * seeds
    untested = [s for s in datasets.values() if s.get("insufficient_data")]
    assert all(s["effective_n"] < MIN_EFFECTIVE and "insufficient data" in s["skipped"] for s in untested)
    if len(untested) == seeds:  # nothing tested is no pass, and says so
        assert outcome.metadata["tested"] == 0 and outcome.description.startswith("NOTHING TESTED")
        assert not outcome.passed
        assert "insufficient data: effective n = " in outcome.description


def test_no_false_alarm_where_the_check_really_runs(store):
    """Same distribution, four symbols with a month (744) of AR(1) values each (rho 0.5), 100 seeds: every
    window is tested, and at most 5% raise an alarm (the 30-value test above never reaches the minimum)."""
    rng = np.random.default_rng(99)
    reference = ar1(3000, 0.5, rng)
    parts = [frame(f"seed{s:03d}", sym, reference, ar1(744, 0.5, np.random.default_rng(1000 + s)), "why_score")
             for s in range(100) for sym in ("A", "B", "C", "D")]
    store.overwrite_table("sensory.why", pl.concat(parts))
    datasets = drift(store, "why").metadata["datasets"]
    assert all(not s.get("insufficient_data") for s in datasets.values())
    assert sum(alarm(s) for s in datasets.values()) <= 5


def test_a_step_inside_the_month_is_tested_and_flagged(store):
    """A 4 sd step halfway through each symbol's month: measured on the current window, the step raised the
    autocorrelation and the count fell below the minimum (untested); read from the reference it is tested."""
    rng = np.random.default_rng(8)
    reference = ar1(3000, 0.9, rng)
    sd = float(np.std(reference))
    parts = []
    for sym in ("A", "B", "C", "D"):
        current = ar1(744, 0.9, rng)
        current[372:] += 4 * sd
        parts.append(frame("stepped", sym, reference, current, "what_score"))
    store.overwrite_table("sensory.what", pl.concat(parts))
    stats = drift(store, "what").metadata["datasets"]["stepped"]
    assert not stats.get("insufficient_data") and stats["effective_n"] >= MIN_EFFECTIVE and alarm(stats)


def test_a_real_shift_on_enough_data_is_flagged(store):
    """Four symbols, a month (744) of persistent hourly values each: shifted by one standard deviation ->
    drift; the same distribution -> no drift."""
    rng = np.random.default_rng(7)
    reference = ar1(3000, 0.9, rng)
    symbols = ("A", "B", "C", "D")
    shifted = [frame("shifted", s, reference, ar1(744, 0.9, rng) + 1.0, "how_score") for s in symbols]
    same = [frame("same", s, reference, ar1(744, 0.9, rng), "how_score") for s in symbols]
    store.overwrite_table("sensory.how", pl.concat(shifted + same))
    outcome = drift(store, "how")
    stats = outcome.metadata["datasets"]
    assert stats["shifted"]["effective_n"] >= MIN_EFFECTIVE and alarm(stats["shifted"])
    assert stats["same"]["effective_n"] >= MIN_EFFECTIVE and not alarm(stats["same"])
    assert not outcome.passed and outcome.metadata["tested"] == 2


def test_thresholds_are_quantiles_of_the_active_bars_and_never_zero(store):
    """A dimension silent (exactly 0) on 99.5% of the reference gets thresholds from its active bars; a
    dimension never active gets the stated floor; the alert rate counts bars strictly above the threshold."""
    rng = np.random.default_rng(3)
    reference = np.zeros(4000)
    active = rng.uniform(0.5, 3.0, 20) * rng.choice([-1.0, 1.0], 20)
    reference[rng.choice(4000, 20, replace=False)] = active
    current = np.zeros(700)
    current[:3] = [0.6, -0.7, 0.8]
    silent = frame("bars_1h", "SIL", np.zeros(4000), np.zeros(700), "anomaly_score")
    store.overwrite_table("sensory.anomaly", pl.concat([frame("bars_1h", "ANY", reference, current, "anomaly_score"),
                                                         silent]))
    cal = calibrate(store)
    row = cal.filter(pl.col("symbol") == "ANY")
    assert row["n"].item() == 4000 and row["n_active"].item() == 20
    assert row["warn"].item() == pytest.approx(np.quantile(np.abs(active), WARN_QUANTILE), rel=1e-12)
    assert row["alert"].item() == pytest.approx(np.quantile(np.abs(active), ALERT_QUANTILE), rel=1e-12)
    assert (cal["warn"] > 0).all() and (cal["alert"] > 0).all()  # 0 for both symbols before
    never = cal.filter(pl.col("symbol") == "SIL")
    assert never["n_active"].item() == 0
    assert never["warn"].item() == never["alert"].item() == THRESHOLD_FLOOR
    stats = drift(store, "anomaly").metadata["datasets"]["bars_1h"]
    assert stats["alert_rate"] == 0.0  # 100% when a threshold of 0 was reached by every bar (>=)
