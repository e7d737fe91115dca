"""EMP Predator domain library. Pure Python + Polars/DuckDB; never imports dagster."""

__version__ = "0.1.0"
