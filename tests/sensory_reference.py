"""A slow, obvious implementation of the sensory cortex: plain Python, one bar at a time.

It restates every formula of ``emp_core.sensory`` from its docstrings with lists,
loops and ``statistics``, so the tests can compare the vectorised code with it
column by column, and the benchmark can time it. It shares no code with the
product, and no parameter either: every window length, weight, threshold and
staleness limit is defined below from the documented specification (the README's
"sensory cortex" section and the docstrings of ``emp_core/sensory/*.py``), so a
wrong constant in the product makes the two disagree. Only names are shared
(component and dimension column names, bucket family names, ``MacroInputs``).
"""

from __future__ import annotations

import bisect
import math
import statistics
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

# Names only (column and family names, the macro data container): no parameter is read from these modules.
from emp_core.sensory import anomaly, how, when, why
from emp_core.sensory.fusion import DIMENSIONS

Value = float | None


# -- parameters, from the documented specification ------------------------------
# Each value is written here, not imported, with where it is documented.

# Windows (base.py docstring): sums, means and stds "are defined once at least 80% of the window holds
# values"; ANOMALY's docstring: m = 63 "or as many as a symbol has at its start (at least 51)" = ceil(0.8 * 63).
MIN_FRACTION = 0.8
# base.robust_scale and anomaly.py docstrings: the robust z is (x - m) / (1.4826 MAD), 1.4826 = 1 / Phi^-1(3/4).
# Computed here from the normal quantile, rounded to the four decimals the specification states (the product's
# value is that rounded one; the unrounded 1.482602... differs from it by 1.5e-6 relative, far over the tests'
# 1e-9 tolerance).
MAD_TO_SIGMA = round(1.0 / statistics.NormalDist().inv_cdf(0.75), 4)

# HOW (how.py docstring)
HOW_LIQ_WINDOW = 21  # "Amihud ... mean over 21 bars", Corwin-Schultz "mean over 21 bars of the two-bar estimates"
HOW_FLOW_WINDOW = 20  # participation "mean(V_{t-20} .. V_{t-1})"; pressure "sum over 20 bars of CLV_t V_t"
HOW_Z_WINDOW = 252  # "the pressure's 252-bar z-score"; liquidity quality "(z over 252 bars)"

# WHAT (README table "volatility-scaled momentum at 21/63/126 bars", "0.6 trend + 0.4 breakout"; what.py docstring)
WHAT_HORIZONS = (21, 63, 126)  # README and what.py: ``what_trend_{h}`` for h in 21, 63, 126
WHAT_VOL_WINDOW = 63  # what.py: "sigma_t the standard deviation of the last 63 log returns"
WHAT_RANGE_WINDOW = 20  # what.py: "the Donchian channel of the previous 20 bars (t excluded)"
WHAT_WEIGHTS = {"trend": 0.6, "breakout": 0.4}  # README and what.py: "0.6 mean(trend_h) + 0.4 breakout"
WHAT_COMPONENTS = (*(f"what_trend_{h}" for h in WHAT_HORIZONS), "what_breakout")  # names carry the horizons

# WHY (why.py docstring; README table "10y-3m slope and its 63-day change", "real 10y rate (less core-CPI
# inflation)")
WHY_SLOPE_CHANGE_DAYS = 63  # README "its 63-day change"; why.py "slope minus slope 63 curve days earlier"
WHY_CURVE_Z = (1260, 252)  # why.py: z-scored on its own timeline, "curve: 1260 days, at least 252"
WHY_MONTHLY_Z = (60, 24)  # why.py: "inflation: 60 months, at least 24"
WHY_CURVE_STALE = timedelta(days=10)  # why.py: "staleness limit (curve 10 days, ..."
WHY_MONTHLY_STALE = timedelta(days=62)  # why.py: "... monthly series 62 days)"
WHY_VOL_WINDOW = 21  # why.py: "z-score of ln(21-bar return volatility) ..."
WHY_VOL_Z_WINDOW = 252  # why.py: "... against its last 252 bars, per symbol"
# why.py: "year-on-year core CPI inflation"; the series id itself is the code's (and the shipped data's) name.
WHY_INFLATION_SERIES = "core_cpi"

