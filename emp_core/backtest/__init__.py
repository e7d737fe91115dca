"""Vectorised backtests over bars and over a population of strategies at once."""

from emp_core.backtest.engine import BacktestResult, simulate
from emp_core.backtest.metrics import metrics

__all__ = ["BacktestResult", "metrics", "simulate"]
