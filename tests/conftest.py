import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from emp_core.config import REPO_ROOT
from emp_core.store import DuckDBStore
from tests.support import SHIPPED, WORKSPACE, free_port, service_missing


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


@pytest.fixture
def webserver(demo_home):
    """`dagster-webserver` on the demo store, on a free loopback port, once its code location has loaded;
    yields its URL and stops it afterwards."""
    port = free_port()
    env = {**os.environ, "EMP_HOME": str(demo_home), "DAGSTER_HOME": str(demo_home / "dagster")}
    exe = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen(
        [str(exe), "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                entries = requests.post(f"{url}/graphql", json={"query": WORKSPACE}, timeout=5).json()[
                    "data"]["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    errors = [e["locationOrLoadError"] for e in entries
                              if e["locationOrLoadError"]["__typename"] == "PythonError"]
                    assert not errors, errors
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the code location did not load in 180 s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


PG_SERVER = "postgresql://127.0.0.1:5432"


@pytest.fixture
def pg_url():
    """A private, empty database on the loopback PostgreSQL server, dropped after the test (its URL)."""
    import uuid

    try:
        import psycopg
    except ImportError:
        service_missing("psycopg (the dev set's PostgreSQL driver)")
    name = f"emp_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        service_missing(f"PostgreSQL on {PG_SERVER}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{PG_SERVER}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def institutional(emp_home, pg_url, monkeypatch):
    """EMP_TIER=institutional on a private database; yields the URL of Dagster's database (dropped afterwards)."""
    import psycopg

    monkeypatch.setenv("EMP_TIER", "institutional")
    monkeypatch.setenv("EMP_PG_URL", pg_url)
    monkeypatch.delenv("EMP_DAGSTER_PG_URL", raising=False)  # prepare_instance sets it; restored after
    server, name = pg_url.rsplit("/", 1)
    try:
        yield f"{server}/{name}_dagster"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}_dagster" WITH (FORCE)')


class PrivatePostgres:
    """A PostgreSQL server of one test's own (initdb in a temporary directory, loopback, a free port), so a test
    can stop and restart it without touching the shared server."""

    def __init__(self, root: Path, port: int) -> None:
        import glob

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins or shutil.which("runuser") is None:
            service_missing("PostgreSQL server binaries (pg_ctl, initdb) and runuser")
        self.bin = Path(bins[-1]).parent
        self.root, self.port = root, port
        self.data = root / "data"
        self.url = f"postgresql://root@127.0.0.1:{port}/emp"
        root.mkdir(parents=True, exist_ok=True)
        shutil.chown(root, "postgres", "postgres")
        self._as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "root",
                           "--no-sync", "-E", "UTF8"])
        (self.data / "postgresql.auto.conf").write_text(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\nfsync = off\n")
        self.start()

    def _as_postgres(self, cmd: list[str]) -> None:
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w",
                           "start"])

    def stop(self, mode: str = "immediate") -> None:
        self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])


@pytest.fixture
def private_pg():
    """A private PostgreSQL server (see PrivatePostgres), stopped and deleted afterwards. Its directory is
    directly under the system temporary directory: the server runs as the postgres user, which cannot enter
    pytest's private temporary directories."""
    import tempfile

    from tests.support import free_port

    root = Path(tempfile.mkdtemp(prefix="emp-pg-"))
    try:
        server = PrivatePostgres(root, free_port())
        yield server
        with contextlib.suppress(subprocess.CalledProcessError):  # the test left it stopped
            server.stop("fast")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def redis_server():
    """A private redis-server on a free loopback port (its URL), killed afterwards."""
    import redis

    from tests.support import free_port

    if shutil.which("redis-server") is None:
        service_missing("redis-server")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield url
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def macro():
    """The shipped macro inputs (Treasury curve and macro series), as the sensory cortex reads them."""
    from emp_core.market_data.macro import macro_series, treasury_curve
    from emp_core.sensory import MacroInputs

    return MacroInputs(curve=treasury_curve(SHIPPED)[0], series=macro_series(SHIPPED)[0])


@pytest.fixture(scope="session")
def daily():
    """The shipped daily bars."""
    import polars as pl

    return pl.read_parquet(SHIPPED / "bars_daily.parquet")


@pytest.fixture
def outage(pg_url, tmp_path):
    """A failover setting: (the primary, a private database on the loopback server; a factory of FailoverStores
    whose primary is an address nothing listens on, i.e. down; their fallback, a DuckDB file)."""
    from emp_core.store import DuckDBStore
    from emp_core.store.failover import FailoverStore
    from emp_core.store.postgres_store import PostgresStore
    from tests.support import free_port

    primary = PostgresStore(pg_url)
    fallback = DuckDBStore(tmp_path / "failover.duckdb")
    down = lambda: FailoverStore(PostgresStore(f"postgresql://127.0.0.1:{free_port()}/emp"), fallback)  # noqa: E731
    yield primary, down, fallback
    primary.dispose()


@pytest.fixture
def trading_home(tmp_path, monkeypatch):
    """An embedded EMP_HOME whose store holds 30 daily bars of AAA closing at 100 (volume 1,000,000): what the
    risk path reads for a last price and an average daily volume."""
    from datetime import datetime, timedelta

    import polars as pl

    from emp_core.store import DuckDBStore

    monkeypatch.setenv("EMP_HOME", str(tmp_path))
    monkeypatch.setenv("EMP_TIER", "embedded")
    day = datetime(2024, 1, 2)
    bars = pl.DataFrame({"symbol": "AAA", "ts": [day + timedelta(days=i) for i in range(30)], "open": 100.0,
                         "high": 101.0, "low": 99.0, "close": 100.0, "volume": 1e6})
    nothing = pl.DataFrame(schema={"run_id": pl.String})
    DuckDBStore(tmp_path / "emp.duckdb").replace_bars("bars_1d", bars, source="test", run_id="r", window=None,
                                                      quarantine=nothing, journal=nothing)
    return tmp_path


@pytest.fixture(params=["duckdb", "postgres"])
def tier_store(request, tmp_path):
    """The store of each tier in turn: an embedded DuckDB file, then a private PostgreSQL database."""
    from emp_core.store.duckdb_store import DuckDBStore

    if request.param == "duckdb":
        yield DuckDBStore(tmp_path / "emp.duckdb")
        return
    from emp_core.store.postgres_store import PostgresStore

    pg = PostgresStore(request.getfixturevalue("pg_url"))
    yield pg
    pg.dispose()


@pytest.fixture(params=["numpy", "compiled"])
def both_engines(request, monkeypatch):
    """Run the test module once on the NumPy engine (the reference) and once on the compiled kernel: its
    ``simulate`` is the one under test."""
    if request.param == "compiled":
        from emp_core.backtest import kernel

        monkeypatch.setattr(request.module, "simulate", kernel.simulate)
    return request.param
