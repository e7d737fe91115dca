"""PSR, DSR and PBO: against independent computations, and against what they must say."""

from itertools import combinations

import numpy as np
import pytest
from scipy import stats

from emp_core.evolution.overfitting import (
    deflated_sharpe,
    expected_max_sharpe,
    probabilistic_sharpe,
    probability_of_backtest_overfitting,
)


def test_psr_against_scipy_moments():
    r = np.random.default_rng(1).standard_t(5, 1000) * 0.01 + 0.0008
    sr = r.mean() / r.std(ddof=1)
    g3, g4 = stats.skew(r), stats.kurtosis(r, fisher=False)
    expected = stats.norm.cdf((sr - 0.01) * np.sqrt(len(r) - 1) / np.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))
    assert probabilistic_sharpe(r, 0.01) == pytest.approx(expected, rel=1e-12)
    assert probabilistic_sharpe(r, sr) == pytest.approx(0.5)


def test_expected_max_sharpe_matches_simulation():
    """SR0 is the expected best of N unskilled trials: check it against a simulation of such trials."""
    rng = np.random.default_rng(2)
    trials, periods = 100, 500
    best = [(x.mean(axis=0) / x.std(axis=0, ddof=1)).max() for x in rng.normal(0, 1, (200, periods, trials))]
    sd = 1 / np.sqrt(periods)  # standard deviation of an unskilled Sharpe estimate
    assert expected_max_sharpe(sd**2, trials) == pytest.approx(np.mean(best), rel=0.05)


def test_deflation_grows_with_the_number_of_trials():
    rng = np.random.default_rng(3)
    r = rng.normal(0.001, 0.01, 1500)
    sharpes = rng.normal(0, 0.03, 50)
    one = deflated_sharpe(r, sharpes, trials=1)
    many = deflated_sharpe(r, sharpes, trials=1000)
    assert one == pytest.approx(probabilistic_sharpe(r, 0.0))
    assert many < deflated_sharpe(r, sharpes, trials=50) < one


def brute_force_pbo(m, blocks):
    usable = m.shape[0] - m.shape[0] % blocks
    parts = np.array_split(m[:usable], blocks)
    logits = []
    for chosen in combinations(range(blocks), blocks // 2):
        ins = np.vstack([parts[i] for i in chosen])
        oos = np.vstack([parts[i] for i in range(blocks) if i not in chosen])
        sr_in = ins.mean(axis=0) / ins.std(axis=0, ddof=1)
        sr_out = oos.mean(axis=0) / oos.std(axis=0, ddof=1)
        n_star = int(np.argmax(sr_in))
        rank = 1 + sum(1 for x in sr_out if x < sr_out[n_star])
        w = rank / (m.shape[1] + 1)
        logits.append(np.log(w / (1 - w)))
    return np.mean(np.array(logits) <= 0), np.array(logits)


def test_pbo_equals_a_brute_force_cscv():
    m = np.random.default_rng(4).normal(0, 0.01, (600, 12))
    fast = probability_of_backtest_overfitting(m, blocks=8)
    pbo, logits = brute_force_pbo(m, 8)
    assert fast.splits == 70
    assert fast.pbo == pytest.approx(pbo)
    np.testing.assert_allclose(fast.logits, logits, rtol=1e-10)


def test_pbo_is_high_for_noise_and_low_for_a_real_edge():
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 0.01, (2000, 50))
    # With no skill the in-sample winner often lands at or below the out-of-sample median. (Not 0.5 on
    # one draw: a configuration that was lucky over the whole sample tends to be lucky in both halves.)
    overfit = probability_of_backtest_overfitting(noise).pbo
    edge = noise.copy()
    edge[:, 7] += 0.002
    skilled = probability_of_backtest_overfitting(edge).pbo
    assert overfit > 0.1
    assert skilled < 0.01 < overfit


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="zero variance"):
        probabilistic_sharpe(np.zeros(10))
    with pytest.raises(ValueError, match="even"):
        probability_of_backtest_overfitting(np.ones((100, 3)), blocks=5)
    with pytest.raises(ValueError, match="too few"):
        probability_of_backtest_overfitting(np.ones((10, 3)), blocks=16)
