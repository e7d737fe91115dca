"""Overfitting gates against independent expectations: the papers' formulas written out here with numpy and
scipy, limiting cases, the guards at their exact edges, and a brute-force CSCV written from the definition
(Bailey, Borwein, Lopez de Prado and Zhu) with the documented conventions (ties within 1e-9 x max(1, |SR|),
average ranks, w = rank / (N + 1), overfit when the logit is <= 0).
"""

import dataclasses
import math
from itertools import combinations

import numpy as np
import pytest
from scipy import stats

from emp_core.evolution.overfitting import (
    PBOResult,
    _sharpe_from_sums,
    deflated_sharpe,
    effective_bars,
    expected_max_sharpe,
    no_spread,
    probabilistic_sharpe,
    probability_of_backtest_overfitting,
)

# ---------------------------------------------------------------------------------------------------------------
# independent references


def psr_reference(r, benchmark=0.0, bars=None):
    """Bailey and Lopez de Prado (2012): Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2))."""
    r = np.asarray(r, dtype=float)
    r = r[np.isfinite(r)]
    n = len(r)
    mean = sum(r) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / (n - 1))
    sr = mean / sd
    g3 = stats.skew(r, bias=True)
    g4 = stats.kurtosis(r, fisher=False, bias=True)
    t = n if bars is None else bars
    return stats.norm.cdf((sr - benchmark) * math.sqrt(t - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))


def newey_west_bars(r):
    """T / (1 + 2 sum_{k<=L} (1 - k/(L+1)) rho_k), L = floor(4 (T/100)^(2/9)), the ratio floored at 1."""
    r = [float(x) for x in r if math.isfinite(x)]
    t = len(r)
    lags = math.floor(4 * (t / 100) ** (2 / 9))
    mean = sum(r) / t
    d = [x - mean for x in r]
    gamma0 = sum(x * x for x in d)
    if gamma0 == 0:
        return float(t)
    total = 0.0
    for k in range(1, lags + 1):
        gamma_k = sum(d[i] * d[i - k] for i in range(k, t))
        total += (1 - k / (lags + 1)) * gamma_k / gamma0
    return t / max(1.0, 1 + 2 * total)


def sr0_reference(variance, trials):
    """Bailey and Lopez de Prado (2014): sqrt(V) ((1 - g) Z^-1(1 - 1/N) + g Z^-1(1 - 1/(N e)))."""
    g = np.euler_gamma
    z = (1 - g) * stats.norm.ppf(1 - 1 / trials) + g * stats.norm.ppf(1 - 1 / (trials * np.e))
    return math.sqrt(variance) * z


def _sharpe(x):
    x = np.asarray(x, dtype=float)
    sd = np.std(x, ddof=1)
    if np.all(x == x[0]) or not sd > 0:
        return 0.0  # did nothing there (or nothing measurable)
    return float(np.mean(x) / sd)


def _rank_with_ties(values, i):
    """Average rank (1 = worst) of values[i], ties within 1e-9 x max(1, |values[i]|)."""
    mine = values[i]
    tol = 1e-9 * max(1.0, abs(mine))
    lower = sum(1 for v in values if v < mine - tol)
    same = sum(1 for v in values if abs(v - mine) <= tol)
    return lower + (same + 1) / 2


