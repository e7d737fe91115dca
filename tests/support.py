"""Helpers the tests share (conftest.py holds only fixtures and is never imported by a test)."""

import math
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from emp_core.config import REPO_ROOT

SHIPPED = REPO_ROOT / "data"
WORKSPACE = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_missing(what: str) -> None:
    """Skip a test whose service is not here, or fail under EMP_REQUIRE_SERVICES=1 (CI)."""
    from emp_core.config import settings

    if settings().require_services:
        pytest.fail(f"{what} is required (EMP_REQUIRE_SERVICES=1) but not available")
    pytest.skip(f"{what} not available")


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def daily_bars(symbol: str, start: datetime, days: int) -> pl.DataFrame:
    """Consistent daily bars on XNYS sessions from ``start`` (for constructing test inputs)."""
    from emp_core.calendars import expected_bars

    ts = expected_bars("XNYS", "1d", start, datetime(2035, 1, 1)).head(days)
    n = len(ts)
    close = pl.Series([100.0 + i for i in range(n)])
    return pl.DataFrame({
        "symbol": [symbol] * n, "ts": ts, "open": close - 0.5, "high": close + 1.0, "low": close - 1.0,
        "close": close, "volume": [1000.0] * n,
    })


def q_kolmogorov(lam: float) -> float:
    """Q(lambda) = 2 sum_k (-1)^(k-1) exp(-2 k^2 lambda^2), written here: for small lambda through its Jacobi
    theta form 1 - sqrt(2 pi) / lambda sum_k exp(-(2k - 1)^2 pi^2 / (8 lambda^2)), where it converges fast."""
    if lam < 1.0:
        return 1.0 - math.sqrt(2 * math.pi) / lam * sum(
            math.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8 * lam**2)) for k in range(1, 50))
    return 2.0 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 200))
