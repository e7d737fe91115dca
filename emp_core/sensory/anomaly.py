"""ANOMALY: robust outliers in return, volume and gap, and a multivariate outlier across the other dimensions.

Components (bar t judged against the 63 bars before it, never itself):

- ``anomaly_return_z``: robust z of the log return r_t, (r_t - m) / (1.4826 MAD)
  with the trailing median m and trailing MAD (see ``base.robust_scale``).
  Robust statistics (Hampel 1974; Rousseeuw and Croux 1993) keep one crash from
  hiding the next; the seed system z-scored the price level instead.
- ``anomaly_volume_z``: robust z of ln V_t (zero volume: undefined).
- ``anomaly_gap_z``: robust z of the opening gap ln(O_t / C_{t-1}), its scale
  floored at a quarter of the return scale (index data often opens exactly at
  the previous close, which would make the gap's own MAD ~0).
- ``anomaly_mahalanobis``: D^2 = (x_t - mu)' S^-1 (x_t - mu) of the vector of the
  WHY, HOW, WHAT, WHEN scores against their mean mu and unbiased covariance S over
  the m previous bars, m = 63, or as many as a symbol has at its start (at least 51).
  Only the k scores defined at t and on every one of those m bars take part: a score
  that is missing on some of them drops out of the distance until it has been
  present for 63 bars (k varies per bar; no score left: null). Counting a missing
  score as 0, as this module first did, made the distance jump whenever a score
  switched between missing and present inside the window (WHY ends in April 2017 on
  the shipped daily data, the others start after warm-ups): within 63 bars of such
  a switch z >= 4 occurred at 4.0% of bars against 0.39% elsewhere. Dropping the
  score keeps what the others say (giving no distance at all on such bars would
  silence ANOMALY's multivariate part for 63 bars after every switch), and the
  scale below is exact for any k. A 1e-3 ridge on the diagonal keeps S invertible
  and a score that sat still for 63 bars from looking infinitely surprising.
  Mapped to a normal z on its finite-sample scale: for a new bar independent of the
  m it is measured against, T^2 = D^2 m / (m + 1) is Hotelling's T^2(k, m - 1), so
  F = T^2 (m - k) / (k (m - 1)) is F(k, m - k) (Hotelling 1931), and Paulson's (1942)
  cube-root approximation gives
  z = ((1 - b) F^(1/3) - (1 - a)) / sqrt(a + b F^(2/3)), a = 2/(9 d1), b = 2/(9 d2),
  d1 = k, d2 = m - k (within 0.05 (k = 4) to 0.12 (k = 1) of the exact F quantile
  below z = 4, and under it beyond, by at most 0.15 (k = 4) to 0.37 (k = 1) up to
  z = 6: never an easier flag). Both S's unbiasing and F use the actual m: reading a
  51-bar window as 63 bars crossed z >= 2 at 1.18x and z >= 3 at 1.33x the normal
  tail (m = 51..53; exact, 1.9x at z >= 4 for m = 51). Reading D^2 as
  chi-square(k) instead, as this module first did, ignores that the covariance is
  estimated from 63 bars: independent normal scores crossed z >= 3 at 4.0e-3 and
  z >= 4 at 2.4e-4 (nominal 1.35e-3, 3.2e-5);
  on this scale 1.1e-3 and under 1e-5 (400,000 draws). Scores that persist still
  cross more often: AR(1) inputs with phi = 0.95 crossed z >= 3 at 6.3e-3 and
  z >= 4 at 9e-5 (65,840 windows); the distance of today from the last 63 bars is
  large whenever a score trends, a limit of any window-based distance on
  persistent inputs that no rescaling of the window's distribution removes.

Strength = max(|return z|, |volume z|, |gap z|, Mahalanobis z). A bar is
flagged (``anomaly_flag``) when strength >= 4; ``anomaly_explanation`` then
names each component at or over the threshold with its value, in the order
return, volume, gap, multivariate, e.g. ``return z=+4.4; volume z=+9.3``.
Score: direction * tanh(strength / 4 - 1) on flagged bars, 0 otherwise; direction
is the sign of the gap z when |gap z| >= |return z| (the two signed components),
else the sign of r_t (of C_t - O_t if r_t is 0 or missing).
Confidence: share of the four components that are defined, on flagged bars;
0 on the others. ANOMALY has something to say only when it flags: an unflagged
bar's score of 0 with full confidence used to vote "neutral" in every fusion and
shrank the fused signal (by a median factor of 0.79 on the shipped data).
"""

from __future__ import annotations

import polars as pl

from emp_core.sensory.base import RET, Context, lag, log, ordered_sum, pos, ratio, robust_scale, trailing

WINDOW = 63
THRESHOLD = 4.0
RIDGE = 1e-3  # variance floor of each score (sd ~0.03): a score that sat still for 63 bars is not infinitely surprising
GAP_SCALE_FLOOR = 0.25
OTHERS = ("why_score", "how_score", "what_score", "when_score")
UNIVARIATE = {"return": pl.col(RET), "volume": log(pl.col("volume")),
              "gap": log(pl.col("open") / lag(pl.col("close"), 1))}
