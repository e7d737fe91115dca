"""WHY keeps a stable composition: a member whose input was given and is missing silences it, no jump."""

from datetime import datetime

import polars as pl

from emp_core.sensory import compute_features
from emp_core.sensory.cli import shipped_macro
from emp_core.sensory.why import COMPONENTS
from tests.support import SHIPPED


def spx(macro):
    bars = pl.read_parquet(SHIPPED / "bars_daily.parquet").filter(pl.col("symbol") == "SPX")
    return compute_features(bars, macro)


def test_the_end_of_the_treasury_curve_silences_why_instead_of_flipping_it():
    """The shipped curve ends on 29 March 2017: SPX's WHY used to jump from -0.158 to +0.623 on 10 April as the
    average fell back on inflation and volatility alone."""
    f = spx(shipped_macro())
    at = dict(zip(f["ts"].to_list(), f["why_score"].to_list(), strict=True))
    assert at[datetime(2017, 4, 7)] is not None
    assert at[datetime(2017, 4, 10)] is None
    later = f.filter(pl.col("ts") >= datetime(2017, 4, 10))
    assert later["why_score"].null_count() == later.height and (later["why_confidence"] == 0).all()
    # Wherever WHY speaks with the macro data given, every one of its five members is there.
    spoken = f.filter(pl.col("why_score").is_not_null())
    assert spoken.height > 3000
    for c in COMPONENTS:
        assert spoken[c].null_count() == 0, c
    assert (spoken["why_confidence"] == 1.0).all()


def test_without_macro_data_why_is_the_volatility_regime():
    f = spx(None)
    spoken = f.filter(pl.col("why_score").is_not_null())
    assert spoken.height > 4000 and (spoken["why_confidence"] == 0.2).all()
    assert spoken["why_slope"].null_count() == spoken.height


def test_an_input_that_starts_later_changes_nothing_before_it_starts():
    """Point in time: before a curve's first value is public, WHY is what it would be with no curve at all."""
    from datetime import date

    from emp_core.sensory.why import MacroInputs

    full = shipped_macro()
    late_curve = MacroInputs(curve=full.curve.filter(pl.col("date") >= date(2005, 1, 3)), series=full.series)
    no_curve = MacroInputs(curve=None, series=full.series)
    before = pl.col("ts") < datetime(2005, 1, 4)
    a = spx(late_curve).filter(before).select("ts", "why_score", "why_confidence")
    b = spx(no_curve).filter(before).select("ts", "why_score", "why_confidence")
    assert a.height > 1000 and a.equals(b)
    assert a["why_score"].null_count() < a.height  # WHY spoke there: inflation and volatility
