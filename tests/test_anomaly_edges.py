"""ANOMALY at its edges: the Mahalanobis stages against a numpy oracle (nulls, short windows, tiny scales), the
threshold taken inclusively (strength >= 4 flags, |z| >= 4 is named), and the direction rule of the score."""

import functools
import math

import numpy as np
import polars as pl
import pytest

from emp_core.sensory import anomaly
from emp_core.sensory.anomaly import OTHERS, THRESHOLD, WINDOW, explain, finishing_stages, mahalanobis_stages
from emp_core.sensory.base import MIN_FRACTION, POS, RET

ZS = ("anomaly_return_z", "anomaly_volume_z", "anomaly_gap_z")


def run(frame: pl.DataFrame, stages: list[list[pl.Expr]]) -> pl.DataFrame:
    lf = frame.lazy()
    for stage in stages:
        lf = lf.with_columns(stage)
    return lf.collect()


# --- the squared distance against an independent oracle --------------------------------------------------------

def oracle(x: np.ndarray, window: int, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """D^2 and k of every bar of one symbol (x: bars x scores, NaN = missing), straight from the definition: the
    m = min(window, t) previous bars, the scores defined at t and on all of them, mean and unbiased covariance
    (+ ridge on the diagonal), D^2 = d' S^-1 d. NaN where the window holds fewer than 80% of its bars."""
    n = x.shape[0]
    d2, kept_count = np.full(n, np.nan), np.zeros(n, dtype=int)
    for t in range(n):
        m = min(window, t)
        kept = ~np.isnan(x[t - m:t + 1]).any(axis=0)
        k = int(kept.sum())
        kept_count[t] = k
        if m < math.ceil(MIN_FRACTION * window) or k == 0:
            continue
        past = x[t - m:t][:, kept]
        d = x[t, kept] - past.mean(axis=0)
        s = np.atleast_2d(np.cov(past, rowvar=False, ddof=1)) + ridge * np.eye(k)
        d2[t] = d @ np.linalg.solve(s, d)
    return d2, kept_count


@pytest.mark.parametrize(("scale", "ridge"), [(1.0, 1e-3), (1e-6, 0.0), (1e-8, 0.0)])
def test_the_distance_on_the_kept_scores_matches_its_definition(scale, ridge):
    """Three scores, window 6, two symbols; scores go missing at single bars and at a symbol's start. Each bar's
    distance uses only the scores defined on it and on its window, and k counts them, from the first bar (no
    previous bars: the scores defined at t). Tiny scores without the ridge: D^2 is scale-free, so a score's
    missing bars must leave nothing behind in its statistics once they have left the window (the fill that lets
    the rolling sums run must add nothing to them). Polars' rolling sums add and subtract as the window moves, so a
    value filled in for a null leaves rounding behind after it has left the window: on tiny scores, a fill other
    than 0 shows; a Polars that summed each window afresh would hide it (the test would still pass)."""
    window, n = 6, 40
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 1.0, (2, n, 3)) * scale
    x[0, [8, 22], 1] = np.nan
    x[0, 15, 2] = np.nan
    x[1, :3, 2] = np.nan
    x[1, 30, 0] = np.nan
    columns = ("a", "b", "c")
    frame = pl.DataFrame({
        "symbol": np.repeat(["S0", "S1"], n), POS: np.tile(np.arange(n, dtype=np.int32), 2),
        **{c: x[:, :, j].ravel() for j, c in enumerate(columns)},
    }).with_columns(pl.col(c).fill_nan(None) for c in columns)
    out = run(frame, mahalanobis_stages(columns, window=window, ridge=ridge))
    for s in range(2):
        rows = out.filter(pl.col("symbol") == f"S{s}")
        want_d2, want_k = oracle(x[s], window, ridge)
        np.testing.assert_array_equal(rows["_k"].to_numpy(), want_k)
        np.testing.assert_array_equal(rows["_size"].to_numpy(), np.minimum(np.arange(n), window))
        defined = ~np.isnan(want_d2)
        assert defined.sum() > 25
        np.testing.assert_allclose(rows["_d2"].to_numpy()[defined], want_d2[defined], rtol=1e-8)


