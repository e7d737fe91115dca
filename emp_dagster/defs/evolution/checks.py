"""The champion's readiness gate: a separate step, so it runs only when a champion was materialised."""

import dagster as dg

from emp_core.evolution.run import verify_champion
from emp_dagster.defs.evolution.assets import KEYS, PROMOTED_BY_GATES
from emp_dagster.defs.market_data.assets import check_result
from emp_dagster.defs.market_data.resources import EmbeddedStoreResource


@dg.asset_check(asset=KEYS["champion"], name=PROMOTED_BY_GATES, blocking=True,
                additional_deps=[KEYS["decision"]],
                description="The stored champion is named by a stored decision whose figures meet its "
                            "thresholds: what trades a champion may rely on it.")
def promoted_by_gates(store: EmbeddedStoreResource) -> dg.AssetCheckResult:
    return check_result(verify_champion(store.store()))
