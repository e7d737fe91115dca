"""Backups of the institutional store, restore drills, content parity between two databases, retention checks.

- :func:`backup` writes ``pg_dump --format=custom`` of the EMP schemas (:data:`EMP_SCHEMAS`, ``-n`` each) to
  ``<directory>/emp-<dbname>-<UTC stamp>.dump`` and a manifest ``emp-<dbname>-<UTC stamp>.json`` beside it
  (per table and per partition: rows, content checksum, column fingerprint; the dump's size and SHA-256).
  The dump is written to a hidden temporary name and renamed only once pg_dump succeeded and the manifest is
  in place, so a crashed dump never looks like a backup (complete = a file with the final ``.dump`` name).
  Rotation then keeps the newest ``keep`` complete backups of that database and never the one just written.
- **Consistency**: one REPEATABLE READ, READ ONLY transaction exports its snapshot (``pg_export_snapshot()``);
  pg_dump runs with ``--snapshot`` on it, and the manifest's counts and checksums are computed afterwards in
  that same transaction, so the dump and the manifest describe the same instant however busy the server is.
  The checksums run after pg_dump, not beside it: during the dump the exporting transaction holds no table
  lock, so a DDL statement waiting for pg_dump cannot also wait for it (no undetectable lock cycle).
  pg_dump gets ``--lock-wait-timeout`` so it fails, rather than hangs, behind a long lock.
- :func:`parity` compares two databases' EMP schemas: per table (partitions rolled up into their table) and
  per leaf partition, the row count and an order-independent checksum computed in SQL: the sum, as numeric,
  of the first 64 bits of ``md5(row::text)`` of every row (one scan per table, grouped by ``tableoid``), plus
  a fingerprint of the columns (names, types, NOT NULL). Row text is made independent of the session
  (TimeZone UTC, ISO dates, ``extra_float_digits`` 1). A table or partition on one side only differs.
- :func:`restore` loads a dump into an empty database (created when missing) with
  ``pg_restore --no-owner --exit-on-error --single-transaction``, after checking the dump's SHA-256 against
  its manifest; :func:`restore_drill` backs up, restores into a fresh ``emp_restore_<hex>`` database on the
  same server, compares it (by default with the manifest, i.e. the source at the dump's snapshot, so writes
  that land after the backup are not reported as restore faults) and always drops the scratch database.
- :func:`retention_check` holds each bar table to its configured history window (works on either store).

Passwords never reach a command line or a message: the child gets ``PGPASSWORD`` in its environment and the
connection string it sees has no password; messages go through ``_safe`` and mask the password's text.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from emp_core.config import child_environment
from emp_core.errors import EmpError
from emp_core.store.migrations import _safe, ensure_database

EMP_SCHEMAS = ("market", "macro", "sensory", "evolution", "trading", "audit", "compliance", "ops")
MANIFEST_FORMAT = 1
_STAMP = "%Y%m%dT%H%M%S.%fZ"
_BACKUP_NAME = re.compile(r"^emp-(?P<db>[A-Za-z0-9_.-]+)-(?P<stamp>\d{8}T\d{6}\.\d{6}Z)\.dump$")
_TEMP_NAME = re.compile(r"^\.emp-.*\.tmp$")
_SCRATCH_PREFIX = "emp_restore_"
# row text that does not depend on the session's settings
_SESSION = ("SET LOCAL TimeZone = 'UTC'", "SET LOCAL DateStyle = 'ISO, YMD'", "SET LOCAL IntervalStyle = 'postgres'",
            "SET LOCAL extra_float_digits = 1", "SET LOCAL bytea_output = 'hex'")
_ROW_HASH = "coalesce(sum(('x' || substr(md5(_emp_row::text), 1, 16))::bit(64)::bigint), 0)::text"


# -- connection strings ----------------------------------------------------------------------------------------


def _normal(url: str) -> str:
    """``url`` as libpq reads it (a SQLAlchemy driver suffix such as ``+psycopg`` removed)."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url.strip())