def test_a_singular_covariance_gives_no_distance(monkeypatch):
    """Without the ridge, a score that sat still at 0 for the whole window makes S singular (not positive definite):
    no distance, neither null turned NaN nor a flag."""
    monkeypatch.setattr(anomaly, "mahalanobis_stages", functools.partial(mahalanobis_stages, ridge=0.0))
    n = WINDOW + 10
    rng = np.random.default_rng(3)
    frame = pl.DataFrame({
        "symbol": ["A"] * n, POS: np.arange(n, dtype=np.int32),
        **{c: rng.normal(0.0, 0.2, n) for c in OTHERS[1:]}, OTHERS[0]: np.zeros(n),
        **{c: [None] * n for c in (*ZS, RET, "open", "close")},
    }, schema_overrides={c: pl.Float64 for c in (*ZS, RET, "open", "close")})
    out = run(frame, finishing_stages())
    assert out["anomaly_mahalanobis"].is_null().all()
    assert not out["anomaly_flag"].any()


# --- the threshold is inclusive ---------------------------------------------------------------------------------

def single_bars(rows: list[dict[str, float | None]]) -> pl.DataFrame:
    """One bar per symbol, each the first of its symbol (no multivariate distance), through the finishing stages."""
    columns = (*ZS, RET, "open", "close", *OTHERS)
    frame = pl.DataFrame(
        {"symbol": [f"S{i}" for i in range(len(rows))], POS: [0] * len(rows),
         **{c: [r.get(c) for r in rows] for c in columns}},
        schema_overrides={POS: pl.Int32, **{c: pl.Float64 for c in columns}})
    return run(frame, finishing_stages())


def test_a_strength_of_exactly_four_flags():
    """Flagged when strength >= 4: |z| = 4 exactly in any univariate component flags (the score is
    direction * tanh(0) = 0, the confidence the share of defined components, here 1 of 4); 3.99 does not."""
    rows = [{"anomaly_return_z": -4.0}, {"anomaly_volume_z": 4.0}, {"anomaly_gap_z": -4.0},
            {"anomaly_return_z": 3.99, "anomaly_volume_z": -3.99}]
    out = single_bars([{RET: 0.01, "open": 100.0, "close": 101.0} | r for r in rows])
    assert out["anomaly_flag"].to_list() == [True, True, True, False]
    assert out["anomaly_confidence"].to_list() == [0.25, 0.25, 0.25, 0.0]
    assert out["anomaly_score"].to_list() == [0.0] * 4


def test_a_component_at_exactly_four_is_named():
    """The explanation names each component at or over the threshold (the flag's own >= 4), signed, to 0.1."""
    frame = pl.DataFrame({
        "anomaly_return_z": [4.0, None, 1.0, 4.0],
        "anomaly_volume_z": [None, -4.0, 2.0, 9.3],
        "anomaly_gap_z": [1.0, None, -4.0, None],
        "anomaly_mahalanobis": [None, 4.0, 3.9, 4.0],
        "anomaly_flag": [True, True, True, False],
    }, schema_overrides={c: pl.Float64 for c in (*ZS, "anomaly_mahalanobis")})
    text = explain(frame)["anomaly_explanation"].to_list()
    assert [set(t.split("; ")) if t else t for t in text] == [
        {"return z=+4.0"}, {"volume z=-4.0", "multivariate z=+4.0"}, {"gap z=-4.0"}, None]


