"""Position sizing: how many whole units an order may have. Both rules return an int >= 0.

- **Fixed-fractional**: units = floor(risk_fraction x equity / |entry - stop|), the most units whose loss
  at the stop is at most ``risk_fraction`` of equity. This is the same per-trade risk the policy's
  ``per_trade_risk`` check measures (``policy``), so a size from this rule with the policy's
  ``max_risk_per_trade`` passes that check and one unit more would not. A stop at the entry (distance 0)
  bounds nothing: it is refused with ``RiskInputError``, not sized to "infinitely many" or silently 0.
- **Fractional Kelly**: the Kelly fraction of a bet won with probability p at payoff ratio b (win b per 1
  lost) is f* = p - (1 - p) / b, clipped at 0 (no edge, no bet); a ``fraction`` of it (0.5, half-Kelly,
  by default: full Kelly is the growth-optimal bet only when p and b are known exactly) is the share of
  equity to hold as notional: units = floor(fraction x f* x equity / price).

Conventions: every float is read as the shortest decimal that round-trips to it (``repr``: 0.6 is 3/5, not
the binary double just below it) and the arithmetic is exact (``fractions.Fraction``), so a size is never
one unit short at a boundary (0.5 x (0.6 - 0.4) x 100,000 / 50 is 200, not 199); nonpositive equity sizes
0; ``max_units`` (optional) caps the result; NaN, inf and out-of-range arguments raise ``RiskInputError``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from numbers import Integral

from emp_core.risk.policy import RiskInputError, _finite


def _exact(x: float) -> Fraction:
    return Fraction(repr(float(x)))


def _cap(units: int, max_units: int | None) -> int:
    if max_units is None:
        return max(units, 0)
    if isinstance(max_units, bool) or not isinstance(max_units, Integral) or max_units < 0:
        raise RiskInputError(f"max_units must be a whole number >= 0 or None, got {max_units!r}")
    return max(min(units, int(max_units)), 0)


def fixed_fractional_units(equity: float, entry: float, stop: float, risk_fraction: float = 0.02,
                           max_units: int | None = None) -> int:
    """floor(risk_fraction x equity / |entry - stop|), capped by ``max_units``; 0 when equity <= 0."""
    equity = _finite("equity", equity)
    entry = _finite("entry price", entry, positive=True)
    stop = _finite("stop price", stop, positive=True)
    risk_fraction = _finite("risk_fraction", risk_fraction, nonneg=True)
    if risk_fraction > 1:
        raise RiskInputError(f"risk_fraction is a share of equity in [0, 1], got {risk_fraction!r}")
    if entry == stop:
        raise RiskInputError(f"the stop {stop!r} equals the entry: a zero stop distance bounds no risk, "
                             "so no size follows from it")
    if equity <= 0:
        return _cap(0, max_units)
    units = math.floor(_exact(risk_fraction) * _exact(equity) / abs(_exact(entry) - _exact(stop)))
    return _cap(units, max_units)


def kelly_fraction(p: float, b: float) -> float:
    """f* = p - (1 - p) / b, clipped at 0: the growth-optimal share of equity for win probability p and
    payoff ratio b."""
    p = _finite("win probability p", p)
    if not 0 <= p <= 1:
        raise RiskInputError(f"win probability p must be in [0, 1], got {p!r}")
    b = _finite("payoff ratio b", b, positive=True)
    return float(max(_exact(p) - (1 - _exact(p)) / _exact(b), Fraction(0)))


def fractional_kelly_units(equity: float, price: float, p: float, b: float, fraction: float = 0.5,
                           max_units: int | None = None) -> int:
    """floor(fraction x f* x equity / price), capped by ``max_units``; 0 when equity <= 0 or there is no edge."""
    equity = _finite("equity", equity)
    price = _finite("price", price, positive=True)
    fraction = _finite("Kelly fraction", fraction, nonneg=True)
    if fraction > 1:
        raise RiskInputError(f"the Kelly fraction must be in [0, 1] (more than full Kelly over-bets), got {fraction!r}")
    p = _finite("win probability p", p)
    b = _finite("payoff ratio b", b, positive=True)
    if not 0 <= p <= 1:
        raise RiskInputError(f"win probability p must be in [0, 1], got {p!r}")
    if equity <= 0:
        return _cap(0, max_units)
    f_star = max(_exact(p) - (1 - _exact(p)) / _exact(b), Fraction(0))
    return _cap(math.floor(_exact(fraction) * f_star * _exact(equity) / _exact(price)), max_units)
