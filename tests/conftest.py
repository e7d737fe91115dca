import os
import shutil
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from emp_core.config import REPO_ROOT
from emp_core.store import DuckDBStore

SHIPPED = REPO_ROOT / "data"


def service_missing(what: str) -> None:
    """Skip a test whose service is not here, or fail under EMP_REQUIRE_SERVICES=1 (CI)."""
    from emp_core.config import settings

    if settings().require_services:
        pytest.fail(f"{what} is required (EMP_REQUIRE_SERVICES=1) but not available")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def spark():
    """A local[2] Spark session (Java and pyspark required)."""
    import shutil as _shutil

    if _shutil.which("java") is None:
        service_missing("Java (for Spark)")
    try:
        from emp_core.evolution.spark import local_session
        session = local_session()
    except ImportError:
        service_missing("pyspark")
    yield session
    session.stop()


@pytest.fixture
def emp_home(tmp_path, monkeypatch) -> Path:
    """A private EMP_HOME (and DAGSTER_HOME inside it) for one test."""
    home = tmp_path / "emp_home"
    monkeypatch.setenv("EMP_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("EMP_DATA_DIR", raising=False)
    monkeypatch.delenv("EMP_TIER", raising=False)
    return home


@pytest.fixture
def store(emp_home) -> DuckDBStore:
    return DuckDBStore(emp_home / "emp.duckdb")


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A copy of the shipped data that a test may alter."""
    target = tmp_path / "data"
    shutil.copytree(SHIPPED, target)
    return target


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory) -> Path:
    """EMP_HOME after `emp demo` on the shipped data: materialised once per session."""
    from emp_core.cli import main

    home = tmp_path_factory.mktemp("demo") / "emp_home"
    saved = {k: os.environ.get(k) for k in ("EMP_HOME", "DAGSTER_HOME")}
    os.environ["EMP_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    try:
        assert main(["demo"]) == 0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return home


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
