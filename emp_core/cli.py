"""The ``emp`` command line.

One convention for every subcommand: this module holds only parsers and thin ``cmd_*`` functions,
each calling a typed ``run_*`` function in its domain's ``cli.py`` (``emp_core.market_data.cli``,
``emp_core.sensory.cli``, ``emp_core.backtest.cli``, ``emp_core.evolution.cli``). Commands that drive
Dagster (``emp demo``, ``emp ui``, ``emp backfill``) are contributed by ``emp_dagster`` through the
``emp.commands`` entry point, so this package never imports dagster.

- An input file is ``--data FILE`` (``emp ingest`` still accepts ``--path``, deprecated).
- ``--start``/``--end`` are inclusive everywhere (:data:`RANGE_HELP`).
- Errors a user can cause print one line, ``emp COMMAND: error: MESSAGE`` (``emp: error: MESSAGE``
  before a command is known), and exit 2; messages never carry a prefix of their own.
- Progress goes to stderr through the ``emp`` logger: ``-q/--quiet`` silences it, and it never
  reaches stdout, so ``--json`` output is one JSON object.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path

from emp_core.errors import EmpError

EXIT_USAGE = 2

RANGE_HELP = ("--start and --end are both inclusive: a date YYYY-MM-DD includes that day, a month YYYY-MM the "
              "whole month, a year YYYY the whole year (as --start its first day, as --end through its last "
              "day), so --start 2008-01 --end 2008-12 and --start 2008 --end 2008 are both all of 2008. "
              "demo and backfill work in yearly partitions: they take the years holding the dates.")

log = logging.getLogger("emp")


class UsageError(EmpError):
    """A command line the parser refuses; ``prog`` is the (sub)command it belongs to."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(message, self.prog)


@dataclass(frozen=True)
class Period:
    """What a ``--start``/``--end`` value names: a minute, a day, a month or a year, from ``first`` up to
    (not including) ``after``."""

    text: str
    first: datetime
    after: datetime


def _month_after(t: datetime) -> datetime:
    return datetime(t.year + t.month // 12, t.month % 12 + 1, 1)


def parse_date(text: str) -> Period:
    """``YYYY-MM-DD`` (a day), ``YYYY-MM`` (a month), ``YYYY`` (a year) or ``YYYY-MM-DDTHH:MM`` (a minute)."""
    for fmt, after in (("%Y-%m-%d", lambda t: t + timedelta(days=1)), ("%Y-%m", _month_after),
                       ("%Y-%m-%dT%H:%M", lambda t: t + timedelta(minutes=1)),
                       ("%Y-%m-%d %H:%M", lambda t: t + timedelta(minutes=1)),
                       ("%Y", lambda t: datetime(t.year + 1, 1, 1))):
        try:
            first = datetime.strptime(text, fmt)
            return Period(text, first, after(first))
        except (ValueError, OverflowError):  # OverflowError: the period after 9999
            continue
    raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD, YYYY-MM or YYYY)")


def check_range(start: Period | None, end: Period | None) -> None:
    """The one refusal every command makes: an ``--end`` before the ``--start``."""
    if start and end and end.after <= start.first:
        raise EmpError(f"--end {end.text} is before --start {start.text}")


def add_range(p: argparse.ArgumentParser, *, required: bool = False, start_default: str = "",
              end_default: str = "") -> None:
    """``--start``/``--end`` with the one meaning of :data:`RANGE_HELP`, written in the command's help."""
    p.add_argument("--start", type=parse_date, required=required, metavar="DATE|MONTH|YEAR",
                   help=f"first day, month or year, inclusive{start_default}")
    p.add_argument("--end", type=parse_date, required=required, metavar="DATE|MONTH|YEAR",
                   help=f"last day, month or year, inclusive{end_default}")
    p.epilog = textwrap.fill(RANGE_HELP, 100)


