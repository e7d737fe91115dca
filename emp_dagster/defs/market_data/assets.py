import time
from pathlib import Path

import dagster as dg
import polars as pl

from emp_core.clock import utcnow
from emp_core.config import settings
from emp_core.market_data.ingest import DATASETS
from emp_core.market_data.landing import ingest_landing_file
from emp_core.market_data.macro import TableLoad, load_macro_series, load_treasury_curve
from emp_core.market_data.pipeline import ingest_window
from emp_core.market_data.quality import BAR_CHECKS, CHECK_DESCRIPTIONS
from emp_core.market_data.universe import build_universe
from emp_dagster.defs.market_data.partitions import BAR_BACKFILL, BAR_PARTITIONS, partitions_of
from emp_dagster.defs.market_data.resources import MarketDataResource, StoreResource, store_kind
from emp_dagster.edge import check_result, store_metadata

GROUP = "market_data"
BAR_KEYS = {name: dg.AssetKey(["market", name]) for name in DATASETS}
UNIVERSE_KEY = dg.AssetKey(["market", "universe"])
MACRO_KEY = dg.AssetKey(["macro", "series"])
CURVE_KEY = dg.AssetKey(["macro", "treasury_curve"])
MACRO_CHECKS = {
    MACRO_KEY: ("unique_series_period", "point_in_time", "values_finite"),
    CURVE_KEY: ("unique_dates", "yields_in_range", "core_tenors_present"),
}


class BarsConfig(dg.Config):
    symbols: list[str] | None = None
    max_gap_ratio: float | None = None
    max_lag_bars: int | None = None
    landing_file: str | None = None  # set by the landing sensor: ingest this file (its span) instead of the source


def _bars_asset(name: str) -> dg.AssetsDefinition:
    spec = DATASETS[name]
    key = BAR_KEYS[name]

    @dg.asset(
        key=key, group_name=GROUP, kinds={store_kind(), "polars"},
        partitions_def=BAR_PARTITIONS, backfill_policy=BAR_BACKFILL,
        description=f"{spec.interval} OHLCV bars on the {spec.calendar} calendar, validated; "
                    "rejected rows go to market.quarantine, one journal row per year.",
        check_specs=[dg.AssetCheckSpec(c, asset=key, blocking=True, description=CHECK_DESCRIPTIONS[c])
                     for c in BAR_CHECKS],
    )
    def bars(context: dg.AssetExecutionContext, config: BarsConfig, store: StoreResource,
             market_data: MarketDataResource) -> dg.MaterializeResult:
        partitions = partitions_of(context.partition_keys)
        limits = {"max_gap_ratio": config.max_gap_ratio, "max_lag_bars": config.max_lag_bars}
        db = store.store()
        if config.landing_file:
            result = ingest_landing_file(db, Path(config.landing_file), name, partitions, run_id=context.run_id,
                                         **limits)
        else:
            result = ingest_window(db, market_data.source(name), name, partitions, run_id=context.run_id,
                                   symbols=config.symbols, **limits)
        r = result.report
        mirrored = _mirror(db, name, context.run_id) if DATASETS[name].interval != "1d" else {}
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": r.rows_stored, "rows_in": r.rows_in, "rows_quarantined": r.rows_quarantined,
                "quarantine_reasons": dg.MetadataValue.json(r.reasons),
                "window": f"[{partitions[0].start:%Y-%m-%d}, {partitions[-1].end:%Y-%m-%d})",
                "partitions": len(partitions), "seconds": round(r.seconds, 3),
                "check_seconds": round(result.check_seconds, 3),
                "setup_seconds": round(result.setup_seconds, 3),
                "journal": dg.MetadataValue.md(_journal_preview(r.journal)),
                **store_metadata(db), **mirrored,
            },
            check_results=[check_result(c) for c in result.checks],
        )

    return bars


def _mirror(db, name: str, run_id: str) -> dict:
    """In the institutional tier, publish the intraday bars this run stored to their Redis stream (consumers
    elsewhere apply them). Redis down does not fail the ingest: the bars are stored, and `emp stream replay`
    publishes them later; the metadata says which happened."""
    cfg = settings()
    if cfg.tier != "institutional" or not cfg.redis_url:
        return {}
    from emp_core.store.streams import connect, mirror_run, stream_name

    try:
        published = mirror_run(db, connect(cfg.redis_url, timeout=2.0, read_timeout=5.0), name, run_id)
    except Exception as exc:  # any Redis failure: reported, never fatal to a stored ingest
        return {"stream": f"not mirrored ({type(exc).__name__}: {exc}); run `emp stream replay` later"}
    return {"stream": stream_name(name), "stream_published": published}


def _journal_preview(journal: pl.DataFrame, rows: int = 12) -> str:
    cols = ["partition_key", "rows_in", "rows_stored", "rows_quarantined", "latest_ts", "freshness_lag_bars", "status"]
    active = journal.filter(pl.col("rows_in") > 0).select(cols)
    body = active.tail(rows).to_pandas().to_markdown(index=False)
    return f"{active.height} of {journal.height} partitions had rows; the last {min(rows, active.height)}:\n\n{body}"


bars_1d = _bars_asset("bars_1d")
bars_1h = _bars_asset("bars_1h")


def _table_result(load: TableLoad) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"dagster/row_count": load.rows_stored, "rows_quarantined": load.rows_quarantined,
                  "table": load.table, "seconds": round(load.seconds, 3)},
        check_results=[check_result(c) for c in load.checks],
    )


def _table_asset(key: dg.AssetKey, loader, description: str) -> dg.AssetsDefinition:
    """An unpartitioned table loaded from the shipped data by an emp_core loader, checked in the same step."""

    @dg.asset(
        key=key, group_name=GROUP, kinds={store_kind(), "polars"}, description=description,
        check_specs=[dg.AssetCheckSpec(c, asset=key, blocking=True) for c in MACRO_CHECKS[key]],
    )
    def table(context: dg.AssetExecutionContext, store: StoreResource,
              market_data: MarketDataResource) -> dg.MaterializeResult:
        return _table_result(loader(store.store(), market_data.directory(), context.run_id, utcnow()))

    return table


macro_series = _table_asset(
    MACRO_KEY, load_macro_series,
    "US macro series (long format) with the date each value became public (available_at).")
treasury_curve = _table_asset(
    CURVE_KEY, load_treasury_curve, "US Treasury par yield curve, daily, 11 tenors in decimals.")


@dg.asset(
    key=UNIVERSE_KEY, group_name=GROUP, kinds={store_kind()}, deps=list(BAR_KEYS.values()),
    description="One row per (dataset, symbol): span, bar count, quarantined rows, last run.",
    automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed(),
)
def universe(store: StoreResource) -> dg.MaterializeResult:
    t0 = time.perf_counter()
    s = store.store()
    frame = build_universe(s)
    s.replace_table("market.universe", frame)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": frame.height, "seconds": round(time.perf_counter() - t0, 3),
        "preview": dg.MetadataValue.md(frame.head(20).to_pandas().to_markdown(index=False)),
    })

