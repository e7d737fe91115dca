"""All five dimensions and the fused signal for a frame of bars, in one pass of Polars expressions.

``compute_features(bars, macro)`` is the one entry point used by the Dagster
assets, the ``emp features`` command and the benchmark. Dimensions are computed
as stages: every dimension's first-stage expressions run in one ``with_columns``
(Polars evaluates them in parallel), then the second stage, and so on; ANOMALY's
multivariate part and the fusion run last because they read the other scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from itertools import zip_longest

import polars as pl

from emp_core.errors import EmpError
from emp_core.sensory import anomaly, how, what, when, why
from emp_core.sensory.base import POS, RET, Context, window_columns
from emp_core.sensory.fusion import DIMENSIONS, check_weights, fuse
from emp_core.sensory.why import MacroInputs

REQUIRED = ("symbol", "ts", "open", "high", "low", "close", "volume")
ENGINE = "in-memory"
OPTIONAL_NUMERIC = ("bid", "ask", "bid_size", "ask_size")


class FeatureInputError(EmpError):
    """Bars that cannot be turned into features (missing columns, wrong types, duplicate bars)."""


def dimension_columns(intraday: bool) -> dict[str, tuple[str, ...]]:
    """Output columns of each dimension: score, confidence, then its raw components."""
    comps = {
        "why": why.COMPONENTS, "how": how.COMPONENTS, "what": what.COMPONENTS,
        "when": when.components(intraday),
        "anomaly": (*anomaly.COMPONENTS, "anomaly_flag", "anomaly_explanation"),
    }
    return {d: (f"{d}_score", f"{d}_confidence", *comps[d]) for d in DIMENSIONS}


def is_intraday(bars: pl.DataFrame) -> bool:
    """True when the typical spacing of a symbol's bars is under one day (``bars`` sorted by symbol, ts)."""
    same = pl.col("symbol") == pl.col("symbol").shift()
    gaps = bars.select(pl.when(same).then(pl.col("ts").diff()).median()).item()
    return gaps is not None and gaps < timedelta(days=1)


def prepare(bars: pl.DataFrame, name: str = "bars") -> pl.DataFrame:
    """Bars typed, sorted by (symbol, ts), with unusable values as null and the per-symbol position and return."""
    missing = [c for c in REQUIRED if c not in bars.columns]
    if missing:
        raise FeatureInputError(f"{name}: missing column(s) {', '.join(missing)}; found {', '.join(bars.columns)}")
    if not isinstance(bars.schema["ts"], pl.Datetime):
        raise FeatureInputError(f"{name}: column ts must be a datetime, not {bars.schema['ts']}")
    numeric = [c for c in (*REQUIRED[2:], *OPTIONAL_NUMERIC) if c in bars.columns]
    ts = pl.col("ts")
    if bars.schema["ts"].time_zone is not None:  # zone-aware: the same instant in naive UTC, like the store
        ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    try:
        frame = bars.select(
            pl.col("symbol").cast(pl.String), ts.cast(pl.Datetime("us")),
            *[pl.col(c).cast(pl.Float64) for c in numeric],
        )
    except pl.exceptions.PolarsError as exc:
        raise FeatureInputError(f"{name}: a price or volume column is not numeric ({str(exc).splitlines()[0]})") \
            from None
    if frame.select(pl.col("symbol").is_null().any() | pl.col("ts").is_null().any()).item():
        raise FeatureInputError(f"{name}: symbol and ts must not be empty")
    if not _sorted(frame):
        frame = frame.sort("symbol", "ts")
    dupes = frame.filter((pl.col("symbol") == pl.col("symbol").shift()) & (pl.col("ts") == pl.col("ts").shift()))
    if dupes.height:
        first = dupes.row(0, named=True)
        raise FeatureInputError(f"{name}: {dupes.height} duplicate bar(s), e.g. {first['symbol']} at {first['ts']}; "
                                "validate the bars first (emp ingest quarantines duplicates)")
    prices = [c for c in numeric if c not in ("volume", "bid_size", "ask_size")]
    sizes = [c for c in numeric if c in ("volume", "bid_size", "ask_size")]
    return frame.with_columns(
        *[pl.when(pl.col(c).is_finite() & (pl.col(c) > 0)).then(pl.col(c)).alias(c) for c in prices],
        *[pl.when(pl.col(c).is_finite() & (pl.col(c) >= 0)).then(pl.col(c)).alias(c) for c in sizes],
        pl.int_range(pl.len(), dtype=pl.Int32).over("symbol").alias(POS),
    ).with_columns(
        pl.when(pl.col(POS) >= 1).then((pl.col("close") / pl.col("close").shift(1)).log()).alias(RET),
    )


