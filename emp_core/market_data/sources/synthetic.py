"""Seeded synthetic universes: geometric Brownian motion with jumps, and volume.

Per symbol i, with annual drift mu_i ~ N(0.06, 0.10), volatility sigma_i ~ U(0.15, 0.60)
and bar length dt (years), the log close-to-close return is

    r_t = (mu_i - sigma_i^2 / 2) dt + sigma_i sqrt(dt) Z_t + J_t,
    J_t = sum of Poisson(lambda dt) jumps, each N(-0.01, 0.04),  lambda = 4 per year

(Merton 1976 jump diffusion). The open gaps from the previous close by a
quarter of the bar's diffusion scale; high/low extend beyond max/min(open, close)
by half-normal excursions, so low <= open, close <= high holds by construction.
Volume is log-normal around a per-symbol level, rising with |r_t|.
Vectorised over (bars x symbols) with NumPy; the same seed gives the same universe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

import numpy as np
import polars as pl

from emp_core.calendars import expected_bars
from emp_core.market_data.sources.base import Coverage, coverage_of, window_filter

BARS_PER_YEAR = {"1d": 252.0, "1h": 252.0 * 24}
DEFAULT_CALENDAR = {"1d": "XNYS", "1h": "FX24X5"}


def generate_bars(
    n_symbols: int,
    start: datetime,
    end: datetime,
    *,
    interval: str = "1d",
    calendar: str | None = None,
    seed: int = 0,
    prefix: str = "SYN",
) -> pl.DataFrame:
    """A universe of ``n_symbols`` on the calendar's bars in [start, end), sorted by (symbol, ts)."""
    ts = expected_bars(calendar or DEFAULT_CALENDAR[interval], interval, start, end)
    n_bars = len(ts)
    rng = np.random.default_rng(seed)
    dt = 1.0 / BARS_PER_YEAR[interval]
    mu = rng.normal(0.06, 0.10, n_symbols)
    sigma = rng.uniform(0.15, 0.60, n_symbols)
    scale = sigma * np.sqrt(dt)
    shape = (n_symbols, n_bars)
    n_jumps = rng.poisson(4.0 * dt, shape)
    jumps = n_jumps * rng.normal(-0.01, 0.04, shape)
    r = (mu - 0.5 * sigma**2)[:, None] * dt + scale[:, None] * rng.standard_normal(shape) + jumps
    s0 = np.exp(rng.uniform(np.log(5.0), np.log(500.0), n_symbols))
    close = s0[:, None] * np.exp(np.cumsum(r, axis=1))
    prev_close = np.concatenate([s0[:, None], close[:, :-1]], axis=1)
    open_ = prev_close * np.exp(0.25 * scale[:, None] * rng.standard_normal(shape))
    top = np.maximum(open_, close)
    bottom = np.minimum(open_, close)
    high = top * np.exp(0.5 * scale[:, None] * np.abs(rng.standard_normal(shape)))
    low = bottom * np.exp(-0.5 * scale[:, None] * np.abs(rng.standard_normal(shape)))
    level = np.exp(rng.uniform(np.log(1e5), np.log(5e7), n_symbols))
    volume = np.round(level[:, None] * np.exp(0.3 * rng.standard_normal(shape) + 20.0 * np.abs(r)))
    width = max(4, len(str(n_symbols - 1)))
    symbols = [f"{prefix}{i:0{width}d}" for i in range(n_symbols)]
    return pl.DataFrame({
        "symbol": pl.Series(np.repeat(np.array(symbols, dtype=object), n_bars), dtype=pl.String),
        "ts": pl.Series(np.tile(ts.to_numpy(), n_symbols)).cast(pl.Datetime("us")),
        "open": open_.ravel(),
        "high": high.ravel(),
        "low": low.ravel(),
        "close": close.ravel(),
        "volume": volume.ravel(),
    })


@dataclass(frozen=True)
class SyntheticSource:
    n_symbols: int
    start: datetime
    end: datetime
    interval: str = "1d"
    seed: int = 0
    name: str = "synthetic"

    @cached_property
    def _frame(self) -> pl.DataFrame:
        # Generated once: read and coverage of one ingest would otherwise build the universe twice.
        return generate_bars(self.n_symbols, self.start, self.end, interval=self.interval, seed=self.seed)

    def read(
        self, dataset: str, start: datetime | None, end: datetime | None, symbols: Sequence[str] | None
    ) -> pl.DataFrame:
        return self._frame.filter(window_filter(start, end, symbols))

    def coverage(self, dataset: str, symbols: Sequence[str] | None) -> Coverage:
        return coverage_of(self._frame.filter(window_filter(None, None, symbols)))

    def describe(self) -> str:
        return (f"synthetic n_symbols={self.n_symbols} {self.start:%Y-%m-%d}..{self.end:%Y-%m-%d} "
                f"interval={self.interval} seed={self.seed}")
