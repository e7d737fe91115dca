"""Drift checks (WARN): each sensory table's latest month against its reference window."""

import time
from collections.abc import Iterator

import dagster as dg

from emp_core.sensory.calibration import DriftLimits, drift
from emp_core.sensory.pipeline import OUTPUTS
from emp_dagster.defs.market_data.resources import StoreResource
from emp_dagster.defs.sensory.assets import CALIBRATION_KEY, KEYS
from emp_dagster.edge import check_result, config_from, settings_of

_DESCRIPTION = ("PSI and Kolmogorov-Smirnov D of the latest month's scores against the 36 months before, "
                "and the share of bars over the calibrated alert threshold. Warns; does not block.")


DriftConfig = config_from(DriftLimits, "DriftConfig", "Limits of the drift checks (emp_core's DriftLimits).")


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec("drift", asset=KEYS[name], additional_deps=[CALIBRATION_KEY], description=_DESCRIPTION)
           for name in OUTPUTS],
)
def sensory_drift(config: DriftConfig, store: StoreResource) -> Iterator[dg.AssetCheckResult]:
    limits = settings_of(config, DriftLimits)
    s = store.store()
    for name in OUTPUTS:
        t0 = time.perf_counter()
        outcome = drift(s, name, limits)
        yield check_result(outcome, severity=dg.AssetCheckSeverity.WARN, asset_key=KEYS[name],
                           seconds=time.perf_counter() - t0)
