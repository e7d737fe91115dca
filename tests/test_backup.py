"""Backups of the institutional store on the real loopback server: pg_dump of the EMP schemas with a manifest
taken in the dump's snapshot, a restore drill into a scratch database with table and partition parity, a parity
checksum that notices one changed row, rotation that ignores crashed dumps, clear errors without passwords,
retention windows (empty is not a pass)."""

import json
import os
import stat
import threading
import time
from datetime import datetime, timedelta

import polars as pl
import psycopg
import pytest

from emp_core.errors import EmpError
from emp_core.store import DuckDBStore
from emp_core.store.backup import (
    backup,
    checksums,
    compare,
    drop_scratch,
    latest_backup,
    list_backups,
    parity,
    restore,
    restore_drill,
    retention_check,
)
from emp_core.store.postgres_store import PostgresStore
from tests.support import free_port

YEARS = (2019, 2020, 2021, 2022)
NOW = datetime(2023, 1, 1)


def bars(symbol: str, start: datetime, days: int, price: float = 100.0) -> pl.DataFrame:
    ts = [start + timedelta(days=i) for i in range(days)]
    close = [price + i * 0.25 for i in range(days)]
    return pl.DataFrame({"symbol": symbol, "ts": ts, "open": close, "high": [c + 1 for c in close],
                         "low": [c - 1 for c in close], "close": close, "volume": 1000.0})


def fill(store: PostgresStore) -> None:
    """Bars over four years (four yearly partitions), a sensory table and a macro table."""
    for symbol in ("A", "B"):
        store.upsert_bars("bars_1d", bars(symbol, datetime(2019, 1, 1), 1461), source="test", run_id="r1")
    ts = [datetime(2022, 1, 3) + timedelta(days=i) for i in range(30)]
    why = pl.DataFrame({"dataset": "bars_1d", "symbol": "A", "ts": ts, "why_score": [i / 30 for i in range(30)],
                        "why_confidence": 0.5, "run_id": "r1"})
    store.replace_windows({"sensory.why": why}, dataset="bars_1d", start=ts[0], end=ts[-1] + timedelta(days=1))
    months = [datetime(2020, m, 1).date() for m in range(1, 13)]
    store.replace_table("macro.series", pl.DataFrame({
        "series_id": "CPI", "period_start": months, "period_end": months, "available_at": months,
        "value": [250.0 + m for m in range(12)], "frequency": "M", "source": "test", "run_id": "r1"}))


@pytest.fixture
def source(pg_url):
    store = PostgresStore(pg_url)
    fill(store)
    yield store
    store.dispose()


def scratch_url(url: str) -> str:
    return url.rsplit("/", 1)[0] + f"/emp_restore_{os.urandom(6).hex()}"


def database_exists(url: str) -> bool:
    server, name = url.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as con:
        return con.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def test_backup_writes_the_emp_schemas_and_a_manifest_of_the_same_snapshot(source, tmp_path):
    result = backup(source.url, tmp_path / "backups")
    assert result.path.name.startswith(f"emp-{source.url.rsplit('/', 1)[1]}-") and result.path.suffix == ".dump"
    assert result.path.is_file() and result.manifest_path.is_file()
    assert [p.name for p in (tmp_path / "backups").iterdir() if p.name.startswith(".")] == []  # no temp left
    manifest = json.loads(result.manifest_path.read_text())
    counts = source.table_counts()
    assert {t: v["rows"] for t, v in manifest["tables"].items() if t in counts} == counts
    assert manifest["tables"]["market.bars_1d"]["rows"] == 2 * 1461
    assert manifest["tables"]["ops.schema_migrations"]["rows"] >= 3  # ops is backed up too
    parts = {p: v["rows"] for p, v in manifest["partitions"].items() if v["table"] == "market.bars_1d"}
    assert parts == {f"market.bars_1d_y{y}": 2 * (366 if y == 2020 else 365) for y in YEARS}
    assert manifest["bytes"] == result.path.stat().st_size and len(manifest["sha256"]) == 64
    assert manifest["tables"] == checksums(source.url)["tables"]  # nothing changed since: the same sums
    # only the EMP schemas: a table in public is not in the dump
    source.query("CREATE TABLE public.not_ours (x int)")
    scratch = scratch_url(source.url)
    try:
        restore(result.path, scratch)
        restored = PostgresStore(scratch)
        assert restored.query("SELECT to_regclass('public.not_ours') IS NULL AS gone").item()
        assert restored.table_counts() == counts
        restored.dispose()
    finally:
        drop_scratch(scratch)
    assert not database_exists(scratch)


