"""VaR and expected shortfall (emp_core/risk/var.py).

The portfolio P&L is computed here independently (units x price x return, summed by hand or in a
loop), the parametric figures from scipy.stats.norm directly, the historical ones from hand-sorted
examples. Monte Carlo must land within 2% of the parametric figure on Gaussian data (its target: it
samples the same normal law) for several seeds: with 200,000 paths the standard error of the 99%
quantile is about 0.4% of it, so 2% is five standard errors.
"""

import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import norm

from emp_core.errors import EmpError
from emp_core.risk import RiskInputError, portfolio_var

# Ten bars, two symbols. A: 10 units at 100 (exposure +1,000); B: 5 units short at 200 (exposure -1,000).
RA = [0.01, -0.02, 0.03, -0.05, 0.00, 0.02, -0.01, 0.04, -0.03, 0.01]
RB = [0.00, 0.01, -0.01, 0.02, 0.01, 0.00, 0.01, 0.02, 0.00, -0.02]
# P&L_t = 1,000 x rA - 1,000 x rB, by hand:
PNL = [10.0, -30.0, 40.0, -70.0, -10.0, 20.0, -20.0, 20.0, -30.0, 30.0]
# sorted: -70, -30, -30, -20, -10, 10, 20, 20, 30, 40


def test_historical_on_a_hand_sorted_example():
    frame = pl.DataFrame({"A": RA, "B": RB})
    positions, prices = {"A": 10, "B": -5}, {"A": 100.0, "B": 200.0}
    assert [round(1000 * a - 1000 * b, 9) for a, b in zip(RA, RB, strict=True)] == PNL
    at80 = portfolio_var(positions, prices, frame, alpha=0.8, n_paths=1000)
    assert at80.tail_count == 2  # ceil(10 x 0.2)
    assert at80.historical.var == pytest.approx(30.0)  # minus the 2nd smallest P&L
    assert at80.historical.es == pytest.approx((70.0 + 30.0) / 2)
    at90 = portfolio_var(positions, prices, frame, alpha=0.9, n_paths=1000)  # 1 / 0.1 = 10 bars: just enough
    assert at90.tail_count == 1
    assert at90.historical.var == pytest.approx(70.0) and at90.historical.es == pytest.approx(70.0)
    at70 = portfolio_var(positions, prices, frame, alpha=0.7, n_paths=1000)
    assert at70.tail_count == 3
    assert at70.historical.var == pytest.approx(30.0)
    assert at70.historical.es == pytest.approx((70.0 + 30.0 + 30.0) / 3)
    assert at80.n_observations == 10 and at80.alpha == 0.8
    assert at80.symbols == ("A", "B") and at80.exposures == (1000.0, -1000.0)


def test_the_tail_count_is_not_pushed_up_by_binary_rounding():
    """100 x (1 - 0.99) is 1.0000000000000009 in floating point: the 99% VaR of 100 bars is the worst loss."""
    returns = np.zeros(100)
    returns[17], returns[60] = -0.09, -0.05
    r = portfolio_var({"A": 1}, {"A": 1_000.0}, pl.DataFrame({"A": returns}), alpha=0.99, n_paths=1000)
    assert r.tail_count == 1
    assert r.historical.var == pytest.approx(90.0) and r.historical.es == pytest.approx(90.0)


def gaussian_returns(seed: int, n: int = 2000) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    cov = np.array([[4.0, 1.2, -0.6], [1.2, 2.25, 0.3], [-0.6, 0.3, 1.0]]) * 1e-4
    data = rng.multivariate_normal([0.0005, 0.0002, -0.0001], cov, size=n)
    return pl.DataFrame({"ts": np.arange(n), "X": data[:, 0], "Y": data[:, 1], "Z": data[:, 2]})


POSITIONS = {"X": 300, "Y": -150, "Z": 1000, "IDLE": 0}
PRICES = {"X": 120.0, "Y": 80.0, "Z": 25.0}


def hand_pnl(frame: pl.DataFrame, positions: dict, prices: dict) -> np.ndarray:
    pnl = np.zeros(frame.height)
    for symbol, units in positions.items():
        if units:
            pnl += units * prices[symbol] * frame[symbol].to_numpy()
    return pnl


@pytest.mark.parametrize("alpha", [0.95, 0.99, 0.975])
def test_parametric_against_scipy(alpha):
    frame = gaussian_returns(7)
    pnl = hand_pnl(frame, POSITIONS, PRICES)
    m, s = pnl.mean(), pnl.std(ddof=1)
    z = norm.ppf(1 - alpha)
    r = portfolio_var(POSITIONS, PRICES, frame, alpha=alpha, n_paths=1000)
    assert r.parametric.var == pytest.approx(-(m + z * s), rel=1e-9)
    assert r.parametric.es == pytest.approx(-m + s * norm.pdf(z) / (1 - alpha), rel=1e-9)
    assert r.mean_pnl == pytest.approx(m) and r.sd_pnl == pytest.approx(s)
    # and the historical one against a sort of the same hand P&L
    k = math.ceil(round(frame.height * (1 - alpha), 9))
    tail = np.sort(pnl)[:k]
    assert r.historical.var == pytest.approx(-tail[-1]) and r.historical.es == pytest.approx(-tail.mean())


