"""The champion's readiness gate: a separate step, so it runs only when a champion was materialised."""

import dagster as dg

from emp_core.evolution.promotion import DEFAULT_GATES, Gates
from emp_core.evolution.run import verify_champion
from emp_dagster.defs.evolution.assets import KEYS, PROMOTED_BY_GATES
from emp_dagster.defs.market_data.assets import check_result
from emp_dagster.defs.market_data.resources import EmbeddedStoreResource


class ChampionFloor(dg.Config):
    """The platform's floor for a tradable champion (the default gates); lower it only for research."""

    min_dsr: float = DEFAULT_GATES.min_dsr
    min_oos_psr: float = DEFAULT_GATES.min_oos_psr
    max_pbo: float = DEFAULT_GATES.max_pbo


@dg.asset_check(asset=KEYS["champion"], name=PROMOTED_BY_GATES, blocking=True,
                additional_deps=[KEYS["decision"]],
                description="The stored champion is named by a stored decision that promoted it, its figures meet "
                            "the platform's gates (even when the run's own were loosened), and no later decision "
                            "on the dataset refused: what trades a champion may rely on it.")
def promoted_by_gates(config: ChampionFloor, store: EmbeddedStoreResource) -> dg.AssetCheckResult:
    floor = Gates(min_dsr=config.min_dsr, min_oos_psr=config.min_oos_psr, max_pbo=config.max_pbo)
    return check_result(verify_champion(store.store(), floor))