# WHEN (when.py docstring)
WHEN_MIN_OBS = 20  # "once both samples hold 20 bars"
WHEN_FULL_OBS = 250  # "confidence = mean over families of min(1, n_b / 250)"
# "from local hours Tokyo 09-18, London 08-17, New York 08-17 with daylight saving": (zone, opens, closes)
WHEN_SESSIONS = {"asia": ("Asia/Tokyo", 9, 18), "london": ("Europe/London", 8, 17),
                 "new_york": ("America/New_York", 8, 17)}

# ANOMALY (anomaly.py docstring; README table "through its 63-bar window")
ANOMALY_WINDOW = 63  # "bar t judged against the 63 bars before it, never itself"; README "its 63-bar window"
ANOMALY_THRESHOLD = 4.0  # "flagged (``anomaly_flag``) when strength >= 4"; score "tanh(strength / 4 - 1)"
ANOMALY_RIDGE = 1e-3  # "A 1e-3 ridge on the diagonal keeps S invertible"
ANOMALY_GAP_SCALE_FLOOR = 0.25  # gap "scale floored at a quarter of the return scale"
# Leading bars where each input is undefined: not stated as numbers; they follow from the definitions (the
# return r_t and the gap ln(O_t / C_{t-1}) read the previous close, ln V_t does not). Same values as the code.
ANOMALY_WARM = {"return": 1, "volume": 0, "gap": 1}

# Fusion: README "default weights WHY 0.15, HOW 0.20, WHAT 0.35, WHEN 0.10, ANOMALY 0.20"; fusion.py docstring.
DEFAULT_WEIGHTS = {"why": 0.15, "how": 0.20, "what": 0.35, "when": 0.10, "anomaly": 0.20}


# -- windows -------------------------------------------------------------------

def _min_samples(n: int, how_: str) -> int:
    m = math.ceil(MIN_FRACTION * n)
    return max(2, m) if how_ in ("std", "median") else m


def _stat(values: list[float], how_: str) -> float:
    if how_ == "mean":
        return sum(values) / len(values)
    if how_ == "sum":
        return sum(values)
    if how_ == "std":
        return statistics.stdev(values)
    if how_ == "median":
        return statistics.median(values)
    return max(values) if how_ == "max" else min(values)


def per_symbol_window(xs: list[Value], t: int, n: int, how_: str, exclude: bool = False) -> Value:
    """Sums, means, stds: the window is cut at the symbol's first bar; >= 80% of n values needed."""
    end = t - 1 if exclude else t
    if end < 0:
        return None
    vals = [v for v in xs[max(0, end - n + 1): end + 1] if v is not None]
    return _stat(vals, how_) if len(vals) >= _min_samples(n, how_) else None


def full_window(xs: list[Value], t: int, n: int, how_: str, warm: int = 0, exclude: bool = False) -> Value:
    """Medians, minima, maxima: only where the whole window lies inside the symbol past ``warm``."""
    shift = 1 if exclude else 0
    if t < warm + n - 1 + shift:
        return None
    end = t - shift
    vals = [v for v in xs[end - n + 1: end + 1] if v is not None]
    return _stat(vals, how_) if len(vals) >= _min_samples(n, how_) else None


def div(a: Value, b: Value) -> Value:
    return None if a is None or b is None or b == 0 else a / b


def ln(x: Value) -> Value:
    return None if x is None or x <= 0 else math.log(x)


def zscore(xs: list[Value], t: int, n: int) -> Value:
    mean, std = per_symbol_window(xs, t, n, "mean"), per_symbol_window(xs, t, n, "std")
    return None if xs[t] is None or mean is None else div(xs[t] - mean, std)


def weighted(parts: list[tuple[float, Value]]) -> tuple[Value, float]:
    total = sum(abs(a) for a, _ in parts)
    present = [(a, x) for a, x in parts if x is not None]
    den = sum(abs(a) for a, _ in present)
    return (sum(a * x for a, x in present) / den if den > 0 else None), den / total


