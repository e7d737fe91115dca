"""The drift statistics of emp_core.sensory.calibration against oracles written from their docstrings.

KS: D against scipy's two-sample statistic, the p-value against Stephens' (1970) Q(lambda) summed in
tests/support.py (not scipy's kolmogorov, which the code calls; scipy's kstwobign is compared once, by
hand). The AR(1) count, the pooled size and the effective sizes against loop-based implementations of
the module docstring's definitions ("Minimum sample")."""

import math

import numpy as np
import pytest
from scipy.stats import ks_2samp, kstwobign

from emp_core.evolution.overfitting import effective_bars
from emp_core.sensory.calibration import (
    MIN_BLOCKS,
    MIN_REFERENCE,
    ar1_bars,
    effective_size,
    ks,
    pooled_size,
    window_size,
)
from tests.support import q_kolmogorov


def ar1_series(n: int, rho: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n + 200)
    x = np.empty_like(e)
    x[0] = e[0]
    for i in range(1, e.size):
        x[i] = rho * x[i - 1] + e[i]
    return x[200:]


# ---------------------------------------------------------------------------------------------- oracles

def ar1_oracle(scores) -> float:
    """n (1 - rho_1) / (1 + rho_1), rho_1 the sample lag-1 autocorrelation of the finite values, negative
    rho_1 counted as 0; fewer than 3 values or no variation: n."""
    x = [float(v) for v in scores if math.isfinite(v)]
    n = len(x)
    if n < 3:
        return float(n)
    mean = math.fsum(x) / n
    dev = [v - mean for v in x]
    var = math.fsum(d * d for d in dev)
    if var == 0:
        return float(n)
    rho = max(0.0, math.fsum(dev[i] * dev[i - 1] for i in range(1, n)) / var)
    return n * (1.0 - rho) / (1.0 + rho)


def count_oracle(scores) -> float:
    """The smaller of the Newey-West count and the AR(1) count."""
    return min(effective_bars(np.asarray(scores, dtype=float)), ar1_oracle(scores))


def group_counts(scores, groups, reference, reference_groups) -> list[float]:
    """Per group (first-appearance order), its count; the reference's autocorrelation applied when the group
    has at least MIN_REFERENCE reference scores."""
    out = []
    for g in dict.fromkeys(groups.tolist()):
        part = [s for s, h in zip(scores, groups, strict=True) if h == g]
        ref = [s for s, h in zip(reference, reference_groups, strict=True) if h == g]
        out.append(len(part) * count_oracle(ref) / len(ref) if len(ref) >= MIN_REFERENCE else count_oracle(part))
    return out


def pooled_oracle(groups, dates, reference, reference_groups, reference_dates) -> float | None:
    """1 / Var of the grand mean of the standardised reference scores over every run of b consecutive
    reference dates, times n / (n - b) (module docstring); None with fewer than MIN_BLOCKS b dates."""
    b = len(set(dates.tolist()))
    if b == 0:
        return None
    wanted = set(groups.tolist())
    rows: dict = {}
    for v, g, t in zip(reference.tolist(), reference_groups.tolist(), reference_dates.tolist(), strict=True):
        if g in wanted:
            rows.setdefault(g, []).append((t, float(v)))
    per_date: dict = {}
    for series in rows.values():
        values = [v for _, v in series]
        if len(values) < MIN_REFERENCE:
            continue
        mu = math.fsum(values) / len(values)
        sd = math.sqrt(math.fsum((v - mu) ** 2 for v in values) / len(values))  # population sd
        if sd == 0:
            continue
        for t, v in series:
            per_date.setdefault(t, []).append((v - mu) / sd)
    days = sorted(per_date)
    n = len(days)
    if n < MIN_BLOCKS * b:
        return None
    every = [z for t in days for z in per_date[t]]
    overall = math.fsum(every) / len(every)
    means = []
    for i in range(n - b + 1):
        block = [z for t in days[i:i + b] for z in per_date[t]]
        means.append(math.fsum(block) / len(block))
    var = math.fsum((m - overall) ** 2 for m in means) / len(means) * n / (n - b)
    return 1.0 / var if var > 0 else None  # the pooled mean does not vary: nothing to read (its docstring)