def cscv_reference(m, blocks):
    """Brute-force CSCV: (pbo, logits, splits, skipped), one loop per split and configuration."""
    m = np.asarray(m, dtype=float)
    keep_cols = [j for j in range(m.shape[1]) if np.all(np.isfinite(m[:, j]))]
    parts = np.array_split(np.arange(m.shape[0]), blocks)
    logits, overfit, skipped = [], [], 0
    for chosen in combinations(range(blocks), blocks // 2):
        rows_in = np.concatenate([parts[b] for b in chosen])
        rows_out = np.concatenate([parts[b] for b in range(blocks) if b not in chosen])
        live = []
        for j in keep_cols:
            a, b = m[rows_in, j], m[rows_out, j]
            if np.all(a == a[0]) and np.all(b == b[0]):
                continue
            live.append((_sharpe(a), _sharpe(b)))
        if len(live) < 2:
            skipped += 1
            continue
        ins = [a for a, _ in live]
        outs = [b for _, b in live]
        top = max(ins)
        winners = [i for i, v in enumerate(ins) if v >= top - 1e-9 * max(1.0, abs(top))]
        split_logits = []
        for i in winners:
            w = _rank_with_ties(outs, i) / (len(live) + 1)
            split_logits.append(math.log(w / (1 - w)))
        logits.append(sum(split_logits) / len(split_logits))
        overfit.append(sum(1 for x in split_logits if x <= 0) / len(split_logits))
    return sum(overfit) / len(overfit), np.array(logits), len(logits), skipped


def _standard(n, seed):
    """n values with mean exactly 0 (to rounding) and sample standard deviation 1."""
    e = np.random.default_rng(seed).normal(size=n)
    e -= e.mean()
    return e / e.std(ddof=1)


def _block_matrix(levels, rows=10, scale=0.01, seed=0):
    """levels[b][j]: configuration j in block b is levels[b][j] + scale * e_b (the same e_b for every
    configuration of block b), so its Sharpe ratio there is levels[b][j] / scale."""
    out = []
    for b, row in enumerate(levels):
        e = _standard(rows, seed + b)
        out.append(np.array(row)[None, :] + scale * e[:, None])
    return np.vstack(out)


# ---------------------------------------------------------------------------------------------------------------
# PSR


SKEWED = np.array([0.012, -0.004, 0.031, 0.002, -0.011, 0.007, 0.045, -0.002, 0.009, 0.001, -0.006])


@pytest.mark.parametrize("benchmark", [0.0, 0.05, -0.1, 0.3])
def test_psr_matches_the_paper_on_a_small_skewed_sample(benchmark):
    """Few bars, so ddof, the skew and kurtosis terms and T - 1 all move the answer."""
    r = SKEWED + 0.004
    assert abs(stats.skew(r)) > 0.5 and stats.kurtosis(r, fisher=False) > 3.2
    assert probabilistic_sharpe(r, benchmark) == pytest.approx(psr_reference(r, benchmark), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("shift", [-0.01, 0.0, 0.02])
def test_psr_with_negative_skew_and_each_sign_of_sharpe(shift):
    r = -SKEWED + shift
    assert probabilistic_sharpe(r, 0.1) == pytest.approx(psr_reference(r, 0.1), rel=1e-10, abs=1e-14)
    assert probabilistic_sharpe(r) == pytest.approx(psr_reference(r, 0.0), rel=1e-10, abs=1e-14)


def test_psr_by_hand_on_three_returns():
    """[0, 1, 2]: SR = 1 / 1, g3 = 0, g4 = 1.5, so PSR(0) = Phi(sqrt(2) / sqrt(1 + 0.5 / 4)) = Phi(4 / 3).
    Three returns are enough (and the sample's standard deviation is exactly 1)."""
    assert probabilistic_sharpe(np.array([0.0, 1.0, 2.0])) == pytest.approx(stats.norm.cdf(4 / 3), rel=1e-12)
    assert probabilistic_sharpe(np.array([0.0, 1.0, 2.0]), 1.0) == pytest.approx(0.5, abs=1e-12)


def test_psr_needs_three_finite_returns():
    with pytest.raises(ValueError, match="need at least 3 returns, got 2"):
        probabilistic_sharpe(np.array([0.01, 0.02]))
    with pytest.raises(ValueError, match="need at least 3 returns, got 2"):
        probabilistic_sharpe(np.array([0.01, np.nan, 0.02, np.inf]))
    r = np.array([0.01, -0.003, 0.02, 0.004])
    assert probabilistic_sharpe(r) == pytest.approx(psr_reference(r), rel=1e-10)
    # non-finite returns are dropped, not counted
    with_gaps = np.array([np.nan, 0.01, -0.003, np.inf, 0.02, 0.004, -np.inf])
    assert probabilistic_sharpe(with_gaps, 0.1) == pytest.approx(psr_reference(r, 0.1), rel=1e-12)


def test_psr_refuses_zero_variance_only():
    with pytest.raises(ValueError, match="zero variance"):
        probabilistic_sharpe(np.zeros(20))
    with pytest.raises(ValueError, match="zero variance"):
        probabilistic_sharpe(np.full(7, 0.25))  # exactly representable: the mean is exact
    assert 0.5 < probabilistic_sharpe(np.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])) < 1.0


def test_psr_default_is_plain_t_and_a_zero_benchmark():
    """Autocorrelated returns: the default is the paper's PSR(0) with plain T; ``serial`` uses the effective T."""
    rng = np.random.default_rng(5)
    e = rng.normal(size=400)
    r = np.empty(400)
    r[0] = e[0]
    for i in range(1, 400):
        r[i] = 0.6 * r[i - 1] + e[i]
    r = 0.01 * r + 0.0015
    bars = newey_west_bars(r)
    assert bars < 0.5 * len(r)
    assert probabilistic_sharpe(r) == pytest.approx(psr_reference(r, 0.0), rel=1e-10)
    assert probabilistic_sharpe(r, serial=True) == pytest.approx(psr_reference(r, 0.0, bars), rel=1e-10)
    assert probabilistic_sharpe(r, 0.05, serial=True) == pytest.approx(psr_reference(r, 0.05, bars), rel=1e-10)
    assert probabilistic_sharpe(r, serial=True) < probabilistic_sharpe(r)


def test_psr_at_its_own_sharpe_is_one_half_and_rises_with_t():
    r = SKEWED + 0.003
    sr = r.mean() / r.std(ddof=1)
    assert probabilistic_sharpe(r, sr) == pytest.approx(0.5, abs=1e-12)
    longer = np.tile(r, 4)
    assert probabilistic_sharpe(longer, 0.0) > probabilistic_sharpe(r, 0.0) > 0.5


# ---------------------------------------------------------------------------------------------------------------
# effective number of bars


def _ar1(n, rho, seed, mean=0.0):
    e = np.random.default_rng(seed).normal(size=n)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = rho * x[i - 1] + e[i]
    return 0.01 * x + mean


@pytest.mark.parametrize("n", [3, 4, 5, 7, 12, 30, 99, 100, 101, 250, 700, 2268])
@pytest.mark.parametrize("rho", [0.3, 0.8])
def test_effective_bars_is_newey_west(n, rho):
    r = _ar1(n, rho, seed=n, mean=0.002)
    assert effective_bars(r) == pytest.approx(newey_west_bars(r), rel=1e-10)


@pytest.mark.parametrize("value", [0.0, 0.003, 0.1, -250.7])
@pytest.mark.parametrize("n", [1, 2, 50, 1000])
def test_a_constant_series_counts_every_bar(value, n):
    """No variation (within rounding: 0.1's mean is not exact, leaving a residue the lag sums would read as
    autocorrelation near 1): nothing to discount, every bar counts."""
    assert effective_bars(np.full(n, value)) == float(n)