def test_restore_drill_gives_parity_on_every_table_and_partition(source, tmp_path):
    t0 = time.perf_counter()
    report = restore_drill(source.url, tmp_path / "backups")
    seconds = time.perf_counter() - t0
    assert report.ok, report.describe()
    assert report.differing == []
    assert {f"market.bars_1d_y{y}" for y in YEARS} <= set(report.equal)
    assert {"market.bars_1d", "sensory.why", "macro.series", "ops.schema_migrations"} <= set(report.equal)
    scratch = report.b.split("dbname=")[1].split()[0]
    assert scratch.startswith("emp_restore_") and not database_exists(source.url.rsplit("/", 1)[0] + "/" + scratch)
    live = restore_drill(source.url, tmp_path / "backups", against="source")
    assert live.ok, live.describe()
    print(f"restore drill on {2 * 1461} bars: {seconds:.2f} s")


def test_parity_names_exactly_the_table_and_partition_that_changed(source, tmp_path):
    result = backup(source.url, tmp_path)
    scratch = scratch_url(source.url)
    try:
        restore(result.path, scratch)
        assert parity(source.url, scratch).ok
        # one value of one bar, same row count: only the checksum can see it
        source.query("UPDATE market.bars_1d SET close = close + 0.01 WHERE symbol = 'A' AND ts = '2021-06-01'")
        report = parity(source.url, scratch)
        assert report.differing == ["market.bars_1d", "market.bars_1d_y2021"], report.describe()
        assert report.differing_tables == ["market.bars_1d"]
        assert report.differing_partitions == ["market.bars_1d_y2021"]
        assert "content checksum differs" in report.describe() and "rows" not in report.describe()
        # a deleted row in an unpartitioned table: its count differs too
        source.query("DELETE FROM macro.series WHERE period_start = '2020-03-01'")
        report = parity(source.url, scratch)
        assert report.differing == ["macro.series", "market.bars_1d", "market.bars_1d_y2021"]
        assert "rows 11 vs 12" in report.describe()
        # a table on one side only
        source.query("CREATE TABLE evolution.extra (x int)")
        assert "evolution.extra" in parity(source.url, scratch).differing
    finally:
        drop_scratch(scratch)


def test_the_manifest_describes_the_dump_even_under_concurrent_writes(source, tmp_path):
    """A writer commits rows all through the backup: the restored dump must hold exactly the rows the manifest
    counted (dump and checksums share one snapshot), while the source has moved on."""
    source.query("CREATE TABLE ops.drill_writes (i bigint)")
    stop, written = threading.Event(), [0]

    def writer():
        with psycopg.connect(source.url, autocommit=True) as con:
            while not stop.is_set():
                con.execute("INSERT INTO ops.drill_writes VALUES (%s)", (written[0],))
                written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 50:
            time.sleep(0.01)
        result = backup(source.url, tmp_path)
        time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    in_manifest = result.manifest["tables"]["ops.drill_writes"]["rows"]
    assert 50 <= in_manifest < written[0]
    scratch = scratch_url(source.url)
    try:
        restore(result.path, scratch)
        report = compare(result.manifest, checksums(scratch))
        assert report.ok, report.describe()
    finally:
        drop_scratch(scratch)


def test_rotation_keeps_the_newest_backups_and_ignores_a_crashed_dump(source, tmp_path):
    name = source.url.rsplit("/", 1)[1]
    t0 = datetime(2026, 1, 1, 12)
    crashed = tmp_path / f".emp-{name}-20260101T110000.000000Z.dump.0badc0de.tmp"  # a dump that died midway
    crashed.write_bytes(b"PGDMP partial")
    stale = tmp_path / f".emp-{name}-20250101T110000.000000Z.dump.deadbeef.tmp"
    stale.write_bytes(b"PGDMP partial")
    old = time.time() - 3 * 86400
    os.utime(stale, (old, old))
    results = [backup(source.url, tmp_path, keep=2, now=t0 + timedelta(hours=i)) for i in range(4)]
    backups = list_backups(tmp_path, dbname=name, now=t0 + timedelta(hours=4))
    assert [b.path for b in backups] == [r.path for r in results[2:]]
    assert all(b.manifest is not None for b in backups)
    expected = {p.name for r in results[2:] for p in (r.path, r.manifest_path)} | {crashed.name}
    assert {p.name for p in tmp_path.iterdir()} == expected  # old dumps, manifests and the stale temp are gone
    assert results[-1].kept == [results[3].path, results[2].path]
    assert results[2].deleted == [results[0].path, results[0].manifest_path]
    latest = latest_backup(tmp_path, now=t0 + timedelta(hours=4))
    assert latest.path == results[3].path and latest.age_seconds == 3600
    assert latest.manifest["tables"]["market.bars_1d"]["rows"] == 2 * 1461
    # the backup just written survives even if its clock says it is the oldest
    older = backup(source.url, tmp_path, keep=1, now=t0 - timedelta(days=1))
    assert [b.path for b in list_backups(tmp_path)] == [older.path]
    assert latest_backup(tmp_path / "none") is None
    with pytest.raises(EmpError, match="keep=0"):
        backup(source.url, tmp_path, keep=0)