def score_conf(evidence: Value, confidence: float) -> tuple[Value, float]:
    if evidence is None:
        return None, 0.0
    return math.tanh(evidence), min(max(confidence, 0.0), 1.0)


# -- input ---------------------------------------------------------------------

def _clean(v, allow_zero: bool) -> Value:
    if v is None or not math.isfinite(v):
        return None
    return v if (v > 0 or (allow_zero and v == 0)) else None


def symbols_of(bars: pl.DataFrame) -> dict[str, dict[str, list]]:
    out: dict[str, dict[str, list]] = {}
    for row in bars.sort("symbol", "ts").iter_rows(named=True):
        s = out.setdefault(row["symbol"], {k: [] for k in ("ts", "open", "high", "low", "close", "volume")})
        s["ts"].append(row["ts"])
        for k in ("open", "high", "low", "close"):
            s[k].append(_clean(row[k], False))
        s["volume"].append(_clean(row["volume"], True))
    for s in out.values():
        c = s["close"]
        s["r"] = [None] + [None if c[i] is None or c[i - 1] is None else math.log(c[i] / c[i - 1])
                           for i in range(1, len(c))]
    return out


# -- HOW -----------------------------------------------------------------------

def ref_how(s: dict) -> dict[str, list]:
    n = len(s["ts"])
    H, L, C, V, r = s["high"], s["low"], s["close"], s["volume"], s["r"]
    k = 3 - 2 * math.sqrt(2)
    illiq = [None if r[t] is None or C[t] is None or V[t] is None else div(abs(r[t]), C[t] * V[t]) for t in range(n)]
    cs: list[Value] = [None]
    for t in range(1, n):
        if None in (H[t], L[t], H[t - 1], L[t - 1], C[t - 1]):
            cs.append(None)
            continue
        h, lo = H[t], L[t]  # the overnight adjustment: bar t shifted by its gap to C_{t-1}
        if lo > C[t - 1]:
            h, lo = h - (lo - C[t - 1]), lo - (lo - C[t - 1])
        elif h < C[t - 1]:
            h, lo = h + (C[t - 1] - h), lo + (C[t - 1] - h)
        beta = math.log(h / lo) ** 2 + math.log(H[t - 1] / L[t - 1]) ** 2
        gamma = math.log(max(h, H[t - 1]) / min(lo, L[t - 1])) ** 2
        alpha = (math.sqrt(2 * beta) - math.sqrt(beta)) / k - math.sqrt(gamma / k)
        cs.append(max(0.0, 2 * (math.exp(alpha) - 1) / (1 + math.exp(alpha))))
    clv_v = []
    for t in range(n):
        if None in (H[t], L[t], C[t], V[t]):
            clv_v.append(None)
        else:
            clv = 0.0 if H[t] == L[t] else ((C[t] - L[t]) - (H[t] - C[t])) / (H[t] - L[t])
            clv_v.append(clv * V[t])
    out = {c: [] for c in ("how_score", "how_confidence", *how.COMPONENTS)}
    amihud = [per_symbol_window(illiq, t, HOW_LIQ_WINDOW, "mean") for t in range(n)]
    spread = [per_symbol_window(cs, t, HOW_LIQ_WINDOW, "mean") for t in range(n)]
    pressure = [div(per_symbol_window(clv_v, t, HOW_FLOW_WINDOW, "sum"),
                    per_symbol_window(V, t, HOW_FLOW_WINDOW, "sum")) for t in range(n)]
    log_amihud = [ln(a) for a in amihud]
    for t in range(n):
        avg = per_symbol_window(V, t, HOW_FLOW_WINDOW, "mean", exclude=True)
        part = None if V[t] is None else ln(div(V[t], avg))
        zp = zscore(pressure, t, HOW_Z_WINDOW)
        zi = zscore(log_amihud, t, HOW_Z_WINDOW)
        zs = zscore(spread, t, HOW_Z_WINDOW)
        gain = 1.0 if part is None else min(max(math.exp(part), 0.5), 2.0)
        q = 1.0
        for z in (zi, zs):
            q *= 1.0 if z is None else min(1.0, 2.0 / (1.0 + math.exp(z)))
        score, conf = score_conf(None if zp is None else zp * gain, q)
        for col, v in zip(out, (score, conf, amihud[t], spread[t], part, pressure[t]), strict=True):
            out[col].append(v)
    return out


