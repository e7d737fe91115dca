"""Calibration thresholds that are never 0 and drift checks that see every shift and only real ones (issue 9)."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from emp_core.evolution.overfitting import effective_bars
from emp_core.sensory.calibration import (
    ALERT_QUANTILE,
    MIN_ACTIVE_CURRENT,
    MIN_ACTIVE_REFERENCE,
    MIN_EFFECTIVE,
    THRESHOLD_FLOOR,
    WARN_QUANTILE,
    calibrate,
    drift,
    effective_size,
    pooled_size,
    psi,
    window_size,
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
    """Reference scores hourly up to the latest month (at most 36 months of them), current scores hourly from
    its start."""
    ts = hourly(LATEST - timedelta(hours=reference.size), reference.size) + hourly(LATEST, current.size)
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


def test_thirty_persistent_values_are_never_tested(store):
    """Same distribution, 30 AR(1) current values (rho 0.9), 200 seeds: 30 values can never reach
    MIN_EFFECTIVE, so every window reports insufficient data, none raises an alarm, and the check says
    NOTHING TESTED and does not pass. (Before the effective-size rule: 98% of seeds raised an alarm.)"""
    reference = ar1(2000, 0.9, np.random.default_rng(12345))
    seeds = 200
    parts = [frame(f"seed{s:03d}", "SYN", reference, ar1(30, 0.9, np.random.default_rng(s)), "what_score")
             for s in range(seeds)]
    store.overwrite_table("sensory.what", pl.concat(parts))
    outcome = drift(store, "what")
    datasets = outcome.metadata["datasets"]
    assert len(datasets) == seeds
    for stats in datasets.values():
        assert stats["insufficient_data"] and "psi" not in stats and not alarm(stats)
        assert stats["effective_n"] < MIN_EFFECTIVE
        assert stats["skipped"].startswith("insufficient data: effective n = ") and "not tested" in stats["skipped"]
    assert outcome.metadata["tested"] == 0 and outcome.description.startswith("NOTHING TESTED")
    assert not outcome.passed
    assert outcome.description.count("insufficient data: effective n = ") == seeds


def test_no_false_alarm_where_the_check_really_runs(store):
    """Same distribution, four symbols with a month (744) of AR(1) values each (rho 0.5), 100 seeds: every
    window is tested, and at most 5% raise an alarm (the 30-value test above never reaches the minimum)."""
    rng = np.random.default_rng(99)
    references = {sym: ar1(12000, 0.5, rng) for sym in ("A", "B", "C", "D")}  # independent symbols
    parts = [frame(f"seed{s:03d}", sym, ref, ar1(744, 0.5, np.random.default_rng(1000 + 4 * s + i)), "why_score")
             for s in range(100) for i, (sym, ref) in enumerate(references.items())]
    store.overwrite_table("sensory.why", pl.concat(parts))
    datasets = drift(store, "why").metadata["datasets"]
    assert all(not s.get("insufficient_data") for s in datasets.values())
    assert sum(alarm(s) for s in datasets.values()) <= 5


def test_a_step_inside_the_month_is_tested_and_flagged(store):
    """A 4 sd step halfway through each symbol's month: measured on the current window, the step raised the
    autocorrelation and the count fell below the minimum (untested); read from the reference it is tested."""
    rng = np.random.default_rng(8)
    parts = []
    for sym in ("A", "B", "C", "D"):  # independent symbols
        reference = ar1(20000, 0.9, rng)
        sd = float(np.std(reference))
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
    references = {s: ar1(20000, 0.9, rng) for s in ("A", "B", "C", "D")}  # independent symbols
    shifted = [frame("shifted", s, ref, ar1(744, 0.9, rng) + 1.0, "how_score") for s, ref in references.items()]
    same = [frame("same", s, ref, ar1(744, 0.9, rng), "how_score") for s, ref in references.items()]
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
    # 20 active reference bars are too few behind a 99% quantile: the row says so, and no threshold of this
    # dataset is used for the alert rate (a threshold of 0 had counted every bar as an alert, >=)
    assert not row["sufficient"].item() and not never["sufficient"].item()
    assert not cal.filter(pl.col("symbol") == "*")["sufficient"].item()
    outcome = drift(store, "anomaly")
    stats = outcome.metadata["datasets"]["bars_1h"]
    assert "alert_rate" not in stats and stats["alert_rate_insufficient_data"] and stats["n_active_current"] == 0
    assert "alert rate: insufficient data: 0 active current bars" in outcome.description


def sparse(n: int, active: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """n scores exactly 0 but for ``active`` signed normal values at random bars (as anomaly_score is)."""
    x = np.zeros(n)
    x[rng.choice(n, active, replace=False)] = scale * rng.normal(size=active)
    return x


def test_alert_rate_is_measured_on_active_bars_and_sees_a_doubling(store):
    """A dimension active on 4% of bars (160 of 4000 reference bars and 30 of a 744-bar month per symbol, four
    symbols, so 120 active current bars), 50 seeds each: the active values doubled in the current month put
    about 20% of active bars over the 99% threshold, and the check fires on every seed; the same distribution
    stays near 1% and fires on at most 5% of seeds. Divided by all bars, the doubled rate was 4% of 20%,
    under 1%, and the 5% limit could never be reached by a dimension active on 4% of bars."""
    seeds, symbols = 50, ("A", "B", "C", "D")
    parts = []
    for s in range(seeds):
        rng = np.random.default_rng(500 + s)
        for sym in symbols:
            parts.append(frame(f"doubled{s:02d}", sym, sparse(4000, 160, rng), sparse(744, 30, rng, 2.0),
                               "anomaly_score"))
            parts.append(frame(f"same{s:02d}", sym, sparse(4000, 160, rng), sparse(744, 30, rng), "anomaly_score"))
    store.overwrite_table("sensory.anomaly", pl.concat(parts))
    cal = calibrate(store)
    datasets = drift(store, "anomaly").metadata["datasets"]
    doubled = [v for k, v in datasets.items() if k.startswith("doubled")]
    same = [v for k, v in datasets.items() if k.startswith("same")]
    assert all(v["alert_rate"] > 0.05 for v in doubled)  # over all bars: 0.9% on average, at most 1.3%
    assert (cal["n_active"] >= MIN_ACTIVE_REFERENCE).all() and cal["sufficient"].all()
    assert all(v["n_active_current"] == 120 >= MIN_ACTIVE_CURRENT for v in doubled + same)
    assert np.mean([v["alert_rate"] for v in doubled]) > 0.15  # P(2|x| > q99) = P(|x| > 1.29) = 0.20
    assert sum(v["alert_rate"] > 0.05 for v in same) <= 0.05 * seeds
    # 6000 active bars over the seeds: binomial sd 0.0016 around the ~1.5% a 99% quantile of 160 values
    # lets through ((n + 1 - 0.99 (n - 1) - 1) / (n + 1) for n = 160)
    assert 0.005 < np.mean([v["alert_rate"] for v in same]) < 0.025


def test_alert_rate_needs_enough_active_bars(store):
    """Too few active current bars: the alert rate is reported as insufficient data, not as a rate; a symbol
    with too few active reference bars uses the pooled threshold when that has enough."""
    rng = np.random.default_rng(21)
    parts = [frame("few", sym, sparse(4000, 400, rng), sparse(744, 10, rng, 3.0), "anomaly_score")
             for sym in ("A", "B", "C", "D")]  # 40 active current bars, all of them large
    parts.append(frame("pooled", "RICH", sparse(4000, 400, rng), sparse(744, 200, rng), "anomaly_score"))
    parts.append(frame("pooled", "POOR", sparse(4000, 40, rng), sparse(744, 200, rng, 3.0), "anomaly_score"))
    store.overwrite_table("sensory.anomaly", pl.concat(parts))
    cal = calibrate(store).filter(pl.col("dataset") == "pooled")
    assert cal.filter(pl.col("symbol") == "POOR")["sufficient"].to_list() == [False]
    assert cal.filter(pl.col("symbol") == "*")["sufficient"].to_list() == [True]
    outcome = drift(store, "anomaly")
    few = outcome.metadata["datasets"]["few"]
    assert few["n_active_current"] == 40 < MIN_ACTIVE_CURRENT
    assert "alert_rate" not in few and few["alert_rate_insufficient_data"]
    assert "alert rate: insufficient data: 40 active current bars" in outcome.description
    pooled = outcome.metadata["datasets"]["pooled"]
    assert pooled["n_active_current"] == 400 and pooled["alert_rate"] > 0.05  # POOR's bars counted, pooled threshold


def common_factor(n: int, m: int, rho: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """(m, n) scores: one AR(1) series shared by m symbols plus independent noise of sd ``noise``."""
    return ar1(n, rho, rng)[None, :] + noise * rng.normal(size=(m, n))


def panel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An (m, n) array of scores as flat (scores, symbols, dates), symbol by symbol in time order."""
    m, n = x.shape
    return x.ravel(), np.repeat(np.arange(m), n), np.tile(np.arange(n), m)