WARM = {"return": 1, "volume": 0, "gap": 1}
COMPONENTS = ("anomaly_return_z", "anomaly_volume_z", "anomaly_gap_z", "anomaly_mahalanobis")


def stages(ctx: Context) -> list[list[pl.Expr]]:
    values = [x.alias(f"_x_{name}") for name, x in UNIVARIATE.items()]
    centres = [trailing(pl.col(f"_x_{name}"), WINDOW, "median", warm=WARM[name], exclude_current=True,
                        complete=ctx.complete).alias(f"_c_{name}") for name in UNIVARIATE]
    deviations = [(pl.col(f"_x_{name}") - pl.col(f"_c_{name}")).abs().alias(f"_d_{name}") for name in UNIVARIATE]
    scales = [robust_scale(pl.col(f"_d_{name}"), WINDOW, warm=WARM[name], complete=ctx.complete)
              .alias(f"_s_{name}") for name in UNIVARIATE]
    # Index data often opens at the previous close, so the gap's own MAD can be ~0 and
    # every small gap would look extreme: measure gaps against at least a share of the return scale.
    scale = {name: pl.col(f"_s_{name}") for name in UNIVARIATE}
    scale["gap"] = pl.max_horizontal(scale["gap"], GAP_SCALE_FLOOR * scale["return"])
    zs = [ratio(pl.col(f"_x_{name}") - pl.col(f"_c_{name}"), scale[name]).alias(f"anomaly_{name}_z")
          for name in UNIVARIATE]
    return [values, centres, deviations, scales, zs]


def mahalanobis_stages(columns: tuple[str, ...], window: int = WINDOW, ridge: float = RIDGE) -> list[list[pl.Expr]]:
    """Stages computing ``_d2``, the squared Mahalanobis distance of ``columns`` at bar t from their
    mean and covariance over the m = min(window, bars before t) previous bars, on the coordinates
    defined at t and on every one of those m bars (``_k`` of them; ``_size`` is m).

    Cholesky S = L L' unrolled over the k coordinates, forward substitution L y = d,
    D^2 = |y|^2; every step is a column over all rows, so nothing loops over bars. A
    coordinate that is left out gets deviation 0, variance 1 and no covariance, so it adds
    nothing to D^2 and the rest is the distance on the kept coordinates. A row whose S is
    not positive definite, or whose window is too short for the moments, has a null pivot
    ``_L{j}{j}``; its ``_d2`` (a sum that skips nulls) is then no distance, and only rows
    whose pivots are all defined may read it (``finishing_stages`` does so).
    """
    k = len(columns)
    pairs = [(i, j) for i in range(k) for j in range(i, k)]
    # Values and cross products as plain columns first: a window function inside .over()
    # re-evaluates its input expression group by group. Nulls are filled with 0 only so the
    # rolling sums run on complete columns: a coordinate with a null in its window is left out.
    values = [pl.col(c).fill_null(0.0).alias(f"_v{i}") for i, c in enumerate(columns)]
    values += [pl.col(c).is_null().cast(pl.Int32).alias(f"_null{i}") for i, c in enumerate(columns)]
    values.append(pl.min_horizontal(pos(), pl.lit(window)).cast(pl.Float64).alias("_size"))
    x = [pl.col(f"_v{i}") for i in range(k)]
    m = pl.col("_size")
    products = [(x[i] * x[j]).alias(f"_vv{i}{j}") for i, j in pairs]
    moments = [trailing(x[i], window, "mean", exclude_current=True).alias(f"_m{i}") for i in range(k)]
    moments += [trailing(pl.col(f"_vv{i}{j}"), window, "mean", exclude_current=True).alias(f"_p{i}{j}")
                for i, j in pairs]
    # a coordinate is kept when it has no null in bars t - window .. t (its window and the bar itself)
    kept = [(pl.col(f"_null{i}").rolling_sum(window + 1, min_samples=1).over("symbol") == 0).alias(f"_kept{i}")
            for i in range(k)]
    use = [pl.col(f"_kept{i}") for i in range(k)]
    unbias = m / (m - 1)
    centred = [pl.when(use[i]).then(x[i] - pl.col(f"_m{i}")).otherwise(0.0).alias(f"_dev{i}") for i in range(k)]
    centred += [pl.when(use[i] & use[j])
                .then((pl.col(f"_p{i}{j}") - pl.col(f"_m{i}") * pl.col(f"_m{j}")) * unbias + (ridge if i == j else 0.0))
                .otherwise(1.0 if i == j else 0.0).alias(f"_cov{i}{j}") for i, j in pairs]
    centred.append(pl.sum_horizontal([u.cast(pl.Int32) for u in use]).alias("_k"))
    out = [values, products, moments, kept, centred]

    def low(i: int, j: int) -> pl.Expr:
        return pl.col(f"_L{i}{j}")

    for j in range(k):
        diag = pl.col(f"_cov{j}{j}") - ordered_sum([low(j, c) ** 2 for c in range(j)])
        out.append([pl.when(diag > 0).then(diag.sqrt()).alias(f"_L{j}{j}")])
        if j + 1 < k:
            out.append([
                ((pl.col(f"_cov{j}{i}") - ordered_sum([low(i, c) * low(j, c) for c in range(j)]))
                 / low(j, j)).alias(f"_L{i}{j}")
                for i in range(j + 1, k)
            ])
    for i in range(k):
        known = ordered_sum([low(i, c) * pl.col(f"_y{c}") for c in range(i)])
        out.append([((pl.col(f"_dev{i}") - known) / low(i, i)).alias(f"_y{i}")])
    out.append([ordered_sum([pl.col(f"_y{i}") ** 2 for i in range(k)]).alias("_d2")])
    return out