# -- WHAT ----------------------------------------------------------------------

def ref_what(s: dict) -> dict[str, list]:
    n = len(s["ts"])
    H, L, C, r = s["high"], s["low"], s["close"], s["r"]
    out = {c: [] for c in ("what_score", "what_confidence", *WHAT_COMPONENTS)}
    for t in range(n):
        sigma = per_symbol_window(r, t, WHAT_VOL_WINDOW, "std")
        trends = []
        for h in WHAT_HORIZONS:
            ok = t >= h and C[t] is not None and C[t - h] is not None and sigma is not None
            trends.append(div(math.log(C[t]) - math.log(C[t - h]), sigma * math.sqrt(h)) if ok else None)
        hi = full_window(H, t, WHAT_RANGE_WINDOW, "max", exclude=True)
        lo = full_window(L, t, WHAT_RANGE_WINDOW, "min", exclude=True)
        b = None
        if hi is not None and lo is not None and C[t] is not None:
            b = div(C[t] - (hi + lo) / 2, (hi - lo) / 2)
            b = None if b is None else min(max(b, -2.0), 2.0)
        known = [x for x in trends if x is not None]
        trend = sum(known) / len(known) if known else None
        ev, cov = weighted([(WHAT_WEIGHTS["trend"], trend), (WHAT_WEIGHTS["breakout"], b)])
        score, conf = score_conf(ev if trend is not None else None, cov)
        for col, v in zip(out, (score, conf, *trends, b), strict=True):
            out[col].append(v)
    return out


# -- WHY -----------------------------------------------------------------------

def _rolling_z(xs: list[Value], n: int, m: int) -> list[Value]:
    out = []
    for i in range(len(xs)):
        vals = [v for v in xs[max(0, i - n + 1): i + 1] if v is not None]
        if xs[i] is None or len(vals) < m:
            out.append(None)
            continue
        sd = statistics.stdev(vals)
        out.append((xs[i] - sum(vals) / len(vals)) / sd if sd > 0 else None)
    return out


def _known(d) -> datetime:
    d = d.date() if isinstance(d, datetime) else d
    return datetime.combine(d + timedelta(days=1), datetime.min.time())


def macro_tables(macro: why.MacroInputs | None) -> tuple[list | None, list | None]:
    """(curve rows, inflation rows), each a list of dicts sorted by known_from."""
    infl = None
    if macro is not None and macro.series is not None:
        rows = sorted((r for r in macro.series.iter_rows(named=True)
                       if r["series_id"] == WHY_INFLATION_SERIES and r["value"] is not None
                       and math.isfinite(r["value"]) and r["value"] > 0), key=lambda r: r["period_start"])
        if rows:
            # ln(P_m / P_{m-12}) and its change over 6 months, by calendar month (a missing month is a gap)
            def month(d) -> int:
                return d.year * 12 + d.month - 1
            value = {month(r["period_start"]): r["value"] for r in rows}
            yoy = [math.log(r["value"] / value[month(r["period_start"]) - 12])
                   if month(r["period_start"]) - 12 in value else None for r in rows]
            by_month = {month(r["period_start"]): y for r, y in zip(rows, yoy, strict=True)}
            trend = [None if y is None or by_month.get(month(r["period_start"]) - 6) is None
                     else y - by_month[month(r["period_start"]) - 6] for r, y in zip(rows, yoy, strict=True)]
            z = _rolling_z(trend, *WHY_MONTHLY_Z)
            infl = [{"known_from": _known(r.get("available_at", r["period_start"])), "yoy": yoy[i],
                     "trend": trend[i], "z_trend": z[i]} for i, r in enumerate(rows)]
    curve = None
    if macro is not None and macro.curve is not None:
        rows = sorted((r for r in macro.curve.iter_rows(named=True)
                       if r["m3"] is not None and r["y10"] is not None
                       and math.isfinite(r["m3"]) and math.isfinite(r["y10"])), key=lambda r: r["date"])
        if rows:
            kf = [_known(r.get("available_at", r["date"])) for r in rows]
            slope = [r["y10"] - r["m3"] for r in rows]
            change = [None if i < WHY_SLOPE_CHANGE_DAYS else slope[i] - slope[i - WHY_SLOPE_CHANGE_DAYS]
                      for i in range(len(rows))]
            real = []
            for i, r in enumerate(rows):
                hit = _asof(infl, kf[i], WHY_MONTHLY_STALE) if infl else None
                real.append(None if hit is None or hit["yoy"] is None else r["y10"] - hit["yoy"])
            zs, zc, zr = (_rolling_z(x, *WHY_CURVE_Z) for x in (slope, change, real))
            curve = [{"known_from": kf[i], "slope": slope[i], "change": change[i], "real": real[i],
                      "z_slope": zs[i], "z_change": zc[i], "z_real": zr[i]} for i in range(len(rows))]
    return curve, infl


