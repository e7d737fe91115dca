"""ANOMALY on its stated scale, and silent in fusion when it flags nothing."""

import numpy as np
import polars as pl
from scipy import stats

from emp_core.sensory import compute_features
from emp_core.sensory.anomaly import OTHERS, RIDGE, WINDOW, hotelling_z
from emp_core.sensory.fusion import DEFAULT_WEIGHTS, DIMENSIONS, fuse
from tests.conftest import SHIPPED

K = len(OTHERS)


def z_of(d2: np.ndarray) -> np.ndarray:
    return pl.DataFrame({"d2": d2}).select(hotelling_z(pl.col("d2"), K)).to_series().to_numpy()


def test_the_distance_maps_to_z_through_its_exact_f_distribution():
    """Against scipy's F distribution (an independent oracle for Hotelling's T^2 of a new point)."""
    d2 = np.linspace(0.5, 60, 200)
    f = d2 * WINDOW * (WINDOW - K) / (K * (WINDOW - 1) * (WINDOW + 1))
    exact = stats.norm.isf(stats.f.sf(f, K, WINDOW - K))
    z = z_of(d2)
    below = exact < 4
    assert np.abs(z[below] - exact[below]).max() < 0.06
    # Beyond the flag threshold Paulson's approximation errs low (a flag is harder to earn, never easier).
    assert (z[~below] <= exact[~below]).all() and (exact[~below] - z[~below]).max() < 0.13


def test_independent_scores_cross_the_tail_at_its_nominal_rate():
    """Independent normal scores measured against the previous 63 bars (mean, covariance, the ridge): the share
    at z >= 3 is the normal tail's 1.35e-3 (reading D^2 as chi-square(4) gave about 4e-3)."""
    rng = np.random.default_rng(2)
    n, draws = WINDOW, 200_000
    past = rng.normal(0, 0.3, (draws, n, K))
    new = rng.normal(0, 0.3, (draws, K))
    mu = past.mean(axis=1)
    dev = past - mu[:, None]
    cov = np.einsum("dti,dtj->dij", dev, dev) / (n - 1) + RIDGE * np.eye(K)
    d = new - mu
    d2 = np.einsum("di,di->d", d, np.linalg.solve(cov, d[..., None])[..., 0])
    rate = float(np.mean(z_of(d2) >= 3))
    assert 0.6 * 1.35e-3 < rate < 1.4 * 1.35e-3, rate


def test_an_unflagged_bar_leaves_the_fused_signal_to_the_other_dimensions():
    f = compute_features(pl.read_parquet(SHIPPED / "bars_daily.parquet"), None)
    quiet = f.filter(~pl.col("anomaly_flag") & pl.col("signal").is_not_null())
    assert quiet.height > 10_000 and (quiet["anomaly_confidence"] == 0).all()
    others = {d: w for d, w in DEFAULT_WEIGHTS.items() if d != "anomaly"} | {"anomaly": 0.0}
    without = quiet.select(fuse(others)[0]).to_series()
    np.testing.assert_allclose(quiet["signal"].to_numpy(), without.to_numpy(), rtol=1e-12)
    flagged = f.filter(pl.col("anomaly_flag"))
    assert flagged.height > 0 and (flagged["anomaly_confidence"] > 0).all()
    assert set(DIMENSIONS) == set(DEFAULT_WEIGHTS)
