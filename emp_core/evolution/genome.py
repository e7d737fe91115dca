"""The genome: every parameter a strategy on the sensory signals really reads, with validated bounds.

A genome is decoded into targets for the backtest engine (``targets``):

- its own fusion of the five dimensions, ``s_t = sum_d w_d c_d x_d / sum_d |w_d| c_d``
  (x the dimension scores, c their confidences; ``weights`` in [-1, 1] may fade a
  dimension), and the fused confidence ``sum_d |w_d| c_d / sum_d |w_d|``;
- **entry**: ``s_t >= entry`` with confidence >= ``min_confidence`` targets long,
  ``s_t <= -entry`` short (flat when ``long_only``);
- **exit**: ``|s_t| < exit`` targets flat, but only once no entry-strength signal has
  been seen for ``holding_period`` bars (a minimum holding period after the last
  strong signal); otherwise the previous target holds (hysteresis between the
  two thresholds);
- **risk**: ``stop_loss`` / ``take_profit`` as fractions of the entry price (0 = none),
  and ``position_size``, the share of equity an entry may use.

Genes are stored as a vector in [0, 1]^G (what the evolutionary operators act on)
and decoded through ``BOUNDS``, so mutation and crossover can never leave them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from emp_core.errors import EmpError
from emp_core.sensory.fusion import DIMENSIONS

# (lower, upper) of every gene; integers are rounded when decoded.
BOUNDS: dict[str, tuple[float, float]] = {
    **{f"w_{d}": (-1.0, 1.0) for d in DIMENSIONS},
    "entry": (0.05, 0.8),
    "exit": (0.0, 0.5),
    "min_confidence": (0.0, 0.9),
    "holding_period": (1, 60),
    "stop_loss": (0.0, 0.3),
    "take_profit": (0.0, 0.6),
    "position_size": (0.1, 1.0),
}
INTEGER = {"holding_period"}


@dataclass(frozen=True)
class Genome:
    w_why: float
    w_how: float
    w_what: float
    w_when: float
    w_anomaly: float
    entry: float
    exit: float
    min_confidence: float
    holding_period: int
    stop_loss: float
    take_profit: float
    position_size: float
    long_only: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        problems = []
        for key, (lo, hi) in BOUNDS.items():
            value = getattr(self, key)
            if not (lo <= value <= hi):
                problems.append(f"{key}={value} outside [{lo}, {hi}]")
        if self.exit >= self.entry:
            problems.append(f"exit={self.exit} must be below entry={self.entry}")
        if not any(self.weights):
            problems.append("every fusion weight is zero")
        if problems:
            raise EmpError(f"genome {self.name or '(unnamed)'}: " + "; ".join(problems))

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(getattr(self, f"w_{d}") for d in DIMENSIONS)

    def to_vector(self) -> np.ndarray:
        """Genes in [0, 1]."""
        return np.array([(getattr(self, k) - lo) / (hi - lo) for k, (lo, hi) in BOUNDS.items()])

    @classmethod
    def from_vector(cls, vector, *, long_only: bool = False, name: str = "") -> Genome:
        """Decode genes in [0, 1] (clipped); the exit threshold is kept below the entry one."""
        v = np.clip(np.asarray(vector, dtype=float), 0.0, 1.0)
        values = {}
        for x, (key, (lo, hi)) in zip(v, BOUNDS.items(), strict=True):
            value = lo + x * (hi - lo)
            values[key] = int(np.rint(value)) if key in INTEGER else float(value)
        values["exit"] = min(values["exit"], 0.9 * values["entry"])
        if not any(values[f"w_{d}"] for d in DIMENSIONS):
            values["w_what"] = 1e-3
        return cls(**values, long_only=long_only, name=name)

    def as_dict(self) -> dict:
        return asdict(self)


GENE_NAMES = tuple(BOUNDS)


def _seed(name: str, **kw) -> Genome:
    base = dict.fromkeys((f"w_{d}" for d in DIMENSIONS), 0.0)
    base |= {"entry": 0.3, "exit": 0.1, "min_confidence": 0.3, "holding_period": 5, "stop_loss": 0.0,
             "take_profit": 0.0, "position_size": 1.0}
    return Genome(**(base | kw), name=name)


# Seed genomes: the classic families expressed in this one form.
CATALOGUE: dict[str, Genome] = {g.name: g for g in (
    _seed("trend", w_what=1.0, w_why=0.2, entry=0.35, exit=0.05, holding_period=10, stop_loss=0.1),
    _seed("mean_reversion", w_what=-1.0, w_anomaly=-0.5, entry=0.5, exit=0.15, holding_period=3,
          take_profit=0.05, stop_loss=0.05),
    _seed("carry_macro", w_why=1.0, w_what=0.2, entry=0.4, exit=0.1, holding_period=20),
    _seed("volatility_breakout", w_what=0.6, w_anomaly=0.8, entry=0.25, exit=0.05, holding_period=5,
          stop_loss=0.05, take_profit=0.15),
    _seed("liquidity_aware", w_how=0.8, w_what=0.5, entry=0.3, exit=0.1, min_confidence=0.5, holding_period=5,
          position_size=0.5),
)}


def fused_signal(features: dict[str, np.ndarray], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(signal, confidence), bars x genomes, from dimension scores and confidences (bars,) and weights
    (genomes x 5). A dimension whose score is NaN contributes nothing; no dimension: NaN signal."""
    w = np.asarray(weights, dtype=float)
    num = np.zeros((features["what_score"].shape[0], w.shape[0]))
    den = np.zeros_like(num)
    for i, d in enumerate(DIMENSIONS):
        score, conf = features[f"{d}_score"], features[f"{d}_confidence"]
        present = np.isfinite(score)
        sc = np.where(present, score * conf, 0.0)[:, None]
        cf = np.where(present, conf, 0.0)[:, None]
        num += sc * w[:, i][None, :]
        den += cf * np.abs(w[:, i])[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        signal = np.where(den > 0, num / den, np.nan)
    confidence = den / np.abs(w).sum(axis=1)[None, :]
    return signal, confidence


def targets(features: dict[str, np.ndarray], genomes: list[Genome]) -> np.ndarray:
    """Target directions (bars x genomes) of each genome's rules (see the module docstring)."""
    g = genomes
    signal, confidence = fused_signal(features, np.array([x.weights for x in g]))
    entry = np.array([x.entry for x in g])[None, :]
    exit_ = np.array([x.exit for x in g])[None, :]
    min_conf = np.array([x.min_confidence for x in g])[None, :]
    long_only = np.array([x.long_only for x in g])[None, :]
    sure = confidence >= min_conf
    with np.errstate(invalid="ignore"):
        strong_long = sure & (signal >= entry)
        strong_short = sure & (signal <= -entry)
        weak = np.abs(signal) < exit_
    strong = strong_long | strong_short
    # bars since the last strong signal, per column
    n = signal.shape[0]
    last_strong = np.maximum.accumulate(np.where(strong, np.arange(n)[:, None], -10**9), axis=0)
    holding = np.array([x.holding_period for x in g])[None, :]
    may_exit = weak & (np.arange(n)[:, None] - last_strong >= holding)
    events = np.where(strong_long, 1.0, np.where(strong_short, np.where(long_only, 0.0, -1.0),
                                                 np.where(may_exit, 0.0, np.nan)))
    idx = np.where(~np.isnan(events), np.arange(n)[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    held = np.take_along_axis(events, idx, axis=0)
    return np.where(np.isnan(held), 0.0, held)
