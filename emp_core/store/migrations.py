"""Versioned DDL of the institutional store (PostgreSQL), applied in order and recorded.

The migrations are the files ``sql/postgres/NNN_name.sql`` (``NNN``: the version, digits, unique).
:func:`migrate` applies every version not yet recorded in ``ops.schema_migrations``, in version order,
each in its own transaction with its record, so a migration that fails leaves nothing of itself behind
and the versions before it stay applied. It is idempotent: a second call applies nothing. A file
changed after it was applied is refused by name (its SHA-256 is recorded): the change belongs in a new
version. Two migrators at once are serialised by a transaction-level advisory lock, and each re-reads
the record under it, so a version is never applied twice.

The database in the URL is created first when it does not exist (from the server's ``postgres``
maintenance database), so ``emp db migrate`` is the one step a fresh server needs.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from emp_core.config import REPO_ROOT
from emp_core.errors import EmpError

MIGRATIONS_DIR = REPO_ROOT / "sql" / "postgres"
_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x454D505F4D4947  # "EMP_MIG": the advisory lock every migrator takes
_RECORD_DDL = """
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    seconds double precision NOT NULL
);
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sha256: str

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class MigrationReport:
    database: str
    created_database: bool
    applied: list[int] = field(default_factory=list)  # versions applied by this call, in order
    already: list[int] = field(default_factory=list)  # versions found applied before it
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"database": self.database, "created_database": self.created_database, "applied": self.applied,
                "already_applied": self.already, "seconds": round(self.seconds, 3)}


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``directory``, by version; a misnamed ``.sql`` file or a repeated version is refused."""
    if not directory.is_dir():
        raise EmpError(f"{directory}: migrations directory not found")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise EmpError(f"{path}: a migration is named NNN_name.sql (digits, then lower-case words)")
        version = int(match.group(1))
        if version in found:
            raise EmpError(f"{path}: version {version} is also {found[version].path.name}")
        found[version] = Migration(version, match.group(2), path, hashlib.sha256(path.read_bytes()).hexdigest())
    return [found[v] for v in sorted(found)]


def _connect(url: str, **kwargs):
    import psycopg

    try:
        return psycopg.connect(url, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        raise EmpError(f"{_safe(url)}: cannot connect to PostgreSQL: {str(exc).strip()}") from exc


def _safe(url: str) -> str:
    """The connection string without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", re.sub(r"password=\S+", "password=***", url))


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if the server lacks it; True when it was created."""
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(url)
    name = parts.get("dbname")
    if not name:
        raise EmpError(f"{_safe(url)}: the connection string names no database")
    maintenance = make_conninfo(url, dbname="postgres")
    with _connect(maintenance, autocommit=True) as con:
        if con.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        try:
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except Exception as exc:  # another migrator created it first
            if con.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return False
            raise EmpError(f"{_safe(url)}: cannot create database {name!r}: {str(exc).strip()}") from exc
    return True


def migrate(url: str, directory: Path = MIGRATIONS_DIR) -> MigrationReport:
    """Apply the migrations of ``directory`` not yet recorded in the database of ``url`` (module docstring)."""
    t0 = time.perf_counter()
    migrations = discover(directory)
    created = ensure_database(url)
    applied: list[int] = []
    with _connect(url, autocommit=True) as con:  # every transaction below is explicit
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            con.execute(_RECORD_DDL)
            recorded = _recorded(con)
        already = sorted(recorded)
        for m in migrations:
            if m.version in recorded:
                if recorded[m.version] != m.sha256:
                    raise EmpError(f"{m.path}: changed after it was applied as version {m.version} (its SHA-256 "
                                   "differs from the one recorded); put the change in a new migration")
                continue
            try:
                with con.transaction():
                    con.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                    if m.version in _recorded(con):  # applied by another migrator while this one waited
                        continue
                    t1 = time.perf_counter()
                    con.execute(m.sql())
                    con.execute("INSERT INTO ops.schema_migrations (version, name, sha256, seconds) "
                                "VALUES (%s, %s, %s, %s)", (m.version, m.name, m.sha256, time.perf_counter() - t1))
            except EmpError:
                raise
            except Exception as exc:
                raise EmpError(f"{m.path}: migration {m.version} failed, nothing of it was applied: "
                               f"{str(exc).strip()}") from exc
            applied.append(m.version)
    database = _safe(url)
    return MigrationReport(database, created, applied, already, time.perf_counter() - t0)


def _recorded(con) -> dict[int, str]:
    return dict(con.execute("SELECT version, sha256 FROM ops.schema_migrations").fetchall())


def applied_versions(url: str) -> list[int]:
    """The versions recorded in the database of ``url`` (empty before the first migration)."""
    with _connect(url) as con:
        exists = con.execute("SELECT to_regclass('ops.schema_migrations')").fetchone()[0]
        return sorted(_recorded(con)) if exists else []