def test_a_persistent_wobble_within_rounding_still_counts_every_bar():
    """The rule is on the standard deviation (sqrt of the mean squared deviation), 1e-12 of the largest |return|:
    1.0 with a slow wobble of 1e-14 (sd about 7e-15, far below 1e-12) is constant, so all 1,000 bars count, though
    the wobble's autocorrelation is near 1 (read as a signal it would leave a handful of effective bars)."""
    k = np.arange(1000)
    r = 1.0 + 1e-14 * np.sin(2 * np.pi * k / 200)
    assert np.std(r) < 1e-13 and newey_west_bars(r - 1.0) < 300  # the same shape, scaled up, is persistent
    assert effective_bars(r) == 1000.0


def test_effective_bars_lag_count_by_hand():
    """L = floor(4 (T/100)^(2/9)): 4 at T = 100, 8 at T = 2,268 (as the module's docstring says), 1 at T = 4."""
    assert math.floor(4 * (100 / 100) ** (2 / 9)) == 4
    assert math.floor(4 * (2268 / 100) ** (2 / 9)) == 8
    # a series whose autocorrelation is all at lag k: only a window of L >= k sees it
    t = 2268
    x = np.random.default_rng(3).normal(size=t)
    for k in (7, 8, 9):
        y = x.copy()
        y[k:] += 0.9 * x[:-k]
        assert effective_bars(y) == pytest.approx(newey_west_bars(y), rel=1e-10)
    y = x.copy()
    y[9:] += 0.9 * x[:-9]
    assert effective_bars(y) == pytest.approx(newey_west_bars(y), rel=1e-10)


