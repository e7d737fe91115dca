"""Every environment variable the platform reads, read here and nowhere else.

| variable | default | meaning |
|---|---|---|
| ``EMP_HOME`` | ``./.emp`` | root of the embedded tier: DuckDB file, Dagster storage |
| ``EMP_TIER`` | ``embedded`` | ``embedded`` or ``institutional`` |
| ``EMP_DATA_DIR`` | ``<repo>/data`` | the shipped real data (Parquet) |
| ``DAGSTER_HOME`` | ``$EMP_HOME/dagster`` | Dagster instance directory |
| ``EMP_PG_URL`` | ``postgresql://127.0.0.1:5432/emp`` | the institutional store (PostgreSQL) |
| ``EMP_DAGSTER_PG_URL`` | ``<EMP_PG_URL's db>_dagster`` | Dagster's storage (institutional; SQLAlchemy URL) |
| ``EMP_REDIS_URL`` | ``redis://127.0.0.1:6379/0`` | the institutional tier's hot cache and streams; ``off``: no cache |
| ``EMP_SPARK_MASTER`` | ``local[2]`` | the Spark master URL for the Spark paths (evolution fitness, sensory) |
| ``EMP_OUTBOX_SYNC`` | ``full`` | the embedded outbox's SQLite ``synchronous``: ``full`` or ``normal`` |
| ``EMP_PARENT_PID`` | unset | ``emp venue``/``executor``/``dropcopy`` stop when this process dies |
| ``EMP_REQUIRE_SERVICES`` | unset | ``1``: tests that need PostgreSQL, Redis or Java fail instead of skipping |

Set here for child processes: ``PYSPARK_PYTHON`` (Spark's Python workers run this interpreter, so
they import the same packages; PySpark reads only the variable).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emp_core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
TIERS = ("embedded", "institutional")
DEFAULT_PG_URL = "postgresql://127.0.0.1:5432/emp"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Settings:
    home: Path
    tier: str
    data_dir: Path
    dagster_home: Path
    require_services: bool = False
    pg_url: str = DEFAULT_PG_URL
    redis_url: str | None = DEFAULT_REDIS_URL  # None: no cache
    dagster_pg_url: str | None = None  # None: derived from pg_url
    spark_master: str = "local[2]"
    outbox_sync: str = "full"  # the embedded outbox's SQLite synchronous: full or normal
    parent_pid: int | None = None  # stop the long-running command when this process dies

    @property
    def duckdb_path(self) -> Path:
        return self.home / "emp.duckdb"


def settings(env: dict[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default: the process environment)."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("EMP_HOME") or ".emp").expanduser().resolve()
    tier = env.get("EMP_TIER", "embedded").strip().lower()
    if tier not in TIERS:
        raise ConfigError(f"EMP_TIER={tier!r} is not a tier; choose one of {', '.join(TIERS)}")
    data_dir = Path(env.get("EMP_DATA_DIR") or REPO_ROOT / "data").expanduser().resolve()
    dagster_home = Path(env.get("DAGSTER_HOME") or home / "dagster").expanduser().resolve()
    require = env.get("EMP_REQUIRE_SERVICES", "").strip().lower() in ("1", "true", "yes")
    pg_url = env.get("EMP_PG_URL", "").strip() or DEFAULT_PG_URL
    redis_url = env.get("EMP_REDIS_URL", "").strip() or DEFAULT_REDIS_URL
    spark_master = env.get("EMP_SPARK_MASTER", "").strip() or "local[2]"
    outbox_sync = env.get("EMP_OUTBOX_SYNC", "").strip().lower() or "full"
    if outbox_sync not in ("normal", "full"):
        raise ConfigError(f"EMP_OUTBOX_SYNC={outbox_sync!r}: choose normal or full")
    parent = env.get("EMP_PARENT_PID", "").strip()
    return Settings(parent_pid=int(parent) if parent.isdigit() else None,
                    home=home, tier=tier, data_dir=data_dir, dagster_home=dagster_home, require_services=require,
                    outbox_sync=outbox_sync, pg_url=pg_url, redis_url=None if redis_url.lower() == "off" else redis_url,
                    spark_master=spark_master, dagster_pg_url=env.get("EMP_DAGSTER_PG_URL", "").strip() or None)


def child_environment() -> dict[str, str]:
    """A copy of this process's environment for a child process (pg_dump, psql) to extend."""
    return dict(os.environ)


def python_for_spark_workers(executable: str) -> None:
    """Point Spark's Python workers at ``executable`` unless the user already chose one."""
    os.environ.setdefault("PYSPARK_PYTHON", executable)
