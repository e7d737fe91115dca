"""The platform's own assets (institutional tier): backups with their restore drill, the failover catch-up, and
health measured from real state. Their checks are the tier's readiness gates."""

import time

import dagster as dg
import pydantic

from emp_core.clock import utcnow
from emp_core.config import settings
from emp_core.errors import EmpError
from emp_core.health import evaluate
from emp_core.store import DuckDBStore
from emp_core.store.backup import restore_drill, retention_check
from emp_core.store.failover import catch_up, invalidate_cache, pending
from emp_core.store.postgres_store import WRITE_LOG_DAYS, PostgresStore
from emp_dagster.defs.market_data.resources import StoreResource

GROUP = "platform"
BACKUP_KEY = dg.AssetKey(["platform", "backup"])
CATCH_UP_KEY = dg.AssetKey(["platform", "failover_catch_up"])
HEALTH_KEY = dg.AssetKey(["platform", "health"])
HEALTH_ITEMS = ("freshness_bars_1d", "freshness_bars_1h", "freshness_macro", "row_counts", "missing_symbols",
                "cache_hit_rate", "stream_lag", "backup_age")


class BackupConfig(dg.Config):
    keep: int = 7  # complete backups kept in $EMP_HOME/backups
    retention_days: dict[str, int] = pydantic.Field(
        default_factory=lambda: {"market.bars_1d": 3650, "market.bars_1h": 730})  # history each table must cover
    write_log_days: int = WRITE_LOG_DAYS  # write stamps kept for the failover catch-up's conflict test


def _institutional(what: str) -> str:
    cfg = settings()
    if cfg.tier != "institutional":
        raise EmpError(f"{what} belongs to the institutional tier (EMP_TIER=institutional); the embedded tier's "
                       f"store is one file, {cfg.duckdb_path}: copy it while no run is writing")
    return cfg.pg_url


@dg.asset(key=BACKUP_KEY, group_name=GROUP, kinds={"postgres"},
          description="pg_dump of the EMP schemas to $EMP_HOME/backups (rotated), restored into a scratch "
                      "database and compared with the dump's snapshot (the restore drill).",
          check_specs=[dg.AssetCheckSpec("restore_parity", asset=BACKUP_KEY, blocking=True,
                                         description="the restored backup equals its snapshot, table by table and "
                                                     "partition by partition (rows, checksums, columns)"),
                       dg.AssetCheckSpec("retention", asset=BACKUP_KEY,
                                         description="each bar table covers its configured history window")])
def backup(config: BackupConfig, store: StoreResource) -> dg.MaterializeResult:
    url = _institutional("the backup asset")
    cfg = settings()
    t0 = time.perf_counter()
    report = restore_drill(url, cfg.home / "backups", keep=config.keep)
    retention = retention_check(store.store(), config.retention_days, utcnow())
    primary = PostgresStore(url)
    try:
        pruned = primary.prune_write_log(config.write_log_days)
    finally:
        primary.dispose()
    return dg.MaterializeResult(
        metadata={"seconds": round(time.perf_counter() - t0, 3), "directory": str(cfg.home / "backups"),
                  "write_log_pruned": pruned,
                  "parity": dg.MetadataValue.json(report.as_dict())},
        check_results=[
            dg.AssetCheckResult(check_name="restore_parity", passed=report.ok, description=report.describe()),
            dg.AssetCheckResult(check_name="retention", passed=all(r.passed for r in retention),
                                severity=dg.AssetCheckSeverity.WARN,
                                description="; ".join(r.description for r in retention),
                                metadata={r.table: dg.MetadataValue.json(r.metadata) for r in retention}),
        ])


@dg.asset(key=CATCH_UP_KEY, group_name=GROUP, kinds={"postgres", "duckdb"},
          description="Replays onto PostgreSQL, in order, each write made to $EMP_HOME/failover.duckdb while it "
                      "was unreachable (the failover log), each verified in its own transaction; a later write on "
                      "PostgreSQL over the same rows is a conflict left for the operator.",
          check_specs=[dg.AssetCheckSpec("parity", asset=CATCH_UP_KEY, blocking=True,
                                         description="every write made during an outage is on PostgreSQL "
                                                     "exactly as written (the rows it governs compared with its "
                                                     "rows on the server, before the commit), "
                                                     "or was applied by an earlier catch-up")])
def failover_catch_up() -> dg.MaterializeResult:
    url = _institutional("the failover catch-up")
    cfg = settings()
    path = cfg.home / "failover.duckdb"
    if not path.exists():
        raise EmpError(f"{path}: no failover has happened here; nothing to catch up")
    primary, fallback = PostgresStore(url), DuckDBStore(path)
    todo = pending(fallback).height
    try:
        report = catch_up(primary, fallback)
    finally:  # whatever was replayed before a failure also went behind the cache's back
        invalidate_cache(primary)
        primary.dispose()
    agree = [r for r in report.replayed if r["parity"]]
    passed = bool(report.replayed) and report.parity  # nothing compared is no pass
    description = (f"{len(agree)} of {len(report.replayed)} replayed write(s) agree on both stores"
                   + "".join(f"; #{r['seq']} {r['target']} run {r['run_id']}: {r.get('note', 'parity FAILED')}"
                             for r in report.replayed if not r["parity"])
                   if report.replayed else "NOTHING TESTED: the failover log holds no pending write")
    checks = {f"#{r['seq']} {r['operation']} {r['target']} {r['run_id']}": r for r in report.replayed}
    return dg.MaterializeResult(
        metadata={"pending_before": todo, "replayed": len(report.replayed),
                  "report": dg.MetadataValue.json(report.as_dict())},
        check_results=[dg.AssetCheckResult(check_name="parity", passed=passed, description=description,
                                           metadata={k: dg.MetadataValue.json(v) for k, v in checks.items()})])


@dg.asset(key=HEALTH_KEY, group_name=GROUP, kinds={"duckdb", "postgres", "redis"},
          description="The platform's health measured now (emp_core.health, the same as `emp status`): freshness "
                      "per dataset, row counts, symbols behind, cache hit rate, stream lag, backup age.",
          check_specs=[dg.AssetCheckSpec(item, asset=HEALTH_KEY) for item in HEALTH_ITEMS])
def health(store: StoreResource) -> dg.MaterializeResult:
    cfg = settings()
    db = store.store()
    items = {h.name: h for h in evaluate(db, cfg)}
    return dg.MaterializeResult(
        metadata={"tier": cfg.tier, "store": db.location, "ok": all(h.passed for h in items.values()),
                  "table": dg.MetadataValue.md(_markdown(items.values()))},
        check_results=[dg.AssetCheckResult(
            check_name=name, passed=items[name].passed, severity=dg.AssetCheckSeverity.WARN,
            description=f"{items[name].state.upper()}: {items[name].value} (limit {items[name].limit}); "
                        f"{items[name].description}",
            metadata={"state": items[name].state, **{k: dg.MetadataValue.json(v) if isinstance(v, dict | list)
                                                     else v for k, v in items[name].metadata.items()}})
            for name in HEALTH_ITEMS])


def _markdown(items) -> str:
    rows = ["| item | state | value | limit |", "|---|---|---|---|"]
    rows += [f"| {h.name} | {h.state} | {h.value} | {h.limit} |" for h in items]
    return "\n".join(rows)
