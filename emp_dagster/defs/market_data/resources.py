from pathlib import Path

import dagster as dg

from emp_core.config import settings
from emp_core.errors import EmpError
from emp_core.market_data.sources import ShippedSource, YahooSource
from emp_core.store import open_store


def store_kind() -> str:
    """The UI's kind tag of the tier's store (the asset keys name the tables, not the database they live in)."""
    return "postgres" if settings().tier == "institutional" else "duckdb"


class StoreResource(dg.ConfigurableResource):
    """The tier's store, the one place the tier is decided: ``EMP_TIER`` (or ``tier``) ``embedded`` gives the DuckDB
    file (``path``, default ``$EMP_HOME/emp.duckdb``), ``institutional`` the PostgreSQL database (``url``, default
    ``EMP_PG_URL``). Every asset reads and writes through the same interface on either."""

    tier: str = ""
    path: str = ""
    url: str = ""

    def store(self):
        return open_store(tier=self.tier or None, path=self.path or None, url=self.url or None)


class MarketDataResource(dg.ConfigurableResource):
    """Where the bars assets read bars: ``source`` ``shipped`` (the real data under ``data/``, or
    ``$EMP_DATA_DIR``) or ``yahoo`` (Yahoo Finance's chart API for ``symbols``, at the dataset's interval; needs
    the internet). The macro tables always come from the shipped files in ``data_dir``. Files dropped into the
    landing folder are read by the landing sensor's runs whatever this says."""

    source_name: str = "shipped"
    data_dir: str = ""
    symbols: list[str] | None = None

    def directory(self) -> Path:
        return Path(self.data_dir) if self.data_dir else settings().data_dir

    def source(self, dataset_name: str = "bars_1d"):
        if self.source_name == "shipped":
            return ShippedSource(self.directory())
        if self.source_name == "yahoo":
            from emp_core.market_data.ingest import DATASETS

            if not self.symbols:
                raise EmpError("market_data: the yahoo source needs symbols (resource config `symbols`)")
            return YahooSource(symbols_default=tuple(self.symbols), interval=DATASETS[dataset_name].interval)
        raise EmpError(f"market_data: unknown source {self.source_name!r}; choose shipped or yahoo")


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"store": StoreResource(), "market_data": MarketDataResource()})
