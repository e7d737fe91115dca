"""Compliance as assets. ``compliance/audit_verification``: the whole audit trail verified where it is stored,
against the head the previous verification saw (kept in this asset's metadata, outside the log); its check
``audit_chain_intact`` is blocking, and the trading plan waits on it, so an altered audit trail stops the next
trading run. The work is emp_core's (``emp_core.compliance``)."""

import dagster as dg

from emp_core.compliance import audit_store
from emp_core.compliance.witness import next_witness, witness_from
from emp_dagster.defs.market_data.resources import StoreResource, store_kind

GROUP = "compliance"
KEYS = {"audit_verification": dg.AssetKey(["compliance", "audit_verification"])}
AUDIT_CHAIN_INTACT = "audit_chain_intact"


def _previous_witness(context: dg.AssetExecutionContext) -> tuple[int, str] | None:
    event = context.instance.get_latest_materialization_event(KEYS["audit_verification"])
    if event is None or event.asset_materialization is None:
        return None
    return witness_from({k: v.value for k, v in event.asset_materialization.metadata.items()})


@dg.asset(key=KEYS["audit_verification"], group_name=GROUP, kinds={store_kind()},
          description="The audit trail (audit.log) verified end to end: every entry's hash recomputed, every "
                      "link and number checked, and the head the previous verification saw still there.",
          check_specs=[dg.AssetCheckSpec(AUDIT_CHAIN_INTACT, asset=KEYS["audit_verification"], blocking=True,
                                         description="No entry of the audit trail was edited, deleted, inserted "
                                                     "or reordered, and its end was not cut off.")])
def audit_verification(context: dg.AssetExecutionContext, store: StoreResource):
    witness = _previous_witness(context)
    result = audit_store.verify(store.store(), witness=witness)
    kept = next_witness(result, witness)
    figures = {"entries": result.entries, "head_seq": result.head_seq, "head_hash": result.head_hash,
               "bad_seq": result.bad_seq, "problem": result.problem,
               "checked_against": f"{witness[0]}:{witness[1]}" if witness else "no earlier verification"}
    metadata = {"table": audit_store.TABLE, "dagster/row_count": result.entries,
                **{k: v for k, v in figures.items() if v is not None},
                **({"witness_seq": kept[0], "witness_hash": kept[1]} if kept else {})}
    description = (f"{result.entries} entries intact; head {result.head_seq}" if result.ok
                   else f"NOT INTACT: {result.problem}")
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[dg.AssetCheckResult(check_name=AUDIT_CHAIN_INTACT, passed=result.ok,
                                           description=description,
                                           metadata={k: v for k, v in figures.items() if v is not None})])
