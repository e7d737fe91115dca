"""The pre-trade risk policy: may an order intent go to the outbox? Every check, every figure, one row each.

**Policies** are versioned YAML files under ``policies/``; the version is the file's name
(``policies/default-v1.yaml`` holds ``version: default-v1``), so each decision row names the exact file
that judged it, and a changed policy is a new file, never an edit of one already cited. ``load_policy``
validates a file completely and raises ``PolicyError`` naming the file and the bad key (unknown keys,
wrong types, negative or out-of-range limits, a missing or mismatched version, duplicate keys, YAML
syntax): the CLI prints it as one line. A ``Policy`` built in code (tests, notebooks) is taken as given.

**Inputs** are frozen dataclasses validated on construction (``RiskInputError`` for NaN, inf, fractional
units and the like): an ``Intent`` (one order a strategy wants), a ``Portfolio`` (equity, signed positions
in whole units, last prices, the stops of held positions, peak and start-of-day equity, average daily
volume), and the session kind, ``"paper"`` or ``"live"``.

Conventions
-----------
- **Last price.** Positions are marked at ``portfolio.prices``; the intent's ``reference_price`` is the
  last price of its own symbol and takes precedence there (it is the quote the decision is made on).
- **Entry price**: the limit price for a limit order, the reference price for a market order.
- **Decomposition of an order.** With p the signed position before the order and q its quantity,
  ``closed`` = min(q, |p|) if the order's side opposes p, else 0, and ``increase`` = q - closed: the new
  or added units. An order is **reduce-only** when increase = 0. A **reversal** (selling more than the
  long, buying more than the short) is a close of |p| plus a new position of the remainder q - |p|: the
  risk-increasing checks judge the remainder only.
- **Stop distance of the new units**: |entry - stop| when the intent's stop is protective (strictly below
  the entry of a buy, strictly above the entry of a sell); with no stop, or one on the wrong side, the
  entry price itself (the full notional: all of a long can be lost; for a short it is a lower bound).
- **Heat of a held position**: |units| x |last - stop| when ``portfolio.stops`` holds a stop on the
  protective side of the last price, otherwise |units| x last, its full notional (a stop we do not know,
  or one the price has already passed, protects nothing: counted conservatively).
- **Verdicts.** A *ceiling* check fails when value > limit and warns when warn_at x limit <= value <= limit
  (so a value exactly at its limit passes, with a warning). A *floor* check (confidence) fails when
  value < limit and warns when limit > 0 and value <= limit / warn_at (the floor is within warn_at of the
  value). *Rule* checks pass or fail. Comparisons allow a relative 1e-9 (``TOLERANCE``), so a figure that
  is exactly at its limit in decimal does not fail on binary rounding.
- **Nonpositive equity** refuses every risk-increasing order: the checks that divide by equity (per-trade
  risk, exposure, leverage) fail with value null and say why. Reduce-only orders are unaffected.

The checks, in the order they run and are recorded
--------------------------------------------------
===  ===================  =====================================================================  ==========
 #   check                value (limit)                                                          reduce-only
===  ===================  =====================================================================  ==========
 1   strategy_enabled     1 if the strategy is in the policy and enabled, else 0 (rule)          applies
 2   paper_only           1 if paper-only; fails on a live session (rule)                        applies
 3   confidence_floor     the intent's confidence (``min_confidence``; floor)                    exempt
 4   restricted_list      1 if the symbol is restricted (rule)                                   exempt
 5   stop_loss            the stop price (the entry: the stop must be on its protective side)    exempt
 6   position_size        notional of the new units, increase x entry (``min_order_notional``
                          when below it, else ``max_order_notional``)                            exempt
 7   per_trade_risk       increase x stop distance / equity (``max_risk_per_trade``)             exempt
 8   aggregate_exposure   heat after the order / equity (``max_exposure``)                       exempt
 9   leverage             gross notional after the order / equity (``max_leverage``)             exempt
10   drawdown             (peak - equity) / peak (``max_drawdown``)                              exempt
11   daily_drawdown       (start-of-day - equity) / start-of-day (``max_daily_drawdown``)        exempt
12   open_positions       number of nonzero positions after the order (``max_open_positions``)   exempt
13   liquidity            quantity / average daily volume of the symbol (``max_adv_share``)      warns only
===  ===================  =====================================================================  ==========

- **Heat after the order** = the heat of every other held position, plus the heat of what remains of the
  intent symbol's existing position (its held stop, or its full notional), plus increase x stop distance
  for the new units. **Gross notional after** = sum of |units after| x last price over all symbols.
- **Why exposure is heat, not gross notional.** Gross notional / equity *is* leverage, so a 50% cap on it
  would make the 10x leverage limit unreachable; heat measures what the stops let the book lose and
  leverage what a gap through them could, and each binds where the other does not: with 1% stops, 10x
  leverage is only 10% heat (leverage binds); with 20% stops, 50% heat is only 2.5x (heat binds).
- **A risk manager can always close.** A reduce-only order is never blocked by checks 3 and 5-12: they
  are still computed and recorded with their figures (so the audit shows the breach it closes into), with
  verdict pass. Closing a restricted name is allowed (common practice: the restriction forbids new
  exposure, and forcing a holder to keep it would be perverse); a reversal into one is refused. Liquidity
  measures market impact, whatever the order's purpose, so it applies to the whole quantity, but a
  reduce-only order over the cap (or with no known volume) only warns. The strategy's own authority
  (checks 1-2) applies to every order: a disabled or paper-only strategy sends nothing live, closes
  included; an unknown strategy gets the most restrictive rule, disabled and paper-only.
- Orders below ``min_order_notional`` are refused only when they add exposure: a close of a small
  remainder must go through. The size check warns near ``max_order_notional`` only.

``Decision.as_rows()`` / ``Decision.frame()`` give the rows for storing (``DECISION_SCHEMA``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import polars as pl
import yaml

from emp_core.errors import EmpError

TOLERANCE = 1e-9  # relative: a figure within this of its limit counts as at the limit
SESSIONS = ("paper", "live")
Session = Literal["paper", "live"]
PASS, WARN, FAIL = "pass", "warn", "fail"

CHECKS = (
    "strategy_enabled",
    "paper_only",
    "confidence_floor",
    "restricted_list",
    "stop_loss",
    "position_size",
    "per_trade_risk",
    "aggregate_exposure",
    "leverage",
    "drawdown",
    "daily_drawdown",
    "open_positions",
    "liquidity",
)


class PolicyError(EmpError):
    """A policy file cannot be used. The message names the file and the key."""

    def __init__(self, path: object, key: str, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        super().__init__(f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}")


class RiskInputError(EmpError, ValueError):
    """An intent, portfolio or risk input that cannot be judged (NaN, inf, fractional units, ...)."""


# ---------------------------------------------------------------------------------------------- the policy


@dataclass(frozen=True)
class StrategyRule:
    enabled: bool
    paper_only: bool


@dataclass(frozen=True)
class Limits:
    """The figures a policy sets; the defaults are what a file that omits them gets."""

    min_confidence: float = 0.0  # floor on the intent's confidence, in [0, 1]
    max_risk_per_trade: float = 0.02  # share of equity the new units may lose to their stop
    max_exposure: float = 0.50  # heat after the order, share of equity
    max_leverage: float = 10.0  # gross notional after the order / equity
    max_drawdown: float = 0.25  # from peak equity
    max_daily_drawdown: float = 0.05  # from start-of-day equity
    min_order_notional: float = 0.0  # of the new units, in account currency
    max_order_notional: float = 1_000_000.0
    mandatory_stop_loss: bool = True
    max_open_positions: int = 20
    max_adv_share: float = 0.01  # order quantity / average daily volume
    restricted: frozenset[str] = frozenset()  # symbols no new exposure may be taken in


@dataclass(frozen=True)
class Policy:
    version: str
    strategies: Mapping[str, StrategyRule]
    limits: Limits = field(default_factory=Limits)
    warn_at: float = 0.8  # a ceiling check warns from warn_at x its limit

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategies", MappingProxyType(dict(self.strategies)))

    def rule(self, strategy: str) -> StrategyRule | None:
        return self.strategies.get(strategy)


_FRACTION = (0.0, 1.0)
_NONNEG = (0.0, math.inf)
_LIMIT_SPECS: dict[str, tuple[str, tuple[float, float]]] = {
    "min_confidence": ("number", _FRACTION),
    "max_risk_per_trade": ("number", _FRACTION),
    "max_exposure": ("number", _NONNEG),
    "max_leverage": ("number", _NONNEG),
    "max_drawdown": ("number", _FRACTION),
    "max_daily_drawdown": ("number", _FRACTION),
    "min_order_notional": ("number", _NONNEG),
    "max_order_notional": ("number", _NONNEG),
    "mandatory_stop_loss": ("bool", _NONNEG),
    "max_open_positions": ("int", _NONNEG),
    "max_adv_share": ("number", _FRACTION),
    "restricted": ("symbols", _NONNEG),
}
_TOP_KEYS = ("version", "warn_at", "strategies", "limits")
_RULE_KEYS = ("enabled", "paper_only")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _DuplicateKey(Exception):
    def __init__(self, key: object, line: int) -> None:
        self.key, self.line = key, line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            pass
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _mapping(path: Path, key: str, value: object) -> dict:
    if not isinstance(value, dict):
        raise PolicyError(path, key, f"expected a mapping, got {_describe(value)}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise PolicyError(path, key, f"keys must be strings, got {_describe(bad[0])}")
    return value


def _unknown(path: Path, where: str, given: dict, allowed: tuple[str, ...]) -> None:
    for k in given:
        if k not in allowed:
            raise PolicyError(path, f"{where}{k}", f"unknown key (allowed: {', '.join(allowed)})")


def _number(path: Path, key: str, value: object, bounds: tuple[float, float], *, integer: bool = False) -> float:
    ok = isinstance(value, Integral) if integer else isinstance(value, Real)
    if isinstance(value, bool) or not ok:
        raise PolicyError(path, key, f"expected {'a whole number' if integer else 'a number'}, got {_describe(value)}")
    if not math.isfinite(value):
        raise PolicyError(path, key, f"must be finite, got {value!r}")
    low, high = bounds
    if value < low:
        raise PolicyError(path, key, f"must not be negative, got {value!r}" if low == 0
                          else f"must be at least {low}, got {value!r}")
    if value > high:
        raise PolicyError(path, key, f"must be at most {high}, got {value!r}")
    return int(value) if integer else float(value)


def _bool(path: Path, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(path, key, f"expected true or false, got {_describe(value)}")
    return value


def _limits(path: Path, raw: object) -> Limits:
    given = _mapping(path, "limits", raw)
    _unknown(path, "limits.", given, tuple(_LIMIT_SPECS))
    values: dict[str, Any] = {}
    for name, value in given.items():
        key, (kind, bounds) = f"limits.{name}", _LIMIT_SPECS[name]
        if kind == "bool":
            values[name] = _bool(path, key, value)
        elif kind == "int":
            values[name] = _number(path, key, value, bounds, integer=True)
        elif kind == "number":
            values[name] = _number(path, key, value, bounds)
        else:
            if not isinstance(value, list):
                raise PolicyError(path, key, f"expected a list of symbols, got {_describe(value)}")
            for item in value:
                if not isinstance(item, str) or not item.strip():
                    raise PolicyError(path, key, f"expected a symbol string, got {_describe(item)} "
                                                 "(quote symbols YAML reads as numbers or booleans)")
            values[name] = frozenset(value)
    limits = Limits(**values)
    if limits.min_order_notional > limits.max_order_notional:
        raise PolicyError(path, "limits.min_order_notional",
                          f"{limits.min_order_notional!r} exceeds limits.max_order_notional "
                          f"{limits.max_order_notional!r}")
    return limits


def read_versioned(path: str | Path, keys: tuple[str, ...], what: str = "policy") -> tuple[Path, dict]:
    """Read a versioned YAML file (a policy, the compliance rules, the cost model): valid YAML with no key
    given twice, a mapping of only ``keys``, and a ``version`` that is the file's name. Returns the path and
    the top-level mapping; raises ``PolicyError`` naming the file and the key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(path, "", f"cannot read the {what} file ({exc.strerror or exc})") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except _DuplicateKey as exc:
        raise PolicyError(path, str(exc.key), f"given twice (line {exc.line})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(path, "", f"not valid YAML{where}: {problem}") from None
    if raw is None:
        raise PolicyError(path, "version", f"the file is empty: a {what} needs at least a version")
    top = _mapping(path, "(top level)", raw)
    _unknown(path, "", top, keys)
    if "version" not in top:
        raise PolicyError(path, "version", f"missing: every {what} names its version")
    version = top["version"]
    if not isinstance(version, str) or not _VERSION.match(version):
        raise PolicyError(path, "version", f"expected a name such as 'default-v1', got {_describe(version)}")
    if version != path.stem:
        raise PolicyError(path, "version", f"{version!r} does not match the file name {path.name!r} "
                                           f"(a {what}'s version is its file name)")
    return path, top


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file (the module docstring states the rules). Raises ``PolicyError``."""
    path, top = read_versioned(path, _TOP_KEYS)
    version = top["version"]
    warn_at = _number(path, "warn_at", top.get("warn_at", 0.8), _FRACTION)
    if warn_at == 0:
        raise PolicyError(path, "warn_at", "must be above 0 (a share of each limit, e.g. 0.8)")
    if "strategies" not in top:
        raise PolicyError(path, "strategies", "missing: list each strategy with enabled and paper_only "
                                              "(an empty mapping refuses every order)")
    strategies = {}
    for name, rule in _mapping(path, "strategies", top["strategies"] or {}).items():
        where = f"strategies.{name}"
        given = _mapping(path, where, rule)
        _unknown(path, f"{where}.", given, _RULE_KEYS)
        for k in _RULE_KEYS:
            if k not in given:
                raise PolicyError(path, f"{where}.{k}", "missing (true or false)")
        strategies[name] = StrategyRule(_bool(path, f"{where}.enabled", given["enabled"]),
                                        _bool(path, f"{where}.paper_only", given["paper_only"]))
    limits = _limits(path, top["limits"]) if "limits" in top else Limits()
    return Policy(version=version, strategies=strategies, limits=limits, warn_at=warn_at)


# ---------------------------------------------------------------------------------------------- the inputs


def _finite(what: str, value: object, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise RiskInputError(f"{what} must be a number, got {_describe(value)}")
    if not math.isfinite(value):
        raise RiskInputError(f"{what} must be finite, got {value!r}")
    if positive and value <= 0:
        raise RiskInputError(f"{what} must be positive, got {value!r}")
    if nonneg and value < 0:
        raise RiskInputError(f"{what} must not be negative, got {value!r}")
    return float(value)


def _units(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise RiskInputError(f"{what} must be whole units (an int), got {_describe(value)}")
    return int(value)


def _symbol(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RiskInputError(f"{what} must be a non-empty string, got {_describe(value)}")
    return value


@dataclass(frozen=True)
class Intent:
    """One order a strategy wants to send."""

    strategy: str
    symbol: str
    side: Literal["buy", "sell"]
    quantity: int  # whole units, > 0
    order_type: Literal["market", "limit"]
    reference_price: float  # the symbol's last price
    confidence: float  # in [0, 1]
    stop_price: float | None = None
    limit_price: float | None = None  # required for a limit order, refused for a market order

    def __post_init__(self) -> None:
        _symbol("intent strategy", self.strategy)
        _symbol("intent symbol", self.symbol)
        if self.side not in ("buy", "sell"):
            raise RiskInputError(f"intent side must be 'buy' or 'sell', got {self.side!r}")
        if _units("intent quantity", self.quantity) <= 0:
            raise RiskInputError(f"intent quantity must be positive, got {self.quantity!r}")
        if self.order_type not in ("market", "limit"):
            raise RiskInputError(f"intent order_type must be 'market' or 'limit', got {self.order_type!r}")
        _finite("intent reference_price", self.reference_price, positive=True)
        if not 0 <= _finite("intent confidence", self.confidence) <= 1:
            raise RiskInputError(f"intent confidence must be in [0, 1], got {self.confidence!r}")
        if self.stop_price is not None:
            _finite("intent stop_price", self.stop_price, positive=True)
        if self.order_type == "limit":
            if self.limit_price is None:
                raise RiskInputError("a limit order needs a limit_price")
            _finite("intent limit_price", self.limit_price, positive=True)
        elif self.limit_price is not None:
            raise RiskInputError(f"a market order has no limit_price (got {self.limit_price!r})")

    @property
    def entry_price(self) -> float:
        """The limit price of a limit order, the reference price of a market order."""
        return float(self.limit_price if self.order_type == "limit" else self.reference_price)

    @property
    def signed_quantity(self) -> int:
        return self.quantity if self.side == "buy" else -self.quantity


@dataclass(frozen=True)
class Portfolio:
    """The book the intent would join. Positions are signed whole units (+ long, - short)."""

    equity: float
    peak_equity: float
    day_start_equity: float
    positions: Mapping[str, int] = field(default_factory=dict)
    prices: Mapping[str, float] = field(default_factory=dict)  # last price per symbol
    adv: Mapping[str, float] = field(default_factory=dict)  # average daily volume, units
    stops: Mapping[str, float] = field(default_factory=dict)  # the stop of each held position, where known

    def __post_init__(self) -> None:
        _finite("portfolio equity", self.equity)
        _finite("portfolio peak_equity", self.peak_equity, positive=True)
        _finite("portfolio day_start_equity", self.day_start_equity, positive=True)
        positions = {_symbol("position symbol", s): _units(f"position in {s}", u) for s, u in self.positions.items()}
        prices = {s: _finite(f"price of {s}", p, positive=True) for s, p in self.prices.items()}
        adv = {s: _finite(f"average daily volume of {s}", v, nonneg=True) for s, v in self.adv.items()}
        stops = {s: _finite(f"stop of {s}", v, positive=True) for s, v in self.stops.items()}
        unpriced = sorted(s for s, u in positions.items() if u != 0 and s not in prices)
        if unpriced:
            raise RiskInputError(f"no last price for held position(s): {', '.join(unpriced)}")
        for name, value in (("positions", positions), ("prices", prices), ("adv", adv), ("stops", stops)):
            object.__setattr__(self, name, MappingProxyType(value))

    def position(self, symbol: str) -> int:
        return int(self.positions.get(symbol, 0))


# ---------------------------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Check:
    """One auditable row: what was measured, against what, the verdict, and a sentence with the figures."""

    check: str
    value: float | None  # null where the check is a rule or the figure is undefined
    limit: float | None
    verdict: str  # pass | warn | fail
    reason: str


DECISION_SCHEMA: dict[str, pl.DataType] = {
    "policy_version": pl.String(), "session": pl.String(), "strategy": pl.String(), "symbol": pl.String(),
    "side": pl.String(), "quantity": pl.Int64(), "approved": pl.Boolean(), "step": pl.Int64(),
    "check": pl.String(), "value": pl.Float64(), "limit": pl.Float64(), "verdict": pl.String(),
    "reason": pl.String(),
}


@dataclass(frozen=True)
class Decision:
    """Approved iff no check fails; ``reason`` names the first failing check. One row per check, in order."""

    approved: bool
    reason: str
    policy_version: str
    session: str
    intent: Intent
    checks: tuple[Check, ...]

    def check(self, name: str) -> Check:
        for row in self.checks:
            if row.check == name:
                return row
        raise KeyError(name)

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(c.check for c in self.checks if c.verdict == FAIL)

    def as_rows(self) -> list[dict]:
        head = {"policy_version": self.policy_version, "session": self.session, "strategy": self.intent.strategy,
                "symbol": self.intent.symbol, "side": self.intent.side, "quantity": self.intent.quantity,
                "approved": self.approved}
        return [head | {"step": i} | {f.name: getattr(c, f.name) for f in fields(Check)}
                for i, c in enumerate(self.checks, 1)]

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.as_rows(), schema=DECISION_SCHEMA)


def _pct(x: float) -> str:
    return f"{x:.3%}"


def _money(x: float) -> str:
    return f"{x:,.2f}"


def _times(x: float) -> str:
    return f"{x:.3f}x"


def _count(x: float) -> str:
    return f"{x:g}"


def _over(value: float, limit: float) -> bool:
    return value > limit + TOLERANCE * abs(limit)


def _ceiling(name: str, label: str, value: float, limit: float, warn_at: float, show: Callable[[float], str],
             detail: str) -> Check:
    """fail above the limit, warn from warn_at x limit up to it, else pass (see the module docstring)."""
    warn_level = warn_at * limit
    if _over(value, limit):
        verdict, verb = FAIL, f"exceeds the limit {show(limit)}"
    elif value >= warn_level - TOLERANCE * abs(warn_level):
        verdict, verb = WARN, f"is within the limit {show(limit)} but at or above the warning level {show(warn_level)}"
    else:
        verdict, verb = PASS, f"is within the limit {show(limit)}"
    return Check(name, value, limit, verdict, f"{label} {show(value)} ({detail}) {verb}")


def _exempt(name: str, label: str, value: float | None, limit: float | None, show: Callable[[float], str],
            detail: str) -> Check:
    """A risk-increasing check on a reduce-only order: recorded with its figures, never blocking."""
    figure = "undefined" if value is None else show(value)
    bound = "" if limit is None else f" against the limit {show(limit)}"
    return Check(name, value, limit, PASS,
                 f"{label} {figure} ({detail}){bound}: the order only reduces a position, which is never blocked")


@dataclass(frozen=True)
class _Order:
    """The figures of an order shared by several checks (module docstring: decomposition, heat, gross)."""

    position: int  # signed, before
    after: int  # signed, after
    closed: int  # units of the existing position the order closes
    increase: int  # new or added units
    entry: float
    protective_stop: bool  # the intent's stop is on the protective side of the entry
    distance: float  # stop distance of the new units (the entry price when there is no protective stop)
    heat_after: float
    gross_after: float
    open_after: int

    @property
    def reduce_only(self) -> bool:
        return self.increase == 0


def _held_heat(units: int, price: float, stop: float | None) -> float:
    protective = stop is not None and (stop < price if units > 0 else stop > price)
    return abs(units) * (abs(price - stop) if protective else price)  # type: ignore[operator]


def _order(intent: Intent, portfolio: Portfolio) -> _Order:
    p, d = portfolio.position(intent.symbol), intent.signed_quantity
    closed = min(intent.quantity, abs(p)) if p * d < 0 else 0
    increase = intent.quantity - closed
    entry, stop = intent.entry_price, intent.stop_price
    protective = stop is not None and (stop < entry if d > 0 else stop > entry)
    distance = abs(entry - stop) if protective else entry  # type: ignore[operator]
    after = p + d
    heat = gross = 0.0
    open_after = 0
    for symbol, units in portfolio.positions.items():
        if symbol == intent.symbol or units == 0:
            continue
        price = portfolio.prices[symbol]
        heat += _held_heat(units, price, portfolio.stops.get(symbol))
        gross += abs(units) * price
        open_after += 1
    last = intent.reference_price
    remaining = p - closed if p > 0 else p + closed  # what is left of the existing position, same sign
    if remaining:
        heat += _held_heat(remaining, last, portfolio.stops.get(intent.symbol))
    heat += increase * distance
    gross += abs(after) * last
    open_after += after != 0
    return _Order(p, after, closed, increase, entry, protective, distance, heat, gross, open_after)


def _decomposition(o: _Order) -> str:
    if o.reduce_only:
        return f"closes {o.closed:,} of {o.position:+,} units"
    if o.closed:
        return f"closes {o.closed:,} of {o.position:+,} units and opens {o.increase:,} the other way"
    return f"adds {o.increase:,} units to {o.position:+,}"


@dataclass(frozen=True)
class _Context:
    intent: Intent
    portfolio: Portfolio
    policy: Policy
    session: str
    order: _Order
    shape: str  # the order's decomposition, in words

    @property
    def limits(self) -> Limits:
        return self.policy.limits


def _strategy_enabled(x: _Context) -> Check:
    rule, name = x.policy.rule(x.intent.strategy), x.intent.strategy
    if rule is None:  # an unknown strategy counts as disabled
        return Check("strategy_enabled", 0.0, None, FAIL, f"strategy {name!r} is not in policy {x.policy.version}")
    return Check("strategy_enabled", float(rule.enabled), None, PASS if rule.enabled else FAIL,
                 f"strategy {name!r} is {'enabled' if rule.enabled else 'disabled'} in policy {x.policy.version}")


def _paper_only(x: _Context) -> Check:
    rule, name = x.policy.rule(x.intent.strategy), x.intent.strategy
    if rule is not None and not rule.paper_only:  # an unknown strategy counts as paper-only
        return Check("paper_only", 0.0, None, PASS, f"strategy {name!r} may trade on a {x.session} session")
    if x.session == "live":
        return Check("paper_only", 1.0, None, FAIL, f"strategy {name!r} is paper-only and this is a live session")
    return Check("paper_only", 1.0, None, PASS, f"strategy {name!r} is paper-only and this is a paper session")


def _confidence_floor(x: _Context) -> Check:
    c, floor, warn_at = x.intent.confidence, x.limits.min_confidence, x.policy.warn_at
    if x.order.reduce_only:
        return _exempt("confidence_floor", "confidence", c, floor, _count, x.shape)
    if c < floor - TOLERANCE * floor:
        return Check("confidence_floor", c, floor, FAIL, f"confidence {c:g} is below the floor {floor:g}")
    if floor > 0 and c * warn_at <= floor + TOLERANCE * floor:  # a floor warns when it is within warn_at of the value
        return Check("confidence_floor", c, floor, WARN, f"confidence {c:g} is at or above the floor {floor:g} "
                                                         f"but within its warning level {floor / warn_at:g}")
    return Check("confidence_floor", c, floor, PASS, f"confidence {c:g} is at or above the floor {floor:g}")


def _restricted_list(x: _Context) -> Check:
    symbol = x.intent.symbol
    if symbol not in x.limits.restricted:
        return Check("restricted_list", 0.0, None, PASS, f"{symbol} is not restricted")
    if x.order.reduce_only:  # closing a restricted name is allowed
        return Check("restricted_list", 1.0, None, PASS,
                     f"{symbol} is restricted, but the order only reduces the position ({x.shape})")
    return Check("restricted_list", 1.0, None, FAIL, f"{symbol} is restricted: no new exposure ({x.shape})")


def _stop_loss(x: _Context) -> Check:
    o, stop, side = x.order, x.intent.stop_price, x.intent.side
    if o.reduce_only:
        return Check("stop_loss", stop, o.entry, PASS, f"no stop needed: the order only reduces a position ({x.shape})")
    if stop is None:
        if x.limits.mandatory_stop_loss:
            return Check("stop_loss", None, o.entry, FAIL,
                         f"no stop price, and policy {x.policy.version} makes a stop-loss mandatory")
        return Check("stop_loss", None, o.entry, PASS,
                     "no stop price (not mandatory: the new units are risked at their full notional)")
    where = "below" if side == "buy" else "above"
    if not o.protective_stop:
        return Check("stop_loss", stop, o.entry, FAIL, f"stop {_money(stop)} is not {where} the entry "
                                                       f"{_money(o.entry)} of a {side}: it would not limit the loss")
    return Check("stop_loss", stop, o.entry, PASS, f"stop {_money(stop)} is {where} the entry {_money(o.entry)} "
                                                   f"of a {side}")


def _position_size(x: _Context) -> Check:
    o, low, high = x.order, x.limits.min_order_notional, x.limits.max_order_notional
    if o.reduce_only:
        return _exempt("position_size", "order notional", x.intent.quantity * o.entry, None, _money, x.shape)
    notional, units = o.increase * o.entry, f"{o.increase:,} x {_money(o.entry)}"
    if notional < low - TOLERANCE * low:
        return Check("position_size", notional, low, FAIL, f"notional of the new units {_money(notional)} ({units}) "
                                                           f"is below the minimum order notional {_money(low)}")
    return _ceiling("position_size", "notional of the new units", notional, high, x.policy.warn_at, _money, units)


def _over_equity(name: str, label: str, amount: float, limit: float, show: Callable[[float], str], detail: str,
                 x: _Context) -> Check:
    """A figure divided by equity: undefined (and refused unless reduce-only) when equity is not positive."""
    equity = x.portfolio.equity
    value = amount / equity if equity > 0 else None
    if x.order.reduce_only:
        return _exempt(name, label, value, limit, show, f"{detail}; {x.shape}")
    if value is None:
        return Check(name, None, limit, FAIL, f"{label}: equity {_money(equity)} is not positive: "
                                              "every risk-increasing order is refused")
    return _ceiling(name, label, value, limit, x.policy.warn_at, show, detail)


def _per_trade_risk(x: _Context) -> Check:
    o, stop, equity = x.order, x.intent.stop_price, x.portfolio.equity
    distance = (f"|{_money(o.entry)} - {_money(stop)}|" if o.protective_stop and stop is not None
                else f"full notional {_money(o.entry)}: no protective stop")
    risk = o.increase * o.distance
    return _over_equity("per_trade_risk", "per-trade risk", risk, x.limits.max_risk_per_trade, _pct,
                        f"{o.increase:,} new units x {distance} = {_money(risk)} / equity {_money(equity)}", x)


def _aggregate_exposure(x: _Context) -> Check:
    return _over_equity("aggregate_exposure", "heat after the order", x.order.heat_after, x.limits.max_exposure, _pct,
                        f"open risk to stops {_money(x.order.heat_after)} / equity {_money(x.portfolio.equity)}", x)


def _leverage(x: _Context) -> Check:
    return _over_equity("leverage", "leverage after the order", x.order.gross_after, x.limits.max_leverage, _times,
                        f"gross notional {_money(x.order.gross_after)} / equity {_money(x.portfolio.equity)}", x)


def _gate(name: str, label: str, base: float, base_word: str, limit: float, x: _Context) -> Check:
    equity = x.portfolio.equity
    value = (base - equity) / base
    detail = f"({base_word} {_money(base)} - equity {_money(equity)}) / {base_word} {_money(base)}"
    if x.order.reduce_only:
        return _exempt(name, label, value, limit, _pct, f"{detail}; {x.shape}")
    return _ceiling(name, label, value, limit, x.policy.warn_at, _pct, detail)


def _drawdown(x: _Context) -> Check:
    return _gate("drawdown", "drawdown", x.portfolio.peak_equity, "peak", x.limits.max_drawdown, x)


def _daily_drawdown(x: _Context) -> Check:
    return _gate("daily_drawdown", "daily drawdown", x.portfolio.day_start_equity, "start-of-day",
                 x.limits.max_daily_drawdown, x)


def _open_positions(x: _Context) -> Check:
    count, cap = float(x.order.open_after), float(x.limits.max_open_positions)
    detail = f"nonzero positions once {x.intent.symbol} is {x.order.after:+,}"
    if x.order.reduce_only:
        return _exempt("open_positions", "open positions", count, cap, _count, f"{detail}; {x.shape}")
    return _ceiling("open_positions", "open positions", count, cap, x.policy.warn_at, _count, detail)


def _liquidity(x: _Context) -> Check:
    """The whole quantity against average daily volume; a reduce-only order over it (or unknown) only warns."""
    symbol, quantity, cap = x.intent.symbol, x.intent.quantity, x.limits.max_adv_share
    adv = x.portfolio.adv.get(symbol, 0.0)
    if adv <= 0:
        return Check("liquidity", None, cap, WARN if x.order.reduce_only else FAIL,
                     f"no average daily volume known for {symbol}: "
                     + ("the close goes through, its market impact unknown" if x.order.reduce_only
                        else "the order's market impact cannot be bounded"))
    row = _ceiling("liquidity", "share of average daily volume", quantity / adv, cap, x.policy.warn_at, _pct,
                   f"{quantity:,} of {adv:,.0f} units a day")
    if x.order.reduce_only and row.verdict == FAIL:
        return Check(row.check, row.value, row.limit, WARN,
                     f"{row.reason}; the order only reduces a position, so it goes through with a warning")
    return row


_CHECK_FUNCTIONS: tuple[Callable[[_Context], Check], ...] = (
    _strategy_enabled, _paper_only, _confidence_floor, _restricted_list, _stop_loss, _position_size, _per_trade_risk,
    _aggregate_exposure, _leverage, _drawdown, _daily_drawdown, _open_positions, _liquidity,
)


def evaluate(intent: Intent, portfolio: Portfolio, policy: Policy, session: Session) -> Decision:
    """Run every check of the module docstring, in its order, and decide."""
    if session not in SESSIONS:
        raise RiskInputError(f"session must be 'paper' or 'live', got {session!r}")
    if not isinstance(intent, Intent) or not isinstance(portfolio, Portfolio) or not isinstance(policy, Policy):
        raise RiskInputError("evaluate takes an Intent, a Portfolio and a Policy")
    order = _order(intent, portfolio)
    context = _Context(intent, portfolio, policy, session, order, _decomposition(order))
    checks = tuple(check(context) for check in _CHECK_FUNCTIONS)  # all of them, always, in the documented order
    failing = [c for c in checks if c.verdict == FAIL]
    if failing:
        first = failing[0]
        more = f" (and {len(failing) - 1} more: {', '.join(c.check for c in failing[1:])})" if len(failing) > 1 else ""
        reason = f"refused by {first.check}: {first.reason}{more}"
    else:
        warned = [c.check for c in checks if c.verdict == WARN]
        reason = (f"approved: all {len(checks)} checks pass"
                  + (f" ({len(warned)} warn: {', '.join(warned)})" if warned else ""))
    return Decision(not failing, reason, policy.version, session, intent, checks)