def symbol_list(text: str) -> list[str]:
    symbols = [s.strip() for s in text.split(",") if s.strip()]
    if not symbols:
        raise argparse.ArgumentTypeError("no symbols given")
    return symbols


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="emp",
        description="EMP Predator: market data, features and strategies on Dagster. "
                    "Data lives under $EMP_HOME (default ./.emp).",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines: only results and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_ingest(sub)
    _add_features(sub)
    _add_backtest(sub)
    _add_evolve(sub)
    _add_db(sub)
    _add_status(sub)
    _add_stream(sub)
    _add_execution(sub)
    _add_audit(sub)
    _add_compliance(sub)
    _add_kyc(sub)
    for ep in entry_points(group="emp.commands"):
        ep.load()(sub)
    for p in sub.choices.values():  # -q also after the command name (emp evolve ... -q), every command alike
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress lines: only results and errors")
    return parser


def _subcommand(sub, name: str, help_: str, description: str, func) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def _add_ingest(sub) -> None:
    p = _subcommand(
        sub, "ingest", "ingest bars from a source into the store (validated, quarantined, journaled)",
        "Ingest bars through the same path as the Dagster assets: validation, quarantine of bad "
        "rows with a reason, idempotent replace, one journal row. Examples:\n"
        "  emp ingest --source file --data prices.csv --symbol ACME\n"
        "  emp ingest --source shipped --symbols SPX,IXIC --start 2008-01 --end 2009-12\n"
        "  emp ingest --source synthetic --n-symbols 50 --start 2015-01-01 --end 2019-12-31", cmd_ingest)
    p.add_argument("--source", required=True, choices=["file", "shipped", "synthetic", "yahoo"])
    p.add_argument("--data", type=Path, metavar="FILE", help="CSV or Parquet file (--source file)")
    p.add_argument("--path", type=Path, dest="deprecated_path", metavar="FILE", help="(deprecated: use --data)")
    p.add_argument("--symbol", help="instrument of a file without a symbol column (--source file)")
    p.add_argument("--symbols", type=symbol_list, help="comma-separated symbols (shipped, yahoo)")
    add_range(p)
    p.add_argument("--interval", choices=["1d", "1h"], default="1d", help="bar interval (default 1d)")
    p.add_argument("--tz", default="UTC", help="time zone of naive timestamps in the file (default UTC)")
    p.add_argument("--n-symbols", type=int, default=10, help="universe size (--source synthetic)")
    p.add_argument("--seed", type=int, default=0, help="random seed (--source synthetic)")
    p.add_argument("--tier", choices=["embedded", "institutional"], default=None,
                   help="target store (default $EMP_TIER or embedded)")


def weight_list(text: str) -> dict[str, float]:
    weights = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(f"{part!r} is not NAME=NUMBER (e.g. what=0.5,how=0.2)")
    return weights


TRADING_CALENDARS = ("XNYS", "FX24X5", "24/7")  # emp_core.calendars.CALENDARS, without importing Polars here


def _add_calendar(p) -> None:
    p.add_argument("--calendar", choices=TRADING_CALENDARS, default=None,
                   help="trading days WHEN counts the turn of the month in: XNYS (New York Stock Exchange "
                   "sessions, holidays included), FX24X5 (Monday to Friday), 24/7 (every day); default Monday "
                   "to Friday")


def _add_features(sub) -> None:
    p = _subcommand(
        sub, "features", "compute the five sensory dimensions and the fused signal for a CSV or Parquet file",
        "Validate the file's bars (bad rows are quarantined with a reason, never dropped silently), compute WHY, "
        "HOW, WHAT, WHEN, ANOMALY and the fused signal point in time, and write one row per valid bar. Examples:\n"
        "  emp features --data prices.csv --symbol ACME --out acme_features.parquet\n"
        "  emp features --data universe.parquet --out features.parquet --weights what=0.6,how=0.4", cmd_features)
    p.add_argument("--data", type=Path, required=True, help="CSV or Parquet with Date/Open/High/Low/Close/Volume "
                   "(and Symbol, or pass --symbol)")
    p.add_argument("--out", type=Path, required=True, help="output file (.parquet, or .csv)")
    p.add_argument("--symbol", help="instrument of a file without a symbol column")
    p.add_argument("--interval", choices=["auto", "1d", "intraday"], default="auto",
                   help="bar spacing (default: inferred from the timestamps)")
    p.add_argument("--tz", default="UTC", help="time zone of naive timestamps in the file (default UTC)")
    p.add_argument("--no-macro", action="store_true",
                   help="leave out the shipped US Treasury curve and inflation (WHY then uses volatility only)")
    p.add_argument("--weights", type=weight_list, help="fusion weights, e.g. what=0.5,how=0.2 (others 0); "
                   "default why=0.15,how=0.2,what=0.35,when=0.1,anomaly=0.2")
    _add_calendar(p)


