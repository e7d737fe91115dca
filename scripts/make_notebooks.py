"""Write the notebooks under notebooks/ (kept as code so their cells are reviewed like code)."""

from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]

CONNECT = """import os
from pathlib import Path

import duckdb
import matplotlib.pyplot as plt
import polars as pl

home = Path(os.environ.get("EMP_HOME", Path.cwd().parent / ".emp" if Path.cwd().name == "notebooks" else ".emp"))
db = home / "emp.duckdb"
assert db.exists(), f"{db} does not exist: run `make demo` first"
con = duckdb.connect(str(db), read_only=True)
q = lambda sql: con.sql(sql).pl()
q("SELECT schema_name || '.' || table_name AS tbl, estimated_size AS rows FROM duckdb_tables() ORDER BY 1")"""

MARKET_DATA = [
    ("md", "# 01 · Market data\n\nReads the tables the Dagster assets materialised in the embedded store "
           "(`$EMP_HOME/emp.duckdb`, default `./.emp`). Run `make demo` first."),
    ("code", CONNECT),
    ("md", "## The universe: what the store holds"),
    ("code", 'universe = q("SELECT * FROM market.universe ORDER BY dataset, symbol")\nuniverse'),
    ("md", "## Prices\nDaily closes rebased to 100 at each symbol's first bar; EURUSD hourly."),
    ("code", """daily = q("SELECT symbol, ts, close FROM market.bars_1d ORDER BY symbol, ts")
daily = daily.with_columns((pl.col("close") / pl.col("close").first().over("symbol") * 100).alias("rebased"))
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
for sym, frame in daily.group_by("symbol", maintain_order=True):
    axes[0].plot(frame["ts"], frame["rebased"], label=sym[0], lw=0.8)
axes[0].set_yscale("log"); axes[0].legend(); axes[0].set_title("daily close, rebased to 100")
fx = q("SELECT ts, close FROM market.bars_1h WHERE symbol = 'EURUSD' ORDER BY ts")
axes[1].plot(fx["ts"], fx["close"], lw=0.6); axes[1].set_title("EURUSD hourly close")
fig.tight_layout()"""),
    ("md", "## Yield curve slope and macro, point in time\n`available_at` is the date a value became public."),
    ("code", """curve = q("SELECT date, y10 - m3 AS slope_10y_3m FROM macro.treasury_curve ORDER BY date")
gdp = q("SELECT available_at, value FROM macro.series WHERE series_id = 'realgdp' ORDER BY available_at")
fig, ax = plt.subplots(1, 2, figsize=(13, 3.5))
ax[0].plot(curve["date"], curve["slope_10y_3m"] * 100, lw=0.7); ax[0].axhline(0, color="k", lw=0.5)
ax[0].set_title("10y - 3m Treasury slope (pp)")
ax[1].step(gdp["available_at"], gdp["value"], where="post"); ax[1].set_title("real GDP as known at each date")
fig.tight_layout()"""),
    ("md", "## Data quality\nJournal rows per yearly partition (rows in, stored, quarantined, freshness lag) "
           "and quarantined rows by reason."),
    ("code", """journal = q(\"\"\"
    SELECT dataset, partition_key, rows_in, rows_stored, rows_quarantined, freshness_lag_bars, status
    FROM market.ingest_journal
    QUALIFY row_number() OVER (PARTITION BY dataset, partition_key ORDER BY finished_at DESC) = 1
    ORDER BY dataset, partition_key\"\"\")
assert (journal["rows_in"] == journal["rows_stored"] + journal["rows_quarantined"]).all()
print(journal.group_by("dataset", "status").len().sort("dataset", "status"))
per_year = journal.filter(pl.col("dataset") == "bars_1d")
fig, ax = plt.subplots(figsize=(13, 3))
ax.bar(range(per_year.height), per_year["rows_stored"], label="stored")
ax.bar(range(per_year.height), per_year["rows_quarantined"], bottom=per_year["rows_stored"], label="quarantined")
ax.set_title("bars_1d rows per yearly partition (latest run)"); ax.legend()
q("SELECT dataset, reason, count(*) AS rows FROM market.quarantine GROUP BY ALL ORDER BY rows DESC")"""),
    ("code", "con.close()"),
]