def _asof(rows: list[dict] | None, ts: datetime, tolerance: timedelta) -> dict | None:
    """The last row whose known_from <= ts, if it is at most ``tolerance`` old."""
    if not rows:
        return None
    keys = _keys(rows)
    i = bisect.bisect_right(keys, ts) - 1
    return rows[i] if i >= 0 and ts - keys[i] <= tolerance else None


_KEY_CACHE: dict[int, list] = {}


def _keys(rows: list[dict]) -> list:
    if id(rows) not in _KEY_CACHE:
        if len(_KEY_CACHE) > 8:
            _KEY_CACHE.clear()
        _KEY_CACHE[id(rows)] = [r["known_from"] for r in rows]
    return _KEY_CACHE[id(rows)]


def ref_why(s: dict, tables) -> dict[str, list]:
    curve, infl = tables
    n = len(s["ts"])
    vol = [per_symbol_window(s["r"], t, WHY_VOL_WINDOW, "std") for t in range(n)]
    log_vol = [ln(v) for v in vol]
    out = {c: [] for c in ("why_score", "why_confidence", *why.COMPONENTS)}
    for t in range(n):
        c = _asof(curve, s["ts"][t], WHY_CURVE_STALE) or {}
        f = _asof(infl, s["ts"][t], WHY_MONTHLY_STALE) or {}
        regime = zscore(log_vol, t, WHY_VOL_Z_WINDOW)
        parts = [(1.0, c.get("z_slope")), (1.0, c.get("z_change")), (-1.0, c.get("z_real")),
                 (-1.0, f.get("z_trend")), (-1.0, regime)]
        has_curve = bool(curve) and s["ts"][t] >= curve[0]["known_from"]
        has_infl = bool(infl) and s["ts"][t] >= infl[0]["known_from"]
        given = [has_curve, has_curve, has_curve and has_infl, has_infl, True]
        ev, cov = weighted(parts)
        if any(g and x is None for g, (_, x) in zip(given, parts, strict=True)):
            ev = None  # a member whose input was given is missing: no score rather than a shifted average
        score, conf = score_conf(ev, cov)
        vals = (score, conf, c.get("slope"), c.get("change"), c.get("real"), f.get("trend"), regime)
        for col, v in zip(out, vals, strict=True):
            out[col].append(v)
    return out


# -- WHEN ----------------------------------------------------------------------

def _session(ts: datetime) -> str:
    utc = ts.replace(tzinfo=ZoneInfo("UTC"))
    open_ = {name: lo <= utc.astimezone(ZoneInfo(tz)).hour < hi for name, (tz, lo, hi) in WHEN_SESSIONS.items()}
    if open_["london"] and open_["new_york"]:
        return "overlap"
    for name in ("london", "new_york", "asia"):
        if open_[name]:
            return name
    return "off"


