"""Genomes: bounds, encoding, the catalogue, and the rules they decode to."""

import numpy as np
import pytest

from emp_core.errors import EmpError
from emp_core.evolution.genome import BOUNDS, CATALOGUE, Genome, fused_signal, targets
from emp_core.sensory.fusion import DIMENSIONS


def features_from(signal_what: np.ndarray, conf: float = 1.0) -> dict[str, np.ndarray]:
    n = signal_what.shape[0]
    out = {}
    for d in DIMENSIONS:
        out[f"{d}_score"] = signal_what if d == "what" else np.full(n, np.nan)
        out[f"{d}_confidence"] = np.full(n, conf) if d == "what" else np.zeros(n)
    return out


def test_vector_round_trip_and_bounds():
    for genome in CATALOGUE.values():
        again = Genome.from_vector(genome.to_vector(), name=genome.name)
        np.testing.assert_allclose(again.to_vector(), genome.to_vector(), atol=1e-12)
        assert again.holding_period == genome.holding_period
    assert set(CATALOGUE) == {"trend", "mean_reversion", "carry_macro", "volatility_breakout", "liquidity_aware"}
    extreme = Genome.from_vector(np.full(len(BOUNDS), 5.0))  # clipped into the box
    assert extreme.holding_period == 60 and extreme.exit < extreme.entry


def test_invalid_genomes_say_what_is_wrong():
    good = CATALOGUE["trend"].as_dict()
    with pytest.raises(EmpError, match=r"entry=0\.9 outside"):
        Genome(**(good | {"entry": 0.9}))
    with pytest.raises(EmpError, match="must be below entry"):
        Genome(**(good | {"exit": 0.5, "entry": 0.4}))
    with pytest.raises(EmpError, match="every fusion weight is zero"):
        Genome(**(good | dict.fromkeys((f"w_{d}" for d in DIMENSIONS), 0.0)))


def test_fused_signal_weighs_by_confidence_and_can_fade():
    n = 4
    feats = {f"{d}_score": np.full(n, np.nan) for d in DIMENSIONS} | {
        f"{d}_confidence": np.zeros(n) for d in DIMENSIONS}
    feats |= {"what_score": np.array([0.5, 0.5, np.nan, 0.5]), "what_confidence": np.ones(n),
              "how_score": np.array([-1.0, -1.0, -1.0, -1.0]), "how_confidence": np.array([1.0, 0.5, 1.0, 0.0])}
    signal, conf = fused_signal(feats, np.array([[0, 1, 1, 0, 0], [0, -1, 1, 0, 0]], dtype=float))
    assert signal[0].tolist() == pytest.approx([(-1 + 0.5) / 2, (1 + 0.5) / 2])
    assert signal[1, 0] == pytest.approx((-0.5 + 0.5) / 1.5)
    assert signal[2, 0] == pytest.approx(-1.0) and signal[3, 0] == pytest.approx(0.5)
    assert conf[0, 0] == pytest.approx(1.0) and conf[2, 0] == pytest.approx(0.5)


def test_entries_exits_hysteresis_and_holding_period():
    s = np.array([0.0, 0.5, 0.2, 0.05, 0.05, 0.05, -0.6, -0.2, 0.0])
    base = CATALOGUE["trend"].as_dict() | {"w_why": 0.0, "stop_loss": 0.0, "min_confidence": 0.0}
    quick = Genome(**(base | {"entry": 0.3, "exit": 0.1, "holding_period": 1}))
    slow = Genome(**(base | {"entry": 0.3, "exit": 0.1, "holding_period": 4}))
    lo = Genome(**(base | {"entry": 0.3, "exit": 0.1, "holding_period": 1, "long_only": True}))
    t = targets(features_from(s), [quick, slow, lo])
    assert t[:, 0].tolist() == [0, 1, 1, 0, 0, 0, -1, -1, 0]  # exit once |s| < 0.1
    assert t[:, 1].tolist() == [0, 1, 1, 1, 1, 0, -1, -1, -1]  # no exit within 4 bars of a strong signal
    assert t[:, 2].tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 0]  # long-only: a strong short means flat


def test_low_confidence_blocks_entries():
    s = np.array([0.0, 0.9, 0.9])
    base = CATALOGUE["trend"].as_dict() | {"w_why": 0.0}
    picky = Genome(**(base | {"min_confidence": 0.8}))
    assert targets(features_from(s, conf=0.5), [picky])[:, 0].tolist() == [0, 0, 0]
    assert targets(features_from(s, conf=0.9), [picky])[:, 0].tolist() == [0, 1, 1]