def _run_stages(lf: pl.LazyFrame, stages: list[list[pl.Expr]], windows: dict[str, pl.Expr]) -> pl.LazyFrame:
    """Apply the stages in order, each preceded by the window columns it reads that do not exist yet."""
    done: set[str] = set()

    def missing(exprs: list[pl.Expr]) -> list[str]:
        names = {r for e in exprs for r in e.meta.root_names()}
        return sorted(n for n in names if n in windows and n not in done)

    for exprs in stages:
        pre: list[list[str]] = []
        need = missing(exprs)
        while need:  # a window may read another window: compute the innermost first
            pre.insert(0, need)
            done.update(need)
            need = missing([windows[n] for n in need])
        for names in pre:
            lf = lf.with_columns(windows[n] for n in names)
        lf = lf.with_columns(exprs)
    return lf


def _complete(frame: pl.DataFrame) -> bool:
    """Every price and volume present and positive (``prepare`` has nulled the rest)."""
    values = [c for c in REQUIRED[2:] if c in frame.columns]
    return not frame.select(pl.any_horizontal([pl.col(c).is_null() | (pl.col(c) == 0) for c in values]).any()).item()


def _sorted(frame: pl.DataFrame) -> bool:
    out_of_order = (pl.col("symbol") < pl.col("symbol").shift()) | (
        (pl.col("symbol") == pl.col("symbol").shift()) & (pl.col("ts") < pl.col("ts").shift()))
    return not frame.select(out_of_order.any()).item()


def compute_features(
    bars: pl.DataFrame,
    macro: MacroInputs | None = None,
    *,
    weights: Mapping[str, float] | None = None,
    intraday: bool | None = None,
    calendar: str | None = None,
    name: str = "bars",
) -> pl.DataFrame:
    """Every dimension's score, confidence and components plus the fused ``signal`` for each bar.

    Point in time: the row of bar t depends only on bars <= t of its symbol and
    on macro values public before t's date. ``intraday`` is inferred from the
    bar spacing when not given. ``calendar`` (see :mod:`emp_core.calendars`) gives
    the trading days the turn of the month is counted in; ``None``: Monday to Friday.
    """
    weights = check_weights(weights)
    frame = prepare(bars, name)
    if intraday is None:
        intraday = is_intraday(frame)
    ctx = Context(frozenset(frame.columns), intraday, _complete(frame))
    # One contiguous chunk per column, and the in-memory engine: the streaming engine
    # (Polars' default) hands back columns in many chunks, which every later
    # window expression would pay to realign.
    dates = frame.lazy().select(pl.col("ts").unique()).sort("ts")
    dates = when.per_date(why.per_date(dates, macro), macro, calendar, intraday=intraday)
    lf = frame.lazy().join(dates, on="ts", how="left", maintain_order="left").collect(engine=ENGINE).rechunk().lazy()
    with window_columns() as windows:
        staged = [m.stages(ctx) for m in (how, what, why, when, anomaly)]
        stages = [[e for exprs in stage for e in exprs] for stage in zip_longest(*staged, fillvalue=[])]
        stages += [*anomaly.finishing_stages(), fuse(weights)]
    columns = ["symbol", "ts", "signal", "signal_confidence",
               *(c for cols in dimension_columns(intraday).values() for c in cols)]
    computed = [c for c in columns if c != "anomaly_explanation"]  # added by explain(), on flagged bars only
    out = anomaly.explain(_run_stages(lf, stages, windows).select(computed).collect(engine=ENGINE))
    return out.select(columns)
