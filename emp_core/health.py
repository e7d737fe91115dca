"""Platform health, derived from real state: what `emp status` prints and the health asset's checks evaluate.

Each item is measured from the store, Redis or the backup folder now, never from what a run reported, and has
one of three states: ``ok``, ``fail``, or ``unknown`` (nothing to measure: an empty table, no stream group, a
cache that has served no reads, no backup yet). Unknown is not a pass: a gate on health treats it as a failure,
and the report says why it could not be measured.

- ``freshness_<dataset>``: no bar the trading calendar expects at or before ``now - max_age`` is missing after
  the latest stored bar (daily 24 h, intraday 15 min by default).
- ``freshness_macro``: the latest Treasury curve date is within 7 days (the curve is daily; the macro series
  are monthly and follow it).
- ``row_counts``: every platform table of the tier holds rows (those in ``EMPTY_IS_HEALTHY`` may be empty).
- ``missing_symbols``: per bar dataset, symbols whose latest bar trails the dataset's latest bar by more than
  the dataset's allowed lag (the universe is what the store has held).
- ``cache_hit_rate``: the hot cache's own entry hit rate (institutional tier; counters kept in Redis per
  namespace by every process's cache), from at least 100 entry reads.
- ``stream_lag``: the intraday stream consumer group's undelivered and pending entries and their age.
- ``backup_age``: the newest complete backup in ``$EMP_HOME/backups`` is at most 26 hours old.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from emp_core.calendars import expected_bars
from emp_core.clock import utcnow
from emp_core.market_data.ingest import DATASETS
from emp_core.store import cache_namespace

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"


@dataclass(frozen=True)
class Limits:
    max_age: dict[str, timedelta] = field(default_factory=lambda: {
        "bars_1d": timedelta(hours=24), "bars_1h": timedelta(minutes=15), "macro": timedelta(days=7)})
    min_hit_rate: float = 0.5
    min_cache_reads: int = 100
    max_stream_entries: int = 1000
    max_stream_age_seconds: float = 900.0
    max_backup_age: timedelta = timedelta(hours=26)


@dataclass(frozen=True)
class Health:
    name: str
    state: str
    value: str
    limit: str
    description: str
    metadata: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.state == OK

    def as_dict(self) -> dict:
        return {"name": self.name, "state": self.state, "value": self.value, "limit": self.limit,
                "description": self.description, "metadata": self.metadata}


def _latest(store, sql: str):
    try:
        return store.query(sql).item()
    except Exception:  # the table is not there yet
        return None


def bar_freshness(store, name: str, now: datetime, max_age: timedelta) -> Health:
    spec = DATASETS[name]
    latest = _latest(store, f"SELECT max(ts) FROM market.{name}")
    item = f"freshness_{name}"
    limit = f"no expected bar older than {_duration(max_age)} missing"
    if latest is None:
        return Health(item, UNKNOWN, "no bars", limit, f"market.{name} holds no bars: nothing to measure")
    due = now - max_age
    missing = expected_bars(spec.calendar, spec.interval, latest + timedelta(microseconds=1), due) \
        if due > latest else []
    n = len(missing)
    state = OK if n == 0 else FAIL
    return Health(item, state, f"latest {latest:%Y-%m-%d %H:%M}, {n} expected bar(s) missing", limit,
                  f"{spec.interval} bars on {spec.calendar}: the latest stored bar against the calendar",
                  {"latest": str(latest), "missing_bars": n})


def macro_freshness(store, now: datetime, max_age: timedelta) -> Health:
    latest = _latest(store, "SELECT max(date) FROM macro.treasury_curve")
    limit = f"curve within {max_age.days} days"
    if latest is None:
        return Health("freshness_macro", UNKNOWN, "no curve", limit, "macro.treasury_curve holds no rows")
    age = now.date() - latest
    return Health("freshness_macro", OK if age <= max_age else FAIL, f"latest curve {latest} ({age.days} days)",
                  limit, "the Treasury curve (daily) is the macro inputs' freshest series", {"latest": str(latest)})


# no rejected rows, no reconciliation finding, no cancel: the good cases; nothing traded yet is not a fault
EMPTY_IS_HEALTHY = frozenset({"market.quarantine", "trading.reconciliation", "trading.cancels", "trading.outbox",
                              "trading.executions", "trading.dropcopy", "trading.journal_cursor",
                              "trading.approved_orders", "trading.execution_reports", "trading.positions",
                              "trading.risk_decisions", "audit.log"})


def row_counts(store) -> Health:
    counts = store.table_counts()
    empty = sorted(t for t, n in counts.items() if not n and t not in EMPTY_IS_HEALTHY)
    if not counts:
        return Health("row_counts", UNKNOWN, "no tables", "every table holds rows", "the store holds no tables")
    return Health("row_counts", FAIL if empty else OK, f"{len(counts) - len(empty)} of {len(counts)} tables hold rows",
                  "every table holds rows", "empty: " + ", ".join(empty) if empty else "every table holds rows",
                  {"counts": counts, "empty": empty})


def missing_symbols(store) -> Health:
    behind, measured = {}, 0
    for name, spec in DATASETS.items():
        try:
            spans = store.query(f"SELECT symbol, max(ts) AS last_ts FROM market.{name} GROUP BY symbol")
        except Exception:
            continue
        if not spans.height:
            continue
        measured += 1
        newest = spans["last_ts"].max()
        for symbol, last in spans.iter_rows():
            lag = len(expected_bars(spec.calendar, spec.interval, last + timedelta(microseconds=1),
                                    newest + timedelta(microseconds=1))) if last < newest else 0
            if lag > spec.max_lag_bars:
                behind[f"{name}:{symbol}"] = lag
    limit = "every symbol within its dataset's allowed lag of the dataset's latest bar"
    if not measured:
        return Health("missing_symbols", UNKNOWN, "no bars", limit, "no bar table holds rows")
    return Health("missing_symbols", FAIL if behind else OK, f"{len(behind)} symbol(s) behind", limit,
                  ", ".join(f"{k} ({v} bars)" for k, v in list(behind.items())[:10]) or "none behind",
                  {"behind": behind})


def cache_hit_rate(redis_url: str | None, limits: Limits, namespace: str = "emp") -> Health:
    limit = f">= {limits.min_hit_rate:.0%} over >= {limits.min_cache_reads} entry reads"
    if not redis_url:
        return Health("cache_hit_rate", UNKNOWN, "no cache", limit, "no Redis configured (embedded tier)")
    from emp_core.store.cache import namespace_reads

    try:
        hits, misses = namespace_reads(redis_url, namespace)
    except Exception as exc:
        return Health("cache_hit_rate", FAIL, "Redis unreachable", limit, f"{type(exc).__name__}: {exc}")
    reads = hits + misses
    if reads < limits.min_cache_reads:
        return Health("cache_hit_rate", UNKNOWN, f"{reads} reads", limit, "too few reads to measure a rate",
                      {"hits": hits, "misses": misses})
    rate = hits / reads
    return Health("cache_hit_rate", OK if rate >= limits.min_hit_rate else FAIL, f"{rate:.1%} of {reads:,}", limit,
                  f"the hot cache's own entry hit rate (namespace {namespace})", {"hits": hits, "misses": misses})


def stream_lag(redis_url: str | None, limits: Limits, stream: str | None = None, group: str | None = None) -> Health:
    limit = f"<= {limits.max_stream_entries} entries and <= {limits.max_stream_age_seconds:.0f} s"
    if not redis_url:
        return Health("stream_lag", UNKNOWN, "no Redis", limit, "no Redis configured (embedded tier)")
    try:
        from emp_core.store import streams

        client = streams.connect(redis_url, timeout=1.0)
        info = streams.lag(client, stream or streams.stream_name(), group or streams.DEFAULT_GROUP)
        passed, description, metadata = streams.lag_check(info, limits.max_stream_entries,
                                                          limits.max_stream_age_seconds)
    except Exception as exc:
        return Health("stream_lag", FAIL, "unmeasured", limit, f"{type(exc).__name__}: {exc}")
    state = OK if passed else (UNKNOWN if "nothing to measure" in description else FAIL)
    return Health("stream_lag", state, description.split(":")[0], limit, description, metadata)


def backup_age(directory, now: datetime, limits: Limits) -> Health:
    from emp_core.store.backup import latest_backup

    limit = f"<= {_duration(limits.max_backup_age)}"
    info = latest_backup(directory, now=now)
    if info is None:
        return Health("backup_age", UNKNOWN, "no backup", limit, f"no complete backup in {directory}")
    age = timedelta(seconds=info.age_seconds)
    return Health("backup_age", OK if age <= limits.max_backup_age else FAIL, _duration(age), limit,
                  f"newest: {info.path.name}", {"path": str(info.path), "age_seconds": round(info.age_seconds)})


def evaluate(store, cfg, *, now: datetime | None = None, limits: Limits = Limits()) -> list[Health]:
    """Every health item of the tier (module docstring)."""
    now = now or utcnow()
    institutional = cfg.tier == "institutional"
    redis_url = cfg.redis_url if institutional else None
    items = [bar_freshness(store, name, now, limits.max_age[name]) for name in DATASETS]
    items += [macro_freshness(store, now, limits.max_age["macro"]), row_counts(store), missing_symbols(store),
              cache_hit_rate(redis_url, limits, cache_namespace(cfg.pg_url)), stream_lag(redis_url, limits),
              backup_age(cfg.home / "backups", now, limits)]
    return items


def _duration(td: timedelta) -> str:
    minutes = int(td.total_seconds() // 60)
    if minutes % (24 * 60) == 0 and minutes:
        return f"{minutes // (24 * 60)} d"
    if minutes % 60 == 0 and minutes:
        return f"{minutes // 60} h"
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def table(items: list[Health]) -> str:
    rows = [("item", "state", "value", "limit")] + [(h.name, h.state.upper(), h.value, h.limit) for h in items]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