def _add_backtest(sub) -> None:
    p = _subcommand(
        sub, "backtest", "backtest a strategy on a CSV or Parquet file of bars and print its metrics",
        "Signal at the close of bar t, market order at the open of t+1, whole units from the equity, commission "
        "at entry and exit, equity marked to the close. Example:\n"
        "  emp backtest --data GOOG.csv --strategy sma-cross --fast 10 --slow 60 --cash 10000 --commission 0.002 "
        "--json", cmd_backtest)
    p.add_argument("--data", type=Path, required=True, help="CSV or Parquet with Date/Open/High/Low/Close/Volume")
    p.add_argument("--symbol", help="instrument (required when the file holds several symbols)")
    p.add_argument("--strategy", choices=["sma-cross", "genome"], default="sma-cross",
                   help="sma-cross (--fast/--slow) or genome (--genome NAME or FILE.json, on the sensory signals)")
    p.add_argument("--genome", help="a catalogue genome (trend, mean_reversion, carry_macro, volatility_breakout, "
                   "liquidity_aware) or a JSON file of genome fields")
    p.add_argument("--no-macro", action="store_true", help="genome strategies: leave out the shipped macro data")
    _add_calendar(p)
    p.add_argument("--fast", type=int, default=10, help="fast SMA length in bars (default 10)")
    p.add_argument("--slow", type=int, default=20, help="slow SMA length in bars (default 20)")
    p.add_argument("--cash", type=float, default=10_000.0, help="starting cash (default 10000)")
    p.add_argument("--commission", type=float, default=0.0, help="commission rate per fill, e.g. 0.002")
    p.add_argument("--long-only", action="store_true", help="go flat instead of short on a downward cross")
    p.add_argument("--fractional", action="store_true", help="fractional units instead of whole units")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--tz", default="UTC", help="time zone of naive timestamps in the file (default UTC)")


def _add_evolve(sub) -> None:
    p = _subcommand(
        sub, "evolve", "evolve strategies on a CSV or Parquet universe and decide whether a champion is promoted",
        "Validate the file's daily bars (bad rows quarantined with a reason), compute the sensory features, run the "
        "walk-forward evolution (train 3 years, selection 1, test 1, rolling yearly), record every evaluation in "
        "the trial registry of $EMP_HOME, and print the promotion decision: deflated Sharpe against the "
        "registry's effective number of trials, PSR of the out-of-sample track, PBO. Examples:\n"
        "  emp evolve --data universe.parquet --seed 1\n"
        "  emp evolve --data prices.csv --symbol ACME --population 20 --generations 3 --json", cmd_evolve)
    p.add_argument("--data", type=Path, required=True, help="CSV or Parquet with Date/Open/High/Low/Close/Volume "
                   "(and Symbol, or pass --symbol)")
    p.add_argument("--symbol", help="instrument of a file without a symbol column, or the one symbol to use")
    p.add_argument("--seed", type=int, default=0, help="random seed of the evolution (default 0)")
    p.add_argument("--population", type=int, default=40, help="population size (default 40)")
    p.add_argument("--generations", type=int, default=5, help="generations per window (default 5)")
    p.add_argument("--train-years", type=int, default=3, help="training span of each window (default 3)")
    p.add_argument("--commission", type=float, default=0.001, help="commission rate per fill (default 0.001)")
    p.add_argument("--dataset", help="name the trials are counted under in the registry (default: the file's "
                   "symbols, so every search on the same instruments counts together)")
    p.add_argument("--no-macro", action="store_true", help="leave out the shipped macro data (WHY)")
    _add_calendar(p)
    p.add_argument("--tz", default="UTC", help="time zone of naive timestamps in the file (default UTC)")
    p.add_argument("--json", action="store_true", help="print one JSON object (the decision and its figures)")