def ks_oracle(reference, current) -> tuple[float, float]:
    d = float(ks_2samp(reference, current, method="asymp").statistic)
    n, m = len(reference), len(current)
    ne = n * m / (n + m)
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    return d, q_kolmogorov(lam)  # the series summed here, not scipy's kolmogorov (which the code calls)


# ---------------------------------------------------------------------------------------------- KS

@pytest.mark.parametrize(("n", "m", "shift", "seed"), [
    (40, 25, 0.6, 1),     # small unequal samples: the 0.12 and 0.11 / sqrt(n_e) corrections matter
    (25, 40, 0.6, 2),     # swapped sizes
    (200, 30, 0.3, 3),
    (13, 90, 0.9, 4),
    (300, 300, 0.15, 5),  # equal sizes
])
def test_ks_matches_scipy_d_and_stephens_p(n, m, shift, seed):
    rng = np.random.default_rng(seed)
    reference = rng.standard_normal(n)
    current = rng.standard_normal(m) + shift
    d, p = ks(reference, current)
    want_d, want_p = ks_oracle(reference, current)
    assert d == pytest.approx(want_d, rel=1e-12, abs=1e-15)
    assert 0.001 < want_p < 0.999  # the series is far from its limits here: every term and constant shows
    assert p == pytest.approx(want_p, rel=1e-9)


def test_ks_p_mid_range_by_hand():
    # D = 1/2 (reference 0..9, current 5..14), n = m = 10: n_e = 5, lambda = (sqrt 5 + 0.12 + 0.11 / sqrt 5) / 2
    reference, current = np.arange(10.0), np.arange(5.0, 15.0)
    lam = (math.sqrt(5) + 0.12 + 0.11 / math.sqrt(5)) * 0.5
    q = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 60))
    assert ks(reference, current) == (0.5, pytest.approx(q, rel=1e-12))
    assert q == pytest.approx(float(kstwobign.sf(lam)), rel=1e-12)


def test_ks_p_below_lambda_one():
    # D = 7 / 50 (reference 0..49, current the same + 0.5 with its top 7 moved far up), n = m = 50:
    # lambda = (5 + 0.12 + 0.11 / 5) 7 / 50 = 0.72, Q = 0.68: the series, not the lambda < 1e-3 shortcut
    reference = np.arange(50.0)
    current_scores = reference + 0.5
    current_scores[-7:] += 1000.0
    lam = (5.0 + 0.12 + 0.022) * 7 / 50
    d, p = ks(reference, current_scores)
    assert d == pytest.approx(7 / 50, rel=1e-12)
    assert 0.5 < q_kolmogorov(lam) < 0.9
    assert p == pytest.approx(q_kolmogorov(lam), rel=1e-9)


def test_ks_unequal_sizes_weight_n_e():
    # n = 30, m = 10 disjoint halves: n_e = 7.5, not n m (n + m), n / m / (n + m) or n m / (n - m)
    reference, current = np.arange(30.0), np.arange(20.0, 30.0) + 0.5
    d, p = ks(reference, current)
    want_d, want_p = ks_oracle(reference, current)
    assert d == pytest.approx(want_d, rel=1e-12)
    lam = (math.sqrt(7.5) + 0.12 + 0.11 / math.sqrt(7.5)) * want_d
    assert want_p == pytest.approx(q_kolmogorov(lam), rel=1e-12)
    assert p == pytest.approx(want_p, rel=1e-9)


def test_ks_tiny_p():
    rng = np.random.default_rng(7)
    reference, current = rng.standard_normal(400), rng.standard_normal(150) + 1.5
    d, p = ks(reference, current)
    want_d, want_p = ks_oracle(reference, current)
    assert d == pytest.approx(want_d, rel=1e-12)
    assert 0.0 < want_p < 1e-12
    assert p == pytest.approx(want_p, rel=1e-9)


def test_ks_small_lambda_p_is_q():
    # reference 0..99999, current 0..100000: D = 1 / 100001, lambda = 0.0022; Q(lambda) = 1 (a truncated
    # alternating series gives about 0.1 here)
    reference, current_scores = np.arange(100_000.0), np.arange(100_001.0)
    d, p = ks(reference, current_scores)
    want_d, want_p = ks_oracle(reference, current_scores)
    assert d == pytest.approx(want_d, rel=1e-9)
    assert want_p == 1.0
    assert p == pytest.approx(1.0, abs=1e-12)


