"""``emp backtest``: one strategy on one instrument from a user's file."""

from __future__ import annotations

import json
import math

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


def run_backtest(args) -> int:
    if not (0 < args.fast < args.slow):
        raise EmpError(f"emp backtest: need 0 < --fast < --slow (got {args.fast} and {args.slow})")
    if not (args.cash > 0 and math.isfinite(args.cash)):
        raise EmpError("emp backtest: --cash must be a positive number")
    if not (0 <= args.commission < 0.1):
        raise EmpError("emp backtest: --commission is a rate per fill in [0, 0.1), e.g. 0.002")
    bars, quarantined = load_bars(args.data, args.symbol, args.tz)
    open_, close = bars.get_column("open").to_numpy(), bars.get_column("close").to_numpy()
    targets = sma_cross(close, [(args.fast, args.slow)], long_only=args.long_only)
    result = simulate(open_, close, targets, cash=args.cash, commission=args.commission,
                      fractional=args.fractional)
    span = bars.get_column("ts")
    years = (span[-1] - span[0]).total_seconds() / (365.25 * 86400)
    bars_per_year = (len(span) - 1) / years if years > 0 else float("nan")
    m = metrics(result, years=years, bars_per_year=bars_per_year)[0]
    report = {"strategy": "sma-cross", "fast": args.fast, "slow": args.slow, "long_only": args.long_only,
              "cash": args.cash, "commission": args.commission, "bars": bars.height,
              "quarantined_rows": quarantined, "start": str(span[0]), "end": str(span[-1]), **m}
    if args.json:
        print(json.dumps(report))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            shown = f"{value:,.6g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0
