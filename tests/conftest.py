import os
import shutil
from pathlib import Path

import pytest

from emp_core.store import DuckDBStore
from tests.support import SHIPPED, service_missing


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
