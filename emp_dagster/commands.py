"""``emp`` subcommands that drive Dagster: ``demo``, ``backfill``, ``ui``.

Registered into the ``emp`` parser through the ``emp.commands`` entry point.
Runs execute in this process against the instance in ``$DAGSTER_HOME``
(default ``$EMP_HOME/dagster``), so the UI shows them afterwards.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

from emp_core.cli import add_range, check_range, symbol_list
from emp_core.config import REPO_ROOT, settings

QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


log = logging.getLogger("emp.dagster")


def register(sub) -> None:
    demo = sub.add_parser(
        "demo", help="materialise the whole asset graph on the shipped real data",
        description="Materialise every asset over the years of the shipped data (or the years holding --start .. "
                    "--end), in three Dagster runs (macro sources, the yearly-partitioned bars and features, the "
                    "research assets). Example:\n"
                    "  emp demo --start 2005 --end 2010", formatter_class=argparse.RawDescriptionHelpFormatter)
    add_range(demo, start_default=" (default: the first day of the shipped data)",
              end_default=" (default: the last day of the shipped data)")
    demo.set_defaults(func=cmd_demo)

    backfill = sub.add_parser(
        "backfill", help="re-ingest the yearly partitions of the bars assets holding a range, in one Dagster run",
        description="Re-ingest the yearly partitions of the bars assets that hold --start .. --end, in one Dagster "
                    "run. Example (re-ingests 2008 and 2009):\n"
                    "  emp backfill --start 2008-01 --end 2009-06 --symbols SPX,IXIC",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_range(backfill, required=True)
    backfill.add_argument("--symbols", type=symbol_list, help="only these symbols (default: all)")
    backfill.set_defaults(func=cmd_backfill)

    ui = sub.add_parser("ui", help="start the Dagster UI on 127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)


def cmd_demo(args) -> int:
    check_range(args.start, args.end)
    return run_demo(args.start.first if args.start else None, args.end.first if args.end else None)


def cmd_backfill(args) -> int:
    check_range(args.start, args.end)
    return run_backfill(args.start.first, args.end.first, symbols=args.symbols)


def cmd_ui(args) -> int:
    return run_ui(args.port)


DAGSTER_PG_ENV = "EMP_DAGSTER_PG_URL"  # dagster.institutional.yaml reads Dagster's storage URL from it at load time
PROFILES = {"embedded": "dagster.yaml", "institutional": "dagster.institutional.yaml"}


def _dagster_pg_url(pg_url: str) -> str:
    """Dagster's storage URL for the institutional tier: the database ``<name>_dagster`` on the server of
    ``pg_url`` (EMP_PG_URL), created when the server lacks it. A database of its own, not a schema in ours: dagster-
    postgres has no schema setting and creates its tables (and its alembic_version) in ``public``; apart, they never
    mix with market/macro/sensory/evolution/ops, and each side is migrated, backed up or wiped on its own. The URL
    names the psycopg2 driver, which Dagster's event log needs (STACK.md). It holds any password: it goes into the
    environment only, never into a file."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from emp_core.errors import ConfigError, EmpError
    from emp_core.store.migrations import ensure_database
    from emp_core.store.postgres_store import sqlalchemy_url

    try:
        parts = conninfo_to_dict(pg_url)
    except Exception as exc:
        raise ConfigError(f"EMP_PG_URL is not a PostgreSQL connection string: {exc}") from None
    if not parts.get("dbname"):
        raise ConfigError("EMP_PG_URL names no database (Dagster's is '<that name>_dagster')")
    name = f"{parts.pop('dbname')}_dagster"
    try:
        ensure_database(make_conninfo(pg_url, dbname=name))
    except EmpError as exc:
        raise EmpError(f"Dagster's instance storage (EMP_TIER=institutional): {' '.join(str(exc).split())}") from None
    url = sqlalchemy_url(make_conninfo(pg_url, dbname=name), driver="psycopg2")
    return url.render_as_string(hide_password=False)