def _add_db(sub) -> None:
    db = sub.add_parser("db", help="the institutional store (PostgreSQL): schema migrations",
                        description="The institutional store's schema, versioned in sql/postgres/.")
    actions = db.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    p = _subcommand(
        actions, "migrate", "apply the versioned DDL of sql/postgres/ (idempotent; records applied versions)",
        "Apply every migration in sql/postgres/ that the database has not recorded yet, in version order,\n"
        "each in its own transaction; create the database first if the server lacks it. Examples:\n"
        "  emp db migrate\n"
        "  emp db migrate --url postgresql://127.0.0.1:5432/emp --json", cmd_db_migrate)
    p.add_argument("--url", help="PostgreSQL connection string (default $EMP_PG_URL, postgresql://127.0.0.1:5432/emp)")
    p.add_argument("--json", action="store_true", help="print one JSON object (versions applied and already applied)")
    p.set_defaults(prog="emp db migrate")
    p = _subcommand(
        actions, "catch-up", "copy what was written to the embedded fallback during an outage back to PostgreSQL",
        "Replay every write the institutional tier made to $EMP_HOME/failover.duckdb while PostgreSQL was\n"
        "unreachable, in the order they were made, each in one transaction that checks, before it commits, that\n"
        "the rows the write governs are exactly its rows. A write the primary has a later write over is a\n"
        "CONFLICT, not replayed:\n"
        "decide it by its number (#N in the report) with --keep-primary N or --replay N. Exit 1 while any\n"
        "write is left pending. Examples:\n"
        "  EMP_TIER=institutional emp db catch-up --json\n"
        "  EMP_TIER=institutional emp db catch-up --keep-primary 7", cmd_db_catch_up)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--keep-primary", type=int, action="append", default=[], metavar="N",
                   help="drop conflicting write #N: the primary's later rows stand (repeatable)")
    p.add_argument("--replay", type=int, action="append", default=[], metavar="N",
                   help="replay conflicting write #N over the primary's later rows (repeatable)")
    p.set_defaults(prog="emp db catch-up")
    db.set_defaults(func=lambda _args: db.print_help() or EXIT_USAGE)  # `emp db` alone: its actions


