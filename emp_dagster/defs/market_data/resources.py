from pathlib import Path

import dagster as dg

from emp_core.config import settings
from emp_core.market_data.sources import ShippedSource
from emp_core.store import open_store


class StoreResource(dg.ConfigurableResource):
    """The tier's store, the one place the tier is decided: ``EMP_TIER`` (or ``tier``) ``embedded`` gives the DuckDB
    file (``path``, default ``$EMP_HOME/emp.duckdb``), ``institutional`` the PostgreSQL database (``url``, default
    ``EMP_PG_URL``). Every asset reads and writes through the same interface on either."""

    tier: str = ""
    path: str = ""
    url: str = ""

    def store(self):
        return open_store(tier=self.tier or None, path=self.path or None, url=self.url or None)


class ShippedDataResource(dg.ConfigurableResource):
    """The real data under ``data/`` (or ``$EMP_DATA_DIR``)."""

    data_dir: str = ""

    def directory(self) -> Path:
        return Path(self.data_dir) if self.data_dir else settings().data_dir

    def source(self) -> ShippedSource:
        return ShippedSource(self.directory())


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"store": StoreResource(), "market_data": ShippedDataResource()})
