"""Stores, one repository interface on both tiers: the embedded DuckDB store and the institutional PostgreSQL
store (:mod:`emp_core.store.postgres_store`, schema applied by :mod:`emp_core.store.migrations`, also
`emp db migrate`). :func:`open_store` picks the tier's store from the settings (``EMP_TIER``), the one place
the tier is decided."""

from __future__ import annotations

from emp_core.store.duckdb_store import BAR_TABLES, DuckDBStore, StoreLockedError


def open_store(cfg=None, *, tier: str | None = None, path=None, url: str | None = None, failover: bool = True,
               cache: bool = True):
    """The store of ``tier`` (default: the configured ``EMP_TIER``): DuckDB at ``path`` (default
    ``$EMP_HOME/emp.duckdb``), or PostgreSQL at ``url`` (default ``EMP_PG_URL``), which fails over to
    ``$EMP_HOME/failover.duckdb`` while the server is unreachable (:mod:`emp_core.store.failover`), its bar and
    feature reads cached in Redis at ``EMP_REDIS_URL`` (:mod:`emp_core.store.cache`; a Redis that is down is
    bypassed)."""
    from emp_core.config import settings

    cfg = cfg or settings()
    if (tier or cfg.tier) == "institutional":
        from emp_core.store.failover import FailoverStore
        from emp_core.store.postgres_store import PostgresStore

        primary = PostgresStore(url or cfg.pg_url)
        store = FailoverStore(primary, DuckDBStore(cfg.home / "failover.duckdb")) if failover else primary
        if cache and cfg.redis_url:
            from emp_core.store.cache import CachedStore, HotCache

            store = CachedStore(store, HotCache(cfg.redis_url, namespace=cache_namespace(primary.url)))
        return store
    return DuckDBStore(path or cfg.duckdb_path)


def cache_namespace(url: str) -> str:
    """One cache namespace per database: ``emp.<host>.<port>.<dbname>`` (letters, digits, '.', '_', '-')."""
    import re

    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(url)
    raw = f"emp.{parts.get('host', 'local')}.{parts.get('port', '5432')}.{parts.get('dbname', '')}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)


__all__ = ["BAR_TABLES", "DuckDBStore", "StoreLockedError", "cache_namespace", "open_store"]
