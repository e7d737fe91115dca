"""Calibration and drift edge cases (emp_core.sensory.calibration; its module docstring is the definition).

Expected values come from independent oracles, never from the code under test: PSI written in plain Python from
the docstring's formula and bins, scipy.stats.ks_2samp for D and scipy.special.kolmogorov for Stephens' Q(lambda),
numpy quantiles for the thresholds, and the AR(1), Newey-West and pooled (overlapping batch means) sizes written
from the docstring. Boundaries are tested at the exact threshold: sufficient at 100 active reference bars, the alert
rate measured at 100 active current bars, tested at an effective size of exactly 100, PSI and D failing at their
limit, the alert rate failing only above its limit, a bar at its threshold not counted."""

import dataclasses
import math
import warnings
from bisect import bisect_right
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from scipy.special import kolmogorov
from scipy.stats import ks_2samp

from emp_core.evolution.overfitting import effective_bars
from emp_core.sensory.calibration import (
    DriftLimits,
    ar1_bars,
    calibrate,
    drift,
    effective_size,
    ks,
    pooled_size,
    psi,
    psi_bins,
    window_size,
)
from tests.support import q_kolmogorov

LATEST = datetime(2017, 1, 1)  # the latest partition (month) begins here
REF_START = datetime(2014, 1, 1)  # 36 months before it
PREFIX = ("latest month vs the 36 months before: PSI < 0.25, KS D < 0.2, alert rate <= 5% of active bars "
          "(measured on >= 100), tested when the effective current size >= 100")
ISOLATE_ALERT = DriftLimits(psi=100.0, ks=1.0, alert_rate=0.05, min_effective=0.0)  # only the alert rate can fail


# ---------------------------------------------------------------- oracles, written from the module docstring

def psi_by_hand(reference, current, bins: int = 10) -> float:
    """PSI = sum_b (c_b - r_b) ln(c_b / r_b), shares floored at 1e-4; a value on at least 1/bins of the reference is
    a bin of its own; the other values are binned at the deciles of the non-mass reference values, the masses
    being further edges."""
    ref = [float(v) for v in reference]
    cur = [float(v) for v in current]
    masses = {v for v, n in Counter(ref).items() if n * bins >= len(ref)}
    rest = [v for v in ref if v not in masses]
    deciles = np.quantile(rest, [i / bins for i in range(1, bins)]).tolist() if rest else []
    edges = sorted(set(deciles) | masses)

    def label(v: float) -> tuple:
        return ("mass", v) if v in masses else ("interval", bisect_right(edges, v))

    r, c = Counter(map(label, ref)), Counter(map(label, cur))
    total = 0.0
    for key in set(r) | set(c):
        rs, cs = max(r[key] / len(ref), 1e-4), max(c[key] / len(cur), 1e-4)
        total += (cs - rs) * math.log(cs / rs)
    return total


def demeaned(x) -> tuple[int, list[float], float]:
    """(n, the deviations from the mean, their sum of squares)."""
    x = [float(v) for v in x]
    mean = sum(x) / len(x)
    z = [v - mean for v in x]
    return len(x), z, sum(v * v for v in z)


def ar1_count(x) -> float:
    """n (1 - rho_1) / (1 + rho_1), rho_1 the sample lag-1 autocorrelation, a negative one counted as 0."""
    n, z, ss = demeaned(x)
    if ss == 0:
        return float(n)
    rho = max(0.0, sum(z[t] * z[t - 1] for t in range(1, n)) / ss)
    return n * (1 - rho) / (1 + rho)


def newey_west_count(x) -> float:
    """n / (1 + 2 sum_k (1 - k / (L + 1)) rho_k), k = 1..L, L = floor(4 (n / 100)^(2/9)), never above n."""
    n, z, ss = demeaned(x)
    lags = math.floor(4 * (n / 100) ** (2 / 9))
    if ss == 0 or lags < 1:
        return float(n)
    s = sum((1 - k / (lags + 1)) * sum(z[t] * z[t - k] for t in range(k, n)) / ss
            for k in range(1, min(lags, n - 1) + 1))
    return n / max(1.0, 1 + 2 * s)


def count_by_hand(x) -> float:
    return min(newey_west_count(x), ar1_count(x))


