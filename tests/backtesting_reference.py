"""backtesting.py as the test-time reference engine (AGPL: tests and benchmarks only, never the product)."""

import os
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py draws a progress bar per run otherwise

from backtesting import Backtest, Strategy
from backtesting.lib import crossover
from backtesting.test import GOOG, SMA

__all__ = ["GOOG", "SmaCross", "reference"]


class SmaCross(Strategy):
    """backtesting.py's classic: buy when the fast SMA crosses above the slow one, sell (or go flat)
    when it crosses below."""

    n1 = 10
    n2 = 20
    long_only = False

    def init(self):
        self.ma1 = self.I(SMA, self.data.Close, self.n1)
        self.ma2 = self.I(SMA, self.data.Close, self.n2)

    def next(self):
        if crossover(self.ma1, self.ma2):
            self.position.close()
            self.buy()
        elif crossover(self.ma2, self.ma1):
            self.position.close()
            if not self.long_only:
                self.sell()


def reference(fast: int, slow: int, long_only: bool = False, commission: float = 0.002, cash: float = 10_000):
    """backtesting.py's statistics for one SMA pair on GOOG."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Backtest(GOOG, SmaCross, cash=cash, commission=commission).run(n1=fast, n2=slow, long_only=long_only)