def _add_execution(sub) -> None:
    p = _subcommand(
        sub, "executor", "run the FIX executor: send the outbox's approved orders, journal every report",
        "A long-running sidecar (stop it with Ctrl-C or SIGTERM): sends each approved order in the outbox as a\n"
        "NewOrderSingle on the FIX 4.4 initiator session of a standard QuickFIX settings file, and journals every\n"
        "ExecutionReport. A restart never sends an order twice. Examples:\n"
        "  emp executor --settings fix/executor.cfg --health-port 8471\n"
        "  curl http://127.0.0.1:8471/health", cmd_executor)
    p.add_argument("--settings", type=Path, required=True, metavar="FILE",
                   help="QuickFIX session settings (SocketConnectHost/Port, SenderCompID, TargetCompID, ...)")
    p.add_argument("--health-port", type=int, metavar="PORT", help="serve GET /health on 127.0.0.1:PORT")
    p.add_argument("--max-seconds", type=float, metavar="S", help="stop after S seconds (default: run until stopped)")
    p = _subcommand(
        sub, "venue", "run the paper venue: a FIX 4.4 acceptor that fills orders against stored bars",
        "A FIX 4.4 acceptor filling against daily bars (the store's bars_1d, or --data FILE), one bar every\n"
        "--bar-seconds: market orders at the next bar's open plus slippage, limits when crossed, fills capped by a\n"
        "share of the bar's volume, rejects, cancels, and a drop-copy session. Examples:\n"
        "  emp venue --settings fix/venue.cfg --symbols AAPL,MSFT --bar-seconds 0.5", cmd_venue)
    p.add_argument("--settings", type=Path, required=True, metavar="FILE", help="QuickFIX acceptor settings")
    p.add_argument("--data", type=Path, metavar="FILE", help="bars to trade against (default: the store's bars_1d)")
    p.add_argument("--symbols", type=symbol_list, help="only these symbols (comma-separated)")
    p.add_argument("--bar-seconds", type=float, default=1.0, metavar="S", help="seconds per bar (default 1)")
    p.add_argument("--start-bar", type=int, default=0, metavar="N", help="the bar the clock starts at")
    p.add_argument("--start", type=datetime.fromisoformat, metavar="DATE",
                   help="start the clock at the last bar at or before DATE (in place of --start-bar)")
    p.add_argument("--wait-for-orders", action="store_true",
                   help="hold the clock until the first order arrives (a replay of the bar the orders were planned on)")
    p.add_argument("--max-bars", type=int, metavar="N", help="stop the clock after N bars (the sessions stay up)")
    p.add_argument("--max-seconds", type=float, metavar="S", help="stop after S seconds")
    p = _subcommand(
        sub, "dropcopy", "record the paper venue's drop copy (every ExecutionReport, for reconciliation)",
        "A FIX 4.4 initiator on the venue's drop-copy session: records every mirrored ExecutionReport in the\n"
        "outbox database's drop-copy journal, which trading/reconciliation compares with the execution journal.\n"
        "Example:\n  emp dropcopy --settings fix/dropcopy.cfg", cmd_dropcopy)
    p.add_argument("--settings", type=Path, required=True, metavar="FILE", help="QuickFIX initiator settings")
    p.add_argument("--max-seconds", type=float, metavar="S", help="stop after S seconds")

    orders = sub.add_parser("orders", help="operator orders: submit through the risk policy, cancel, status",
                            description="Orders as the operator sees them: the outbox and the execution journal.")
    actions = orders.add_subparsers(dest="orders_command", metavar="ACTION", parser_class=_Parser)
    p = _subcommand(
        actions, "submit", "put a manual order through the risk policy into the outbox",
        "Evaluate the order with the risk policy (every check printed with its figures) and, if approved, add\n"
        "it to the outbox for the executor, printing its ClOrdID; exit 1 when refused. Examples:\n"
        "  emp orders submit --symbol AAPL --side buy --qty 100 --type limit --price 180 --stop 170\n"
        "  emp orders submit --symbol AAPL --side sell --qty 100 --type market --json", cmd_orders_submit)
    p.add_argument("--symbol", required=True)
    p.add_argument("--side", required=True, choices=("buy", "sell"))
    p.add_argument("--qty", required=True, type=int, metavar="N")
    p.add_argument("--type", dest="order_type", required=True, choices=("limit", "market"))
    p.add_argument("--price", type=float, metavar="P", help="the limit price (limit orders)")
    p.add_argument("--stop", type=float, metavar="P", help="the protective stop (the default policy requires one)")
    p.add_argument("--strategy", default="manual", metavar="NAME", help="the strategy it is for (default manual)")
    p.add_argument("--confidence", type=float, default=1.0, metavar="C", help="in [0, 1] (default 1)")
    p.add_argument("--session", default="paper", choices=("paper", "live"), help="the session kind (default paper)")
    p.add_argument("--policy", type=Path, metavar="FILE", help="risk policy (default policies/default-v2.yaml)")
    p.add_argument("--compliance-policy", type=Path, metavar="FILE",
                   help="trade compliance rules (default policies/compliance-v1.yaml)")
    p.add_argument("--key", metavar="KEY", help="what the order is: the same key never makes a second order")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(prog="emp orders submit")
    p = _subcommand(actions, "cancel", "ask the executor to cancel an order",
                    "Queue an OrderCancelRequest for the order CLORDID. Example:\n  emp orders cancel E1A2B3...",
                    cmd_orders_cancel)
    p.add_argument("clordid", metavar="CLORDID")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(prog="emp orders cancel")
    p = _subcommand(actions, "status", "list the outbox's orders with their latest execution state",
                    "Every order in the outbox, whether the executor has sent it, and its latest OrdStatus,\n"
                    "filled quantity and average price from the journal. Example:\n  emp orders status --json",
                    cmd_orders_status)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(prog="emp orders status")
    orders.set_defaults(func=lambda _args: orders.print_help() or EXIT_USAGE)