def pooled_by_hand(cur_groups, cur_dates, reference, ref_groups, ref_dates) -> float | None:
    """Each symbol's reference scores standardised by their own mean and sd (symbols of the current window with at
    least 100 scores and sd > 0); for every run of b consecutive reference dates the grand mean of the scores in it;
    1 / their variance around the overall mean, times the overlapping batch-means factor n / (n - b)."""
    b = len(set(cur_dates.tolist()))
    wanted = set(cur_groups.tolist())
    series = defaultdict(list)
    for v, g, d in zip(reference.tolist(), ref_groups.tolist(), ref_dates.tolist(), strict=True):
        if g in wanted:
            series[g].append((d, float(v)))
    by_date = defaultdict(list)
    for rows in series.values():
        values = [v for _, v in rows]
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        if len(values) < 100 or sd == 0:
            continue
        for d, v in rows:
            by_date[d].append((v - mean) / sd)
    dates = sorted(by_date)
    n = len(dates)
    if n < 8 * b:
        return None
    everything = [z for d in dates for z in by_date[d]]
    grand = sum(everything) / len(everything)
    means = []
    for j in range(n - b + 1):
        block = [z for d in dates[j:j + b] for z in by_date[d]]
        means.append(sum(block) / len(block))
    var = sum((m - grand) ** 2 for m in means) / len(means) * n / (n - b)
    return 1.0 / var


