"""Stores: the embedded DuckDB store; the institutional PostgreSQL store is being built (issue 11): its
versioned schema is applied by :mod:`emp_core.store.migrations` (`emp db migrate`)."""

from emp_core.store.duckdb_store import BAR_TABLES, DuckDBStore, StoreLockedError

__all__ = ["BAR_TABLES", "DuckDBStore", "StoreLockedError"]