def release_calendar(macro: why.MacroInputs | None) -> list[date]:
    if macro is None or macro.series is None or "available_at" not in macro.series.columns:
        return []
    return sorted({r["available_at"] for r in macro.series.iter_rows(named=True) if r.get("frequency") != "D"})


def trading_day_rule(calendar: str | None):
    """Whether a date is scheduled to trade on ``calendar``: for XNYS asked of exchange_calendars day by day
    from 1970 to 2035 (a closure it lists as ad hoc was scheduled as a session), Monday to Friday outside."""
    if calendar == "XNYS":
        import exchange_calendars as xc

        cal = xc.get_calendar("XNYS", start="1970-01-01", end="2035-12-31")
        adhoc = {d.date() for d in cal.adhoc_holidays}
        return lambda d: (d.weekday() < 5 if not date(1970, 1, 1) <= d <= date(2035, 12, 31)
                          else cal.is_session(d.isoformat()) or d in adhoc)
    if calendar == "24/7":
        return lambda d: True
    return lambda d: d.weekday() < 5


def _next_trading_day(d: date, trades) -> date:
    day = d + timedelta(days=1)
    while not trades(day):
        day += timedelta(days=1)
    return day


def _turn_of_month(d: date, trades) -> bool:
    """The month's last trading day, or one of its first three (days counted one by one)."""
    first = date(d.year, d.month, 1)
    before = sum(1 for k in range((d - first).days) if trades(first + timedelta(days=k)))
    after, day = 0, d + timedelta(days=1)
    while day.month == d.month:
        after += trades(day)
        day += timedelta(days=1)
    return before < 3 or after == 0


def ref_when(s: dict, releases: list[date], intraday: bool, trades=None) -> dict[str, list]:
    """Intraday: the bar's own hour and day. Daily: the next trading day's weekday and month phase, and a
    release after the bar's date up to that day."""
    n = len(s["ts"])
    r = s["r"]
    fwd = [r[t + 1] if t + 1 < n else None for t in range(n)]
    trades = trades or trading_day_rule(None)
    nxt = [_next_trading_day(ts.date(), trades) for ts in s["ts"]]
    days, eve = [], []
    for t, ts in enumerate(s["ts"]):
        i = bisect.bisect_left(releases, ts.date() + timedelta(days=1))
        d = (releases[i] - ts.date()).days if i < len(releases) else None
        gap = {5: 3, 6: 2}.get(ts.isoweekday(), 1) if intraday else (nxt[t] - ts.date()).days
        days.append(d)
        eve.append(d is not None and d <= gap)
    if intraday:
        buckets: dict[str, list] = {"weekday": [ts.isoweekday() for ts in s["ts"]],
                                    "session": [_session(ts) for ts in s["ts"]]}
    else:
        turn = [_turn_of_month(x, trades) for x in nxt]
        buckets = {"weekday": [x.isoweekday() for x in nxt], "month_phase": ["turn" if x else "rest" for x in turn]}
        eve = [e and not x for e, x in zip(eve, turn, strict=True)]
    buckets["release_eve"] = eve
    families = when.INTRADAY_FAMILIES if intraday else when.DAILY_FAMILIES
    stats = {f: [] for f in families}
    for f in families:
        b = buckets[f]
        sums: dict[object, list[float]] = {}  # bucket -> [n, sum, sum of squares] of r_{u+1} over u < t
        every = [0, 0.0, 0.0]  # the same over every earlier bar
        for t in range(n):
            cnt, s1, s2 = sums.get(b[t], (0, 0.0, 0.0))
            no, s1o, s2o = every[0] - cnt, every[1] - s1, every[2] - s2
            if fwd[t] is not None:
                sums[b[t]] = [cnt + 1, s1 + fwd[t], s2 + fwd[t] * fwd[t]]
                every = [every[0] + 1, every[1] + fwd[t], every[2] + fwd[t] * fwd[t]]
            tstat = None
            if cnt >= WHEN_MIN_OBS and no >= WHEN_MIN_OBS:
                var = (s2 - s1 * s1 / cnt) / (cnt - 1)
                var_o = (s2o - s1o * s1o / no) / (no - 1)
                if var > 0 and var_o > 0:  # the excess over every earlier bar's mean, in Welch's units
                    tstat = (no / (cnt + no)) * (s1 / cnt - s1o / no) / math.sqrt(var / cnt + var_o / no)
            stats[f].append((tstat, cnt))
    out = {c: [] for c in ("when_score", "when_confidence", *when.components(intraday))}
    second = "session" if intraday else "month_phase"
    for t in range(n):
        ts_ = [stats[f][t][0] for f in families if stats[f][t][0] is not None]
        ev = sum(ts_) / len(ts_) / 2 if ts_ else None
        conf = sum(min(1.0, stats[f][t][1] / WHEN_FULL_OBS) if stats[f][t][0] is not None else 0.0
                   for f in families) / len(families)
        score, conf = score_conf(ev, conf)
        vals = (score, conf, buckets["weekday"][t], buckets[second][t], eve[t], days[t],
                *(stats[f][t][0] for f in families))
        for col, v in zip(out, vals, strict=True):
            out[col].append(v)
    return out