def test_effective_bars_by_hand_on_four_returns():
    """[1, 2, 3, 4]: L = 1, rho_1 = 1.25 / 5 = 0.25, weight 1/2: 4 / 1.25 = 3.2. The same for a sum of squared
    deviations of exactly 1 ([.5, .5, -.5, -.5]: rho_1 = 0.25)."""
    assert effective_bars(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(3.2, rel=1e-12)
    assert effective_bars(np.array([0.5, 0.5, -0.5, -0.5])) == pytest.approx(3.2, rel=1e-12)
    assert effective_bars(np.array([1.0, 2.0, 3.0, 4.0, 5.0])) == pytest.approx(newey_west_bars([1, 2, 3, 4, 5]))


def test_effective_bars_guards():
    """Constant returns (no variance) keep T; negative autocorrelation is not allowed to raise T; white
    noise discounts little; non-finite values are dropped."""
    assert effective_bars(np.full(50, 0.002)) == 50.0
    assert effective_bars(np.full(3, -0.01)) == 3.0
    alternating = np.tile([0.01, -0.01], 100)
    assert effective_bars(alternating) == 200.0
    white = np.random.default_rng(11).normal(0.001, 0.01, 1000)
    assert effective_bars(white) == pytest.approx(newey_west_bars(white), rel=1e-10)
    assert 0.8 * 1000 < effective_bars(white) <= 1000
    gappy = np.concatenate([[np.nan], _ar1(60, 0.5, 9), [np.inf]])
    assert effective_bars(gappy) == pytest.approx(newey_west_bars(gappy[1:-1]), rel=1e-10)


def test_effective_bars_grow_fewer_with_autocorrelation():
    values = [effective_bars(_ar1(1000, rho, 4)) for rho in (0.0, 0.3, 0.6, 0.9)]
    assert values == sorted(values, reverse=True)
    assert values[-1] < 0.2 * 1000


# ---------------------------------------------------------------------------------------------------------------
# SR0


@pytest.mark.parametrize("trials", [2, 2.5, 3, 10, 100, 1000, 1e6])
@pytest.mark.parametrize("variance", [1.0, 0.25, 1 / 2268])
def test_expected_max_sharpe_is_the_closed_form(trials, variance):
    assert expected_max_sharpe(variance, trials) == pytest.approx(sr0_reference(variance, trials), rel=1e-12)


def test_expected_max_sharpe_near_the_expected_maximum_of_normals():
    """The closed form approximates E[max of N standard normals]: 1.5388 for N = 10, 3.2414 for N = 1000
    (known values), within the approximation's few percent."""
    assert expected_max_sharpe(1.0, 10) == pytest.approx(1.5388, rel=0.05)
    assert expected_max_sharpe(1.0, 1000) == pytest.approx(3.2414, rel=0.02)
    assert expected_max_sharpe(4.0, 10) == pytest.approx(2 * expected_max_sharpe(1.0, 10), rel=1e-12)


def test_expected_max_sharpe_limits():
    """One trial or fewer reaches nothing; just above one trial, the closed form is negative and floored at 0;
    two trials: (1 - g) * 0 + g * Z^-1(1 - 1/(2e))."""
    for trials in (1, 1.0, 0.5, 0):
        assert expected_max_sharpe(0.3, trials) == 0.0
    assert sr0_reference(1.0, 1.01) < 0
    assert expected_max_sharpe(1.0, 1.01) == 0.0
    assert expected_max_sharpe(1.0, 2) == pytest.approx(np.euler_gamma * stats.norm.ppf(1 - 1 / (2 * np.e)))
    grid = [expected_max_sharpe(0.01, n) for n in (1.5, 2, 5, 20, 100, 10_000)]
    assert grid == sorted(grid) and grid[1] > 0


# ---------------------------------------------------------------------------------------------------------------
# DSR


def test_deflated_sharpe_is_psr_against_sr0_of_the_trials_variance():
    rng = np.random.default_rng(21)
    r = rng.standard_t(4, 300) * 0.01 + 0.002
    sharpes = rng.normal(0.0, 0.04, 25)
    v = float(np.sum((sharpes - sharpes.mean()) ** 2) / (len(sharpes) - 1))
    assert deflated_sharpe(r, sharpes) == pytest.approx(psr_reference(r, sr0_reference(v, 25)), rel=1e-10)
    assert deflated_sharpe(r, sharpes, trials=400) == pytest.approx(psr_reference(r, sr0_reference(v, 400)),
                                                                    rel=1e-10)


def test_deflated_sharpe_with_two_trial_sharpes():
    r = _ar1(250, 0.0, 2, mean=0.002)
    sharpes = np.array([0.01, 0.09])
    v = (0.04**2 + 0.04**2) / 1
    assert deflated_sharpe(r, sharpes) == pytest.approx(psr_reference(r, sr0_reference(v, 2)), rel=1e-10)
    assert deflated_sharpe(r, sharpes) < probabilistic_sharpe(r)


def test_deflated_sharpe_with_one_trial_sharpe_has_no_variance():
    """One Sharpe ratio has no variance: SR0 = 0 whatever the number of trials claimed."""
    r = _ar1(250, 0.0, 3, mean=0.001)
    assert deflated_sharpe(r, np.array([0.5]), trials=50) == pytest.approx(psr_reference(r, 0.0), rel=1e-10)
    assert deflated_sharpe(r, [0.5]) == pytest.approx(psr_reference(r, 0.0), rel=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# PBO: small matrices with known answers


def test_pbo_result_is_frozen():
    result = probability_of_backtest_overfitting(_block_matrix([[0.003, 0.0], [0.0, 0.003]]), blocks=2)
    assert isinstance(result, PBOResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.pbo = 0.0


def test_two_configurations_two_blocks_by_hand():
    """The smallest CSCV: two configurations, two blocks. Each block's winner is the other block's loser:
    w = 1/3 in both splits, PBO 1."""
    m = _block_matrix([[0.003, 0.0], [0.0, 0.003]])
    result = probability_of_backtest_overfitting(m, blocks=2)
    assert (result.splits, result.skipped) == (2, 0)
    np.testing.assert_allclose(result.logits, [math.log(0.5), math.log(0.5)])
    assert result.pbo == 1.0
    same = probability_of_backtest_overfitting(_block_matrix([[0.003, 0.0], [0.003, 0.0]]), blocks=2)
    np.testing.assert_allclose(same.logits, [math.log(2), math.log(2)])
    assert same.pbo == 0.0


def test_a_winner_exactly_at_the_median_counts_as_overfit():
    """Three configurations: each block's winner is the middle one in the other block, w = 2/4, logit exactly
    0; the paper counts l <= 0 as overfit, so PBO = 1 (with l < 0 it would be 0)."""
    m = _block_matrix([[0.003, 0.001, -0.002], [0.001, 0.003, -0.002]])
    result = probability_of_backtest_overfitting(m, blocks=2)
    assert list(result.logits) == [0.0, 0.0]
    assert result.pbo == 1.0


def test_a_winner_just_above_the_median_is_not_overfit():
    """Four configurations: each block's winner is third of four in the other, w = 3/5, logit ln 1.5 (below 1)."""
    m = _block_matrix([[0.004, 0.003, 0.001, -0.002], [0.003, 0.004, 0.001, -0.002]])
    result = probability_of_backtest_overfitting(m, blocks=2)
    np.testing.assert_allclose(result.logits, [math.log(1.5)] * 2)
    assert result.pbo == 0.0


def test_tied_winners_one_at_the_median_one_just_above():
    """Five configurations. Block 0: 0 and its copy 1 tie on top. Out of sample (block 1) they rank 3 and 4
    of 5 (w = 1/2 and 2/3, logits 0 and ln 2): the split is half overfit, logit ln 2 / 2. With block 1
    in-sample, 4 wins and ranks 3 in block 0 (below the tied pair, above 2 and 3): w = 1/2, overfit."""
    m = _block_matrix([[0.004, 0.004, -0.002, 0.0, 0.002],
                       [0.001, 0.002, -0.002, 0.0, 0.004]])
    result = probability_of_backtest_overfitting(m, blocks=2)
    np.testing.assert_allclose(result.logits, [math.log(2) / 2, 0.0], atol=1e-15)
    assert result.pbo == pytest.approx(0.75)
    assert result.pbo == pytest.approx(cscv_reference(m, 2)[0])


def test_three_way_and_two_way_ties_in_different_splits():
    """0 and 1 are identical everywhere; 2 equals them in blocks 0 and 1 only. Where blocks 0 and 1 are
    in-sample the three tie; elsewhere 0 and 1 tie (when they win). Against the brute force."""
    rng = np.random.default_rng(41)
    m = rng.normal(0, 0.01, (80, 6))
    m[:, 0] += 0.004
    m[:, 1] = m[:, 0]
    m[:40, 2] = m[:40, 0]
    m[40:, 2] -= 0.01
    m[40:60, 3] += 0.01
    result = probability_of_backtest_overfitting(m, blocks=4)
    pbo, logits, splits, skipped = cscv_reference(m, 4)
    assert (result.splits, result.skipped) == (splits, skipped) == (6, 0)
    np.testing.assert_allclose(result.logits, logits, rtol=1e-9, atol=1e-12)
    assert result.pbo == pytest.approx(pbo, abs=1e-12)
    # the first split (blocks 0 and 1 in-sample) has three tied winners; out of sample 0 and 1 tie under 3 and
    # above 4 and 5 (rank 4.5 of 6), 2 is last
    top, bottom = math.log(4.5 / 2.5), math.log(1 / 6)
    assert result.logits[0] == pytest.approx((2 * top + bottom) / 3)


@pytest.mark.parametrize("sharpe", [0.3, 3.0])
@pytest.mark.parametrize("k", [0.5, 1.5])
def test_ties_are_within_1e9_times_max_1_abs_sharpe(sharpe, k):
    """Configuration 1 is 0 plus a constant in block 0, which raises its Sharpe ratio there by exactly
    k x 1e-9 x max(1, |SR|): a tie when k < 1, a better one when k > 1. Out of sample (block 1), 0 is the
    best of four and 1 the worst.
    Split (block 0 in): k < 1, two winners at w = 4/5 and 1/5 (logits +-ln 4, mean 0, half overfit); k > 1,
    1 alone wins (logit -ln 4, overfit). Split (block 1 in): 0 wins, and in block 0 sits with 1 on top
    (k < 1: rank 3.5, w = 0.7) or just under it (k > 1: rank 3, w = 0.6)."""
    scale = 0.01
    e0, e1 = _standard(10, 50), _standard(10, 51)
    a = sharpe * scale
    delta = k * 1e-9 * max(1.0, sharpe) * scale
    col0 = np.r_[a + scale * e0, 0.004 + scale * e1]
    col1 = np.r_[a + delta + scale * e0, -0.004 + scale * e1]
    col2 = np.r_[0.2 * a + scale * e0, 0.001 + scale * e1]
    col3 = np.r_[0.1 * a + scale * e0, 0.0 + scale * e1]
    m = np.column_stack([col0, col1, col2, col3])
    assert _sharpe(col1[:10]) - _sharpe(col0[:10]) == pytest.approx(k * 1e-9 * max(1.0, sharpe), rel=1e-4)
    result = probability_of_backtest_overfitting(m, blocks=2)
    if k < 1:
        expected_logits, expected_pbo = [0.0, math.log(0.7 / 0.3)], 0.25
    else:
        expected_logits, expected_pbo = [-math.log(4), math.log(1.5)], 0.5
    np.testing.assert_allclose(result.logits, expected_logits, atol=1e-12)
    assert result.pbo == pytest.approx(expected_pbo)
    pbo, logits, _, _ = cscv_reference(m, 2)
    np.testing.assert_allclose(logits, expected_logits, atol=1e-12)
    assert pbo == pytest.approx(expected_pbo)


def test_a_half_flat_configuration_ranks_at_zero_in_the_half_it_sat_out():
    """Configuration 0 sits out block 1 (constant 0.002 there: Sharpe ratio 0) and is best in block 0;
    1 to 3 trade in both blocks with Sharpe ratios +0.2, +0.1, -0.3 in block 1. Block 0 in-sample: 0 wins
    and ranks 2 of 4 out of sample (above only 3): w = 2/5."""
    scale = 0.01
    e0, e1 = _standard(10, 60), _standard(10, 61)
    m = np.column_stack([
        np.r_[0.005 + scale * e0, np.full(10, 0.002)],
        np.r_[0.001 + scale * e0, 0.002 + scale * e1],
        np.r_[0.0 + scale * e0, 0.001 + scale * e1],
        np.r_[-0.001 + scale * e0, -0.003 + scale * e1],
    ])
    result = probability_of_backtest_overfitting(m, blocks=2)
    assert result.logits[0] == pytest.approx(math.log(2 / 3))
    # block 1 in-sample: 1 wins; in block 0 it ranks 3 of 4 (under 0): w = 3/5
    assert result.logits[1] == pytest.approx(math.log(1.5))
    assert result.pbo == 0.5
    pbo, logits, _, _ = cscv_reference(m, 2)
    np.testing.assert_allclose(result.logits, logits)
    assert result.pbo == pytest.approx(pbo)


def test_flat_in_sample_winner_when_everything_else_lost():
    """In block 0 configuration 0 is constant (Sharpe 0) and all others lose: the flat half wins; a Sharpe
    ratio of 1 for flat halves would not change that, so check the ranks out of sample: 0 earns the
    most in block 1 of four."""
    scale = 0.01
    e0, e1 = _standard(10, 70), _standard(10, 71)
    m = np.column_stack([
        np.r_[np.zeros(10), 0.006 + scale * e1],
        np.r_[-0.002 + scale * e0, 0.004 + scale * e1],
        np.r_[-0.003 + scale * e0, 0.002 + scale * e1],
        np.r_[-0.004 + scale * e0, 0.001 + scale * e1],
    ])
    result = probability_of_backtest_overfitting(m, blocks=2)
    assert result.logits[0] == pytest.approx(math.log(4))
    # block 1 in-sample: 0 wins; in block 0 it is flat at 0, above the three losers: w = 4/5
    assert result.logits[1] == pytest.approx(math.log(4))
    assert result.pbo == 0.0


def test_flat_out_of_sample_sharpe_is_zero_not_one():
    """A winner whose out-of-sample half is flat has Sharpe ratio 0 there: with the others at per-period
    Sharpe ratios 0.5 and 2 (above 0 but below 1 and above 1) it ranks below both; at 1 it would sit between."""
    scale = 0.01
    e0, e1 = _standard(10, 80), _standard(10, 81)
    m = np.column_stack([
        np.r_[0.01 + scale * e0, np.full(10, -0.001)],
        np.r_[0.0 + scale * e0, 0.005 + scale * e1],
        np.r_[-0.001 + scale * e0, 0.02 + scale * e1],
    ])
    result = probability_of_backtest_overfitting(m, blocks=2)
    assert result.logits[0] == pytest.approx(math.log(1 / 3))
    pbo, logits, _, _ = cscv_reference(m, 2)
    np.testing.assert_allclose(result.logits, logits)
    assert result.pbo == pytest.approx(pbo)


def test_constant_in_both_halves_never_trades_and_is_left_out():
    """A fixed yield is in no split: with it, PBO and logits are those of the other configurations alone, and a
    matrix of two configurations of which one is a fixed yield has no usable split."""
    base = _block_matrix([[0.004, 0.003, 0.001, -0.002], [0.003, 0.004, 0.001, -0.002]])
    padded = np.column_stack([base, np.full(20, 0.5), np.full(20, -0.5)])
    a = probability_of_backtest_overfitting(base, blocks=2)
    b = probability_of_backtest_overfitting(padded, blocks=2)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert (b.splits, b.skipped) == (2, 0)
    with pytest.raises(ValueError, match="PBO is undefined"):
        probability_of_backtest_overfitting(np.column_stack([base[:, 0], np.full(20, 0.01)]), blocks=2)


def test_two_configurations_are_enough_and_one_is_not():
    m = _block_matrix([[0.003, 0.0], [0.0, 0.003]])
    assert probability_of_backtest_overfitting(m, blocks=2).splits == 2
    with pytest.raises(ValueError, match="at least two configurations"):
        probability_of_backtest_overfitting(m[:, :1], blocks=2)
    with pytest.raises(ValueError, match="at least two configurations"):
        probability_of_backtest_overfitting(np.ones((4, 2, 2)), blocks=2)


def test_block_guards_at_their_edges():
    m = np.random.default_rng(1).normal(0, 0.01, (24, 3))
    assert probability_of_backtest_overfitting(m[:4], blocks=2).splits == 2  # two rows per block: enough
    with pytest.raises(ValueError, match="3 periods are too few for 2 blocks"):
        probability_of_backtest_overfitting(m[:3], blocks=2)
    assert probability_of_backtest_overfitting(m, blocks=12).splits == math.comb(12, 6)
    assert probability_of_backtest_overfitting(m, blocks=6).splits == 20
    assert probability_of_backtest_overfitting(m[:8], blocks=4).splits == 6
    for blocks in (3, 1, 7):
        with pytest.raises(ValueError, match="blocks must be even"):
            probability_of_backtest_overfitting(m, blocks=blocks)
    with pytest.raises(ValueError):
        probability_of_backtest_overfitting(m[:31], blocks=16)
    assert probability_of_backtest_overfitting(np.vstack([m, m]), blocks=16 // 8).splits == 2


def test_default_is_sixteen_blocks():
    m = np.random.default_rng(2).normal(0, 0.01, (64, 3))
    result = probability_of_backtest_overfitting(m)
    assert result.splits == math.comb(16, 8)
    assert result.pbo == probability_of_backtest_overfitting(m, blocks=16).pbo


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape", [(23, 5, 4), (37, 7, 6), (30, 4, 2)])
def test_random_matrices_against_the_brute_force(seed, shape):
    rows, configurations, blocks = shape
    rng = np.random.default_rng(100 + seed)
    m = rng.normal(0.0005, 0.01, (rows, configurations)) * rng.uniform(0.2, 5, configurations)
    m[:, 0] += 0.3  # a column far from zero mean: the centring must be undone
    pbo, logits, splits, skipped = cscv_reference(m, blocks)
    result = probability_of_backtest_overfitting(m, blocks=blocks)
    assert (result.splits, result.skipped) == (splits, skipped)
    np.testing.assert_allclose(result.logits, logits, rtol=1e-9, atol=1e-12)
    assert result.pbo == pytest.approx(pbo, abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# PBO: halves whose variance the per-block sums cannot resolve are computed from their rows


def _riskless_half_matrix(mu, level, others):
    """Configuration 0: in block 0 a spread of 1e-12 around ``mu`` (Sharpe ratio mu / 1e-12), in block 1 a
    Sharpe ratio of level / 0.01: block 0 is far from the column's mean, and the variance from centred sums of
    squares rounds to exactly 0 there for these values (levels found by search), so that half is recomputed
    from its rows. ``others``: (Sharpe in block 0, Sharpe in block 1) of the other configurations."""
    e0, e1 = _standard(10, 90), _standard(10, 1)
    x = np.r_[mu + 1e-12 * e0, level + 0.01 * e1]
    cols = [x] + [np.r_[a * 0.01 + 0.01 * e0, b * 0.01 + 0.01 * e1] for a, b in others]
    return np.column_stack(cols)


def test_an_unresolved_half_is_recomputed_with_the_sample_standard_deviation():
    """Configuration 0 has Sharpe ratio 0.35 in block 0; 1 has 0.3605 (3% more) and 2 has 0.3398 (3% less):
    a factor sqrt(9/8) = 1.06 on either side (ddof, n - 1) would reorder them.
    Block 0 in-sample: 1 wins, and in block 1 ranks 2 of 4 (w = 2/5). Block 1 in-sample: 2 wins (Sharpe 2)
    and in block 0 ranks 2 of 4, under 0 and 1 (w = 2/5)."""
    m = _riskless_half_matrix(0.35e-12, 0.01, [(0.3605, 0.5), (0.35 / 1.03, 2.0), (-0.5, -0.2)])
    assert _sharpe(m[:10, 0]) == pytest.approx(0.35)
    result = probability_of_backtest_overfitting(m, blocks=2)
    np.testing.assert_allclose(result.logits, [math.log(2 / 3)] * 2)
    assert result.pbo == 1.0
    pbo, logits, _, _ = cscv_reference(m, 2)
    np.testing.assert_allclose(result.logits, logits)
    assert result.pbo == pytest.approx(pbo)


def test_an_unresolved_out_of_sample_half_is_recomputed_from_its_own_rows():
    """Configuration 0 has Sharpe ratio -0.35 in block 0 (unresolved by the sums) and 1.2 in block 1. Block 1
    in-sample: 1 wins (Sharpe 3) and in block 0 (0.1) sits between 0 (-0.35) and 2 (0.5): w = 2/4, logit 0,
    overfit. Block 0 in-sample: 2 wins and is last of three in block 1: w = 1/4, overfit too."""
    m = _riskless_half_matrix(-0.35e-12, 0.012, [(0.1, 3.0), (0.5, 0.2)])
    result = probability_of_backtest_overfitting(m, blocks=2)
    np.testing.assert_allclose(result.logits, [math.log(1 / 3), 0.0], atol=1e-15)
    assert result.pbo == 1.0
    pbo, logits, _, _ = cscv_reference(m, 2)
    np.testing.assert_allclose(result.logits, logits, atol=1e-15)
    assert result.pbo == pytest.approx(pbo)


def test_a_half_whose_variance_underflows_counts_as_constant():
    """Configuration 0 alternates between 1e-160 and the next float up: it is not constant, but every squared
    deviation underflows to 0, so no variance is measurable: Sharpe ratio 0 in both halves (it takes part).
    Block 0 in-sample: 1 wins (0.5) and in block 1 (0.3) ranks 3 of 4, above 0 (at 0) and 3 (-0.4): w = 3/5."""
    tiny = np.where(np.arange(20) % 2 == 0, 1e-160, np.nextafter(1e-160, 1.0))
    assert np.std(tiny[:10], ddof=1) == 0 and not np.all(tiny == tiny[0])
    e0, e1 = _standard(10, 95), _standard(10, 96)
    m = np.column_stack([tiny] + [np.r_[a * 0.01 + 0.01 * e0, b * 0.01 + 0.01 * e1]
                                  for a, b in [(0.5, 0.3), (-0.5, 0.8), (0.2, -0.4)]])
    result = probability_of_backtest_overfitting(m, blocks=2)
    # block 1 in-sample: 2 wins (0.8) and is last in block 0: w = 1/5
    np.testing.assert_allclose(result.logits, [math.log(1.5), math.log(0.25)])
    assert result.pbo == 0.5
    pbo, logits, _, _ = cscv_reference(m, 2)
    np.testing.assert_allclose(result.logits, logits)
    assert result.pbo == pytest.approx(pbo)


# ---------------------------------------------------------------------------------------------------------------
# PBO: ties exactly at the edge of the tolerance (inclusive: "within")

# five rows with mean exactly +-1 and sample standard deviation exactly 1e9: Sharpe ratio exactly +-1e-9, the
# tolerance around a Sharpe ratio of 0 (all these sums are exact in binary floating point)
_PLUS = np.array([1 + 1e9, 1 + 1e9, 1 - 1e9, 1 - 1e9, 1.0])
_MINUS = -_PLUS


def test_out_of_sample_ties_at_exactly_the_tolerance():
    """Block 0 in-sample: 0 wins (Sharpe 3) and is flat out of sample (Sharpe 0). There 1 is at exactly +1e-9 and
    2 at exactly -1e-9: both tie with 0 (|difference| <= 1e-9 x max(1, 0)); 3 is below, 4 above. Rank of 0:
    1 + (3 + 1) / 2 = 3 of 5, w = 1/2, logit 0: overfit."""
    assert _PLUS.mean() == 1 and _PLUS.std(ddof=1) == 1e9 and _PLUS.mean() / _PLUS.std(ddof=1) == 1e-9
    e0, e1 = _standard(5, 97), _standard(5, 98)
    m = np.column_stack([
        np.r_[0.03 + 0.01 * e0, np.full(5, 0.002)],
        np.r_[_PLUS, _PLUS],
        np.r_[_MINUS, _MINUS],
        np.r_[0.001 + 0.01 * e0, -0.005 + 0.01 * e1],
        np.r_[-0.001 + 0.01 * e0, 0.005 + 0.01 * e1],
    ])
    result = probability_of_backtest_overfitting(m, blocks=2)
    assert result.logits[0] == 0.0
    pbo, logits, _, _ = cscv_reference(m, 2)
    np.testing.assert_allclose(result.logits, logits, atol=1e-15)
    assert result.pbo == pytest.approx(pbo)


def test_in_sample_ties_at_exactly_the_tolerance():
    """Block 0 in-sample: 0 is flat there (Sharpe 0) and best, 1 is at exactly -1e-9: a tie, so both are winners.
    Out of sample (block 1) 0 is best of four (w = 4/5) and 1 (again -1e-9) third (w = 3/5, above 2 and 3)."""
    e0, e1 = _standard(5, 99), _standard(5, 100)
    m = np.column_stack([
        np.r_[np.zeros(5), 0.02 + 0.01 * e1],
        np.r_[_MINUS, _MINUS],
        np.r_[-0.002 + 0.01 * e0, -0.005 + 0.01 * e1],
        np.r_[-0.003 + 0.01 * e0, -0.004 + 0.01 * e1],
    ])
    result = probability_of_backtest_overfitting(m, blocks=2)
    assert result.logits[0] == pytest.approx((math.log(4) + math.log(1.5)) / 2)
    pbo, logits, _, _ = cscv_reference(m, 2)
    np.testing.assert_allclose(result.logits, logits)
    assert result.pbo == pytest.approx(pbo)


# ---------------------------------------------------------------------------------------------------------------
# PSR at a degenerate sample: the estimator's variance term vanishes


def test_psr_floors_a_vanishing_variance_term_at_1e_12():
    """Two-point returns have g4 = g3^2 + 1, so 1 - g3 SR + (g4 - 1) / 4 SR^2 = (1 - g3 SR / 2)^2, zero when
    g3 SR = 2: nine returns c and one c + 1 with SR = 0.75 = 2 / g3 (g3 = 8/3). The Sharpe ratio then has no
    estimation error; the module floors the term at 1e-12, so PSR(SR - h) = Phi(h sqrt(9) / 1e-6)."""
    c = 0.75 * math.sqrt(0.1) - 0.1
    r = np.r_[np.full(9, c), c + 1.0]
    sr = r.mean() / r.std(ddof=1)
    g3, g4 = stats.skew(r), stats.kurtosis(r, fisher=False)
    assert sr == pytest.approx(0.75) and g3 == pytest.approx(8 / 3) and g4 == pytest.approx(g3**2 + 1)
    assert abs(1 - g3 * sr + (g4 - 1) / 4 * sr**2) < 1e-13
    h = 1e-6 / 3
    assert probabilistic_sharpe(r, sr - h) == pytest.approx(stats.norm.cdf(1.0), abs=1e-6)
    assert probabilistic_sharpe(r, sr + h) == pytest.approx(stats.norm.cdf(-1.0), abs=1e-6)
    assert probabilistic_sharpe(r, sr - 1e-3) == 1.0


@pytest.mark.parametrize("scale", [100.0, 1e4])
def test_pbo_is_free_of_the_returns_unit(scale):
    """Sharpe ratios do not depend on the unit of the returns: in percent or basis points (returns of several
    units, sums of squares far above 1), with regimes that move each half's mean away from the column's, the
    logits are those of the fractions, and the brute force's."""
    rng = np.random.default_rng(77)
    m = rng.normal(0.0, 0.01, (48, 7))
    m[:24, :3] += 0.008
    m[24:, 3:5] += 0.006
    m[12:36, 5] -= 0.007
    base = probability_of_backtest_overfitting(m, blocks=4)
    scaled = probability_of_backtest_overfitting(m * scale, blocks=4)
    np.testing.assert_allclose(scaled.logits, base.logits, rtol=1e-9, atol=1e-12)
    assert scaled.pbo == base.pbo
    pbo, logits, _, _ = cscv_reference(m * scale, 4)
    np.testing.assert_allclose(scaled.logits, logits, rtol=1e-9, atol=1e-12)
    assert scaled.pbo == pytest.approx(pbo)


def test_a_nearly_riskless_half_far_from_its_column_mean_is_recomputed_from_its_rows():
    """Column 3 is riskless to 1e-12 in the first half and far from its mean (0.025): the variance from the
    centred sums is lost to cancellation; the split must still rank it by its true Sharpe ratio."""
    rng = np.random.default_rng(1)
    m = rng.normal(0, 0.01, (20, 4))
    t = 1e-12 * rng.normal(size=10)
    m[:10, 3] = t - t.mean() + 0.3e-12
    m[10:, 3] = 0.05 + 0.01 * rng.normal(size=10)
    result = probability_of_backtest_overfitting(m, blocks=2)
    pbo, logits, _, _ = cscv_reference(m, 2)
    np.testing.assert_allclose(result.logits, logits, rtol=1e-12)
    np.testing.assert_allclose(result.logits, [math.log(4), math.log(4)], rtol=1e-12)
    assert result.pbo == pbo == 0.0


@pytest.mark.parametrize("value", [0.003, 0.1, -0.0007, 1e-5])
def test_constant_returns_whose_mean_is_inexact_have_zero_variance(value):
    """A constant per-bar yield has no Sharpe ratio, even when rounding leaves a standard deviation of ~1e-19
    (0.003 x 20 does not sum exactly); before, its Sharpe ratio of ~1e16 passed the PSR and DSR gates."""
    returns = np.full(20, value)
    with pytest.raises(ValueError, match="zero variance"):
        probabilistic_sharpe(returns)
    with pytest.raises(ValueError, match="zero variance"):
        deflated_sharpe(returns, np.linspace(-0.1, 0.1, 1000))


# ---------------------------------------------------------------------------------------------------------------
# the two tolerances at their documented edges


@pytest.mark.parametrize("largest", [1e-3, 1.0, 250.0])
def test_no_spread_is_a_standard_deviation_at_most_1e_12_of_the_largest_value(largest):
    assert no_spread(1e-12 * largest, largest) and no_spread(0.0, largest)
    assert not no_spread(1.5e-12 * largest, largest)
    assert no_spread(np.array([0.9e-12, 1.5e-12]) * largest, largest).tolist() == [True, False]


@pytest.mark.parametrize("s2", [1e-4, 1.0, 1e4])  # sums of squares far from 1: the share is relative to them
def test_cscv_sharpe_is_nan_when_the_deviations_are_at_most_1e_7_of_the_sum_of_squares(s2):
    """Two halves of n = 50 rows each whose sum of squared deviations, ss = s2 - s1^2 / n, is 0.9e-7 (lost to
    cancellation: NaN) and 1.5e-7 (kept: a finite Sharpe ratio from the sums) of the sum of squares s2."""
    n = np.array([50.0, 50.0])
    share = np.array([0.9e-7, 1.5e-7])
    s1 = np.sqrt(n * s2 * (1.0 - share))
    sr = _sharpe_from_sums(s1, np.full(2, s2), n, np.zeros(2))
    assert math.isnan(sr[0])
    assert sr[1] == pytest.approx((s1[1] / 50) / math.sqrt(s2 * 1.5e-7 / 49), rel=1e-6)