def cmd_executor(args) -> int:
    from emp_core.execution.cli import run_executor

    return run_executor(args.settings, health_port=args.health_port, max_seconds=args.max_seconds)


def cmd_venue(args) -> int:
    from emp_core.execution.cli import run_venue

    return run_venue(args.settings, data=args.data, symbols=args.symbols, bar_seconds=args.bar_seconds,
                     start_bar=args.start_bar, start=args.start, wait_for_orders=args.wait_for_orders,
                     max_bars=args.max_bars, max_seconds=args.max_seconds)


def cmd_dropcopy(args) -> int:
    from emp_core.execution.cli import run_dropcopy

    return run_dropcopy(args.settings, max_seconds=args.max_seconds)


def cmd_orders_submit(args) -> int:
    from emp_core.execution.cli import DEFAULT_POLICY, run_orders_submit

    return run_orders_submit(symbol=args.symbol, side=args.side, qty=args.qty, order_type=args.order_type,
                             price=args.price, stop=args.stop, strategy=args.strategy, confidence=args.confidence,
                             session=args.session, policy_file=args.policy or DEFAULT_POLICY, key=args.key,
                             as_json=args.json, compliance_file=args.compliance_policy)


def cmd_orders_cancel(args) -> int:
    from emp_core.execution.cli import run_orders_cancel

    return run_orders_cancel(args.clordid, as_json=args.json)


def cmd_orders_status(args) -> int:
    from emp_core.execution.cli import run_orders_status

    return run_orders_status(as_json=args.json)