def test_ks_identical_samples_take_the_small_lambda_branch():
    x = np.random.default_rng(8).standard_normal(50)
    assert ks(x, x) == (0.0, 1.0)
    # the same values twice over: the empirical distributions coincide, D = 0 with n != m
    assert ks(x, np.concatenate([x, x])) == (0.0, 1.0)


def test_ks_p_is_one_where_q_is_one_to_double_precision():
    # D = 1 / n with n = m = 20..60: lambda 0.09-0.17, where Q(lambda) = 1 - sqrt(2 pi) / lambda
    # exp(-pi^2 / (8 lambda^2)) is 1 to double precision: the reported p-value is 1, never above
    for n in range(20, 61):
        reference = np.arange(float(n))
        _, p = ks(reference, reference + 0.5)
        assert p == pytest.approx(1.0, abs=1e-15) and 0.0 <= p <= 1.0


# ---------------------------------------------------------------------------------------------- AR(1) count

def test_ar1_bars_matches_the_docstring_formula_off_zero_mean():
    x = 5.0 + ar1_series(300, 0.6, seed=11)  # a mean far from 0: the count is of deviations from the mean
    assert ar1_bars(x) == pytest.approx(ar1_oracle(x), rel=1e-9)
    assert ar1_bars(x) < 0.5 * x.size
    y = -3.0 + np.random.default_rng(12).standard_normal(200)
    assert ar1_bars(y) == pytest.approx(ar1_oracle(y), rel=1e-9)


def test_ar1_bars_drops_non_finite_and_handles_short_series():
    x = 2.0 + ar1_series(120, 0.8, seed=13)
    holes = x.copy()
    holes[[5, 40, 77]] = [np.nan, np.inf, -np.inf]
    assert ar1_bars(holes) == pytest.approx(ar1_oracle(holes), rel=1e-9)
    assert ar1_oracle(holes) == pytest.approx(ar1_oracle(x[np.isfinite(holes)]))
    assert ar1_bars(np.array([1.0, 2.0])) == 2.0
    assert ar1_bars(np.array([1.0, np.nan, 2.0, np.inf])) == 2.0
    assert ar1_bars(np.array([])) == 0.0
    assert ar1_bars(np.array([1.0, 2.0, 4.0])) == 3.0  # three values: rho_1 = -z_2^2 / var <= 0, so n
    assert ar1_bars(np.array([4.0, 4.0, 4.0, 4.0])) == 4.0
    assert ar1_bars(np.full(150, 0.1)) == 150.0  # constant: its mean is not exact in floating point, still n
    assert ar1_oracle(np.full(150, 0.1)) == 150.0


# ---------------------------------------------------------------------------------------------- pooled size

