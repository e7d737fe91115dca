"""Pre-trade risk: the versioned policy and its checks, position sizing, VaR and expected shortfall."""

from emp_core.risk.policy import (
    CHECKS,
    DECISION_SCHEMA,
    Check,
    Decision,
    Intent,
    Limits,
    Policy,
    PolicyError,
    Portfolio,
    RiskInputError,
    StrategyRule,
    evaluate,
    load_policy,
)
from emp_core.risk.sizing import fixed_fractional_units, fractional_kelly_units, kelly_fraction
from emp_core.risk.var import Estimate, VaRResult, portfolio_var

__all__ = [
    "CHECKS",
    "DECISION_SCHEMA",
    "Check",
    "Decision",
    "Estimate",
    "Intent",
    "Limits",
    "Policy",
    "PolicyError",
    "Portfolio",
    "RiskInputError",
    "StrategyRule",
    "VaRResult",
    "evaluate",
    "fixed_fractional_units",
    "fractional_kelly_units",
    "kelly_fraction",
    "load_policy",
    "portfolio_var",
]