def stephens_p(n: int, m: int, d: float) -> float:
    ne = n * m / (n + m)
    return float(kolmogorov((math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d))


# ---------------------------------------------------------------- data

def ar1(n: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    x = np.empty(n + 200)
    x[0] = rng.normal()
    for t in range(1, x.size):
        x[t] = rho * x[t - 1] + rng.normal()
    return x[200:]


def anti_persistent(values) -> np.ndarray:
    """``values`` in the order low, high, next low, next high, ...: lag-1 autocorrelation near -1, so the AR(1) and
    the Newey-West counts are both the number of values (an effective size known exactly)."""
    s = np.sort(np.asarray(values, dtype=float))
    half = (s.size + 1) // 2
    out = np.empty(s.size)
    out[0::2] = s[:half]
    out[1::2] = s[half:][::-1]
    return out


def hourly(start: datetime, n: int) -> list[datetime]:
    return [start + timedelta(hours=h) for h in range(n)]


def frame(dataset: str, symbol: str, reference, current, score: str = "how_score") -> pl.DataFrame:
    """Reference scores hourly up to the latest month, current scores hourly from its start (None: a null score)."""
    reference, current = list(reference), list(current)
    ts = hourly(LATEST - timedelta(hours=len(reference)), len(reference)) + hourly(LATEST, len(current))
    values = [None if v is None else float(v) for v in reference + current]
    return pl.DataFrame({"dataset": dataset, "symbol": symbol, "ts": ts, score: pl.Series(values, dtype=pl.Float64)})


def thresholds(rows: list[tuple], dimension: str = "how") -> pl.DataFrame:
    """A hand-written sensory.calibration: (dataset, symbol, alert, sufficient) rows."""
    return pl.DataFrame({"dimension": [dimension] * len(rows), "dataset": [r[0] for r in rows],
                         "symbol": [r[1] for r in rows], "alert": [float(r[2]) for r in rows],
                         "sufficient": [r[3] for r in rows]})


def brief(name: str, stats: dict) -> str:
    shown = [f"{m}={stats[m]}" for m in ("psi", "ks_d", "alert_rate") if m in stats]
    return f"{name}: " + ", ".join(shown)


# ---------------------------------------------------------------- limits

def test_drift_limits_are_the_documented_defaults_and_cannot_be_changed_in_place():
    limits = DriftLimits()
    assert (limits.psi, limits.ks, limits.alert_rate, limits.min_effective) == (0.25, 0.2, 0.05, 100.0)
    custom = DriftLimits(psi=0.1, ks=0.3, alert_rate=0.02, min_effective=5.0)
    assert (custom.psi, custom.ks, custom.alert_rate, custom.min_effective) == (0.1, 0.3, 0.02, 5.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.psi = 1.0  # the default instance is shared by every drift() call


# ---------------------------------------------------------------- PSI

def test_a_value_on_exactly_a_tenth_of_the_reference_is_a_point_mass():
    rest = np.linspace(-3.05, 2.95, 90)  # holds no 0.5
    edges, masses = psi_bins(np.concatenate([np.full(10, 0.5), rest]))  # 10 of 100 bars: at least 1/10
    assert masses.tolist() == [0.5]
    deciles = np.quantile(rest, np.arange(1, 10) / 10)  # the deciles of the values that are not point masses
    assert edges.tolist() == pytest.approx(sorted([*deciles.tolist(), 0.5]), abs=1e-12)
    fewer = np.concatenate([np.full(9, 0.5), np.linspace(-3.05, 2.95, 91)])  # 9 of 100: not a mass
    edges, masses = psi_bins(fewer)
    assert masses.size == 0
    assert edges.tolist() == pytest.approx(np.quantile(fewer, np.arange(1, 10) / 10).tolist(), abs=1e-12)


def test_a_reference_made_only_of_point_masses_has_them_as_its_only_edges():
    edges, masses = psi_bins(np.array([1.5] * 50 + [2.5] * 50))
    assert edges.tolist() == [1.5, 2.5] and masses.tolist() == [1.5, 2.5]
    current = np.array([1.5] * 20 + [2.5] * 60 + [2.0] * 10 + [3.0] * 10)
    assert psi(np.array([1.5] * 50 + [2.5] * 50), current) == pytest.approx(
        psi_by_hand([1.5] * 50 + [2.5] * 50, current), rel=1e-12)
    whole = np.array([1] * 50 + [2] * 50)  # integer scores: the edges are the two masses and nothing else
    edges, masses = psi_bins(whole)
    assert edges.tolist() == [1.0, 2.0] and masses.tolist() == [1, 2]
    beside = np.array([-1.0, 0.5, 1, 1, 2, 2, 3, 4])
    assert psi(whole, beside) == pytest.approx(psi_by_hand(whole, beside), rel=1e-12)


def test_psi_floors_empty_bins_at_one_in_ten_thousand():
    """100 distinct reference values (deciles 9.9, 19.8, ...: ten bins of 10%), a current window wholly in the
    lowest bin: by hand, (1 - 0.1) ln(1 / 0.1) + 9 (1e-4 - 0.1) ln(1e-4 / 0.1)."""
    reference = np.arange(100.0)
    current = np.arange(10.0)
    expected = 0.9 * math.log(10.0) + 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert psi(reference, current) == pytest.approx(expected, rel=1e-12)
    assert psi_by_hand(reference, current) == pytest.approx(expected, rel=1e-12)


def test_psi_keeps_two_point_masses_apart_from_their_neighbours():
    """Masses at 0 (30%) and 1 (20%), other values spread around and above them; the current window has none of the
    upper mass, values above the reference's largest, and a shifted mix."""
    spread = np.linspace(-1.9, 2.9, 50)  # no exact 0 or 1
    reference = np.concatenate([np.zeros(30), np.ones(20), spread])
    assert psi_bins(reference)[1].tolist() == [0.0, 1.0]
    current = np.concatenate([np.zeros(10), np.linspace(-1.5, 2.5, 30), np.full(10, 3.5)])
    assert psi(reference, current) == pytest.approx(psi_by_hand(reference, current), rel=1e-9)
    on_masses = np.concatenate([np.zeros(5), np.ones(40), np.linspace(-1.0, 2.0, 15)])
    assert psi(reference, on_masses) == pytest.approx(psi_by_hand(reference, on_masses), rel=1e-9)
    # one mass with values on both sides of it
    single = np.concatenate([np.zeros(50), np.linspace(0.1, 5.0, 50)])
    above = np.concatenate([np.zeros(10), np.linspace(-1.0, 6.0, 40)])
    assert psi(single, above) == pytest.approx(psi_by_hand(single, above), rel=1e-9)
    assert psi(reference, reference) == 0.0


# ---------------------------------------------------------------- KS

@pytest.mark.parametrize(("seed", "shift"), [(1, 0.9), (2, 0.3), (3, 1.5), (4, 0.0)])
def test_ks_is_the_two_sample_statistic_and_stephens_asymptotic_p_value(seed, shift):
    rng = np.random.default_rng(seed)
    reference, current = rng.normal(size=12), rng.normal(shift, 1.0, size=17)  # unequal sizes, n_e = 7.03
    d, p = ks(reference, current)
    expected_d = ks_2samp(reference, current, method="asymp").statistic
    assert d == pytest.approx(expected_d, abs=1e-12)
    lam = (math.sqrt(12 * 17 / 29) + 0.12 + 0.11 / math.sqrt(12 * 17 / 29)) * expected_d
    assert 0.2 < lam < 2.5  # where the series converges and the p-value is neither 0 nor 1
    assert p == pytest.approx(stephens_p(12, 17, expected_d), rel=1e-9)


def test_ks_p_value_is_one_without_a_difference_and_never_above_one():
    x = np.random.default_rng(5).normal(size=30)
    assert ks(x, x) == (0.0, 1.0)  # D = 0: Q(0) = 1
    # lambda = 0.11, where Q = 1 to machine precision (and the truncated series adds up to just over 1)
    reference = np.arange(44.0)
    d, p = ks(reference, reference + 0.5)
    assert d == pytest.approx(ks_2samp(reference, reference + 0.5).statistic, abs=1e-12)
    assert p <= 1.0
    assert p == pytest.approx(stephens_p(44, 44, 1 / 44), abs=1e-12)


# ---------------------------------------------------------------- effective sizes

def test_ar1_count_is_the_documented_formula():
    assert ar1_bars(np.array([0.5, 0.5, -0.5, -0.5])) == pytest.approx(2.4, rel=1e-12)  # rho_1 = 0.25 by hand
    assert ar1_bars(np.full(5, 2.0)) == 5.0  # no variation: every bar counts
    assert ar1_bars(np.tile([1.0, -1.0], 10)) == 20.0  # negative rho_1 counts as 0: never above n
    x = 10.0 + ar1(300, 0.7, np.random.default_rng(6))  # a persistent series far from 0
    assert ar1_bars(x) == pytest.approx(ar1_count(x), rel=1e-9)
    assert ar1_bars(x) < 150


def test_effective_size_of_no_scores_and_of_one():
    assert effective_size(np.array([])) == 0.0
    assert effective_size(np.array([3.0])) == 1.0


def test_the_autocorrelation_is_read_on_a_reference_of_at_least_100_scores():
    rng = np.random.default_rng(7)
    current = ar1(50, 0.9, rng)  # persistent: counted on itself, far fewer than 50
    reference = anti_persistent(rng.normal(size=100))
    assert newey_west_count(reference) == ar1_count(reference) == 100.0  # the reference's own count is its size
    assert effective_size(current, reference=reference) == pytest.approx(50.0, rel=1e-12)
    short = anti_persistent(rng.normal(size=99))  # too short to read an autocorrelation from: the current's own
    assert effective_size(current, reference=short) == pytest.approx(count_by_hand(current), rel=1e-9)
    assert count_by_hand(current) < 25
    persistent = ar1(500, 0.6, rng)
    assert effective_size(current, reference=persistent) == pytest.approx(
        50 * count_by_hand(persistent) / 500, rel=1e-9)
    # per symbol: A has a reference, B has none (counted on its own scores)
    groups = np.array(["A"] * 50 + ["B"] * 50)
    scores = np.concatenate([current, current])
    got = effective_size(scores, groups, persistent, np.array(["A"] * 500))
    assert got == pytest.approx(50 * count_by_hand(persistent) / 500 + count_by_hand(current), rel=1e-9)


def test_pooled_size_standardises_each_usable_symbol_and_reads_batch_means():
    """A (sd 0.5, 150 dates), B (exactly 100 scores, mean -3, sd 2, dates 30-129), C (50 scores: too few), D
    (constant: no sd), E (not in the current window): only A and B enter, each on its own scale."""
    rng = np.random.default_rng(8)
    parts = {"A": (np.arange(150), 5.0 + 0.5 * ar1(150, 0.3, rng)),
             "B": (np.arange(30, 130), -3.0 + 2.0 * rng.normal(size=100)),
             "C": (np.arange(50), 4.0 * rng.normal(size=50)),
             "D": (np.arange(10, 130), np.full(120, 0.5)),
             "E": (np.arange(200), 9.0 * rng.normal(size=200))}
    ref_groups = np.concatenate([[g] * dates.size for g, (dates, _) in parts.items()])
    ref_dates = np.concatenate([dates for dates, _ in parts.values()])
    reference = np.concatenate([values for _, values in parts.values()])
    cur_groups = np.repeat(["A", "B", "C", "D"], 10)
    cur_dates = np.tile(np.arange(1000, 1010), 4)  # b = 10 dates
    expected = pooled_by_hand(cur_groups, cur_dates, reference, ref_groups, ref_dates)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the constant symbol is left out, not divided by 0
        got = pooled_size(cur_groups, cur_dates, reference, ref_groups, ref_dates)
    assert got == pytest.approx(expected, rel=1e-9)


def test_pooled_size_needs_eight_windows_of_reference_dates():
    rng = np.random.default_rng(9)
    reference = ar1(160, 0.5, rng)
    groups, dates = np.array(["A"] * 160), np.arange(160)

    def current(b: int) -> tuple[np.ndarray, np.ndarray]:
        return np.array(["A"] * b), np.arange(500, 500 + b)

    for b in (1, 7, 20):  # 160 >= 8 b: a pooled size
        expected = pooled_by_hand(*current(b), reference, groups, dates)
        assert pooled_size(*current(b), reference, groups, dates) == pytest.approx(expected, rel=1e-9)
    assert pooled_size(*current(21), reference, groups, dates) is None  # 160 < 8 * 21
    assert pooled_size(np.array(["Z"] * 5), np.arange(5), reference, groups, dates) is None  # no reference for Z


def test_symbols_that_cancel_exactly_count_as_one_series():
    """A mirror pair (B = -A) carries one series' information; its pooled mean never varies, so the pooled size
    cannot read that dependence: there is none, and the effective size is the larger symbol's count, not the
    sum of two counts of the same information."""
    rng = np.random.default_rng(10)
    a = rng.normal(size=200)
    reference, groups = np.concatenate([a, -a]), np.repeat(["A", "B"], 200)
    dates = np.tile(np.arange(200), 2)
    got = pooled_size(np.repeat(["A", "B"], 10), np.tile(np.arange(300, 310), 2), reference, groups, dates)
    assert got is None
    current = rng.normal(size=10)  # 10 dates: the 200 reference dates hold the 8 windows a pooled size needs
    sizes = window_size(np.concatenate([current, -current]), np.repeat(["A", "B"], 10),
                        np.tile(np.arange(300, 310), 2), reference, groups, dates)
    one = 10 * count_by_hand(a) / 200
    assert sizes["effective_n_pooled"] is None
    assert sizes["effective_n"] == pytest.approx(one, abs=0.051)
    assert sizes["effective_n_summed"] == pytest.approx(2 * one, abs=0.051)


def test_a_constant_series_counts_every_value():
    """Zero spread within rounding (0.1 has no exact binary mean): nothing to correlate, every value counts."""
    for value in (0.1, 0.0, -3.7e5):
        x = np.full(1000, value)
        assert ar1_bars(x) == effective_bars(x) == effective_size(x) == 1000.0


@pytest.mark.parametrize("lam", [0.002, 0.005, 0.02, 0.05, 0.3, 1.0, 2.5])
def test_ks_p_value_is_stephens_q_at_every_lambda(lam):
    """Q(lambda) where the alternating series converges slowly too (lambda < 0.05: 100 terms gave 0.40 for 1)."""
    n = 20000
    reference = np.arange(n, dtype=float)
    d = lam / (math.sqrt(n / 2) + 0.12 + 0.11 / math.sqrt(n / 2))
    shift = d * n  # the current sample shifted by d of its span: D = d up to the grid
    current = reference + shift
    got_d, p = ks(reference, current)
    ne = n * n / (2 * n)
    assert p == pytest.approx(q_kolmogorov((math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * got_d), abs=1e-12)
    assert got_d == pytest.approx(ks_2samp(reference, current).statistic, abs=1e-12)


def window_case(seed: int, mix: float, n_ref: int):
    """Two symbols, b = 30 current dates; B's reference is ``mix`` times A's plus noise."""
    rng = np.random.default_rng(seed)
    a = ar1(n_ref, 0.5, rng)
    b = mix * a + 0.3 * rng.normal(size=n_ref)
    reference, ref_groups = np.concatenate([a, b]), np.repeat(["A", "B"], n_ref)
    ref_dates = np.tile(np.arange(n_ref), 2)
    cur = np.concatenate([ar1(30, 0.5, rng), rng.normal(size=30)])
    cur_groups, cur_dates = np.repeat(["A", "B"], 30), np.tile(np.arange(n_ref, n_ref + 30), 2)
    counts = [30 * count_by_hand(a) / n_ref, 30 * count_by_hand(b) / n_ref]
    pooled = pooled_by_hand(cur_groups, cur_dates, reference, ref_groups, ref_dates)
    sizes = window_size(cur, cur_groups, cur_dates, reference, ref_groups, ref_dates)
    return sizes, counts, pooled


def two_decimals(x: float) -> bool:
    return round(x, 2) != round(x, 1)


@pytest.mark.parametrize(("seed", "mix"), [(11, 1.0), (12, -1.0)])
def test_the_effective_size_is_the_smaller_of_the_sum_and_the_pooled_size(seed, mix):
    """mix 1: the symbols move together, the pooled size is the smaller; mix -1: they cancel, the sum is."""
    sizes, counts, pooled = window_case(seed, mix, 400)
    summed = sum(counts)
    assert sizes["effective_n_summed"] == pytest.approx(summed, abs=0.051)
    assert sizes["effective_n_pooled"] == pytest.approx(pooled, abs=0.051)
    assert (pooled < summed) == (mix > 0)
    assert two_decimals(min(pooled, summed))  # so a report of another precision would show
    assert sizes["effective_n"] == min(sizes["effective_n_summed"], sizes["effective_n_pooled"])


def test_without_a_pooled_size_the_effective_size_is_the_largest_symbols_count():
    sizes, counts, pooled = window_case(13, 0.0, 200)  # 200 reference dates < 8 * 30
    assert pooled is None and sizes["effective_n_pooled"] is None
    assert sizes["effective_n"] == pytest.approx(max(counts), abs=0.051)
    assert sizes["effective_n_summed"] == pytest.approx(sum(counts), abs=0.051)


# ---------------------------------------------------------------- calibration thresholds

def test_thresholds_sufficiency_floor_and_the_reference_window(store):
    """Only the fused table is present (the calibration does not stop at the missing dimensions). HUNDRED has exactly
    100 active reference bars (sufficient), NINETY9 99 (not), SILENT none (the floor 1e-6); bars older than 36
    months do not count, a bar at the window's first hour does."""
    rng = np.random.default_rng(14)
    hundred = np.concatenate([rng.uniform(0.5, 3.0, 100) * rng.choice([-1.0, 1.0], 100), np.zeros(50)])
    rng.shuffle(hundred)
    ninety9 = np.concatenate([rng.uniform(0.1, 1.0, 99), np.zeros(10)])
    old = pl.DataFrame({"dataset": "cal", "symbol": "HUNDRED",
                        "ts": [REF_START - timedelta(hours=1), REF_START - timedelta(days=20), REF_START],
                        "signal": [50.0, -60.0, 0.0]})  # two bars before the window, one silent at its start
    parts = [frame("cal", "HUNDRED", hundred, [0.1] * 5, "signal"), old,
             frame("cal", "NINETY9", ninety9, [0.2] * 5, "signal"),
             frame("cal", "SILENT", np.zeros(80), [0.0] * 5, "signal")]
    store.overwrite_table("sensory.fused", pl.concat(parts))
    cal = calibrate(store)
    assert set(cal["dimension"]) == {"fused"}
    rows = {r["symbol"]: r for r in cal.iter_rows(named=True)}
    assert set(rows) == {"HUNDRED", "NINETY9", "SILENT", "*"}
    active = {"HUNDRED": np.abs(hundred[hundred != 0]), "NINETY9": ninety9[ninety9 != 0]}
    active["*"] = np.concatenate(list(active.values()))
    for symbol, values in active.items():
        assert rows[symbol]["warn"] == pytest.approx(np.quantile(values, 0.95), rel=1e-12)
        assert rows[symbol]["alert"] == pytest.approx(np.quantile(values, 0.99), rel=1e-12)
    assert (rows["HUNDRED"]["n"], rows["HUNDRED"]["n_active"], rows["HUNDRED"]["sufficient"]) == (151, 100, True)
    assert (rows["NINETY9"]["n"], rows["NINETY9"]["n_active"], rows["NINETY9"]["sufficient"]) == (109, 99, False)
    assert (rows["SILENT"]["n"], rows["SILENT"]["n_active"], rows["SILENT"]["sufficient"]) == (80, 0, False)
    assert rows["SILENT"]["warn"] == rows["SILENT"]["alert"] == 1e-6
    assert (rows["*"]["n"], rows["*"]["n_active"], rows["*"]["sufficient"]) == (340, 199, True)
    stored = store.query("SELECT symbol, alert, sufficient FROM sensory.calibration ORDER BY symbol")
    assert stored["symbol"].to_list() == ["*", "HUNDRED", "NINETY9", "SILENT"]


# ---------------------------------------------------------------- drift: verdicts at their limits

def test_tested_at_an_effective_size_of_exactly_100_and_not_below(store):
    """One symbol, a reference whose own count is its size (so the current count is its number of bars) and too
    short (400 < 8 * 100 dates) for a pooled size: 100 current bars are tested, 99 are not."""
    rng = np.random.default_rng(15)
    reference = anti_persistent(rng.normal(size=400))
    assert newey_west_count(reference) == ar1_count(reference) == 400.0
    same = np.sort(reference)[2::4]  # the reference's own distribution, 100 values
    store.overwrite_table("sensory.how", frame("ds", "S", reference, same))
    outcome = drift(store, "how")
    stats = outcome.metadata["datasets"]["ds"]
    assert stats["effective_n"] == 100.0 and not stats.get("insufficient_data")
    assert stats["psi"] == pytest.approx(psi_by_hand(reference, same), abs=6e-5)
    assert stats["ks_d"] == pytest.approx(ks_2samp(reference, same).statistic, abs=6e-5)
    assert stats["psi"] < 0.25 and stats["ks_d"] < 0.2
    assert "alert_rate" not in stats and "n_active_current" not in stats  # no calibration: no alert rate
    assert outcome.passed
    assert outcome.description == f"{PREFIX}. {brief('ds', stats)}"
    assert outcome.metadata["tested"] == 1 and outcome.metadata["alert_rate_tested"] == 0
    assert outcome.metadata["max_psi"] == stats["psi"] and outcome.metadata["max_ks_d"] == stats["ks_d"]

    store.overwrite_table("sensory.how", frame("ds", "S", reference, same[:99]))
    outcome = drift(store, "how")
    stats = outcome.metadata["datasets"]["ds"]
    message = "insufficient data: effective n = 99.0 < 100, not tested"
    assert stats["insufficient_data"] is True and stats["effective_n"] == 99.0 and stats["skipped"] == message
    assert "psi" not in stats and "ks_d" not in stats
    assert not outcome.passed and outcome.metadata["tested"] == 0
    assert outcome.description == f"NOTHING TESTED (no dataset has enough data; no evidence either way): {PREFIX}. " \
                                  f"ds: {message}"


def test_an_untested_row_states_the_effective_size_it_reports(store):
    rng = np.random.default_rng(16)
    reference = ar1(450, 0.6, rng)  # 450 < 8 * 60 dates: no pooled size, the symbol's own count
    expected = 60 * count_by_hand(reference) / 450
    assert two_decimals(expected) and expected < 100
    enough = anti_persistent(rng.normal(size=400))  # and a later dataset that can be tested: 100 bars count 100
    parts = [frame("a_few", "S", reference, ar1(60, 0.6, rng)), frame("b_enough", "S", enough, np.sort(enough)[::4])]
    store.overwrite_table("sensory.how", pl.concat(parts))
    outcome = drift(store, "how")
    stats = outcome.metadata["datasets"]["a_few"]
    assert stats["insufficient_data"] is True
    assert stats["effective_n"] == pytest.approx(expected, abs=0.051)
    assert stats["skipped"] == f"insufficient data: effective n = {stats['effective_n']} < 100, not tested"
    assert outcome.metadata["datasets"]["b_enough"]["effective_n"] == 100.0
    assert "psi" in outcome.metadata["datasets"]["b_enough"] and outcome.metadata["tested"] == 1


def test_psi_at_its_limit_fails_and_just_below_passes(store):
    """The limit set to the PSI the row reports: PSI >= limit fails (whatever D); a limit just above it passes."""
    rng = np.random.default_rng(17)
    reference = anti_persistent(rng.normal(size=300))
    current = rng.normal(0.6, 1.0, size=100)
    store.overwrite_table("sensory.how", frame("ds", "S", reference, current))
    reported = drift(store, "how", DriftLimits(psi=100.0, ks=1.0, min_effective=0.0)).metadata["datasets"]["ds"]["psi"]
    assert reported == pytest.approx(psi_by_hand(reference, current), abs=5e-5)
    at = drift(store, "how", DriftLimits(psi=reported, ks=1.0, min_effective=0.0))
    assert at.metadata["datasets"]["ds"]["psi"] == reported
    assert not at.passed
    above = drift(store, "how", DriftLimits(psi=reported + 1e-4, ks=1.0, min_effective=0.0))
    assert above.passed
    assert above.description.startswith(f"latest month vs the 36 months before: PSI < {reported + 1e-4}, KS D < 1.0")


def test_ks_d_at_its_limit_fails_and_just_below_passes(store):
    """400 reference values 0..399; current: 20 values below them all and 80 at 4j + 3.5, so F_cur - F_ref reaches
    0.2 exactly and never more."""
    reference = anti_persistent(np.arange(400.0))
    current = np.concatenate([np.full(20, -1.0), 4 * np.arange(80) + 3.5])
    assert ks_2samp(reference, current).statistic == pytest.approx(0.2, abs=1e-12)
    store.overwrite_table("sensory.how", frame("ds", "S", reference, current))
    at = drift(store, "how", DriftLimits(psi=100.0, min_effective=0.0))  # KS limit: the default 0.2
    assert at.metadata["datasets"]["ds"]["ks_d"] == 0.2
    assert not at.passed
    assert drift(store, "how", DriftLimits(psi=100.0, ks=0.2001, min_effective=0.0)).passed


@pytest.mark.parametrize(("hits", "passed"), [(5, True), (6, False)])
def test_the_alert_rate_fails_only_above_five_percent_of_exactly_100_active_bars(store, hits, passed):
    """Threshold 2.0; 100 active current bars: ``hits`` at 3.0, 10 exactly at 2.0 (not strictly above: not counted),
    the rest at 1.0; 50 silent bars (score 0) are not in the denominator."""
    reference = anti_persistent(np.linspace(-3.0, 3.0, 200))
    current = [3.0] * hits + [-2.0] * 5 + [2.0] * 5 + [1.0] * (90 - hits) + [0.0] * 50
    store.overwrite_table("sensory.how", frame("ds", "S", reference, current))
    store.overwrite_table("sensory.calibration", thresholds([("ds", "S", 2.0, True), ("ds", "*", 2.0, True)]))
    outcome = drift(store, "how", ISOLATE_ALERT)
    stats = outcome.metadata["datasets"]["ds"]
    assert stats["n_active_current"] == 100
    assert stats["alert_rate"] == hits / 100
    assert "alert_rate_insufficient_data" not in stats
    assert outcome.passed is passed
    assert outcome.metadata["alert_rate_tested"] == 1
    assert f"ds: psi={stats['psi']}, ks_d={stats['ks_d']}, alert_rate={hits / 100}" in outcome.description


def test_below_100_active_current_bars_the_alert_rate_is_not_measured(store):
    """99 active current bars, every one above its threshold: not measured, said so, and the dataset is judged on PSI
    and KS alone (it passes); a dataset skipped for a short reference comes first and does not stop the loop."""
    reference = anti_persistent(np.linspace(-3.0, 3.0, 200))
    parts = [frame("a_short", "S", np.linspace(-1.0, 1.0, 19), [0.5] * 5),
             frame("b_few", "S", reference, [3.0] * 99 + [0.0] * 30)]
    store.overwrite_table("sensory.how", pl.concat(parts))
    store.overwrite_table("sensory.calibration", thresholds([("b_few", "S", 2.0, True), ("b_few", "*", 2.0, True)]))
    outcome = drift(store, "how", ISOLATE_ALERT)
    datasets = outcome.metadata["datasets"]
    assert datasets["a_short"] == {"skipped": "19 reference and 5 current scores"}
    stats = datasets["b_few"]
    skipped = "alert rate: insufficient data: 99 active current bars with a threshold < 100, not tested"
    assert stats["n_active_current"] == 99 and "alert_rate" not in stats
    assert stats["alert_rate_insufficient_data"] is True and stats["alert_rate_skipped"] == skipped
    assert outcome.passed
    assert outcome.metadata["tested"] == 1 and outcome.metadata["alert_rate_tested"] == 0
    assert outcome.description.startswith("latest month vs the 36 months before: PSI < 100.0, KS D < 1.0, ")
    assert outcome.description.endswith(f"size >= 0. a_short: skipped (19 reference and 5 current scores); "
                                        f"b_few: psi={stats['psi']}, ks_d={stats['ks_d']}, {skipped}")


def test_own_threshold_when_sufficient_else_the_pooled_one_else_not_counted(store):
    """RICH (300 active reference bars, own threshold about 1), POOR (20: the pooled threshold, between 2 and 3, not
    its own 10); in another dataset no symbol and not the pool has 100 active bars: nothing is counted."""
    rng = np.random.default_rng(18)
    rich = np.concatenate([rng.uniform(0.01, 1.0, 300), np.zeros(50)])
    poor = np.concatenate([np.linspace(2.0, 3.0, 17), [10.0] * 3, np.zeros(30)])
    rich_cur = [0.5] * 40 + [1.5] * 10
    poor_cur = [-0.5] * 30 + [1.5] * 10 + [5.0] * 10
    unsure = rng.uniform(0.1, 1.0, 40)
    parts = [frame("a_pooled", "RICH", rich, rich_cur), frame("a_pooled", "POOR", poor, poor_cur),
             frame("b_unsure", "U1", np.concatenate([unsure[:20], np.zeros(30)]), [3.0] * 80),
             frame("b_unsure", "U2", np.concatenate([unsure[20:], np.zeros(30)]), [3.0] * 80)]
    store.overwrite_table("sensory.how", pl.concat(parts))
    calibrate(store)
    own = np.quantile(rich[rich != 0], 0.99)
    pooled = np.quantile(np.concatenate([rich[rich != 0], poor[poor != 0]]), 0.99)
    assert own < 1.5 < pooled < 5.0 < np.quantile(poor[poor != 0], 0.99)
    hits = sum(abs(v) > own for v in rich_cur) + sum(abs(v) > pooled for v in poor_cur)
    outcome = drift(store, "how", ISOLATE_ALERT)
    stats = outcome.metadata["datasets"]["a_pooled"]
    assert stats["n_active_current"] == 100
    assert stats["alert_rate"] == hits / 100 == 0.2
    unsure_stats = outcome.metadata["datasets"]["b_unsure"]
    assert unsure_stats["n_active_current"] == 0 and unsure_stats["alert_rate_insufficient_data"] is True
    assert not outcome.passed  # a_pooled: 20% > 5%


def test_skipped_datasets_say_why_and_the_smallest_reference_is_twenty(store):
    """Reference of 19 scores: skipped; of 20 (two a bin): tested; current scores all null: skipped; one current
    score: tested."""
    reference = anti_persistent(np.linspace(-2.0, 2.0, 200))
    parts = [frame("a19", "S", np.linspace(-1.0, 1.0, 19), [0.5, -0.5, 0.0]),
             frame("b20", "S", np.linspace(-1.0, 1.0, 20), [0.5, -0.5, 0.0]),
             frame("c_null", "S", reference, [None] * 4),
             frame("d_one", "S", reference, [0.25])]
    store.overwrite_table("sensory.how", pl.concat(parts))
    outcome = drift(store, "how", DriftLimits(min_effective=0.0))
    datasets = outcome.metadata["datasets"]
    assert datasets["a19"] == {"skipped": "19 reference and 3 current scores"}
    assert datasets["c_null"] == {"skipped": "200 reference and 0 current scores"}
    assert "psi" in datasets["b20"] and "psi" in datasets["d_one"]
    assert datasets["d_one"]["n_current"] == 1 and datasets["b20"]["n_reference"] == 20
    assert outcome.metadata["tested"] == 2
    assert "a19: skipped (19 reference and 3 current scores)" in outcome.description
    assert "c_null: skipped (200 reference and 0 current scores)" in outcome.description


def test_an_absent_table_is_nothing_tested_and_does_not_pass(store):
    """No data is no evidence: a missing table is reported as not tested, and the check does not pass."""
    outcome = drift(store, "when")
    assert not outcome.passed
    assert outcome.description == f"NOTHING TESTED (sensory.when is empty): {PREFIX}"
    assert outcome.metadata == {"skipped": True, "tested": 0}
