"""ANOMALY on its stated scale, and silent in fusion when it flags nothing."""

import numpy as np
import polars as pl
from scipy import stats

from emp_core.sensory import compute_features
from emp_core.sensory.anomaly import OTHERS, RIDGE, WINDOW, finishing_stages, hotelling_z
from emp_core.sensory.base import POS, RET
from emp_core.sensory.fusion import DEFAULT_WEIGHTS, DIMENSIONS, fuse
from tests.support import SHIPPED

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


def multivariate_z(scores: dict[str, np.ndarray]) -> np.ndarray:
    """``anomaly_mahalanobis`` of the given scores (arrays symbols x bars, NaN for a missing score), through
    the module's own stages; the univariate components are left undefined."""
    n_symbols, n_bars = scores[OTHERS[0]].shape
    frame = pl.DataFrame({
        "symbol": np.repeat(np.arange(n_symbols), n_bars),
        POS: np.tile(np.arange(n_bars, dtype=np.int32), n_symbols),
        **{c: scores[c].ravel() for c in OTHERS},
    }).with_columns([pl.col(c).fill_nan(None) for c in OTHERS])
    lf = frame.lazy().with_columns(pl.lit(None, pl.Float64).alias(c) for c in
                                   ("anomaly_return_z", "anomaly_volume_z", "anomaly_gap_z", RET, "open", "close"))
    for stage in finishing_stages():
        lf = lf.with_columns(stage)
    return lf.select("anomaly_mahalanobis").collect().to_series().to_numpy().reshape(n_symbols, n_bars)


def test_a_score_that_appears_in_the_window_does_not_manufacture_flags():
    """Independent normal scores, WHY missing for the first 70 bars of each of 8,000 series, then present. In the
    63 bars after it appears (504,000 bars) the multivariate z crosses its tails at the normal rates: z >= 4
    below twice its 3.2e-5 (measured 2.2e-5) and z >= 2.5 within 15% of its 6.2e-3 (measured 0.98x).
    Counting the missing WHY as 0 crossed z >= 4 at 5.2e-2 (1,630x) and z >= 2.5 at 0.10 (16.7x).
    The scores have sd 1 so that the 1e-3 ridge is negligible."""
    rng = np.random.default_rng(11)
    n, appears = 8_000, 70
    scores = {c: rng.normal(0.0, 1.0, (n, 2 * appears)) for c in OTHERS}
    scores["why_score"][:, :appears] = np.nan
    near = multivariate_z(scores)[:, appears:appears + WINDOW]
    assert np.isfinite(near).all()  # the other three scores still give a distance
    high = float(np.mean(near >= 4))
    assert high < 2 * stats.norm.sf(4), high
    moderate = float(np.mean(near >= 2.5)) / stats.norm.sf(2.5)
    assert abs(moderate - 1) < 0.15, moderate


def test_a_short_window_is_read_with_its_own_size():
    """At a symbol's start the distance is measured against m = 51..53 bars: i.i.d. normal scores of 30,000
    series (90,000 bars) cross z >= 2 at the normal 2.28e-2 within 4 binomial standard deviations (8.7%;
    measured 1.01x). Reading every window as 63 bars gave 1.18x (z >= 2), 1.27x (z >= 2.5), 1.33x (z >= 3)."""
    rng = np.random.default_rng(12)
    n, bars = 30_000, 54
    z = multivariate_z({c: rng.normal(0.0, 1.0, (n, bars)) for c in OTHERS})
    assert np.isnan(z[:, :51]).all() and np.isfinite(z[:, 51:]).all()
    p = stats.norm.sf(2)
    draws = z[:, 51:].size
    rate = float(np.mean(z[:, 51:] >= 2))
    assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / draws), rate / p


def test_no_distance_from_a_window_too_short_for_the_scores_kept():
    """Three scores defined from a symbol's first bar, the fourth (the last pivot) from its 30th: until 51 bars
    stand behind the kept scores there is no distance (the left-out score's constant pivot once let a
    distance of 0, z = -3.4, through at bars 5 to 50)."""
    rng = np.random.default_rng(5)
    n = 120
    x = rng.normal(size=(n, 4)) * 0.2
    frame = pl.DataFrame({"symbol": ["A"] * n, POS: np.arange(n),
                          **{c: x[:, j] for j, c in enumerate(OTHERS)}}).with_columns(
        pl.when(pl.col(POS) >= 30).then(pl.col(OTHERS[-1])).alias(OTHERS[-1]))
    lf = frame.lazy()
    for stage in finishing_stages()[:-3]:  # up to the distance's z
        lf = lf.with_columns(stage)
    md = lf.collect().get_column("anomaly_mahalanobis")
    assert md[:51].is_null().all()
    assert md[51:].is_not_null().all()
