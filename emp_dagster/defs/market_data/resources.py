from pathlib import Path

import dagster as dg

from emp_core.config import settings
from emp_core.market_data.sources import ShippedSource
from emp_core.store import DuckDBStore


class EmbeddedStoreResource(dg.ConfigurableResource):
    """The embedded DuckDB store; ``path`` defaults to ``$EMP_HOME/emp.duckdb``."""

    path: str = ""

    def store(self) -> DuckDBStore:
        return DuckDBStore(self.path or settings().duckdb_path)


class ShippedDataResource(dg.ConfigurableResource):
    """The real data under ``data/`` (or ``$EMP_DATA_DIR``)."""

    data_dir: str = ""

    def directory(self) -> Path:
        return Path(self.data_dir) if self.data_dir else settings().data_dir

    def source(self) -> ShippedSource:
        return ShippedSource(self.directory())


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"store": EmbeddedStoreResource(), "market_data": ShippedDataResource()})
