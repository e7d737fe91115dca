"""The whole graph as jobs: ``emp_demo`` (everything, one run over a range of years) and the three stages
``emp demo`` runs in order, so that Dagster does not plan the unpartitioned assets once per partition (in
one run over a range it plans every asset once per partition of the range: with the monthly partitions of
before, 12 unpartitioned assets were 2,880 of 4,800 planning events).

1. ``emp_demo_sources``: the unpartitioned tables the partitioned assets read (macro series, Treasury curve);
2. ``emp_demo_history``: bars and sensory features over the range of years, without the drift checks;
3. ``emp_demo_research``: the universe, calibration, evolution, and the drift checks, which read the
   calibration this stage builds.

The platform group (backup, failover catch-up, health) is operations, not the research graph: it runs on its
own jobs and schedules (emp_dagster/defs/platform), never in the demo. The trading group runs on its own jobs
(emp_dagster/defs/trading): ``emp demo`` then runs a short paper session with the venue and the executor as
processes (``emp_core.trading.session``).
"""

import dagster as dg

from emp_dagster.defs.compliance.assets import REPORT_KEYS
from emp_dagster.defs.market_data.assets import BAR_KEYS, CURVE_KEY, MACRO_KEY
from emp_dagster.defs.market_data.partitions import BAR_PARTITIONS
from emp_dagster.defs.sensory.assets import KEYS as SENSORY_KEYS

SOURCES = dg.AssetSelection.assets(MACRO_KEY, CURVE_KEY)
# the compliance reports on executions run after the paper session (the compliance_reports job)
GRAPH = (dg.AssetSelection.all() - dg.AssetSelection.groups("platform", "trading")
         - dg.AssetSelection.assets(*REPORT_KEYS.values()))
DRIFT = dg.AssetSelection.checks(*(dg.AssetCheckKey(key, "drift") for key in SENSORY_KEYS.values()))
PARTITIONED = dg.AssetSelection.assets(*BAR_KEYS.values(), *SENSORY_KEYS.values())
STAGES = {  # job name -> (selection, partitioned over the range)
    "emp_demo_sources": (SOURCES, False),
    "emp_demo_history": (PARTITIONED - DRIFT, True),
    "emp_demo_research": ((GRAPH - SOURCES - PARTITIONED) | DRIFT, False),
}

demo_job = dg.define_asset_job(
    "emp_demo", selection=GRAPH, partitions_def=BAR_PARTITIONS,
    description="Materialise the whole graph for a range of years in one run.",
)
emp_demo_sources, emp_demo_history, emp_demo_research = (
    dg.define_asset_job(name, selection=selection, partitions_def=BAR_PARTITIONS if partitioned else None,
                        description=f"Stage {i} of emp demo (see emp_dagster/defs/demo/jobs.py).")
    for i, (name, (selection, partitioned)) in enumerate(STAGES.items(), 1))
