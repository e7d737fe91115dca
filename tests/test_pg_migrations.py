"""``emp db migrate`` against the real PostgreSQL server on loopback, each test in a private database."""

import json
import threading

import psycopg
import pytest

from emp_core.cli import main
from emp_core.errors import EmpError
from emp_core.store.migrations import applied_versions, discover, migrate


def relkinds(url: str, schema: str) -> dict[str, str]:
    with psycopg.connect(url) as con:
        rows = con.execute("SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                           "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')", (schema,)).fetchall()
    return dict(rows)


def test_the_shipped_migrations_apply_once_and_record_their_versions(pg_url):
    shipped = [m.version for m in discover()]
    first = migrate(pg_url)
    assert first.applied == shipped and first.already == [] and not first.created_database
    assert relkinds(pg_url, "market")["bars_1d"] == "p"  # range-partitioned by time
    assert {"series", "treasury_curve"} <= set(relkinds(pg_url, "macro"))
    second = migrate(pg_url)
    assert second.applied == [] and second.already == shipped
    assert applied_versions(pg_url) == shipped
    with psycopg.connect(pg_url) as con:
        recorded = con.execute("SELECT version, name, sha256 FROM ops.schema_migrations ORDER BY 1").fetchall()
    assert recorded == [(m.version, m.name, m.sha256) for m in discover()]


def write(directory, name, sql):
    (directory / name).write_text(sql)


def test_a_failing_migration_leaves_nothing_of_itself_and_keeps_the_earlier_ones(pg_url, tmp_path):
    write(tmp_path, "001_first.sql", "CREATE TABLE one (x int);")
    write(tmp_path, "002_broken.sql", "CREATE TABLE two (x int);\nCREATE TABLE three (x no_such_type);")
    with pytest.raises(EmpError, match=r"002_broken\.sql: migration 2 failed, nothing of it was applied"):
        migrate(pg_url, tmp_path)
    assert applied_versions(pg_url) == [1]
    assert set(relkinds(pg_url, "public")) == {"one"}  # two, created before the error, was rolled back
    write(tmp_path, "002_broken.sql", "CREATE TABLE two (x int);")  # mended before it was ever applied
    assert migrate(pg_url, tmp_path).applied == [2]


def test_a_migration_changed_after_it_was_applied_is_refused_by_name(pg_url, tmp_path):
    write(tmp_path, "001_first.sql", "CREATE TABLE one (x int);")
    migrate(pg_url, tmp_path)
    write(tmp_path, "001_first.sql", "CREATE TABLE one (x bigint);")
    write(tmp_path, "002_second.sql", "CREATE TABLE two (x int);")
    with pytest.raises(EmpError, match=r"001_first\.sql: changed after it was applied as version 1"):
        migrate(pg_url, tmp_path)
    assert applied_versions(pg_url) == [1]  # nothing after it either


@pytest.mark.parametrize(("files", "message"), [
    (["1_short.sql"], r"1_short\.sql: a migration is named NNN_name\.sql"),
    (["001_Upper.sql"], r"001_Upper\.sql: a migration is named NNN_name\.sql"),
    (["001_a.sql", "0001_b.sql"], r"version 1 is also"),
])
def test_misnamed_or_repeated_versions_are_refused_before_touching_the_database(tmp_path, files, message):
    for name in files:
        write(tmp_path, name, "SELECT 1;")
    with pytest.raises(EmpError, match=message):
        discover(tmp_path)


def test_a_missing_database_is_created(pg_url):
    missing = pg_url + "_new"
    try:
        report = migrate(missing)
        assert report.created_database and report.applied == [m.version for m in discover()]
    finally:
        with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{missing.rsplit("/", 1)[1]}" WITH (FORCE)')


def test_two_migrators_at_once_apply_each_version_once(pg_url, tmp_path):
    # a slow first migration: the second migrator waits on the advisory lock, then finds it applied
    write(tmp_path, "001_slow.sql", "SELECT pg_sleep(0.5); CREATE TABLE one (x int);")
    write(tmp_path, "002_next.sql", "CREATE TABLE two (x int);")
    reports, errors = [], []

    def run():
        try:
            reports.append(migrate(pg_url, tmp_path))
        except Exception as exc:  # a duplicate apply would fail on the table or the record's key
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(v for r in reports for v in r.applied) == [1, 2]
    assert applied_versions(pg_url) == [1, 2]


def test_an_unreachable_server_is_a_clear_error_without_the_password(capsys):
    code = main(["db", "migrate", "--url", "postgresql://emp:s3cret@127.0.0.1:1/emp"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("emp db migrate: error: ") and "cannot connect to PostgreSQL" in err
    assert "s3cret" not in err


def test_emp_db_migrate_json(pg_url, capsys):
    assert main(["db", "migrate", "--url", pg_url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["applied"] == [m.version for m in discover()] and out["already_applied"] == []
    assert main(["db", "migrate", "--url", pg_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["applied"] == []



# DuckDB type -> the PostgreSQL type the institutional DDL uses for it
PG_TYPE = {"VARCHAR": "text", "TIMESTAMP": "timestamp without time zone", "DOUBLE": "double precision",
           "BIGINT": "bigint", "DATE": "date"}
# deliberate differences: the quarantined row's raw values are JSON text in DuckDB, jsonb in PostgreSQL
DIFFERENT = {("market.quarantine", "raw"): ("VARCHAR", "jsonb")}


def test_the_two_stores_declare_the_same_market_and_macro_tables(pg_url, tmp_path):
    """Column for column (name, order, nullability, type): a table or column added to one store's schema and
    not the other's fails here."""
    from emp_core.store import DuckDBStore

    duck = DuckDBStore(tmp_path / "emp.duckdb")
    layout = ("SELECT table_schema || '.' || table_name, column_name, data_type, is_nullable "
              "FROM information_schema.columns WHERE table_schema IN ('market', 'macro') "
              "ORDER BY 1, ordinal_position")
    embedded = duck.query(layout).rows()
    migrate(pg_url)
    with psycopg.connect(pg_url) as con:
        institutional = con.execute(layout).fetchall()
    assert len(embedded) > 40
    want = [(table, column, DIFFERENT.get((table, column), (kind, PG_TYPE[kind]))[1], nullable)
            for table, column, kind, nullable in embedded]
    assert institutional == want