def test_pooled_size_counts_what_the_symbols_share():
    """Read on the reference, the pooled size of a window of b dates is about m b for independent symbols, one
    series' count for identical ones, and small when a persistent part is shared, even on a minority of the
    variance, where each symbol's own lag-1 autocorrelation (about 0.3) hides it from the per-symbol counts."""
    rng = np.random.default_rng(11)
    m, n, b = 8, 6000, 300
    cur = panel(rng.normal(size=(m, b)))
    cur_args = (cur[1], cur[2] + n)
    iid = panel(rng.normal(size=(m, n)))
    assert pooled_size(*cur_args, *iid) == pytest.approx(m * b, rel=0.25)
    one = ar1(n, 0.9, rng)
    same = panel(np.tile(one, (m, 1)))
    assert pooled_size(*cur_args, *same) == pytest.approx(b * 0.1 / 1.9, rel=0.4)  # one AR(1) series' count
    shared = np.sqrt(0.3) * ar1(n, 0.995, rng)[None, :] + np.sqrt(0.7) * rng.normal(size=(m, n))
    ref = panel(shared)
    assert pooled_size(*cur_args, *ref) < 30
    x = panel(shared[:, -b:])
    sizes = window_size(x[0], x[1], x[2] + n, *ref)
    assert sizes["effective_n_summed"] > 600 and sizes["effective_n"] == sizes["effective_n_pooled"] < 30
    # too short a reference (fewer than 8 windows): the symbols are taken as one series
    short = panel(rng.normal(size=(m, 2000)))
    assert pooled_size(*cur_args, *short) is None
    sizes = window_size(x[0], x[1], x[2] + n, *short)
    assert sizes["effective_n_pooled"] is None and sizes["effective_n"] < sizes["effective_n_summed"] / (m - 1)