# -- ANOMALY -------------------------------------------------------------------

def _robust(xs: list[Value], warm: int) -> tuple[list[Value], list[Value]]:
    n = len(xs)
    centre = [full_window(xs, t, ANOMALY_WINDOW, "median", warm=warm, exclude=True) for t in range(n)]
    dev = [None if xs[t] is None or centre[t] is None else abs(xs[t] - centre[t]) for t in range(n)]
    scale = [full_window(dev, t, ANOMALY_WINDOW, "median", warm=warm + ANOMALY_WINDOW, exclude=True)
             for t in range(n)]
    return centre, [None if v is None else MAD_TO_SIGMA * v for v in scale]


def _fmt(x: float) -> str:
    text = str(round(x, 1))
    return f"+{text}" if x >= 0 else text


def _multivariate_z(scores: dict[str, list], t: int) -> Value:
    """Hotelling's T^2 of bar t against the m <= 63 bars before it (at least 80% of 63), on the scores
    defined at t and on all m bars; as F(k, m - k), to z by Paulson (1942)."""
    lo = max(0, t - ANOMALY_WINDOW)
    m = t - lo
    if m < math.ceil(MIN_FRACTION * ANOMALY_WINDOW):
        return None
    kept = [c for c in anomaly.OTHERS if all(scores[c][u] is not None for u in range(lo, t + 1))]
    k = len(kept)
    if k == 0:
        return None
    past = np.array([[scores[c][u] for c in kept] for u in range(lo, t)])
    mu = np.mean(past, axis=0)
    cov = np.atleast_2d(np.cov(past, rowvar=False, ddof=1)) + ANOMALY_RIDGE * np.eye(k)
    if not np.all(np.linalg.eigvalsh(cov) > 0):
        return None
    d = np.array([scores[c][t] for c in kept]) - mu
    t2 = float(d @ np.linalg.solve(cov, d)) * m / (m + 1)  # x_t - mu has covariance (1 + 1/m) Sigma
    f = t2 * (m - k) / (k * (m - 1))  # Hotelling: F(k, m - k)
    a, b = 2 / (9 * k), 2 / (9 * (m - k))
    return ((1 - b) * f ** (1 / 3) - (1 - a)) / math.sqrt(a + f ** (2 / 3) * b)