def panel(dates: int, spec: dict, seed: int, gaps: bool = True):
    """Reference rows (scores, groups, dates): per group (mean, sd, number of dates or None for all);
    groups are contiguous, each in date order, some dates missing at random."""
    rng = np.random.default_rng(seed)
    common = ar1_series(dates, 0.7, seed + 100)
    scores, groups, days = [], [], []
    for g, (mu, sd, length) in spec.items():
        span = np.arange(dates if length is None else length)
        if gaps and length is None:
            span = np.sort(rng.choice(span, size=span.size - dates // 10, replace=False))
        own = ar1_series(dates, 0.5, int(rng.integers(1 << 30)))
        values = mu + sd * (0.6 * common[span] + 0.8 * own[span]) if sd else np.full(span.size, mu)
        scores.append(values)
        groups += [g] * span.size
        days.append(span)
    return np.concatenate(scores), np.array(groups), np.concatenate(days)


def current(groups: list[str], b: int):
    g = np.repeat(np.array(groups), b)
    return g, np.tile(np.arange(b), len(groups)) + 10_000


def test_pooled_size_matches_the_docstring_definition():
    spec = {"A": (5.0, 0.3, None), "B": (-3.0, 2.0, None), "C": (10.0, 1.0, None),
            "S": (1.0, 4.0, 60),   # sd > 0 but fewer than MIN_REFERENCE scores: not used
            "K": (2.0, 0.0, None),  # constant: sd 0, not used
            "X": (0.0, 1.0, None)}  # not among the current groups: not used
    ref = panel(130, spec, seed=21)
    cur = current(["A", "B", "C", "S", "K"], 5)
    got = pooled_size(*cur, *ref)
    want = pooled_oracle(*cur, *ref)
    assert want is not None
    assert got == pytest.approx(want, rel=1e-9)
    # the excluded groups change nothing
    used = np.isin(ref[1], ["A", "B", "C"])
    assert got == pytest.approx(pooled_oracle(current(["A", "B", "C"], 5)[0], cur[1], *(r[used] for r in ref)),
                                rel=1e-9)


def test_pooled_size_is_invariant_to_each_symbols_level_and_scale():
    ref = panel(130, {"A": (0.0, 1.0, None), "B": (0.0, 1.0, None)}, seed=22)
    cur = current(["A", "B"], 3)
    base = pooled_size(*cur, *ref)
    moved = ref[0] * np.where(ref[1] == "A", 0.2, 3.0) + np.where(ref[1] == "A", 7.0, -4.0)
    assert pooled_size(*cur, moved, ref[1], ref[2]) == pytest.approx(base, rel=1e-9)
    assert base == pytest.approx(pooled_oracle(*cur, *ref), rel=1e-9)


def test_pooled_size_is_invariant_far_from_zero():
    # a level 1e12 sd above zero: the standardisation is done on each symbol's own mean, and the block means
    # are centred on the overall mean of the standardised scores (0 up to rounding)
    ref = panel(400, {"A": (0.0, 1.0, None), "B": (0.0, 1.0, None), "C": (0.0, 1.0, None)}, seed=5)
    cur = current(["A", "B", "C"], 10)
    base = pooled_size(*cur, *ref)
    assert base == pytest.approx(pooled_oracle(*cur, *ref), rel=1e-9)
    assert pooled_size(*cur, ref[0] * 1e-4 + 1e8, ref[1], ref[2]) == pytest.approx(base, rel=1e-4)


def test_pooled_size_leaves_a_constant_symbol_out_without_dividing_by_zero():
    ref = panel(130, {"A": (5.0, 0.3, None), "K": (2.0, 0.0, None)}, seed=43)
    cur = current(["A", "K"], 5)
    with np.errstate(divide="raise", invalid="raise"):
        got = pooled_size(*cur, *ref)
    assert got == pytest.approx(pooled_oracle(*cur, *ref), rel=1e-9)


def test_pooled_size_one_date_window():
    ref = panel(120, {"A": (1.0, 0.5, None), "B": (2.0, 1.5, None), "C": (-1.0, 1.0, None)}, seed=23)
    cur = current(["A", "B", "C"], 1)
    want = pooled_oracle(*cur, *ref)
    assert want is not None
    assert pooled_size(*cur, *ref) == pytest.approx(want, rel=1e-9)


def test_pooled_size_needs_min_blocks_windows_of_dates():
    b = 4
    cur = current(["A", "B"], b)
    # MIN_BLOCKS * b = 32 dates, each symbol with 128 scores (4 a date) so that MIN_REFERENCE is met
    base = panel(MIN_BLOCKS * b, {"A": (3.0, 1.0, None), "B": (1.0, 0.5, None)}, seed=25, gaps=False)
    rows = [np.concatenate([base[i]] * 4) for i in range(3)]
    rows[0] = rows[0] + np.random.default_rng(26).standard_normal(rows[0].size) * 0.1
    order = np.lexsort((rows[2], rows[1]))
    ref = tuple(r[order] for r in rows)
    assert len(np.unique(ref[2])) == MIN_BLOCKS * b
    want = pooled_oracle(*cur, *ref)
    assert want is not None
    assert pooled_size(*cur, *ref) == pytest.approx(want, rel=1e-9)
    # one date fewer: None
    keep = ref[2] < MIN_BLOCKS * b - 1
    assert pooled_size(*cur, *(r[keep] for r in ref)) is None
    assert pooled_oracle(*cur, *(r[keep] for r in ref)) is None


def test_pooled_size_min_reference_boundary():
    # one symbol with exactly MIN_REFERENCE reference scores on MIN_REFERENCE dates is used; with one fewer it
    # is not, and nothing else is usable: None
    x = 2.0 + ar1_series(MIN_REFERENCE, 0.5, seed=27)
    days = np.arange(MIN_REFERENCE)
    groups = np.array(["A"] * MIN_REFERENCE)
    cur = (np.array(["A"] * 3), np.arange(3) + 1000)
    want = pooled_oracle(*cur, x, groups, days)
    assert want is not None
    assert pooled_size(*cur, x, groups, days) == pytest.approx(want, rel=1e-9)
    assert pooled_size(*cur, x[1:], groups[1:], days[1:]) is None


def test_pooled_size_none_without_dates_or_reference():
    ref = panel(60, {"A": (1.0, 1.0, None)}, seed=28)
    assert pooled_size(np.array([], dtype=str), np.array([]), *ref) is None  # b = 0
    assert pooled_size(np.array(["A"]), np.array([]), *ref) is None  # no current dates: b = 0 whatever the groups
    cur = current(["A"], 2)
    empty = (np.array([]), np.array([], dtype=str), np.array([], dtype=int))
    assert pooled_size(*cur, *empty) is None


def test_pooled_size_of_symbols_that_cancel_is_none():
    # two symbols that mirror each other: every date's mean standardised score is exactly 0, variance 0
    x = ar1_series(120, 0.5, seed=29)
    mirror = (np.concatenate([x, -x]), np.array(["A"] * 120 + ["B"] * 120), np.tile(np.arange(120), 2))
    cur = current(["A", "B"], 2)
    assert pooled_oracle(*cur, *mirror) is None
    assert pooled_size(*cur, *mirror) is None


# ---------------------------------------------------------------------------------------------- effective sizes

def test_effective_size_of_nothing_and_of_one_score():
    assert effective_size(np.array([])) == 0.0
    assert effective_size(np.array([3.0])) == 1.0


def test_effective_size_without_groups_reads_the_reference():
    reference = 1.0 + ar1_series(400, 0.9, seed=31)
    current_scores = np.random.default_rng(32).standard_normal(150)
    want = current_scores.size * count_oracle(reference) / reference.size
    assert effective_size(current_scores, reference=reference) == pytest.approx(want, rel=1e-9)
    assert want < 0.5 * count_oracle(current_scores)


@pytest.mark.parametrize(("length", "read_on_reference"), [(MIN_REFERENCE, True), (MIN_REFERENCE - 1, False)])
def test_effective_size_min_reference_boundary(length, read_on_reference):
    reference = ar1_series(length, 0.9, seed=33)
    current_scores = np.random.default_rng(34).standard_normal(120)
    groups = np.array(["A"] * 120)
    got = effective_size(current_scores, groups, reference, np.array(["A"] * length))
    by_reference = current_scores.size * count_oracle(reference) / reference.size
    own = count_oracle(current_scores)
    assert abs(by_reference - own) > 10
    assert got == pytest.approx(by_reference if read_on_reference else own, rel=1e-9)


def test_effective_size_sums_groups_in_time_order():
    a = ar1_series(300, 0.8, seed=35)
    b = np.random.default_rng(36).standard_normal(200)
    ref_a = ar1_series(150, 0.95, seed=37)
    scores = np.concatenate([a, b])
    groups = np.array(["A"] * 300 + ["B"] * 200)
    want = sum(group_counts(scores, groups, ref_a, np.array(["A"] * 150)))
    assert effective_size(scores, groups, ref_a, np.array(["A"] * 150)) == pytest.approx(want, rel=1e-9)
    assert effective_size(scores, groups) == pytest.approx(count_oracle(a) + count_oracle(b), rel=1e-9)


def window_case(dates: int, seed: int):
    rng = np.random.default_rng(seed)
    spec = {"A": (1.0, 1.0, None), "B": (-2.0, 0.5, None), "C": (0.5, 2.0, None)}
    ref = panel(dates, spec, seed=seed, gaps=False)
    b = 24
    cur_scores = np.concatenate([ar1_series(b, 0.3, seed + 1) + 1.0, rng.standard_normal(b) * 0.5 - 2.0,
                                 ar1_series(b, 0.6, seed + 2) * 2.0 + 0.5])
    cur_groups, cur_dates = current(["A", "B", "C"], b)
    return (cur_scores, cur_groups, cur_dates), ref


def test_window_size_with_a_pooled_size():
    cur, ref = window_case(MIN_BLOCKS * 24 + 40, seed=41)
    counts = group_counts(cur[0], cur[1], ref[0], ref[1])
    summed = sum(counts)
    pooled = pooled_oracle(cur[1], cur[2], *ref)
    assert pooled is not None
    assert round(summed, 1) != round(summed, 2)
    sizes = window_size(*cur, *ref)
    assert sizes == {"effective_n": pytest.approx(round(min(summed, pooled), 1)),
                     "effective_n_summed": pytest.approx(round(summed, 1)),
                     "effective_n_pooled": pytest.approx(round(pooled, 1))}
    assert sizes["effective_n_summed"] == round(sizes["effective_n_summed"], 1)


def test_window_size_without_a_pooled_size_takes_the_largest_symbol():
    cur, ref = window_case(MIN_BLOCKS * 24 - 1, seed=42)
    assert pooled_oracle(cur[1], cur[2], *ref) is None
    counts = group_counts(cur[0], cur[1], ref[0], ref[1])
    sizes = window_size(*cur, *ref)
    assert sizes["effective_n_pooled"] is None
    assert sizes["effective_n"] == pytest.approx(round(max(counts), 1))
    assert sizes["effective_n_summed"] == pytest.approx(round(sum(counts), 1))


def test_window_size_of_symbols_that_cancel_takes_the_largest_symbols_count():
    x = ar1_series(120, 0.5, seed=44)
    mirror = (np.concatenate([x, -x]), np.array(["A"] * 120 + ["B"] * 120), np.tile(np.arange(120), 2))
    cur_scores = np.random.default_rng(45).standard_normal(6)
    cur_groups, cur_dates = current(["A", "B"], 3)
    counts = group_counts(cur_scores, cur_groups, mirror[0], mirror[1])
    sizes = window_size(cur_scores, cur_groups, cur_dates, *mirror)
    assert sizes == {"effective_n": pytest.approx(round(max(counts), 1)),
                     "effective_n_summed": pytest.approx(round(sum(counts), 1)), "effective_n_pooled": None}


def test_a_constant_symbol_whose_mean_is_not_exact_is_not_standardised():
    """A symbol constant at 0.1 has no spread (its sd is a rounding residue): it is left out of the pooled size
    like one constant at 2.0, not blown up into unit-variance noise."""
    rng = np.random.default_rng(0)
    n = 130
    a = rng.standard_normal(n)
    groups, dates = np.array(["A"] * n + ["K"] * n), np.tile(np.arange(n), 2)
    current_groups, current_dates = np.repeat(["A", "K"], 5), np.tile(np.arange(5), 2) + 1000
    alone = pooled_size(current_groups[:5], current_dates[:5], a, groups[:n], dates[:n])
    for level in (0.1, 2.0):
        got = pooled_size(current_groups, current_dates, np.concatenate([a, np.full(n, level)]), groups, dates)
        assert got == pytest.approx(alone, rel=1e-12)


def test_an_empty_reference_leaves_each_symbols_own_count():
    """No reference to read an autocorrelation or a pooled size from: the symbols' own counts (docstring)."""
    x = np.arange(5.0)
    sizes = window_size(x, np.array(["A"] * 5), np.arange(5), np.array([]), np.array([], dtype=str), np.array([]))
    assert sizes["effective_n_pooled"] is None
    assert sizes["effective_n"] == sizes["effective_n_summed"] == round(min(ar1_oracle(x), effective_bars(x)), 1)
    assert effective_size(x, reference=np.array([])) == pytest.approx(effective_size(x))


def test_groups_need_not_be_contiguous():
    """Rows of several symbols sorted by time (interleaved) give each symbol's scores in their own order."""
    x = np.random.default_rng(5).normal(size=200)
    interleaved = effective_size(x, np.tile(["A", "B"], 100))
    grouped = effective_size(np.concatenate([x[0::2], x[1::2]]), np.repeat(["A", "B"], 100))
    assert interleaved == pytest.approx(grouped, rel=1e-12)


def test_a_series_constant_within_rounding_counts_every_value():
    """Relative noise of 1e-15 is rounding, not variation (an sd of 1e-15 per unit of level): every value counts,
    however many there are (the spread is the standard deviation, not a sum that grows with n)."""
    x = 1.0 + 1e-15 * np.cumsum(np.random.default_rng(8).standard_normal(5000)) / 70  # a persistent wobble
    assert np.std(x) < 1e-14
    assert ar1_bars(x) == 5000.0
