import dagster as dg

from emp_dagster.defs.evolution.assets import KEYS

evolution_job = dg.define_asset_job("evolution_weekly", selection=dg.AssetSelection.assets(*KEYS.values()),
                                    description="Walk-forward evolution over the stored history; the decision "
                                                "every run, a champion when the gates promote one.")
