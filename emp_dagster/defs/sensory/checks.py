"""Drift checks (WARN): each sensory table's latest month against its reference window."""

from collections.abc import Iterator

import dagster as dg

from emp_core.sensory.calibration import DriftLimits, drift
from emp_core.sensory.pipeline import OUTPUTS
from emp_dagster.defs.market_data.resources import EmbeddedStoreResource
from emp_dagster.defs.sensory.assets import CALIBRATION_KEY, KEYS

_DESCRIPTION = ("PSI and Kolmogorov-Smirnov D of the latest month's scores against the 36 months before, "
                "and the share of bars over the calibrated alert threshold. Warns; does not block.")


class DriftConfig(dg.Config):
    psi: float = DriftLimits.psi
    ks: float = DriftLimits.ks
    alert_rate: float = DriftLimits.alert_rate


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec("drift", asset=KEYS[name], additional_deps=[CALIBRATION_KEY], description=_DESCRIPTION)
           for name in OUTPUTS],
)
def sensory_drift(config: DriftConfig, store: EmbeddedStoreResource) -> Iterator[dg.AssetCheckResult]:
    limits = DriftLimits(psi=config.psi, ks=config.ks, alert_rate=config.alert_rate)
    s = store.store()
    for name in OUTPUTS:
        outcome = drift(s, name, limits)
        yield dg.AssetCheckResult(
            asset_key=KEYS[name], check_name="drift", passed=outcome.passed, severity=dg.AssetCheckSeverity.WARN,
            description=outcome.description,
            metadata={k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v
                      for k, v in outcome.metadata.items()},
        )
