"""Fitness: a population of genomes backtested on a universe over a window, as an equal-weight portfolio.

For every symbol the genomes' targets (``genome.targets``) run through the engine
on the window's bars (signal at the close of t, fill at the open of t+1,
commission, slippage, each genome's stops and position size), in fractional
units: fitness is about returns, which whole-unit rounding would only blur. A symbol's
sleeve returns ``eq[t] / eq[t-1] - 1`` while it has equity; after the engine's
bankruptcy (equity 0 from the bust bar on) it sits in cash and returns 0. The
portfolio of a genome holds the symbols in equal weight, rebalanced every bar: its
return at a timestamp is the mean of the returns of the symbols that have one
there (a bar and the bar before it: a symbol's first bar does not count); a
timestamp where no symbol has one returns 0.

Objectives for selection (NSGA-II):

- ``sharpe_lb``: the annualised Sharpe ratio minus one standard error,
  sqrt(B) (SR - sqrt((1 + SR^2 / 2) / T)) with per-bar SR, T bars, B bars per year
  (Lo 2002): a Sharpe that is high only by luck over few bars is discounted;
  a genome with fewer than ``min_trades`` round trips in the window gets -10;
- ``max_drawdown`` of the portfolio equity (negative; higher is better);
- ``turnover``: per symbol, the sum over its fills of ``|units| * price`` divided by the
  sleeve's equity at the close before the fill (the share of its equity each fill
  trades; that equity is > 0, as the engine stops a sleeve at its first close <= 0),
  averaged over the symbols, per year (lower is better).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import polars as pl

from emp_core.backtest import engine, kernel
from emp_core.backtest.metrics import bar_returns, fill_turnover
from emp_core.evolution.genome import Genome, targets
from emp_core.sensory.fusion import DIMENSIONS

FEATURE_COLUMNS = tuple(f"{d}_{x}" for d in DIMENSIONS for x in ("score", "confidence"))
OBJECTIVES = ("sharpe_lb", "max_drawdown", "turnover")
NO_EVIDENCE = -10.0


@dataclass(frozen=True)
class Universe:
    """Per symbol: bar timestamps, OHLC and the sensory features, as NumPy arrays (time-sorted)."""

    symbols: tuple[str, ...]
    ts: dict[str, np.ndarray]
    ohlc: dict[str, dict[str, np.ndarray]]
    features: dict[str, dict[str, np.ndarray]]
    bars_per_year: float = 252.0

    def __post_init__(self) -> None:
        # each bar's return is added at its timestamp's position: a repeated or unsorted timestamp would add
        # two bars at one position (and the NumPy and compiled sums would differ on how)
        for symbol in self.symbols:
            ts = self.ts[symbol]
            if ts.size > 1 and not (ts[1:] > ts[:-1]).all():
                i = int(np.argmax(~(ts[1:] > ts[:-1]))) + 1
                raise ValueError(f"{symbol}: bar timestamps must be strictly increasing; bar {i} ({ts[i]}) "
                                 f"follows {ts[i - 1]}")

    @classmethod
    def from_frames(cls, bars: pl.DataFrame, features: pl.DataFrame, bars_per_year: float = 252.0) -> Universe:
        joined = bars.join(features.select("symbol", "ts", *FEATURE_COLUMNS), on=["symbol", "ts"], how="inner")
        ts, ohlc, feats = {}, {}, {}
        for (symbol,), group in joined.sort("symbol", "ts").group_by(["symbol"], maintain_order=True):
            ts[symbol] = group.get_column("ts").to_numpy()
            ohlc[symbol] = {c: group.get_column(c).to_numpy() for c in ("open", "high", "low", "close")}
            feats[symbol] = {c: group.get_column(c).fill_null(np.nan).to_numpy() for c in FEATURE_COLUMNS}
        return cls(tuple(ts), ts, ohlc, feats, bars_per_year)


@dataclass(frozen=True)
class Evaluation:
    """Objectives (genomes x 3), the portfolio's per-bar returns (timestamps x genomes) and their timestamps."""

    objectives: np.ndarray
    returns: np.ndarray
    ts: np.ndarray
    trades: np.ndarray

    def metrics(self, i: int) -> dict[str, float]:
        return dict(zip(OBJECTIVES, (float(x) for x in self.objectives[i]), strict=True)) | {
            "trades": int(self.trades[i])}


CHUNK_COLUMNS = 1024  # the NumPy path's strategy columns per engine call (symbols x genomes): ~20 MB per matrix


PER_COLUMN = ("stop_loss", "take_profit", "fraction")  # the costs given per strategy column
Piece = tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]  # one symbol's ts, OHLC, features