def prepare_instance() -> Path:
    """Point DAGSTER_HOME at the instance and give it the tier's profile as dagster.yaml: the project's dagster.yaml
    (embedded: SQLite under DAGSTER_HOME) or dagster.institutional.yaml (EMP_TIER=institutional: run, event-log and
    schedule storage in PostgreSQL, see :func:`_dagster_pg_url`; the URL is set in EMP_DAGSTER_PG_URL here, which
    child processes such as ``dagster dev`` inherit). emp owns that copy: when the profile changes, the copy is
    refreshed, and a copy that differs from every profile is first kept as dagster.yaml.previous (with a note), so
    an edit made there is never lost silently."""
    cfg = settings()
    home = cfg.dagster_home
    if cfg.tier == "institutional":
        # Dagster's own storage on another server (EMP_DAGSTER_PG_URL set by the user) survives an outage of the
        # store's server, so runs can record their failover; by default it is a database beside the store's
        os.environ[DAGSTER_PG_ENV] = cfg.dagster_pg_url or _dagster_pg_url(cfg.pg_url)
    home.mkdir(parents=True, exist_ok=True)
    target, source = home / "dagster.yaml", REPO_ROOT / PROFILES[cfg.tier]
    if not target.exists() or target.read_bytes() != source.read_bytes():
        if target.exists() and target.read_bytes() not in {(REPO_ROOT / p).read_bytes() for p in PROFILES.values()}:
            shutil.copyfile(target, home / "dagster.yaml.previous")
            log.warning("%s: replaced by the project's %s; the old one is kept as dagster.yaml.previous "
                        "(instance settings belong in the project's %s)", target, source.name, source.name)
        shutil.copyfile(source, target)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("EMP_HOME", str(cfg.home))
    return home


def _run(job_name: str, first: str, last: str, run_config: dict | None = None, *, partitioned: bool = True):
    import dagster as dg

    from emp_dagster.definitions import defs
    from emp_dagster.edge import partition_range_tags

    job = defs().resolve_job_def(job_name)
    config = {**QUIET_LOGS, **(run_config or {})}
    tags = {**(partition_range_tags(first, last) if partitioned else {}), "emp/trigger": "cli"}
    with dg.DagsterInstance.get() as instance:
        return job.execute_in_process(run_config=config, instance=instance, raise_on_error=False, tags=tags)


def _evaluations(results: list) -> list:
    return [e for r in results for e in r.get_asset_check_evaluations()]


def _check_lines(results) -> tuple[int, int, list[str], list[str]]:
    """(passed, failed gates, names of failed gates, names of warnings): a failed WARN check is a warning."""
    import dagster as dg

    from emp_dagster.defs.evolution.assets import PROMOTION_GATE

    evaluations = _evaluations(results)
    # The promotion gate refusing is the gate working (no champion this run): reported on its own line.
    failed = [e for e in evaluations if not e.passed and e.check_name != PROMOTION_GATE]
    gates = [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in failed
             if e.severity != dg.AssetCheckSeverity.WARN]
    warnings = [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in failed
                if e.severity == dg.AssetCheckSeverity.WARN]
    return len(evaluations) - len(failed), len(gates), gates, warnings


def _champion_lines(results) -> list[str]:
    """The promotion decision: champion or none, the reason, and the figures behind it."""
    from emp_dagster.defs.evolution.assets import PROMOTION_GATE

    gate = [e for e in _evaluations(results) if e.check_name == PROMOTION_GATE]
    if not gate:
        return ["champion: not evaluated in this run"]
    from emp_core.evolution.promotion import figure

    m = {k: v.value for k, v in gate[0].metadata.items()}
    num = partial(figure, m)

    return [f"champion: {'promoted' if gate[0].passed else 'none'}: {gate[0].description}",
            f"  deflated Sharpe {num('dsr')} (SR {num('sharpe', '.4f')} vs SR0 {num('sr0', '.4f')} per bar over "
            f"{m.get('n_bars', 'n/a')} bars; N = {m.get('n_trials', 'n/a')} trials in the registry, "
            f"{num('n_effective', '.0f')} effective), out-of-sample PSR {num('oos_psr')} over "
            f"{m.get('oos_bars', 'n/a')} bars, PBO {num('pbo')}"]


def _shipped_range() -> tuple[datetime, datetime]:
    from emp_core.market_data.sources import ShippedSource

    source = ShippedSource(settings().data_dir)
    spans = [source.coverage(d, None) for d in ("bars_1d", "bars_1h")]
    return min(s["first_ts"].min() for s in spans), max(s["last_ts"].max() for s in spans)


