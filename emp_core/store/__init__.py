"""Stores: the embedded DuckDB store (institutional PostgreSQL arrives with its own issue)."""

from emp_core.store.duckdb_store import BAR_TABLES, DuckDBStore, StoreLockedError

__all__ = ["BAR_TABLES", "DuckDBStore", "StoreLockedError"]