def ref_anomaly(s: dict, scores: dict[str, list]) -> dict[str, list]:
    n = len(s["ts"])
    Op, C, V, r = s["open"], s["close"], s["volume"], s["r"]
    xs = {
        "return": r,
        "volume": [ln(v) for v in V],
        "gap": [None] + [None if Op[t] is None or C[t - 1] is None else ln(Op[t] / C[t - 1]) for t in range(1, n)],
    }
    robust = {name: _robust(x, ANOMALY_WARM[name]) for name, x in xs.items()}
    floor = ANOMALY_GAP_SCALE_FLOOR
    scale_gap = [None if a is None and b is None else max(v for v in (a, None if b is None else floor * b)
                                                        if v is not None)
                 for a, b in zip(robust["gap"][1], robust["return"][1], strict=True)]
    robust["gap"] = (robust["gap"][0], scale_gap)
    z = {name: [None if xs[name][t] is None or robust[name][0][t] is None
                else div(xs[name][t] - robust[name][0][t], robust[name][1][t]) for t in range(n)]
         for name in xs}
    out = {c: [] for c in ("anomaly_score", "anomaly_confidence", *anomaly.COMPONENTS, "anomaly_flag",
                           "anomaly_explanation")}
    for t in range(n):
        md = _multivariate_z(scores, t)
        parts = [abs(z[nm][t]) for nm in xs if z[nm][t] is not None] + ([md] if md is not None else [])
        strength = max(parts) if parts else None
        flagged = strength is not None and strength >= ANOMALY_THRESHOLD
        if r[t] is not None and r[t] != 0:
            move = math.copysign(1.0, r[t])
        elif C[t] is not None and Op[t] is not None:
            move = float(np.sign(C[t] - Op[t]))
        else:
            move = 0.0
        zg, zr = z["gap"][t], z["return"][t]
        direction = float(np.sign(zg)) if zg is not None and abs(zg) >= (abs(zr) if zr is not None else 0.0) \
            else move
        score = None if strength is None else (direction * math.tanh(strength / ANOMALY_THRESHOLD - 1)
                                               if flagged else 0.0)
        defined = sum(x is not None for x in (z["return"][t], z["volume"][t], z["gap"][t], md))
        conf = defined / 4 if flagged else 0.0
        text = None
        if flagged:
            bits = [f"{nm} z={_fmt(z[nm][t])}" for nm in xs
                    if z[nm][t] is not None and abs(z[nm][t]) >= ANOMALY_THRESHOLD]
            if md is not None and md >= ANOMALY_THRESHOLD:
                bits.append(f"multivariate z={_fmt(md)}")
            text = "; ".join(bits)
        vals = (score, conf, z["return"][t], z["volume"][t], z["gap"][t], md, flagged, text)
        for col, val in zip(out, vals, strict=True):
            out[col].append(val)
    return out


# -- everything ----------------------------------------------------------------

def reference_features(bars: pl.DataFrame, macro: why.MacroInputs | None = None, *, intraday: bool = False,
                       weights: dict[str, float] | None = None, calendar: str | None = None) -> pl.DataFrame:
    """The same columns as ``compute_features``, computed bar by bar."""
    trades = trading_day_rule(calendar)
    weights = {d: float((weights or DEFAULT_WEIGHTS).get(d, 0.0)) for d in DIMENSIONS}
    tables = macro_tables(macro)
    releases = release_calendar(macro)
    frames = []
    for symbol, s in symbols_of(bars).items():
        cols: dict[str, list] = {"symbol": [symbol] * len(s["ts"]), "ts": s["ts"]}
        cols |= ref_why(s, tables) | ref_how(s) | ref_what(s) | ref_when(s, releases, intraday, trades)
        cols |= ref_anomaly(s, cols)
        signal, confidence = [], []
        total = sum(abs(w) for w in weights.values())
        for t in range(len(s["ts"])):
            present = [(weights[d], cols[f"{d}_confidence"][t], cols[f"{d}_score"][t]) for d in DIMENSIONS
                       if weights[d] != 0 and cols[f"{d}_score"][t] is not None]
            den = sum(abs(w) * c for w, c, _ in present)
            signal.append(sum(w * c * x for w, c, x in present) / den if den > 0 else None)
            confidence.append(den / total)
        cols["signal"], cols["signal_confidence"] = signal, confidence
        frames.append(pl.DataFrame(cols, infer_schema_length=None))
    return pl.concat(frames, how="diagonal_relaxed")
