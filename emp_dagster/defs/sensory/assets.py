"""The sensory cortex as assets: one per dimension plus the fused signal, and the calibration table."""

import time
from typing import Any

import dagster as dg

from emp_core.errors import EmpError
from emp_core.sensory import anomaly, fusion, how, what, when, why
from emp_core.sensory.calibration import calibrate
from emp_core.sensory.pipeline import OUTPUTS, materialise_window
from emp_core.sensory.spark import spark_compute
from emp_dagster.defs.market_data.assets import BAR_KEYS, CURVE_KEY, MACRO_KEY
from emp_dagster.defs.market_data.partitions import BAR_BACKFILL, BAR_PARTITIONS, partitions_of
from emp_dagster.defs.market_data.resources import StoreResource, store_kind
from emp_dagster.edge import store_metadata

GROUP = "sensory"
KEYS = {name: dg.AssetKey(["sensory", name]) for name in OUTPUTS}
CALIBRATION_KEY = dg.AssetKey(["sensory", "calibration"])
_BARS = list(BAR_KEYS.values())
DEPS = {
    "why": [*_BARS, MACRO_KEY, CURVE_KEY],
    "how": _BARS,
    "what": _BARS,
    "when": [*_BARS, MACRO_KEY],
    "anomaly": [*_BARS, KEYS["why"], KEYS["how"], KEYS["what"], KEYS["when"]],
    "fused": [KEYS[d] for d in fusion.DIMENSIONS],
}
_DOCS = {"why": why, "how": how, "what": what, "when": when, "anomaly": anomaly, "fused": fusion}
_RECOMPUTE = ("Each run reads the stored history up to the end of its window and writes the window's rows "
              "(delete, insert), so a partition holds exactly what a computation on the full history gives.")


def _description(name: str) -> str:
    return f"{_DOCS[name].__doc__.strip()}\n\n{_RECOMPUTE}"


class SensoryConfig(dg.Config):
    """Fusion weights per dimension (the evolution engine supplies its own); unset: the documented defaults
    (emp_core.sensory.DEFAULT_WEIGHTS)."""

    weights: dict[str, float] | None = None
    compute: str = "in_process"  # or "spark": symbol groups on the pyspark resource's executors, identical results


@dg.multi_asset(
    name="sensory_cortex",
    specs=[dg.AssetSpec(KEYS[name], deps=DEPS[name], group_name=GROUP, kinds={store_kind(), "polars"},
                        description=_description(name),
                        automation_condition=dg.AutomationCondition.eager()
                        & dg.AutomationCondition.all_deps_blocking_checks_passed())
           for name in OUTPUTS],
    partitions_def=BAR_PARTITIONS, backfill_policy=BAR_BACKFILL,
)
def sensory_cortex(context: dg.AssetExecutionContext, config: SensoryConfig, store: StoreResource,
                   pyspark: dg.ResourceParam[Any]):
    if config.compute not in ("in_process", "spark"):
        raise EmpError(f"sensory compute {config.compute!r}: choose in_process or spark")
    partitions = partitions_of(context.partition_keys)
    db = store.store()
    compute = spark_compute(pyspark.spark_session) if config.compute == "spark" else None
    windows = materialise_window(db, partitions[0].start, partitions[-1].end, run_id=context.run_id,
                                 weights=config.weights, compute=compute)
    for name in OUTPUTS:
        per_dataset = {w.dataset: w.summaries[name] for w in windows}
        metadata = {
            "dagster/row_count": sum(s.rows for s in per_dataset.values()),
            "defined_share": dg.MetadataValue.json({d: round(s.defined, 4) for d, s in per_dataset.items()}),
            "mean_score": dg.MetadataValue.json({d: s.mean_score for d, s in per_dataset.items()}),
            "mean_confidence": dg.MetadataValue.json({d: s.mean_confidence for d, s in per_dataset.items()}),
            "table": f"sensory.{name}",
        }
        if name == "anomaly":
            metadata["flagged_bars"] = dg.MetadataValue.json({d: s.flagged for d, s in per_dataset.items()})
        if name == "fused":
            metadata["weights"] = dg.MetadataValue.json(fusion.check_weights(config.weights))
            metadata["seconds"] = round(sum(w.seconds for w in windows), 3)
            metadata.update(store_metadata(db))
        yield dg.MaterializeResult(asset_key=KEYS[name], metadata=metadata)


@dg.asset(
    key=CALIBRATION_KEY, group_name=GROUP, kinds={store_kind()}, deps=list(KEYS.values()),
    description="Warn / alert thresholds per dimension, dataset and symbol (and pooled, symbol '*'): the 95% "
                "and 99% quantiles of |score| over the 36 months before the latest month. The drift checks "
                "read them.",
    automation_condition=dg.AutomationCondition.eager(),
)
def calibration(store: StoreResource) -> dg.MaterializeResult:
    t0 = time.perf_counter()
    frame = calibrate(store.store())
    pooled = frame.filter(frame["symbol"] == "*") if frame.height else frame
    return dg.MaterializeResult(metadata={
        "dagster/row_count": frame.height, "seconds": round(time.perf_counter() - t0, 3),
        "pooled": dg.MetadataValue.md(pooled.to_pandas().to_markdown(index=False) if pooled.height else "empty"),
    })