def _params(url: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = {k: str(v) for k, v in conninfo_to_dict(_normal(url)).items() if v is not None}
    except Exception as exc:
        raise EmpError(f"{_safe(url)}: not a PostgreSQL connection string: {exc}") from None
    if not params.get("dbname"):
        raise EmpError(f"{_safe(url)}: the connection string names no database")
    return params


def _mask(text: str, url: str) -> str:
    """``text`` without the password of ``url`` (in a URL, a ``password=`` pair, or verbatim)."""
    password = _params_quiet(url).get("password")
    text = _safe(text)
    return text.replace(password, "***") if password else text


def _params_quiet(url: str) -> dict[str, str]:
    try:
        return _params(url)
    except EmpError:
        return {}


def _with_db(url: str, dbname: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(_normal(url), dbname=dbname)


def _child(url: str) -> tuple[str, dict[str, str]]:
    """The connection string a pg_* child gets (no password) and its environment (``PGPASSWORD`` if any)."""
    from psycopg.conninfo import make_conninfo

    params = _params(url)
    password = params.pop("password", None)
    env = child_environment()
    if password is not None:
        env["PGPASSWORD"] = password
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    return make_conninfo("", **params), env


def _connect(url: str, **kwargs):
    import psycopg

    from emp_core.store.postgres_store import StoreUnavailableError

    try:
        return psycopg.connect(_normal(url), connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        raise StoreUnavailableError(
            f"{_safe(url)}: cannot connect to PostgreSQL: {_mask(str(exc).strip(), url)}") from None


def _tool(name: str, bin_dir: str | Path | None, url: str) -> str:
    found = shutil.which(name, path=str(bin_dir)) if bin_dir else shutil.which(name)
    if found is None:
        where = f"in {bin_dir}" if bin_dir else "on PATH"
        raise EmpError(f"{name} not found {where}: install the PostgreSQL client tools matching the server "
                       f"(Debian: postgresql-client-<major>) to back up or restore {_safe(url)}")
    return found


def _run(argv: list[str], env: dict[str, str], url: str, what: str) -> None:
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = _mask(proc.stderr.strip() or f"exit status {proc.returncode}", url)
        if "server version mismatch" in detail:
            detail += f" (use the client tools of the server's major version: bin_dir=, not {argv[0]})"
        raise EmpError(f"{what} failed: {detail}")


# -- checksums and parity ----------------------------------------------------------------------------------------


def _snapshot_sums(cur, schemas: Iterable[str] = EMP_SCHEMAS) -> dict:
    """Rows, checksum and column fingerprint of every table (partitions rolled up) and every leaf partition of
    ``schemas``, as the cursor's transaction sees them."""
    from psycopg import sql

    for statement in _SESSION:
        cur.execute(statement)
    cur.execute("""SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 2, 3""",
                (list(schemas),))
    tables: dict[str, dict] = {}
    partitions: dict[str, dict] = {}
    for oid, schema, name, kind in cur.fetchall():
        table = f"{schema}.{name}"
        cur.execute("""SELECT md5(coalesce(string_agg(quote_ident(attname) || ' ' || format_type(atttypid, atttypmod)
            || CASE WHEN attnotnull THEN ' not null' ELSE '' END, ', ' ORDER BY attnum), ''))
            FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped""", (oid,))
        columns = cur.fetchone()[0]
        leaves: dict[int, str] = {}
        if kind == "p":
            cur.execute("""SELECT p.relid::oid, n.nspname || '.' || c.relname FROM pg_partition_tree(%s::regclass) p
                JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE p.isleaf ORDER BY 2""", (oid,))
            leaves = dict(cur.fetchall())
        only = sql.SQL("" if kind == "p" else "ONLY ")
        cur.execute(sql.SQL("SELECT _emp_row.tableoid::oid, count(*), {h} FROM {only}{t} AS _emp_row GROUP BY 1")
                    .format(h=sql.SQL(_ROW_HASH), only=only, t=sql.Identifier(schema, name)))
        found = {part: (rows, int(checksum)) for part, rows, checksum in cur.fetchall()}
        tables[table] = {"rows": sum(r for r, _ in found.values()),
                         "checksum": str(sum(c for _, c in found.values())), "columns": columns}
        for part_oid, part in leaves.items():
            rows, checksum = found.get(part_oid, (0, 0))
            partitions[part] = {"table": table, "rows": rows, "checksum": str(checksum)}
    return {"tables": tables, "partitions": partitions}


def checksums(url: str, schemas: Iterable[str] = EMP_SCHEMAS) -> dict:
    """:func:`_snapshot_sums` of the database of ``url``, in one REPEATABLE READ transaction."""
    import psycopg

    with _connect(url) as con:
        con.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        con.read_only = True
        with con.cursor() as cur:
            return _snapshot_sums(cur, schemas)


@dataclass(frozen=True)
class ParityEntry:
    name: str  # schema.table, or schema.partition
    kind: str  # "table" or "partition"
    a: dict | None  # {"rows", "checksum", ("columns" | "table")}; None: absent on that side
    b: dict | None

    @property
    def equal(self) -> bool:
        return self.a is not None and self.b is not None and all(
            self.a.get(k) == self.b.get(k) for k in ("rows", "checksum", "columns"))

    @property
    def reason(self) -> str:
        if self.a is None or self.b is None:
            return "only in " + ("b" if self.a is None else "a")
        parts = []
        if self.a.get("columns") != self.b.get("columns"):
            parts.append("columns differ")
        if self.a["rows"] != self.b["rows"]:
            parts.append(f"rows {self.a['rows']} vs {self.b['rows']}")
        if self.a["checksum"] != self.b["checksum"]:
            parts.append("content checksum differs")
        return ", ".join(parts) or "equal"


@dataclass(frozen=True)
class ParityReport:
    a: str  # what was compared (passwords masked)
    b: str
    entries: list[ParityEntry] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(e.equal for e in self.entries)

    @property
    def equal(self) -> list[str]:
        return [e.name for e in self.entries if e.equal]

    @property
    def differing(self) -> list[str]:
        return [e.name for e in self.entries if not e.equal]

    @property
    def differing_tables(self) -> list[str]:
        return [e.name for e in self.entries if e.kind == "table" and not e.equal]

    @property
    def differing_partitions(self) -> list[str]:
        return [e.name for e in self.entries if e.kind == "partition" and not e.equal]

    def describe(self) -> str:
        n_tables = sum(e.kind == "table" for e in self.entries)
        n_parts = len(self.entries) - n_tables
        if self.ok:
            return f"{self.a} and {self.b}: {n_tables} tables and {n_parts} partitions equal"
        wrong = "; ".join(f"{e.name}: {e.reason}" for e in self.entries if not e.equal)
        return f"{self.a} and {self.b} differ: {wrong}"

    def as_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "ok": self.ok, "equal": self.equal, "seconds": round(self.seconds, 3),
                "differing": {e.name: e.reason for e in self.entries if not e.equal},
                "tables": {e.name: {"a": e.a, "b": e.b} for e in self.entries if e.kind == "table"}}


def compare(sums_a: Mapping, sums_b: Mapping, *, a: str = "a", b: str = "b", seconds: float = 0.0) -> ParityReport:
    """The :class:`ParityReport` of two :func:`checksums` results (or a manifest's)."""
    entries = []
    for kind, key in (("table", "tables"), ("partition", "partitions")):
        left, right = sums_a.get(key, {}), sums_b.get(key, {})
        entries += [ParityEntry(name, kind, left.get(name), right.get(name)) for name in sorted({*left, *right})]
    return ParityReport(a, b, entries, seconds)


def parity(url_a: str, url_b: str, schemas: Iterable[str] = EMP_SCHEMAS) -> ParityReport:
    """Row counts and content checksums of every table and partition of ``schemas`` in two databases."""
    t0 = time.perf_counter()
    schemas = tuple(schemas)
    sums_a, sums_b = checksums(url_a, schemas), checksums(url_b, schemas)
    return compare(sums_a, sums_b, a=_safe(url_a), b=_safe(url_b), seconds=time.perf_counter() - t0)


# -- backups ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupInfo:
    path: Path  # the .dump
    manifest_path: Path
    dbname: str
    created_at: datetime  # UTC, from the name
    age_seconds: float
    manifest: dict | None  # None when missing or unreadable

    def as_dict(self) -> dict:
        return {"path": str(self.path), "manifest": str(self.manifest_path), "dbname": self.dbname,
                "created_at": self.created_at.isoformat(), "age_seconds": round(self.age_seconds, 1)}


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest_path: Path
    manifest: dict
    bytes: int
    seconds: float
    kept: list[Path]  # complete backups of this database left after rotation, newest first
    deleted: list[Path]  # files rotation removed (old dumps, their manifests, stale temporary files)

    def as_dict(self) -> dict:
        return {"path": str(self.path), "manifest": str(self.manifest_path), "bytes": self.bytes,
                "seconds": round(self.seconds, 3), "kept": [str(p) for p in self.kept],
                "deleted": [str(p) for p in self.deleted], "database": self.manifest["database"],
                "tables": {t: v["rows"] for t, v in self.manifest["tables"].items()}}


def _utc(now: datetime | None) -> datetime:
    """``now`` (default: the clock) as an aware UTC datetime; a naive one is taken as UTC."""
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _file_name(dbname: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", dbname)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_backups(directory: str | Path, *, dbname: str | None = None, now: datetime | None = None) -> list[BackupInfo]:
    """The complete backups in ``directory`` (of ``dbname`` only, if given), oldest first. A temporary file of a
    dump in progress or crashed is not a backup."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    now = _utc(now)
    found = []
    for path in directory.iterdir():
        match = _BACKUP_NAME.match(path.name)
        if not match or not path.is_file() or (dbname is not None and match["db"] != _file_name(dbname)):
            continue
        created = datetime.strptime(match["stamp"], _STAMP).replace(tzinfo=UTC)
        manifest_path = path.with_suffix(".json")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = None
        found.append(BackupInfo(path, manifest_path, match["db"], created, (now - created).total_seconds(),
                                manifest))
    return sorted(found, key=lambda b: (b.created_at, b.path.name))


def latest_backup(directory: str | Path, *, dbname: str | None = None, now: datetime | None = None
                  ) -> BackupInfo | None:
    """The newest complete backup in ``directory`` (for a backup-age check), or None when there is none."""
    backups = list_backups(directory, dbname=dbname, now=now)
    return backups[-1] if backups else None


def rotate(directory: str | Path, dbname: str, keep: int, *, protect: Path | None = None,
           now: datetime | None = None, stale_temp_seconds: float = 86400.0) -> tuple[list[Path], list[Path]]:
    """Keep the newest ``keep`` complete backups of ``dbname`` (always ``protect``), delete older ones with their
    manifests, and temporary files and orphaned manifests untouched for ``stale_temp_seconds``. Returns
    (kept newest first, deleted)."""
    if keep < 1:
        raise EmpError(f"keep={keep}: a rotation keeps at least one backup")
    directory = Path(directory)
    backups = list_backups(directory, dbname=dbname, now=now)
    newest = sorted(backups, key=lambda b: (b.path != protect, -b.created_at.timestamp(), b.path.name))
    kept, old = newest[:keep], newest[keep:]
    deleted: list[Path] = []
    for b in old:
        for path in (b.path, b.manifest_path):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise EmpError(f"{path}: cannot delete an old backup: {exc.strerror}") from None
            deleted.append(path)
    cutoff = time.time() - stale_temp_seconds
    prefix = f".emp-{_file_name(dbname)}-"
    for path in directory.iterdir():
        orphan = (path.suffix == ".json" and path.name.startswith(f"emp-{_file_name(dbname)}-")
                  and not path.with_suffix(".dump").exists())
        temp = path.name.startswith(prefix) and _TEMP_NAME.match(path.name)
        if (orphan or temp) and path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            deleted.append(path)
    return [b.path for b in sorted(kept, key=lambda b: b.created_at, reverse=True)], deleted


def backup(url: str, directory: str | Path, *, keep: int = 7, now: datetime | None = None,
           bin_dir: str | Path | None = None, lock_wait_timeout: float = 60.0,
           stale_temp_seconds: float = 86400.0) -> BackupResult:
    """pg_dump of the EMP schemas of ``url`` to ``directory`` with its manifest, then rotation (module docstring).
    ``bin_dir``: where pg_dump is (default: PATH). ``now``: the time in the file name (default: the clock)."""
    import psycopg

    t0 = time.perf_counter()
    if keep < 1:
        raise EmpError(f"keep={keep}: a rotation keeps at least one backup")
    pg_dump = _tool("pg_dump", bin_dir, url)
    dbname = _params(url)["dbname"]
    now = _utc(now)
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmpError(f"{directory}: cannot create the backup directory: {exc.strerror or exc}") from None
    stem = f"emp-{_file_name(dbname)}-{now.strftime(_STAMP)}"
    final, manifest_path = directory / f"{stem}.dump", directory / f"{stem}.json"
    if final.exists():
        raise EmpError(f"{final}: a backup of this name already exists")
    token = uuid.uuid4().hex[:8]
    temp, manifest_temp = directory / f".{stem}.dump.{token}.tmp", directory / f".{stem}.json.{token}.tmp"
    try:
        facts = _dump_in_snapshot(url, pg_dump, temp, lock_wait_timeout)
        _fsync(temp)
        size = temp.stat().st_size
        manifest = {"format": MANIFEST_FORMAT, "database": _safe(url), "dbname": dbname,
                    "created_at": now.isoformat(), "schemas": list(EMP_SCHEMAS), "dump": final.name, "bytes": size,
                    "sha256": _sha256(temp), "pg_dump_version": _version(pg_dump), **facts}
        manifest_temp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        _fsync(manifest_temp)
        os.replace(manifest_temp, manifest_path)
        os.replace(temp, final)
        _fsync(directory)
    except OSError as exc:
        raise EmpError(f"backup of {_safe(url)} to {directory}: cannot write {exc.filename or directory}: "
                       f"{exc.strerror or exc}") from None
    except psycopg.Error as exc:
        raise EmpError(f"backup of {_safe(url)}: {_mask(str(exc).strip(), url)}") from None
    finally:
        for path in (temp, manifest_temp):
            path.unlink(missing_ok=True)
    kept, deleted = rotate(directory, dbname, keep, protect=final, now=now, stale_temp_seconds=stale_temp_seconds)
    return BackupResult(final, manifest_path, manifest, size, time.perf_counter() - t0, kept, deleted)


def _dump_in_snapshot(url: str, pg_dump: str, target: Path, lock_wait_timeout: float) -> dict:
    """pg_dump of the EMP schemas to ``target`` in a snapshot exported by a REPEATABLE READ transaction, then the
    checksums of every table in that same transaction: the manifest's facts (module docstring)."""
    import psycopg

    conninfo, env = _child(url)
    with _connect(url) as con:
        con.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        con.read_only = True
        with con.cursor() as cur:
            cur.execute("SELECT pg_export_snapshot(), current_setting('server_version'), now()")
            snapshot, server_version, snapshot_at = cur.fetchone()
            t1 = time.perf_counter()
            argv = [pg_dump, "--format=custom", f"--snapshot={snapshot}", "--no-password",
                    f"--lock-wait-timeout={int(lock_wait_timeout * 1000)}", f"--file={target}",
                    *[f"--schema={s}" for s in EMP_SCHEMAS], f"--dbname={conninfo}"]
            _run(argv, env, url, f"pg_dump of {_safe(url)} to {target}")
            t2 = time.perf_counter()
            sums = _snapshot_sums(cur)
            t3 = time.perf_counter()
    return {"snapshot_at": snapshot_at.astimezone(UTC).isoformat(), "server_version": server_version,
            "consistency": "pg_dump --snapshot of the REPEATABLE READ transaction that computed the checksums",
            "checksum": "sum of the first 64 bits of md5(row::text), as numeric",
            "dump_seconds": round(t2 - t1, 3), "checksum_seconds": round(t3 - t2, 3), **sums}


def _version(tool: str) -> str:
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.strip()


# -- restore -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreResult:
    database: str  # password masked
    dump: Path
    created_database: bool
    seconds: float


def restore(dump_path: str | Path, url: str, *, bin_dir: str | Path | None = None,
            verify: bool = True) -> RestoreResult:
    """Load ``dump_path`` into the database of ``url`` (created when missing; it must hold none of the EMP
    schemas) with ``pg_restore --no-owner --exit-on-error --single-transaction``: all of it or nothing. With
    ``verify``, a dump whose manifest records a SHA-256 must match it."""
    t0 = time.perf_counter()
    dump_path = Path(dump_path)
    pg_restore = _tool("pg_restore", bin_dir, url)
    if not dump_path.is_file():
        raise EmpError(f"{dump_path}: no such backup file")
    manifest_path = dump_path.with_suffix(".json")
    if verify and manifest_path.is_file():
        try:
            expected = json.loads(manifest_path.read_text(encoding="utf-8")).get("sha256")
        except (OSError, ValueError) as exc:
            raise EmpError(f"{manifest_path}: unreadable manifest: {exc}") from None
        if expected and _sha256(dump_path) != expected:
            raise EmpError(f"{dump_path}: its SHA-256 differs from the one in {manifest_path.name}: the file is "
                           "damaged; restore another backup")
    created = ensure_database(_normal(url))
    with _connect(url) as con:
        present = [s for (s,) in con.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) ORDER BY 1",
                                             (list(EMP_SCHEMAS),)).fetchall()]
    if present:
        raise EmpError(f"{_safe(url)} is not empty (it has the schemas {', '.join(present)}): restore into an "
                       "empty database")
    conninfo, env = _child(url)
    _run([pg_restore, "--no-owner", "--exit-on-error", "--single-transaction", "--no-password",
          f"--dbname={conninfo}", str(dump_path)], env, url, f"pg_restore of {dump_path} into {_safe(url)}")
    return RestoreResult(_safe(url), dump_path, created, time.perf_counter() - t0)


def drop_scratch(url: str) -> None:
    """Drop the scratch database of ``url`` (only an ``emp_restore_*`` one), closing its sessions."""
    from psycopg import sql

    name = _params(url)["dbname"]
    if not name.startswith(_SCRATCH_PREFIX):
        raise EmpError(f"{_safe(url)}: not a scratch database ({_SCRATCH_PREFIX}*); refusing to drop it")
    with _connect(_with_db(url, "postgres"), autocommit=True) as con:
        con.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def restore_drill(url: str, directory: str | Path, *, keep: int = 7, against: str = "snapshot",
                  bin_dir: str | Path | None = None, now: datetime | None = None) -> ParityReport:
    """Back up ``url`` into ``directory`` (rotated as :func:`backup`), restore the dump into a fresh
    ``emp_restore_<hex>`` database on the same server, compare, drop the scratch database, return the report.
    ``against="snapshot"`` compares with the manifest (the source at the dump's snapshot: writes after the backup
    are not restore faults); ``"source"`` with the source database as it is now."""
    if against not in ("snapshot", "source"):
        raise EmpError(f"against={against!r}: choose 'snapshot' or 'source'")
    result = backup(url, directory, keep=keep, bin_dir=bin_dir, now=now)
    scratch = _with_db(url, f"{_SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}")
    try:
        restore(result.path, scratch, bin_dir=bin_dir)
        t0 = time.perf_counter()
        if against == "source":
            return parity(url, scratch)
        return compare(result.manifest, checksums(scratch), a=f"{result.path.name} (snapshot of {_safe(url)})",
                       b=_safe(scratch), seconds=time.perf_counter() - t0)
    finally:
        drop_scratch(scratch)


# -- retention -----------------------------------------------------------------------------------------------------


class RetentionResult(NamedTuple):
    table: str
    passed: bool
    description: str
    metadata: dict


def retention_check(store, window_days_by_table: Mapping[str, int], now: datetime | None = None, *,
                    tolerance_days: int = 7, ts_column: str = "ts") -> list[RetentionResult]:
    """Whether each table holds its configured history window, on either store: rows in it, the earliest
    ``ts`` at or before ``now - window`` (``tolerance_days`` later allowed: the window may start on a day
    without a session), the latest inside the window, and no calendar year from the window's start to the latest
    row's year (exclusive) without a row in its part of the window. A missing or empty table fails (no data is
    no pass). ``now``: naive UTC or aware (default: the clock)."""
    from emp_core.store.duckdb_store import check_ident

    if not re.fullmatch(r"[A-Za-z_]\w*", ts_column):
        raise EmpError(f"ts_column={ts_column!r} is not a column name")
    now_naive = _utc(now).replace(tzinfo=None)
    existing = set(store.tables())
    out = []
    for table, days in window_days_by_table.items():
        check_ident(table)
        start = now_naive - timedelta(days=days)
        meta: dict = {"window_days": days, "window_start": start.isoformat(), "now": now_naive.isoformat()}
        if table not in existing:
            out.append(RetentionResult(table, False, f"{table} does not exist: no history to hold", meta))
            continue
        years = store.query(f"SELECT CAST(EXTRACT(YEAR FROM {ts_column}) AS INTEGER) AS y, count(*) AS n, "
                            f"min({ts_column}) AS lo, max({ts_column}) AS hi FROM {table} GROUP BY 1 ORDER BY 1")
        rows = int(years["n"].sum()) if years.height else 0
        meta["rows"] = rows
        if not rows:
            out.append(RetentionResult(table, False, f"{table} is empty: no data is no pass", meta))
            continue
        earliest, latest = years["lo"].min(), years["hi"].max()
        last_of = dict(zip(years["y"].to_list(), years["hi"].to_list(), strict=True))
        missing = []  # a year before the latest row's whose part inside the window has no row
        for y in range(start.year, latest.year):
            begin = max(start, datetime(y, 1, 1))
            if datetime(y + 1, 1, 1) - begin > timedelta(days=tolerance_days) and not (
                    y in last_of and last_of[y] >= begin):
                missing.append(y)
        meta |= {"earliest": earliest.isoformat(), "latest": latest.isoformat(), "missing_years": missing,
                 "history_days": (latest - earliest).days}
        problems = []
        if earliest > start + timedelta(days=tolerance_days):
            problems.append(f"starts {earliest:%Y-%m-%d}, {(earliest - start).days} days after the window's start "
                            f"{start:%Y-%m-%d}")
        if latest < start:
            problems.append(f"ends {latest:%Y-%m-%d}, before the window starts ({start:%Y-%m-%d})")
        if missing:
            problems.append(f"no rows in {', '.join(map(str, missing))}")
        if problems:
            out.append(RetentionResult(table, False, f"{table} does not cover its {days}-day window: "
                                       + "; ".join(problems), meta))
        else:
            out.append(RetentionResult(table, True, f"{table} covers its {days}-day window ({earliest:%Y-%m-%d} "
                                       f"to {latest:%Y-%m-%d}, {rows} rows)", meta))
    return out


__all__ = ["EMP_SCHEMAS", "BackupInfo", "BackupResult", "ParityEntry", "ParityReport", "RestoreResult",
           "RetentionResult", "backup", "checksums", "compare", "drop_scratch", "latest_backup", "list_backups",
           "parity", "restore", "restore_drill", "retention_check", "rotate"]
