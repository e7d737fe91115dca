"""The champion's readiness gate: a separate step, so it runs only when a champion was materialised."""

from dataclasses import replace

import dagster as dg

from emp_core.evolution.promotion import DEFAULT_GATES, Gates
from emp_core.evolution.run import verify_champion
from emp_dagster.defs.evolution.assets import KEYS, PROMOTED_BY_GATES
from emp_dagster.defs.market_data.resources import StoreResource
from emp_dagster.edge import check_result, config_from, settings_of

ChampionFloor = config_from(Gates, "ChampionFloor", "The platform's floor for a tradable champion (the default "
                            "gates); lower it only for research.", only=("min_dsr", "min_oos_psr", "max_pbo"))


@dg.asset_check(asset=KEYS["champion"], name=PROMOTED_BY_GATES, blocking=True,
                additional_deps=[KEYS["decision"]],
                description="The stored champion is named by a stored decision that promoted it, its figures meet "
                            "the platform's gates (even when the run's own were loosened), and no later decision "
                            "on the dataset refused: what trades a champion may rely on it.")
def promoted_by_gates(config: ChampionFloor, store: StoreResource) -> dg.AssetCheckResult:
    floor = settings_of(config, Gates)
    outcome = verify_champion(store.store(), floor)
    lowered = (floor.min_dsr < DEFAULT_GATES.min_dsr or floor.min_oos_psr < DEFAULT_GATES.min_oos_psr
               or floor.max_pbo > DEFAULT_GATES.max_pbo)
    # The floor in force is shown with the result, and a floor lowered below the platform's gates says so.
    return check_result(replace(
        outcome,
        description=("FLOOR LOWERED BELOW THE PLATFORM'S GATES (research only): " if lowered else "")
        + outcome.description,
        metadata={**outcome.metadata, "floor_min_dsr": floor.min_dsr, "floor_min_oos_psr": floor.min_oos_psr,
                  "floor_max_pbo": floor.max_pbo, "floor_lowered": lowered}))