def test_a_missing_pg_dump_or_pg_restore_is_a_clear_error(pg_url, tmp_path, monkeypatch):
    url = pg_url.replace("://", "://root:hunter2@")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(EmpError, match="pg_dump not found on PATH") as err:
        backup(url, tmp_path / "backups")
    assert "hunter2" not in str(err.value) and "127.0.0.1:5432" in str(err.value)
    (tmp_path / "x.dump").write_bytes(b"")
    with pytest.raises(EmpError, match="pg_restore not found on PATH") as err:
        restore(tmp_path / "x.dump", url)
    assert "hunter2" not in str(err.value)


def test_an_unreachable_server_is_a_clear_error_without_the_password(tmp_path):
    port = free_port()
    url = f"postgresql://root:hunter2@127.0.0.1:{port}/emp"
    with pytest.raises(EmpError, match=rf"127\.0\.0\.1:{port}.*cannot connect") as err:
        backup(url, tmp_path)
    assert "hunter2" not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no temp file, no manifest
    with pytest.raises(EmpError, match="cannot connect") as err:
        parity(url, url)
    assert "hunter2" not in str(err.value)


def test_an_unwritable_backup_directory_is_a_clear_error(pg_url, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(EmpError, match=rf"{blocker}/backups: cannot create the backup directory"):
        backup(pg_url, blocker / "backups")


def test_the_password_goes_to_the_child_environment_not_its_command_line(pg_url, tmp_path):
    """A stand-in pg_dump records what it was given: the password only in PGPASSWORD; its failure is reported
    with the server named and the password masked."""
    url = pg_url.replace("://", "://root:hunter2@")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "seen"
    fake = bin_dir / "pg_dump"
    fake.write_text(f'#!/bin/sh\necho "$@" > {seen}.args\necho "$PGPASSWORD" > {seen}.env\n'
                    'echo "pg_dump: error: connection to server failed: password hunter2 rejected" >&2\nexit 1\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(EmpError, match=r"pg_dump of .*127\.0\.0\.1:5432.* failed") as err:
        backup(url, tmp_path / "backups", bin_dir=bin_dir)
    assert "hunter2" not in str(err.value) and "***" in str(err.value)
    args = (tmp_path / "seen.args").read_text()
    assert "hunter2" not in args and "--snapshot=" in args and "--schema=ops" in args
    assert (tmp_path / "seen.env").read_text().strip() == "hunter2"
    assert [p for p in (tmp_path / "backups").iterdir()] == []  # the failed dump left nothing behind


def test_restore_refuses_a_database_that_is_not_empty_and_a_damaged_dump(source, tmp_path):
    result = backup(source.url, tmp_path)
    with pytest.raises(EmpError, match="is not empty"):
        restore(result.path, source.url)
    data = bytearray(result.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    result.path.write_bytes(bytes(data))
    with pytest.raises(EmpError, match="SHA-256 differs"):
        restore(result.path, scratch_url(source.url))


def test_retention_checks_the_history_window(source, tmp_path):
    results = retention_check(source, {"market.bars_1d": 3 * 365, "market.bars_1h": 30, "market.bars_5m": 30},
                              NOW)
    by_table = {r.table: r for r in results}
    assert by_table["market.bars_1d"].passed, by_table["market.bars_1d"].description
    assert by_table["market.bars_1d"].metadata["earliest"] == "2019-01-01T00:00:00"
    assert not by_table["market.bars_1h"].passed and "empty" in by_table["market.bars_1h"].description
    assert not by_table["market.bars_5m"].passed and "does not exist" in by_table["market.bars_5m"].description
    longer = retention_check(source, {"market.bars_1d": 10 * 365}, NOW)[0]
    assert not longer.passed and "2019-01-01" in longer.description
    stale = retention_check(source, {"market.bars_1d": 365}, NOW + timedelta(days=800))[0]
    assert not stale.passed and "before the window starts" in stale.description
    # a whole year missing inside the window
    source.query("DELETE FROM market.bars_1d WHERE ts >= '2020-01-01' AND ts < '2021-01-01'")
    gap = retention_check(source, {"market.bars_1d": 3 * 365}, NOW)[0]
    assert not gap.passed and gap.metadata["missing_years"] == [2020]
    # the same check on the embedded store
    duck = DuckDBStore(tmp_path / "emp.duckdb")
    duck.upsert_bars("bars_1d", bars("A", datetime(2019, 1, 1), 1461), source="test", run_id="r1")
    assert [r.passed for r in retention_check(duck, {"market.bars_1d": 3 * 365, "market.bars_1h": 30}, NOW)] == [
        True, False]