def _add_audit(sub) -> None:
    audit = sub.add_parser("audit", help="the hash-chained audit trail: verify it, append to it",
                           description="The audit trail (table audit.log in the tier's store).")
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", parser_class=_Parser)
    p = _subcommand(
        actions, "verify", "check the whole audit log: any edited, deleted, inserted or reordered entry",
        "Recompute every entry's hash and link where the log is stored; exit 0 when intact (printing the head,\n"
        "SEQ:HASH, to keep outside the log), 1 naming the first bad entry. --witness SEQ:HASH (a head printed\n"
        "earlier) also finds the end cut off. Examples:\n"
        "  emp audit verify\n  emp audit verify --witness 1200:9f2c... --json", cmd_audit_verify)
    p.add_argument("--witness", metavar="SEQ:HASH", help="a head an earlier verification printed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(prog="emp audit verify")
    p = _subcommand(
        actions, "append", "append one entry (the only writer the command line offers)",
        "Append an entry of KIND with a JSON payload at the end of the chain (the kinds the platform writes\n"
        "itself, such as order or kyc.case_transition, are refused). Example:\n"
        "  emp audit append --kind note --payload '{\"text\": \"quarterly review signed off\"}'",
        cmd_audit_append)
    p.add_argument("--kind", required=True, help="lower-case words joined by dots (e.g. note, review.signoff)")
    p.add_argument("--payload", required=True, metavar="JSON")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(prog="emp audit append")
    audit.set_defaults(func=lambda _args: audit.print_help() or EXIT_USAGE)


def _add_compliance(sub) -> None:
    comp = sub.add_parser("compliance", help="trade compliance breaches: list them, resolve them",
                          description="Breaches of the trade compliance rules (table compliance.breaches). An open "
                                      "post-trade breach blocks the next trading plan until it is resolved.")
    actions = comp.add_subparsers(dest="compliance_command", metavar="ACTION", parser_class=_Parser)
    p = _subcommand(
        actions, "breaches", "list the open post-trade breaches (exit 1 while any is open)",
        "List the post-trade breaches no compliance officer has resolved; --all lists every breach recorded,\n"
        "pre-trade (refused orders) included. Examples:\n  emp compliance breaches\n"
        "  emp compliance breaches --all --json", cmd_compliance_breaches)
    p.add_argument("--all", action="store_true", dest="show_all", help="every breach, resolved and pre-trade too")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(prog="emp compliance breaches")
    p = _subcommand(
        actions, "resolve", "record the review of an open post-trade breach (audited)",
        "Close an open post-trade breach with the reviewer's name and the reason; it is kept, with the\n"
        "resolution, and written to the audit trail. Example:\n"
        "  emp compliance resolve 3f2a... --by 'J. Smith' --reason 'venue price spike, confirmed with broker'",
        cmd_compliance_resolve)
    p.add_argument("breach_id")
    p.add_argument("--by", required=True, help="the compliance officer's name")
    p.add_argument("--reason", required=True, help="why the breach may be closed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(prog="emp compliance resolve")
    comp.set_defaults(func=lambda _args: comp.print_help() or EXIT_USAGE)


def _add_kyc(sub) -> None:
    kyc = sub.add_parser("kyc", help="KYC/AML: screen names, review dossiers, decide cases",
                         description="Onboarding dossiers screened against the sanctions list (OFAC SDN CSV layout), "
                                     "rated, and tracked in a case book whose every transition is audited.")
    actions = kyc.add_subparsers(dest="kyc_command", metavar="ACTION", parser_class=_Parser)

    def sanctions_args(p) -> None:
        p.add_argument("--sdn", metavar="CSV", help="sdn.csv in OFAC's layout (default: the shipped sample)")
        p.add_argument("--alt", metavar="CSV", help="alt.csv, the aliases (with --sdn)")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    p = _subcommand(actions, "screen", "screen names against the sanctions list (exit 1 on any hit)",
                    "Normalise each name (transliteration, legal forms) and score it against every list name and\n"
                    "alias. Examples:\n  emp kyc screen 'Ivan Petrov' 'Acme Trading LLC'\n"
                    "  emp kyc screen 'Иван Петров' --sdn sdn.csv --alt alt.csv --json", cmd_kyc_screen)
    p.add_argument("names", nargs="+")
    p.add_argument("--threshold", type=float, help="score from 0 to 100 (default: the documented 88)")
    sanctions_args(p)
    p.set_defaults(prog="emp kyc screen")
    p = _subcommand(actions, "review", "screen and rate every dossier, open and reopen cases",
                    "Screen each dossier's customer and beneficial owners, rate it, store both, open a case for a new\n"
                    "dossier and reopen an approved one whose rating rose or whose review is due (each transition\n"
                    "audited; people escalate and decide: emp kyc decide). Example:\n"
                    "  emp kyc review --dossiers my_dossiers.json", cmd_kyc_review)
    p.add_argument("--dossiers", metavar="JSON", help="the dossiers file (default: the shipped sample)")
    p.add_argument("--as-of", metavar="DATE", help="the rating date (default: today, UTC)")
    sanctions_args(p)
    p.set_defaults(prog="emp kyc review")
    p = _subcommand(actions, "cases", "list the case book", "Each case's state and last transition.",
                    cmd_kyc_cases)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(prog="emp kyc cases")
    p = _subcommand(actions, "decide", "move a case (approve, reject, escalate, reopen) with a reason",
                    "A person's decision, judged by the case rules (a prohibited dossier is never approved; a\n"
                    "high-risk one only after escalation, by someone else) and audited. Example:\n"
                    "  emp kyc decide D-0007 --to rejected --by 'A. Jones' --reason 'SDN match confirmed'",
                    cmd_kyc_decide)
    p.add_argument("case_id")
    p.add_argument("--to", required=True, choices=("open", "escalated", "approved", "rejected"))
    p.add_argument("--by", required=True, help="who decides")
    p.add_argument("--reason", required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(prog="emp kyc decide")
    kyc.set_defaults(func=lambda _args: kyc.print_help() or EXIT_USAGE)


def cmd_kyc_screen(args) -> int:
    from emp_core.compliance.cli import run_kyc_screen

    return run_kyc_screen(names=args.names, sdn=args.sdn, alt=args.alt, threshold=args.threshold, as_json=args.json)


def cmd_kyc_review(args) -> int:
    from emp_core.compliance.cli import run_kyc_review

    return run_kyc_review(dossiers=args.dossiers, sdn=args.sdn, alt=args.alt, as_of=args.as_of, as_json=args.json)


def cmd_kyc_cases(args) -> int:
    from emp_core.compliance.cli import run_kyc_cases

    return run_kyc_cases(as_json=args.json)


def cmd_kyc_decide(args) -> int:
    from emp_core.compliance.cli import run_kyc_decide

    return run_kyc_decide(case_id=args.case_id, to=args.to, by=args.by, reason=args.reason, as_json=args.json)


def cmd_compliance_breaches(args) -> int:
    from emp_core.compliance.cli import run_breaches

    return run_breaches(show_all=args.show_all, as_json=args.json)


def cmd_compliance_resolve(args) -> int:
    from emp_core.compliance.cli import run_resolve

    return run_resolve(breach_id=args.breach_id, by=args.by, reason=args.reason, as_json=args.json)


def cmd_audit_verify(args) -> int:
    from emp_core.compliance.cli import run_audit_verify

    return run_audit_verify(witness=args.witness, as_json=args.json)


def cmd_audit_append(args) -> int:
    from emp_core.compliance.cli import run_audit_append

    return run_audit_append(kind=args.kind, payload=args.payload, as_json=args.json)


def _add_stream(sub) -> None:
    from emp_core.store.streams import add_stream_parser

    add_stream_parser(sub)


def _add_status(sub) -> None:
    p = _subcommand(
        sub, "status", "the platform's health, measured now: freshness, rows, symbols, cache, stream, backups",
        "Measure every health item of the tier from the store, Redis and the backup folder (not from what runs\n"
        "reported) and print them as a table; exit 0 when every item is ok, 1 otherwise (an item that cannot be\n"
        "measured, such as an empty table, is not ok). Examples:\n"
        "  emp status\n"
        "  EMP_TIER=institutional emp status --json", cmd_status)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_status(args) -> int:
    from emp_core.store.cli import run_status

    return run_status(as_json=args.json)


def cmd_db_catch_up(args) -> int:
    from emp_core.store.cli import run_catch_up

    return run_catch_up(as_json=args.json, keep_primary=args.keep_primary, force=args.replay)


def cmd_db_migrate(args) -> int:
    from emp_core.store.cli import run_db_migrate

    return run_db_migrate(args.url, as_json=args.json)


def cmd_ingest(args) -> int:
    from emp_core.market_data.cli import run_ingest

    data = args.data
    if args.deprecated_path is not None:
        if data is not None:
            raise EmpError("--path is the deprecated name of --data: give --data only")
        log.warning("emp ingest: warning: --path is deprecated, use --data")
        data = args.deprecated_path
    check_range(args.start, args.end)
    return run_ingest(args.source, data=data, symbol=args.symbol, symbols=args.symbols,
                      start=args.start.first if args.start else None, end=args.end.after if args.end else None,
                      interval=args.interval, naive_tz=args.tz, n_symbols=args.n_symbols, seed=args.seed,
                      tier=args.tier)


def cmd_features(args) -> int:
    from emp_core.sensory.cli import run_features

    return run_features(args.data, args.out, symbol=args.symbol, interval=args.interval, naive_tz=args.tz,
                        use_macro=not args.no_macro, weights=args.weights, calendar=args.calendar)


def cmd_backtest(args) -> int:
    from emp_core.backtest.cli import run_backtest

    return run_backtest(args.data, symbol=args.symbol, strategy=args.strategy, genome=args.genome,
                        fast=args.fast, slow=args.slow, cash=args.cash, commission=args.commission,
                        long_only=args.long_only, fractional=args.fractional, use_macro=not args.no_macro,
                        calendar=args.calendar, naive_tz=args.tz, as_json=args.json)


def cmd_evolve(args) -> int:
    from emp_core.evolution.cli import run_evolve

    return run_evolve(args.data, symbol=args.symbol, seed=args.seed, population=args.population,
                      generations=args.generations, train_years=args.train_years, commission=args.commission,
                      dataset=args.dataset, use_macro=not args.no_macro, calendar=args.calendar, naive_tz=args.tz,
                      as_json=args.json)


class _StderrHandler(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment, not the one at the first call (tests and notebooks
    replace it between commands)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO)
    prog = "emp"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command:
            prog = getattr(args, "prog", None) or f"emp {args.command}"  # a nested command names itself
        if args.quiet:
            log.setLevel(logging.WARNING)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args) or 0)
    except EmpError as exc:
        print(f"{getattr(exc, 'prog', prog)}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