SENSORY = [
    ("md", "# 02 · Sensory cortex\n\nThe five signed dimensions (WHY macro, HOW liquidity, WHAT pattern, "
           "WHEN timing, ANOMALY) and the fused signal, as the `sensory/*` assets stored them. "
           "Every value at bar t was computed from data up to t. Run `make demo` first."),
    ("code", CONNECT),
    ("md", "## One symbol through 2008\nThe fused signal with each dimension's score, under the S&P 500 close."),
    ("code", """dims = ["why", "how", "what", "when", "anomaly"]
spx = q(\"\"\"
    SELECT f.ts, b.close, f.signal, f.signal_confidence, {cols}
    FROM sensory.fused f JOIN market.bars_1d b USING (symbol, ts)
    WHERE f.dataset = 'bars_1d' AND f.symbol = 'SPX' AND f.ts BETWEEN '2007-06-01' AND '2009-06-30'
    ORDER BY f.ts\"\"\".format(cols=", ".join(f"f.{d}_score" for d in dims)))
fig, axes = plt.subplots(3, 1, figsize=(13, 8), sharex=True)
axes[0].plot(spx["ts"], spx["close"], color="k", lw=0.8); axes[0].set_title("SPX close")
for d in dims:
    axes[1].plot(spx["ts"], spx[f"{d}_score"], lw=0.7, label=d)
axes[1].legend(ncol=5); axes[1].set_title("dimension scores in [-1, 1]")
axes[2].plot(spx["ts"], spx["signal"], lw=0.8); axes[2].fill_between(spx["ts"], 0, spx["signal_confidence"],
                                                                       alpha=0.2, label="confidence")
axes[2].axhline(0, color="k", lw=0.5); axes[2].legend(); axes[2].set_title("fused signal")
fig.tight_layout()"""),
    ("md", "## Anomalies and their explanations\nEvery flagged bar names the component that triggered."),
    ("code", """flagged = q(\"\"\"
    SELECT dataset, symbol, ts, anomaly_score, anomaly_explanation FROM sensory.anomaly
    WHERE anomaly_flag ORDER BY abs(anomaly_score) DESC LIMIT 12\"\"\")
assert flagged["anomaly_explanation"].is_not_null().all()
flagged"""),
    ("md", "## Does the fused signal line up with the next bar?\nMean next-day return by signal quintile "
           "(daily bars, all symbols). A research view, not a backtest: no costs, no sizing."),
    ("code", """nxt = q(\"\"\"
    SELECT f.signal, ln(lead(b.close) OVER (PARTITION BY b.symbol ORDER BY b.ts) / b.close) AS next_return
    FROM sensory.fused f JOIN market.bars_1d b USING (symbol, ts) WHERE f.dataset = 'bars_1d'\"\"\").drop_nulls()
quintile = pl.format("q{}", (pl.col("signal").rank("ordinal") - 1) * 5 // pl.len() + 1)
by_q = (nxt.with_columns(quintile.alias("quintile"))
        .group_by("quintile").agg(pl.len().alias("bars"), (pl.col("next_return").mean() * 1e4).alias("bp"))
        .sort("quintile"))
fig, ax = plt.subplots(figsize=(6, 3)); ax.bar(by_q["quintile"].cast(str), by_q["bp"])
ax.set_title("mean next-day log return (bp) by fused-signal quintile")
by_q"""),
    ("md", "## Calibration and drift\nThe thresholds the checks use, and the latest month against the 36 "
           "before it for each dimension (what the `drift` asset checks report)."),
    ("code", """from emp_core.sensory.calibration import drift
from emp_core.store import DuckDBStore

print(q("SELECT * FROM sensory.calibration WHERE symbol = '*' ORDER BY dimension, dataset"))
con.close()  # the store opens its own connection
store = DuckDBStore(db)
for name in dims + ["fused"]:
    outcome = drift(store, name)
    print(f"{name:8s} {'ok     ' if outcome.passed else 'WARNING'} {outcome.description.split('. ', 1)[-1]}")"""),
]