def run_demo(start: datetime | None = None, end: datetime | None = None) -> int:
    """Materialise the whole graph for the years holding ``start`` .. ``end`` (inclusive; default: the
    shipped data's range) and print the summary. Progress, one line per Dagster run, goes to the ``emp`` logger."""
    from emp_core.store import open_store

    t0 = time.perf_counter()
    from emp_dagster.defs.market_data.partitions import partition_keys

    home = prepare_instance()
    lo, hi = _shipped_range()
    first, last = partition_keys(start or lo, end or hi)
    from emp_dagster.defs.demo.jobs import STAGES

    log.info("demo: materialising every asset for years %s .. %s (%d Dagster runs: %s)", first, last,
             len(STAGES), ", ".join(STAGES))
    results = []
    for i, (name, (_, partitioned)) in enumerate(STAGES.items(), 1):
        t1 = time.perf_counter()
        results.append(_run(name, first, last, partitioned=partitioned))
        steps = sum(e.is_step_success for e in results[-1].all_events)
        log.info("demo: run %d/%d %s: %d steps, run %s %s in %.1fs (%.1fs elapsed)", i, len(STAGES), name,
                 steps, results[-1].run_id, "SUCCESS" if results[-1].success else "FAILED",
                 time.perf_counter() - t1, time.perf_counter() - t0)
        if not results[-1].success:
            break
    paper = None
    if all(r.success for r in results) and len(results) == len(STAGES):
        paper = run_paper_session()
        results += paper.results
    passed, failed, failed_names, warnings = _check_lines(results)
    store = open_store()
    counts = store.table_counts()
    width = max(len(t) for t in counts)
    step_failures = [e for r in results for e in r.all_events if e.is_step_failure]
    print("\nEMP demo summary")
    ok = len(results) >= len(STAGES) and all(r.success for r in results) and paper is not None and paper.ok
    print(f"  runs {', '.join(r.run_id[:8] for r in results)}: {'SUCCESS' if ok else 'FAILED'} in "
          f"{time.perf_counter() - t0:.1f}s")
    for table, n in counts.items():
        print(f"  {table:<{width}}  {n:>9,} rows")
    print(f"  asset checks: {passed} passed, {failed} failed" + (f" ({', '.join(failed_names)})" if failed else "")
          + (f", {len(warnings)} warnings ({', '.join(warnings)})" if warnings else ""))
    for line in _champion_lines(results):
        print(f"  {line}")
    for line in (paper.lines if paper else ["paper session: not run (the research stages did not all succeed)"]):
        print(f"  {line}")
    print(f"  data:    {store.location}")
    print(f"  dagster: {home}")
    print("  open the UI:    make ui   (or: emp ui)  ->  http://127.0.0.1:3000")
    print("  read the data:  make notebooks  (JupyterLab on this store: notebooks/01_market_data.ipynb, "
          "02_sensory.ipynb, 03_evolution.ipynb)")
    if step_failures or failed or not ok:
        for event in step_failures:
            print(f"  step failed: {event.step_key}: {event.event_specific_data.error.message.strip()}",
                  file=sys.stderr)
        return 1
    return 0


@dataclass
class PaperOutcome:
    results: list
    lines: list[str]
    ok: bool


