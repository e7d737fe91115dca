"""``emp backtest``: one strategy on one instrument from a user's file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from emp_core.backtest.kernel import simulate
from emp_core.backtest.metrics import metrics
from emp_core.backtest.strategies import sma_cross
from emp_core.clock import utcnow
from emp_core.errors import EmpError
from emp_core.market_data.readers import read_bar_file
from emp_core.market_data.validate import validate_bars


def load_bars(path, symbol: str | None, naive_tz: str) -> tuple[pl.DataFrame, int]:
    """(valid bars of one instrument sorted by time, rows quarantined)."""
    raw = read_bar_file(path, symbol or "DATA")
    checked = validate_bars(raw, interval="1h", now=utcnow(), naive_tz=naive_tz)
    bars = checked.valid
    symbols = bars.get_column("symbol").unique().sort().to_list()
    if symbol:
        bars = bars.filter(pl.col("symbol") == symbol)
    elif len(symbols) > 1:
        raise EmpError(f"{path}: holds {len(symbols)} symbols ({', '.join(symbols[:5])}…); choose one with --symbol")
    if bars.height < 2:
        raise EmpError(f"{path}: {bars.height} valid bar(s) for {symbol or symbols[0] if symbols else 'the file'}; "
                       "a backtest needs at least two")
    return bars.sort("ts"), checked.quarantine.height


def load_genome(text: str):
    """A catalogue genome by name, or a JSON file of genome fields."""
    from emp_core.evolution.genome import CATALOGUE, Genome

    if text in CATALOGUE:
        return CATALOGUE[text]
    path = Path(text)
    if not path.exists():
        raise EmpError(f"--genome {text}: neither a catalogue genome ({', '.join(CATALOGUE)}) nor a file")
    try:
        fields = json.loads(path.read_text())
        return Genome(**fields)
    except (json.JSONDecodeError, TypeError) as exc:
        raise EmpError(f"{path}: not a genome JSON object ({exc})") from None


def _targets(bars: pl.DataFrame, *, strategy: str, fast: int, slow: int, long_only: bool, genome: str | None,
             use_macro: bool, calendar: str | None):
    """(targets, genome or None) of the chosen strategy."""
    close = bars.get_column("close").to_numpy()
    if strategy == "sma-cross":
        if not (0 < fast < slow):
            raise EmpError(f"need 0 < --fast < --slow (got {fast} and {slow})")
        return sma_cross(close, [(fast, slow)], long_only=long_only), None
    if strategy != "genome":
        raise EmpError(f"unknown strategy {strategy!r} (sma-cross or genome)")
    if not genome:
        raise EmpError("--strategy genome needs --genome NAME or FILE.json")
    from emp_core.evolution.fitness import FEATURE_COLUMNS
    from emp_core.evolution.genome import targets
    from emp_core.sensory import compute_features
    from emp_core.sensory.cli import shipped_macro

    chosen = load_genome(genome)
    if long_only and not chosen.long_only:
        chosen = type(chosen)(**(chosen.as_dict() | {"long_only": True}))
    features = compute_features(bars, shipped_macro() if use_macro else None, calendar=calendar)
    feats = {c: features.get_column(c).fill_null(np.nan).to_numpy() for c in FEATURE_COLUMNS}
    return targets(feats, [chosen]), chosen


def run_backtest(data: Path, *, symbol: str | None = None, strategy: str = "sma-cross", genome: str | None = None,
                 fast: int = 10, slow: int = 20, cash: float = 10_000.0, commission: float = 0.0,
                 long_only: bool = False, fractional: bool = False, use_macro: bool = True,
                 calendar: str | None = None, naive_tz: str = "UTC", as_json: bool = False) -> int:
    """Backtest one strategy on one instrument of ``data`` and print its metrics (one JSON object with
    ``as_json``)."""
    if not (cash > 0 and math.isfinite(cash)):
        raise EmpError("--cash must be a positive number")
    if not (0 <= commission < 0.1):
        raise EmpError("--commission is a rate per fill in [0, 0.1), e.g. 0.002")
    bars, quarantined = load_bars(data, symbol, naive_tz)
    targets, chosen = _targets(bars, strategy=strategy, fast=fast, slow=slow, long_only=long_only, genome=genome,
                               use_macro=use_macro, calendar=calendar)
    px = {c: bars.get_column(c).to_numpy() for c in ("open", "high", "low", "close")}
    risk = {} if chosen is None else {
        "stop_loss": chosen.stop_loss or None, "take_profit": chosen.take_profit or None,
        "fraction": chosen.position_size, "high": px["high"], "low": px["low"]}
    result = simulate(px["open"], px["close"], targets, cash=cash, commission=commission,
                      fractional=fractional, **risk)
    span = bars.get_column("ts")
    years = (span[-1] - span[0]).total_seconds() / (365.25 * 86400)
    bars_per_year = (len(span) - 1) / years if years > 0 else float("nan")
    m = metrics(result, years=years, bars_per_year=bars_per_year)[0]
    described = {"strategy": "sma-cross", "fast": fast, "slow": slow} if chosen is None else {
        "strategy": "genome", "genome": chosen.name or genome}
    report = {**described, "long_only": long_only, "cash": cash, "commission": commission,
              "bars": bars.height, "quarantined_rows": quarantined, "start": str(span[0]), "end": str(span[-1]), **m}
    if as_json:
        print(json.dumps(report))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            shown = f"{value:,.6g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0