def pieces(universe: Universe, start: np.datetime64, end: np.datetime64) -> list[Piece]:
    """Each symbol's bars in [start, end) (symbols with fewer than two bars are left out)."""
    if np.isnat(np.datetime64(start)) or np.isnat(np.datetime64(end)):
        raise ValueError(f"a window needs a start and an end, not [{start}, {end})")
    out = []
    for symbol in universe.symbols:
        ts = universe.ts[symbol]
        lo, hi = np.searchsorted(ts, [start, end])  # the timestamps are sorted: the window is one slice, a view
        if hi - lo >= 2:
            window = slice(lo, hi)
            out.append((ts[window], {k: v[window] for k, v in universe.ohlc[symbol].items()},
                        {k: v[window] for k, v in universe.features[symbol].items()}))
    return out


MIN_CHUNKS = 8  # symbols are cut into at least this many chunks (when there are enough), for parallelism
MAX_SYMBOLS = 64  # and chunks of at most this many symbols: more units of work on a bigger cluster


def chunks(items: list[Piece], genomes: list[Genome]) -> list[list[Piece]]:
    """Consecutive chunks of nearly equal size: MIN_CHUNKS of them (one per symbol when there are fewer), more
    when a chunk would exceed MAX_SYMBOLS. The units of work (an executor's task on Spark) and of summation
    (a chunk's symbols are summed in order, then the chunks in order), the same for every engine, so every
    engine gives the same floats. Deterministic from the data; ``genomes`` do not change it."""
    n = min(len(items), max(MIN_CHUNKS, -(-len(items) // MAX_SYMBOLS)))
    bounds = [len(items) * k // n for k in range(n + 1)] if n else [0]
    return [items[a:b] for a, b in pairwise(bounds)]


@dataclass(frozen=True)
class ChunkResult:
    """A chunk's share of the equal-weight portfolio: summed bar returns per timestamp and the number of
    symbols with a return there."""

    ts: np.ndarray
    total: np.ndarray
    count: np.ndarray
    traded: np.ndarray  # sum over the chunk's symbols and fills of traded value / equity at the close before
    trades: np.ndarray
    symbols: int


def run_chunk(chunk: list[Piece], genomes: list[Genome], commission: float, slippage_bps: float, *,
              compiled: bool = True) -> ChunkResult:
    """One engine call for a chunk of symbols, reduced to the chunk's portfolio sums: the compiled kernel
    (``emp_core.backtest.kernel``), or the NumPy engine, the reference, with ``compiled=False``.

    Shorter symbols are padded with their last price and their last fillable target, so the
    padding never trades. A pure function of its inputs: it runs in-process or on a Spark executor.
    """
    n = len(genomes)
    length = max(p[0].size for p in chunk)
    k_syms = len(chunk)
    # each symbol's prices once (rows x bars); every genome's column on that symbol reads its row
    rows = {k: np.stack([_pad_prices(ohlc[k], ohlc["close"][-1], length) for _, ohlc, _ in chunk])
            for k in ("open", "high", "low", "close")}
    ts = np.unique(np.concatenate([p[0] for p in chunk]))
    count = np.zeros((ts.size, 1))
    positions = np.zeros((k_syms, length), dtype=np.int64)
    lengths = np.array([t.size for t, _, _ in chunk], dtype=np.int64)
    for j, (t, _, _) in enumerate(chunk):
        idx = np.searchsorted(ts, t)
        positions[j, : t.size] = idx
        count[idx[1:]] += 1
    if compiled:  # targets, bars and sums per genome in the kernel, in the order below: the same floats
        signal = np.zeros((k_syms, len(DIMENSIONS), length))
        confidence = np.zeros_like(signal)
        for j, (t, _, feats) in enumerate(chunk):
            signal[j, :, : t.size], confidence[j, :, : t.size] = kernel.fusion_terms(feats)
        total, traded, trades = kernel.portfolio_fitness(
            rows["open"], rows["high"], rows["low"], rows["close"], signal, confidence, genomes, positions, lengths,
            ts.size, cash=1.0, fractional=True, commission=commission, slippage_bps=slippage_bps)
        return ChunkResult(ts, total, count, traded, trades, k_syms)
    tg = np.hstack([_pad_targets(targets(feats, genomes), length) for _, _, feats in chunk])
    stop = np.array([g.stop_loss or np.nan for g in genomes])
    take = np.array([g.take_profit or np.nan for g in genomes])
    size = np.array([g.position_size for g in genomes])
    costs = {"cash": 1.0, "fractional": True, "commission": commission, "slippage_bps": slippage_bps,
             "stop_loss": np.tile(stop, k_syms), "take_profit": np.tile(take, k_syms),
             "fraction": np.tile(size, k_syms)}
    total = np.zeros((ts.size, n))
    traded = np.zeros(n)
    trades = np.zeros(n, dtype=np.int64)
    step = max(1, CHUNK_COLUMNS // n)  # engine calls of about CHUNK_COLUMNS columns; sums symbol by symbol
    for first in range(0, k_syms, step):
        part = slice(first * n, min(first + step, k_syms) * n)
        columns = {k: np.repeat(v[first:first + step].T, n, axis=1) for k, v in rows.items()}
        result = engine.simulate(columns["open"], columns["close"], tg[:, part], high=columns["high"],
                                 low=columns["low"], **{k: v[part] if k in PER_COLUMN else v for k, v in costs.items()})
        turnover = fill_turnover(result)
        for i, j in enumerate(range(first, min(first + step, k_syms))):
            total[positions[j, 1:lengths[j]]] += bar_returns(result.equity[: lengths[j], i * n:(i + 1) * n])
            traded += turnover[i * n:(i + 1) * n]
            trades += result.trades[i * n:(i + 1) * n]
    return ChunkResult(ts, total, count, traded, trades, k_syms)


def evaluate(genomes: list[Genome], universe: Universe, start: np.datetime64, end: np.datetime64, *,
             commission: float = 0.001, slippage_bps: float = 0.0, min_trades: int = 5,
             compiled: bool = True) -> Evaluation:
    """Backtest every genome on every symbol over [start, end) and score the equal-weight portfolios.

    Symbols are cut into ``chunks``, each run by the compiled kernel (``compiled=False``: the NumPy engine, the
    reference, in calls of about ``CHUNK_COLUMNS`` genome x symbol columns).
    """
    results = [run_chunk(chunk, genomes, commission, slippage_bps, compiled=compiled)
               for chunk in chunks(pieces(universe, start, end), genomes)]
    return combine(results, len(genomes), universe.bars_per_year, min_trades, (start, end))


def combine(results: list[ChunkResult], n: int, bars_per_year: float, min_trades: int, window) -> Evaluation:
    """The equal-weight portfolio and its objectives from the chunks' sums, added in chunk order."""
    if not results:
        raise ValueError(f"no symbol has two bars in [{window[0]}, {window[1]})")
    all_ts = np.unique(np.concatenate([r.ts for r in results]))
    total = np.zeros((all_ts.size, n))
    count = np.zeros((all_ts.size, 1))
    traded = np.zeros(n)
    trades = np.zeros(n, dtype=np.int64)
    for r in results:
        idx = np.searchsorted(all_ts, r.ts)
        total[idx] += r.total
        count[idx] += r.count
        traded += r.traded
        trades += r.trades
    port = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    years = max((all_ts[-1] - all_ts[0]) / np.timedelta64(1, "D") / 365.25, 1e-9)
    sharpe_lb = _sharpe_lower_bound(port[1:], bars_per_year)
    # A genome that (almost) never trades has no evidence for it, and would otherwise dominate on
    # drawdown and turnover: its Sharpe objective is set to the floor.
    sharpe_lb = np.where(trades >= min_trades, sharpe_lb, NO_EVIDENCE)
    objectives = np.column_stack([
        sharpe_lb,
        _max_drawdown(port),
        traded / sum(r.symbols for r in results) / years,
    ])
    return Evaluation(objectives=objectives, returns=port, ts=all_ts, trades=trades)


def _pad_targets(t: np.ndarray, length: int) -> np.ndarray:
    """Targets padded to ``length`` rows. The target at the last real bar could never fill, so from
    that bar on the padding repeats the one before it: no order ever fills in the padding."""
    bars = t.shape[0]
    out = np.empty((length, t.shape[1]))
    out[:bars] = t
    out[bars - 1:] = t[bars - 2] if bars >= 2 else 0.0
    return out


def _pad_prices(values: np.ndarray, last: float, length: int) -> np.ndarray:
    out = np.full(length, last)
    out[: values.size] = values
    return out


def _sharpe_lower_bound(returns: np.ndarray, bars_per_year: float) -> np.ndarray:
    t = returns.shape[0]
    mean, std = returns.mean(axis=0), returns.std(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sr = np.where(std > 0, mean / std, 0.0)
    se = np.sqrt((1.0 + sr**2 / 2.0) / max(t, 2))
    return math.sqrt(bars_per_year) * (sr - se)


def _max_drawdown(returns: np.ndarray) -> np.ndarray:
    equity = np.cumprod(1.0 + returns, axis=0)
    return (equity / np.maximum.accumulate(equity, axis=0) - 1.0).min(axis=0)