def run_paper_session(bars: int = 1) -> PaperOutcome:
    """A short paper-trading session after the research graph: the venue, the executor and the drop-copy listener
    as processes (``emp_core.trading.session``), the ``paper_trading`` job on the bar before the last one on which
    every symbol has a signal (a replay: its market orders fill at the next bar's open), then the
    ``trading_journal`` job and the ``compliance_reports`` job on what was traded."""
    from emp_core.execution.outbox import open_outbox
    from emp_core.store import open_store
    from emp_core.trading.session import PaperSession
    from emp_dagster.defs.compliance.assets import REPORT_KEYS
    from emp_dagster.defs.trading.assets import KEYS, TABLES

    store = open_store()
    # the latest bars every symbol with signals has (the shipped stocks end in 2013, the indices in 2018): the
    # session then trades the whole universe, and its stock fills get MiFIR transaction reports
    times = store.query("SELECT ts FROM sensory.fused WHERE dataset = 'bars_1d' GROUP BY ts HAVING "
                        "count(DISTINCT symbol) = (SELECT count(DISTINCT symbol) FROM sensory.fused WHERE "
                        "dataset = 'bars_1d') ORDER BY ts DESC LIMIT $n", {"n": bars + 1})["ts"].to_list()
    if len(times) <= bars:
        return PaperOutcome([], ["paper session: not enough fused signals to replay a bar"], False)
    as_of = times[-1]
    plan = {"as_of": as_of.isoformat()}
    ops = {"ops": {"trading__intents": {"config": plan}, "trading__risk_decisions": {"config": plan}}}
    box = open_outbox()
    t0 = time.perf_counter()
    with PaperSession(settings().home, start=as_of, bars=bars) as session:
        planned = _run("paper_trading", "", "", ops, partitioned=False)
        sent = []
        if planned.success:
            new = store.query(f"SELECT clordid FROM {TABLES['approved_orders']} WHERE run_id = $r AND new",
                              {"r": planned.run_id}) if TABLES["approved_orders"] in store.tables() else None
            sent = new["clordid"].to_list() if new is not None else []
        states = session.wait_settled(box, sent)
        mirrored = session.wait_mirrored(box)
        codes = session.stop()
    # the book marked at the close of the bar the session replayed (the indices' bars run on to 2018)
    marks = {"mark_as_of": times[0].isoformat()}
    journaled = _run("trading_journal", "", "", {"ops": {"journal": {"config": marks}}}, partitioned=False)
    reported = _run("compliance_reports", "", "", {"ops": {"compliance__roi_report": {"config": marks}}},
                    partitioned=False)
    mats = {e.asset_key: e for r in (planned, journaled, reported) for e in r.get_asset_materialization_events()}
    meta = {key: {k: v.value for k, v in e.materialization.metadata.items()} for key, e in
            ((k, e.event_specific_data) for k, e in mats.items())}
    intents, decisions, pnl = (meta.get(KEYS[n], {}) for n in ("intents", "risk_decisions", "pnl"))
    filled = sum(1 for c in sent if states.get(c) == "2")
    lines = [f"paper session ({time.perf_counter() - t0:.1f}s, logs in {settings().home / 'paper'}): trading "
             f"{intents.get('strategy', 'n/a')} on the bar of {str(as_of)[:10]}: {intents.get('strategy_source', '')}",
             f"  {intents.get('orders', 0)} intended order(s); risk policy {decisions.get('policy', 'n/a')}: "
             f"{decisions.get('approved', 0)} approved, {decisions.get('refused', 0)} refused; {len(sent)} new in the "
             f"outbox, {filled} filled at the next open, {len(sent) - filled} not filled "
             f"({', '.join(f'{c}={states.get(c)}' for c in sent if states.get(c) != '2') or 'none'})",
             f"  account: equity {pnl.get('equity', 'n/a')}, P&L {pnl.get('total_pnl', 'n/a')}, "
             f"{pnl.get('open_positions', 0)} open position(s); drop copy "
             f"{'complete' if mirrored else 'INCOMPLETE'}; processes exited {codes}"]
    report, roi_meta, tx = (meta.get(REPORT_KEYS[n], {}) for n in ("compliance_report", "roi_report",
                                                                     "transaction_reports"))
    lines.append(f"  compliance: {report.get('fills', 0)} fill(s) judged, {report.get('post_trade_breaches', 'n/a')} "
                 f"post-trade and {report.get('pre_trade_breaches', 'n/a')} pre-trade breach(es); "
                 f"{tx.get('dagster/row_count', 0)} MiFIR report(s), {tx.get('not_reportable', 0)} not reportable; "
                 f"net PnL {roi_meta.get('net_pnl', 'n/a')} after fees {roi_meta.get('fees', 'n/a')} and "
                 f"infrastructure {roi_meta.get('infrastructure', 'n/a')}")
    ok = planned.success and journaled.success and reported.success and mirrored and filled == len(sent)
    return PaperOutcome([planned, journaled, reported], lines, ok)


def run_backfill(start: datetime, end: datetime, *, symbols: list[str] | None = None) -> int:
    """Re-ingest the bars assets for the years holding ``start`` .. ``end`` (inclusive) in one Dagster run."""
    from emp_dagster.defs.market_data.partitions import partition_keys

    t0 = time.perf_counter()
    prepare_instance()
    first, last = partition_keys(start, end)
    years = int(last) - int(first) + 1
    run_config = None
    if symbols:
        from emp_dagster.defs.market_data.assets import BAR_KEYS

        ops = {"__".join(key.path): {"config": {"symbols": symbols}} for key in BAR_KEYS.values()}
        run_config = {"ops": ops}
    log.info("backfill: %d year(s) %s .. %s, %s, in one Dagster run", years, first, last,
             f"symbols {','.join(symbols)}" if symbols else "all symbols")
    result = _run("market_data_ingest", first, last, run_config)
    passed, failed, failed_names, _ = _check_lines([result])
    log.info("backfill: %d year(s) done, run %s %s in %.1fs", years, result.run_id,
             "SUCCESS" if result.success else "FAILED", time.perf_counter() - t0)
    print(f"backfill {first} .. {last}: run {result.run_id} {'SUCCESS' if result.success else 'FAILED'}; "
          f"checks {passed} passed, {failed} failed" + (f" ({', '.join(failed_names)})" if failed else ""))
    return 0 if result.success and not failed else 1


def run_ui(port: int = 3000) -> int:
    """The Dagster UI (``dagster dev``) on 127.0.0.1:``port`` until Ctrl-C."""
    home = prepare_instance()
    exe = Path(sys.executable).with_name("dagster")
    cmd = [str(exe if exe.exists() else "dagster"), "dev", "-w", str(REPO_ROOT / "workspace.yaml"),
           "-h", "127.0.0.1", "-p", str(port)]
    log.info("ui: Dagster UI on http://127.0.0.1:%d (DAGSTER_HOME=%s); Ctrl-C stops it", port, home)
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)  # dagster dev shuts its webserver and daemon down on SIGINT
        try:
            return proc.wait(timeout=30) and 0
        except subprocess.TimeoutExpired:
            proc.kill()
            return 1