def test_symbols_sharing_a_persistent_part_are_not_counted_as_independent(store):
    """Eight symbols whose scores share a persistent factor (lag-1 autocorrelation 0.995) on 30% of their
    variance, the rest independent noise, same distribution in reference and current, 40 seeds: the per-symbol
    counts summed about 680 for a window of 300 dates, and a Kish design effect from the same-date correlation
    (0.3) cut that only to about 220, so every window was tested, and the shared factor's level, which hardly
    moves within a window, raised false alarms; the pooled size reads about 10 and the windows are not tested.
    Eight independent symbols are still tested."""
    m, seeds, n, b = 8, 40, 6000, 300
    parts = []
    for s in range(seeds):
        rng = np.random.default_rng(9000 + s)
        shared = np.sqrt(0.3) * ar1(n + b, 0.995, rng)[None, :] + np.sqrt(0.7) * rng.normal(size=(m, n + b))
        independent = np.stack([ar1(n + b, 0.5, rng) for _ in range(m)])
        for i in range(m):
            parts.append(frame(f"shared{s:03d}", f"S{i}", shared[i, :n], shared[i, n:], "why_score"))
            if s < 10:
                parts.append(frame(f"indep{s:03d}", f"S{i}", independent[i, :n], independent[i, n:], "why_score"))
    store.overwrite_table("sensory.why", pl.concat(parts))
    datasets = drift(store, "why").metadata["datasets"]
    shared = [v for k, v in datasets.items() if k.startswith("shared")]
    assert len(shared) == seeds and sum(alarm(v) for v in shared) <= 0.05 * seeds
    assert all(v["effective_n_summed"] > 3 * MIN_EFFECTIVE and v["effective_n"] < MIN_EFFECTIVE for v in shared)
    independent = [v for k, v in datasets.items() if k.startswith("indep")]
    # the pooled size is read from 20 windows' worth of reference: its noise cuts independent symbols' count
    # by up to about 45% (0.56 of the sum at worst over 30 seeds), never raises it
    assert all(not v.get("insufficient_data") and v["effective_n"] >= 0.45 * v["effective_n_summed"]
               for v in independent)
