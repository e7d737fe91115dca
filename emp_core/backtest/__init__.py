"""Vectorised backtests over bars and over a population of strategies at once."""

from emp_core.backtest.engine import BacktestResult
from emp_core.backtest.kernel import simulate  # compiled; emp_core.backtest.engine.simulate is the reference
from emp_core.backtest.metrics import metrics

__all__ = ["BacktestResult", "metrics", "simulate"]
