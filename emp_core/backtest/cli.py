"""``emp backtest``: one strategy on one instrument from a user's file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from emp_core.backtest.engine import simulate
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


def _targets(args, bars: pl.DataFrame):
    """(targets, genome or None) of the chosen strategy."""
    close = bars.get_column("close").to_numpy()
    if args.strategy == "sma-cross":
        if not (0 < args.fast < args.slow):
            raise EmpError(f"emp backtest: need 0 < --fast < --slow (got {args.fast} and {args.slow})")
        return sma_cross(close, [(args.fast, args.slow)], long_only=args.long_only), None
    if not args.genome:
        raise EmpError("emp backtest: --strategy genome needs --genome NAME or FILE.json")
    from emp_core.evolution.fitness import FEATURE_COLUMNS
    from emp_core.evolution.genome import targets
    from emp_core.sensory import compute_features
    from emp_core.sensory.cli import shipped_macro

    genome = load_genome(args.genome)
    if args.long_only and not genome.long_only:
        genome = type(genome)(**(genome.as_dict() | {"long_only": True}))
    features = compute_features(bars, None if args.no_macro else shipped_macro(), calendar=args.calendar)
    feats = {c: features.get_column(c).fill_null(np.nan).to_numpy() for c in FEATURE_COLUMNS}
    return targets(feats, [genome]), genome


def run_backtest(args) -> int:
    if not (args.cash > 0 and math.isfinite(args.cash)):
        raise EmpError("emp backtest: --cash must be a positive number")
    if not (0 <= args.commission < 0.1):
        raise EmpError("emp backtest: --commission is a rate per fill in [0, 0.1), e.g. 0.002")
    bars, quarantined = load_bars(args.data, args.symbol, args.tz)
    targets, genome = _targets(args, bars)
    px = {c: bars.get_column(c).to_numpy() for c in ("open", "high", "low", "close")}
    risk = {} if genome is None else {
        "stop_loss": genome.stop_loss or None, "take_profit": genome.take_profit or None,
        "fraction": genome.position_size, "high": px["high"], "low": px["low"]}
    result = simulate(px["open"], px["close"], targets, cash=args.cash, commission=args.commission,
                      fractional=args.fractional, **risk)
    span = bars.get_column("ts")
    years = (span[-1] - span[0]).total_seconds() / (365.25 * 86400)
    bars_per_year = (len(span) - 1) / years if years > 0 else float("nan")
    m = metrics(result, years=years, bars_per_year=bars_per_year)[0]
    strategy = {"strategy": "sma-cross", "fast": args.fast, "slow": args.slow} if genome is None else {
        "strategy": "genome", "genome": genome.name or args.genome}
    report = {**strategy, "long_only": args.long_only, "cash": args.cash, "commission": args.commission,
              "bars": bars.height, "quarantined_rows": quarantined, "start": str(span[0]), "end": str(span[-1]), **m}
    if args.json:
        print(json.dumps(report))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            shown = f"{value:,.6g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0
