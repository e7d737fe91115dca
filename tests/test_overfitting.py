"""PSR and DSR: against independent computations, and against what they must say (PBO: test_pbo.py)."""

import numpy as np
import pytest
from scipy import stats

from emp_core.evolution.overfitting import (
    deflated_sharpe,
    effective_bars,
    expected_max_sharpe,
    probabilistic_sharpe,
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


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="zero variance"):
        probabilistic_sharpe(np.zeros(10))


def test_psr_holds_its_size_under_autocorrelation():
    """Zero-mean AR(1) returns (rho = 0.2, 1,512 bars, as long as the walk-forward track): PSR(0) >= 0.95
    must happen about 5% of the time. Plain T overstates the evidence; the effective T does not."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(7)
    tracks = [lfilter([1.0], [1.0, -0.2], rng.standard_normal(1512)) * 0.01 for _ in range(800)]
    plain = np.mean([probabilistic_sharpe(x) >= 0.95 for x in tracks])
    serial = np.mean([probabilistic_sharpe(x, serial=True) >= 0.95 for x in tracks])
    assert 0.025 <= serial <= 0.075 < plain
    white = rng.standard_normal(1512)
    assert effective_bars(white) == pytest.approx(1512, rel=0.1)  # no autocorrelation, (about) no discount
    assert effective_bars(lfilter([1.0], [1.0, -0.5], white)) < 0.5 * 1512