def test_the_explanation_lists_components_in_a_fixed_order():
    """Return, volume, gap, multivariate, whichever is strongest (the docstring's example)."""
    frame = pl.DataFrame({"anomaly_return_z": [4.4], "anomaly_volume_z": [9.3], "anomaly_gap_z": [-5.04],
                          "anomaly_mahalanobis": [6.0], "anomaly_flag": [True]})
    assert explain(frame)["anomaly_explanation"].item() == \
        "return z=+4.4; volume z=+9.3; gap z=-5.0; multivariate z=+6.0"


# --- direction -------------------------------------------------------------------------------------------------

def flagged_by_the_distance(cases: list[dict[str, float | None]]) -> pl.DataFrame:
    """Each case is the last bar of its own symbol, flagged by the multivariate part alone (the four other scores
    jump 15 standard deviations after 70 quiet bars) and carrying the case's return, gap, r_t, O_t and C_t; the
    volume z is undefined, so the only signed components are the return and the gap."""
    n = 71
    rng = np.random.default_rng(9)
    parts = []
    for i, case in enumerate(cases):
        scores = rng.normal(0.0, 0.2, (n, len(OTHERS)))
        scores[-1] = 3.0
        parts.append(pl.DataFrame({
            "symbol": [f"S{i}"] * n, POS: np.arange(n, dtype=np.int32),
            **{c: scores[:, j] for j, c in enumerate(OTHERS)},
            **{c: [None] * (n - 1) + [case.get(c)] for c in (*ZS, RET, "open", "close")},
        }, schema_overrides={c: pl.Float64 for c in (*ZS, RET, "open", "close")}))
    out = run(pl.concat(parts), finishing_stages())
    last_bars = out.filter(pl.col(POS) == n - 1)
    assert last_bars["anomaly_flag"].all() and (last_bars["anomaly_mahalanobis"] > 2 * THRESHOLD).all()
    return last_bars


def test_the_direction_follows_the_gap_only_when_it_leads():
    """direction = sign of the gap when the gap is the strongest signed component, else sign of r_t, else (r_t = 0)
    sign of C_t - O_t; the score is direction * tanh(strength / 4 - 1), so its sign is the direction."""
    cases = [
        # return leads, r_t > 0 while the bar closed below its open: the sign of r_t
        {"anomaly_return_z": 1.0, "anomaly_gap_z": 0.5, RET: 0.02, "open": 101.0, "close": 100.0},
        # return leads, r_t = 0: the sign of C_t - O_t
        {"anomaly_return_z": 0.3, "anomaly_gap_z": 0.1, RET: 0.0, "open": 101.0, "close": 100.0},
        {"anomaly_return_z": -0.3, "anomaly_gap_z": 0.1, RET: 0.0, "open": 100.0, "close": 101.0},
        # the return z undefined: the gap, however small, is the strongest signed component
        {"anomaly_gap_z": -0.5, RET: 0.02, "open": 100.0, "close": 101.0},
        {"anomaly_gap_z": 0.0, RET: 0.02, "open": 100.0, "close": 101.0},
        # the gap z undefined: it cannot lead
        {"anomaly_return_z": 1.0, RET: 0.02, "open": 100.0, "close": 101.0},
        {"anomaly_return_z": -1.0, RET: -0.02, "open": 101.0, "close": 100.0},
        # the gap leads: its sign, whatever r_t says
        {"anomaly_return_z": 1.0, "anomaly_gap_z": -3.0, RET: 0.02, "open": 100.0, "close": 101.0},
    ]
    out = flagged_by_the_distance(cases)
    assert np.sign(out["anomaly_score"].to_numpy()).tolist() == [1, -1, 1, -1, 0, 1, -1, -1]


def test_no_direction_without_a_return_or_a_bar():
    """A flagged bar with neither a gap nor a return z, no r_t and no close: nothing gives a direction, so the score
    claims none (0 or null, never a side)."""
    out = flagged_by_the_distance([{"open": 100.0}, {"close": 100.0}, {}])
    assert all(s is None or s == 0 for s in out["anomaly_score"].to_list())