def test_parametric_per_unit_of_value_matches_the_textbook_form():
    """For a long-only book VaR = -(mu + z sigma) V with mu, sigma of the portfolio's return and V its value."""
    frame = gaussian_returns(3)
    positions = {"X": 300, "Z": 1000}
    value = 300 * 120.0 + 1000 * 25.0
    ret = (300 * 120.0 * frame["X"].to_numpy() + 1000 * 25.0 * frame["Z"].to_numpy()) / value
    mu, sigma, z = ret.mean(), ret.std(ddof=1), norm.ppf(0.01)
    r = portfolio_var(positions, PRICES, frame, alpha=0.99, n_paths=1000)
    assert r.parametric.var == pytest.approx(-(mu + z * sigma) * value, rel=1e-9)
    assert r.parametric.es == pytest.approx(-mu * value + sigma * value * norm.pdf(z) / 0.01, rel=1e-9)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_monte_carlo_is_within_two_percent_of_the_parametric_figure_on_gaussian_data(seed):
    frame = gaussian_returns(100 + seed)
    r = portfolio_var(POSITIONS, PRICES, frame, alpha=0.99, n_paths=200_000, seed=seed)
    assert r.monte_carlo.var == pytest.approx(r.parametric.var, rel=0.02)
    assert r.monte_carlo.es == pytest.approx(r.parametric.es, rel=0.02)
    assert r.n_paths == 200_000 and r.seed == seed


def test_monte_carlo_repeats_with_its_seed():
    frame = gaussian_returns(5)
    a = portfolio_var(POSITIONS, PRICES, frame, n_paths=20_000, seed=11)
    b = portfolio_var(POSITIONS, PRICES, frame, n_paths=20_000, seed=11)
    c = portfolio_var(POSITIONS, PRICES, frame, n_paths=20_000, seed=12)
    assert a.monte_carlo == b.monte_carlo
    assert a.monte_carlo != c.monte_carlo


@pytest.mark.parametrize("seed", range(6))
def test_es_is_at_least_var_for_every_method(seed):
    rng = np.random.default_rng(seed)
    n, k = 300, 4
    data = rng.standard_t(3, size=(n, k)) * 0.01  # fat tails
    symbols = [f"S{i}" for i in range(k)]
    positions = {s: int(rng.integers(-500, 500)) for s in symbols}
    prices = {s: float(rng.uniform(5, 200)) for s in symbols}
    r = portfolio_var(positions, prices, data, alpha=float(rng.choice([0.95, 0.99])), columns=symbols,
                      n_paths=20_000, seed=seed)
    assert r.tail_count >= 3  # a tail of several points, so ES is a real mean
    for est in (r.historical, r.parametric, r.monte_carlo):
        assert est.es >= est.var > 0


def test_numpy_and_polars_inputs_agree_and_extra_columns_are_ignored():
    frame = gaussian_returns(9)
    array = frame.select("Z", "X", "Y").to_numpy()
    a = portfolio_var(POSITIONS, PRICES, frame, n_paths=5000)
    b = portfolio_var(POSITIONS, PRICES, array, columns=["Z", "X", "Y"], n_paths=5000)
    assert a.historical == b.historical
    assert a.parametric.var == pytest.approx(b.parametric.var, rel=1e-12)
    assert a.symbols == ("X", "Y", "Z")  # IDLE holds nothing and needs no history


def test_a_flat_book_has_no_risk():
    r = portfolio_var({"X": 0}, {}, gaussian_returns(1), n_paths=1000)
    assert (r.historical.var, r.parametric.var, r.monte_carlo.var) == (0.0, 0.0, 0.0)


def test_too_few_observations_is_a_clear_error():
    frame = gaussian_returns(1, n=100)
    portfolio_var(POSITIONS, PRICES, frame, alpha=0.99, n_paths=1000)  # 100 is enough at 99%
    with pytest.raises(RiskInputError, match="need at least 100") as info:
        portfolio_var(POSITIONS, PRICES, frame.head(99), alpha=0.99)
    assert isinstance(info.value, EmpError)
    with pytest.raises(RiskInputError, match="need at least 20"):
        portfolio_var(POSITIONS, PRICES, frame.head(19), alpha=0.95)


@pytest.mark.parametrize(("call", "words"), [
    (lambda f: portfolio_var({"X": 1, "Q": 2}, {"X": 1.0, "Q": 1.0}, f), "no return history for held symbol"),
    (lambda f: portfolio_var({"X": 1}, {}, f), "no price"),
    (lambda f: portfolio_var({"X": 1}, {"X": 1.0}, f.with_columns(pl.lit(None, pl.Float64).alias("X"))),
     "missing value"),
    (lambda f: portfolio_var({"X": 1}, {"X": 1.0}, f.with_columns(pl.lit(float("nan")).alias("X"))), "NaN or inf"),
    (lambda f: portfolio_var({"X": 1}, {"X": 1.0}, f, alpha=1.0), "alpha"),
    (lambda f: portfolio_var({"X": 1}, {"X": 1.0}, f, alpha=math.nan), "alpha"),
    (lambda f: portfolio_var({"X": 1}, {"X": 1.0}, f.to_numpy()), "columns="),
    (lambda f: portfolio_var({"X": 1}, {"X": 1.0}, f.select("X").to_numpy(), columns=["Y"]), "no return history"),
    (lambda f: portfolio_var({"X": math.inf}, {"X": 1.0}, f), "position in X"),
    (lambda f: portfolio_var({"X": 1}, {"X": 1.0}, f, n_paths=0), "n_paths"),
])
def test_unusable_inputs_are_clear_errors(call, words):
    with pytest.raises(RiskInputError, match=words):
        call(gaussian_returns(2, n=500))