EVOLUTION = [
    ("md", "# 03 · Evolution\n\nThe walk-forward evolution as the `evolution/*` assets stored it: every "
           "evaluation in the experiment log, the genome chosen in each window and how it did out of sample, "
           "the last window's population, and the promotion decision. Run `make demo` first."),
    ("code", CONNECT),
    ("md", "## Fitness runs: one genome per window, judged on its test year"),
    ("code", """runs = q("SELECT * FROM evolution.fitness_runs ORDER BY window_id")
runs.select("window_id", "name", "test_start", "test_sharpe_lb", "test_max_drawdown", "test_turnover", "test_trades",
            "w_why", "w_how", "w_what", "w_when", "w_anomaly", "entry", "holding_period")"""),
    ("md", "## The experiment log\nEvery evaluation of this run; the trial registry `evolution.trials` keeps them "
           "across runs, and its distinct genomes are the N of the deflated Sharpe ratio."),
    ("code", """log_ = q("SELECT * FROM evolution.experiment_log")
print(f"{log_.height} evaluations; {log_.filter(pl.col('phase') == 'train').height} training trials")
by_gen = (log_.filter(pl.col("phase") == "train").group_by("window_id", "generation")
          .agg(pl.col("sharpe_lb").max().alias("best"), pl.col("sharpe_lb").median().alias("median"))
          .sort("window_id", "generation"))
fig, ax = plt.subplots(figsize=(12, 3.5))
for (w,), g in by_gen.group_by(["window_id"], maintain_order=True):
    ax.plot(g["generation"], g["best"], marker="o", lw=0.8, label=f"w{w}")
ax.set_xlabel("generation"); ax.set_ylabel("best Sharpe lower bound (train)"); ax.legend(ncol=8, fontsize=7)
log_.group_by("species").agg(pl.len().alias("evaluations"), pl.col("sharpe_lb").median()).sort("species")"""),
    ("md", "## The last window's population: the trade-off NSGA-II keeps"),
    ("code", """pop = q("SELECT * FROM evolution.population "
        "WHERE window_id = (SELECT max(window_id) FROM evolution.population)")
fig, ax = plt.subplots(figsize=(6, 4))
sc = ax.scatter(pop["max_drawdown"], pop["sharpe_lb"], c=pop["turnover"], cmap="viridis")
fig.colorbar(sc, label="turnover / year"); ax.set_xlabel("max drawdown"); ax.set_ylabel("Sharpe lower bound")
ax.set_title("final population, last window (train objectives)")"""),
    ("md", "## Lineage of the last window's chosen genome"),
    ("code", """chosen = runs.sort("window_id").tail(1)["name"].item()
ident = int(chosen.lstrip("g"))
rows = {r["individual"]: r for r in log_.filter(pl.col("phase") == "train").iter_rows(named=True)}
line, todo = [], [ident]
while todo and len(line) < 12:
    i = todo.pop(0)
    if i in rows:
        line.append((i, rows[i]["generation"], rows[i]["operator"], rows[i]["parents"]))
        todo += rows[i]["parents"]
pl.DataFrame(line, schema=["individual", "generation", "operator", "parents"], orient="row")"""),
    ("md", "## The promotion decisions\nOne row per run, kept across runs: the three gates' figures with the "
           "registry's cumulative N and the effective N beside each decision."),
    ("code", """decisions = q("SELECT * FROM evolution.decisions ORDER BY decided_at")
latest = decisions.tail(1).row(0, named=True)
print("champion:", latest["genome"] if latest["promoted"] else "none", "|", latest["reason"])
decisions.select("decided_at", "promoted", "n_trials", "n_effective", "dsr", "sharpe", "sr0", "oos_psr", "pbo")"""),
    ("code", """trials = q("SELECT dataset, count(*) AS evaluations, count(DISTINCT genome_hash) AS trials, "
           "count(DISTINCT run_id) AS runs FROM evolution.trials GROUP BY dataset")
con.close()
trials"""),
]

NOTEBOOKS = {"01_market_data": MARKET_DATA, "02_sensory": SENSORY, "03_evolution": EVOLUTION}
KERNEL = "emp-predator"


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = nbf.v4.new_notebook()
        # the project's kernel (make notebooks / make test install it into .venv): the tests run under it too
        nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "EMP Predator (.venv)", "language": "python"}
        nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
                    for kind, src in cells]
        for i, cell in enumerate(nb.cells):
            cell.id = f"{name}-{i:02d}"  # stable ids: regenerating does not churn the files
        out = ROOT / "notebooks" / f"{name}.ipynb"
        nbf.write(nb, out)
        print(out)


if __name__ == "__main__":
    main()
