"""Write notebooks/01_market_data.ipynb (kept as code so its cells are reviewed like code)."""

from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]

CELLS = [
    ("md", "# 01 · Market data\n\nReads the tables the Dagster assets materialised in the embedded store "
           "(`$EMP_HOME/emp.duckdb`, default `./.emp`). Run `make demo` first."),
    ("code", """import os
from pathlib import Path

import duckdb
import matplotlib.pyplot as plt
import polars as pl

home = Path(os.environ.get("EMP_HOME", Path.cwd().parent / ".emp" if Path.cwd().name == "notebooks" else ".emp"))
db = home / "emp.duckdb"
assert db.exists(), f"{db} does not exist: run `make demo` first"
con = duckdb.connect(str(db), read_only=True)
q = lambda sql: con.sql(sql).pl()
q("SELECT schema_name || '.' || table_name AS tbl, estimated_size AS rows FROM duckdb_tables() ORDER BY 1")"""),
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
    ("md", "## Data quality\nJournal rows per month (rows in, stored, quarantined, freshness lag) "
           "and quarantined rows by reason."),
    ("code", """journal = q(\"\"\"
    SELECT dataset, partition_key, rows_in, rows_stored, rows_quarantined, freshness_lag_bars, status
    FROM market.ingest_journal
    QUALIFY row_number() OVER (PARTITION BY dataset, partition_key ORDER BY finished_at DESC) = 1
    ORDER BY dataset, partition_key\"\"\")
assert (journal["rows_in"] == journal["rows_stored"] + journal["rows_quarantined"]).all()
print(journal.group_by("dataset", "status").len().sort("dataset", "status"))
monthly = journal.filter(pl.col("dataset") == "bars_1d")
fig, ax = plt.subplots(figsize=(13, 3))
ax.bar(range(monthly.height), monthly["rows_stored"], label="stored")
ax.bar(range(monthly.height), monthly["rows_quarantined"], bottom=monthly["rows_stored"], label="quarantined")
ax.set_title("bars_1d rows per monthly partition (latest run)"); ax.legend()
q("SELECT dataset, reason, count(*) AS rows FROM market.quarantine GROUP BY ALL ORDER BY rows DESC")"""),
    ("code", "con.close()"),
]


def main() -> None:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in CELLS]
    out = ROOT / "notebooks" / "01_market_data.ipynb"
    nbf.write(nb, out)
    print(out)


if __name__ == "__main__":
    main()