def hotelling_z(d2: pl.Expr, k: int | pl.Expr, m: int | pl.Expr = WINDOW) -> pl.Expr:
    """Normal z of a squared Mahalanobis distance of a new point in k coordinates from the m earlier
    ones (their mean and unbiased covariance): F(k, m - k) by Hotelling, to z by Paulson's
    approximation (module docstring). k and m may be columns."""
    f = d2 * m * (m - k) / (k * (m - 1) * (m + 1))
    a, b = 2.0 / (9.0 * k), 2.0 / (9.0 * (m - k))
    return ((1.0 - b) * f.pow(1.0 / 3.0) - (1.0 - a)) / (a + f.pow(2.0 / 3.0) * b).sqrt()


def finishing_stages() -> list[list[pl.Expr]]:
    """After the other dimensions' scores exist: the multivariate component, strength, flag, score, confidence."""
    z = {n: pl.col(f"anomaly_{n}_z") for n in UNIVARIATE}
    md = pl.col("anomaly_mahalanobis")
    strength = pl.col("_strength")
    move = pl.when(pl.col(RET) != 0).then(pl.col(RET).sign()).otherwise((pl.col("close") - pl.col("open")).sign())
    gap_leads = (z["gap"].abs() >= z["return"].abs().fill_null(0.0)).fill_null(False)
    direction = pl.when(gap_leads).then(z["gap"].sign()).otherwise(move).fill_null(0.0)
    defined = [c.is_not_null().cast(pl.Float64) for c in (*z.values(), md)]
    # ordered_sum skips nulls, so a row with no defined distance would read as 0: keep it null unless every
    # pivot is defined (a kept score's is null while its window is short; one left out has the constant 1).
    # With none of the other scores kept there is nothing to compare: null, not "0 is typical".
    pivots = [pl.col(f"_L{i}{i}").is_not_null() for i in range(len(OTHERS))]
    valid_d2 = pl.when(pl.all_horizontal(pivots) & (pl.col("_k") > 0)).then(pl.col("_d2"))
    return [
        *mahalanobis_stages(OTHERS),
        [hotelling_z(valid_d2, pl.col("_k"), pl.col("_size")).alias("anomaly_mahalanobis")],
        [pl.max_horizontal(z["return"].abs(), z["volume"].abs(), z["gap"].abs(), md).alias("_strength")],
        [(strength >= THRESHOLD).fill_null(False).alias("anomaly_flag")],
        [
            pl.when(strength.is_null()).then(None).when(pl.col("anomaly_flag"))
            .then(direction * (strength / THRESHOLD - 1.0).tanh()).otherwise(0.0).alias("anomaly_score"),
            pl.when(pl.col("anomaly_flag")).then(ordered_sum(defined) / len(defined)).otherwise(0.0)
            .alias("anomaly_confidence"),
        ],
    ]


def explain(frame: pl.DataFrame) -> pl.DataFrame:
    """Add ``anomaly_explanation`` (flagged bars only; formatted only for them, as text is costly)."""
    z = {n: pl.col(f"anomaly_{n}_z") for n in UNIVARIATE}
    md = pl.col("anomaly_mahalanobis")
    parts = [pl.when(z[n].abs() >= THRESHOLD).then(pl.format(f"{n} z={{}}", _signed(z[n]))) for n in UNIVARIATE]
    parts.append(pl.when(md >= THRESHOLD).then(pl.format("multivariate z={}", _signed(md))))
    rows = frame.get_column("anomaly_flag").arg_true()
    text = frame[rows].select(pl.concat_str(parts, separator="; ", ignore_nulls=True)).to_series()
    column = pl.Series("anomaly_explanation", [None] * frame.height, dtype=pl.String).scatter(rows, text)
    return frame.with_columns(column)


def _signed(x: pl.Expr) -> pl.Expr:
    text = x.round(1).cast(pl.String)
    return pl.when(x >= 0).then(pl.concat_str(pl.lit("+"), text)).otherwise(text)
