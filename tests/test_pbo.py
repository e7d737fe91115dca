"""PBO by CSCV: against a brute force written from the definition, and against what it must say.

The oracle shares nothing with the implementation but the definition: it drops the configurations
with a non-finite return, builds each half's rows, gives a half whose returns do not vary Sharpe
ratio 0 and any other its numpy Sharpe ratio, drops a configuration from a split when its returns
vary in neither half (it never trades there), ranks with scipy's average ranks, and averages over
tied in-sample winners.
"""

from itertools import combinations

import numpy as np
import pytest
from scipy import stats

from emp_core.evolution.overfitting import probability_of_backtest_overfitting


def _constant(x):
    return bool(np.all(x == x[0]))


def _sharpe(x):
    return 0.0 if _constant(x) else x.mean() / x.std(ddof=1)  # no risk, no return: it did nothing there


def oracle(m, blocks):
    m = m[:, np.isfinite(m).all(axis=0)]
    parts = np.array_split(m, blocks)
    logits, overfit, skipped = [], [], 0
    for chosen in combinations(range(blocks), blocks // 2):
        ins = np.vstack([parts[i] for i in chosen])
        oos = np.vstack([parts[i] for i in range(blocks) if i not in chosen])
        keep = [j for j in range(m.shape[1]) if not (_constant(ins[:, j]) and _constant(oos[:, j]))]
        if len(keep) < 2:
            skipped += 1
            continue
        sr_in = np.array([_sharpe(ins[:, j]) for j in keep])
        ranks = stats.rankdata([_sharpe(oos[:, j]) for j in keep], method="average")
        w = ranks[sr_in == sr_in.max()] / (len(keep) + 1)
        split_logits = np.log(w / (1 - w))
        logits.append(split_logits.mean())
        overfit.append(np.mean(split_logits <= 0))
    return float(np.mean(overfit)), np.array(logits), len(logits), skipped


def _noise(seed, periods, configurations):
    return np.random.default_rng(seed).normal(0, 0.01, (periods, configurations))


def _with_flat_columns():
    m = _noise(10, 240, 8)
    flat = np.zeros((240, 4))
    flat[:, 1] = 0.0003  # constant but not zero: a cash yield
    flat[:100, 2] = _noise(11, 100, 1)[:, 0]  # trades only in the first 100 rows
    flat[150:153, 3] = [0.01, -0.02, 0.005]  # trades three times
    return np.hstack([m, flat])


def _with_duplicates():
    m = _noise(12, 300, 6)
    return np.hstack([m, m[:, [0, 0, 3]]])


def _with_non_finite():
    m = _noise(13, 200, 7)
    m[5, 1] = np.nan
    m[150:152, 4] = np.inf
    return m


def _constant_by_blocks(seed):
    """Configurations that hold one constant return per block (a yield that changes), at two levels in
    block patterns: flat in both halves of the split that separates the levels, rankable elsewhere. (The
    sums of squares of such a half need not give a variance of exactly zero.)"""
    m = _noise(15, 203, 6)
    patterns = [(0, 1, 2, 3), (0, 2, 4, 6), (0, 1, 4, 5), (0, 1, 6, 7), (2, 3, 4, 5), (0, 3, 5, 6)]
    low, high = np.random.default_rng(seed).uniform(-0.01, 0.01, size=(2, len(patterns)))
    levels = np.array([[low[j] if b in pattern else high[j] for j, pattern in enumerate(patterns)]
                       for b in range(8)])
    sizes = [len(part) for part in np.array_split(np.arange(203), 8)]
    return np.hstack([m, np.repeat(levels, sizes, axis=0)])


def _near_riskless():
    """A tiny spread around a sizeable mean: Sharpe ratios from uncentred sums of squares would be noise."""
    m = _noise(17, 203, 6)
    rng = np.random.default_rng(18)
    return np.hstack([m, 0.0003 + 1e-13 * rng.normal(size=(203, 1)), 0.0002 + 1e-13 * rng.normal(size=(203, 1))])


def _nearly_riskless_by_halves():
    """Levels far apart in the two halves of a split, with a spread of 1e-12 around them: the variance
    of such a half from sums of squares centred on the column's mean is lost to cancellation."""
    m = _noise(19, 200, 6)
    rng = np.random.default_rng(20)
    first = np.arange(200) < 100
    return np.hstack([m, (np.where(first, 0.01, -0.01) + 1e-12 * rng.normal(size=200))[:, None],
                      (np.where(first, 0.013, 0.002) + 1e-13 * rng.normal(size=200))[:, None]])


def _lucky_bursts(seed, rows=50, blocks=16, steady=20, sparse=30):
    """The referee's case: ``steady`` configurations with a mild edge (per-period Sharpe ratio 0.1) beside
    ``sparse`` that trade in only 2 of the blocks, each in a direction drawn at random (a Sharpe ratio of
    0.5 per period there, earning or losing), flat elsewhere."""
    rng = np.random.default_rng(seed)
    m = np.hstack([rng.normal(0.001, 0.01, (blocks * rows, steady)), np.zeros((blocks * rows, sparse))])
    for j in range(steady, steady + sparse):
        sign = rng.choice([-1.0, 1.0])
        for b in rng.choice(blocks, 2, replace=False):
            m[b * rows:(b + 1) * rows, j] = sign * 0.005 + rng.normal(0, 0.01, rows)
    return m


def _everything():
    m = np.hstack([_with_flat_columns()[:197], _with_duplicates()[:197, -4:], _with_non_finite()[:197, [1, 4]]])
    return np.random.default_rng(14).permutation(m, axis=1)


CASES = {
    "noise": (lambda: _noise(4, 600, 12), 8),
    "rows not divisible by blocks": (lambda: _noise(5, 203, 10), 8),
    "flat columns": (_with_flat_columns, 8),
    "duplicated columns": (_with_duplicates, 8),
    "non-finite returns": (_with_non_finite, 6),
    "constant by blocks": (lambda: _constant_by_blocks(16), 8),
    "constant by blocks, other levels": (lambda: _constant_by_blocks(17), 8),
    "near riskless": (_near_riskless, 8),
    "nearly riskless halves far from the column's mean": (_nearly_riskless_by_halves, 8),
    "lucky in the few blocks traded": (lambda: _lucky_bursts(21, rows=8, blocks=8, steady=5, sparse=8), 8),
    "all of it, odd rows": (_everything, 10),
}


@pytest.mark.parametrize("case", CASES)
def test_pbo_equals_the_definition(case):
    make, blocks = CASES[case]
    m = make()
    fast = probability_of_backtest_overfitting(m, blocks=blocks)
    pbo, logits, splits, skipped = oracle(m, blocks)
    assert (fast.splits, fast.skipped) == (splits, skipped)
    assert fast.pbo == pytest.approx(pbo, abs=1e-12)
    np.testing.assert_allclose(fast.logits, logits, rtol=1e-9, atol=1e-12)


def test_splits_without_two_configurations_that_trade_are_skipped():
    m = _noise(20, 40, 2)
    m[:, 1] = np.where(np.arange(40) < 20, 0.001, 0.0)  # a yield in blocks 0 and 1, nothing in 2 and 3
    result = probability_of_backtest_overfitting(m, blocks=4)
    # constant in both halves only where blocks 0 and 1 make one half: 2 of the 6 splits
    assert (result.splits, result.skipped, len(result.logits)) == (4, 2, 4)
    m[20:, 1] = 0.0
    m[:20, 1] = _noise(21, 20, 1)[:, 0]  # trading in blocks 0 and 1: it trades in every split
    assert (probability_of_backtest_overfitting(m, blocks=4).splits, result.skipped) == (6, 2)


def test_no_usable_split_is_refused():
    m = np.zeros((40, 3))
    m[:, 0] = _noise(21, 40, 1)[:, 0]
    m[:, 2] = 0.0003  # a yield: constant everywhere
    undefined = (r"^PBO is undefined: no split has two configurations with finite returns that trade in it \(not "
                 r"constant in both halves\)$")
    with pytest.raises(ValueError, match=undefined):
        probability_of_backtest_overfitting(m, blocks=4)
    m[:10, 1:] = _noise(22, 10, 2)  # trading in block 0 only: it trades in every split
    assert probability_of_backtest_overfitting(m, blocks=4).splits == 6
    with pytest.raises(ValueError, match=undefined):  # non-finite everywhere but in one configuration
        probability_of_backtest_overfitting(np.where(m[:, :2] == 0, np.nan, m[:, :2]), blocks=4)


SEEDS = range(40)


def test_noise_gives_pbo_near_one_half_and_flat_columns_change_nothing():
    """Without skill the in-sample winner's out-of-sample rank is uniform: PBO is 1/2 on average (one
    draw can be far from it: the splits share their rows). Configurations that never trade (nothing,
    or a fixed yield) have no rank and must not make the winner look better."""
    flat = np.zeros((500, 20))
    flat[:, 10:] = np.linspace(-0.001, 0.001, 10)
    plain, padded = [], []
    for seed in SEEDS:
        m = _noise(seed, 500, 20)
        plain.append(probability_of_backtest_overfitting(m, blocks=10).pbo)
        padded.append(probability_of_backtest_overfitting(np.hstack([m, flat]), blocks=10).pbo)
    assert 0.4 < np.mean(plain) < 0.6
    assert padded == plain


def test_a_dominant_strategy_gives_pbo_near_zero():
    for seed in range(5):
        m = _noise(seed, 500, 20)
        m[:, 7] += 0.003  # per-period Sharpe 0.3 against noise
        assert probability_of_backtest_overfitting(m, blocks=10).pbo < 0.01


def test_luck_in_the_few_blocks_traded_then_flat_is_overfitting():
    """The referee's case: 30 configurations that trade in 2 of 16 blocks, each earning or losing there
    by a random sign, beside 20 steady ones with a mild edge. Where one that earned has both its blocks
    in-sample it beats the steady ones and then does nothing out of sample, below every steady one. A
    rule that dropped configurations flat in either half never saw those splits (PBO 0.07 to 0.25)."""
    for seed in range(5):
        assert probability_of_backtest_overfitting(_lucky_bursts(seed)).pbo > 0.5


def test_a_lucky_winner_flat_out_of_sample_counts_as_overfit():
    """Configuration 0 earns a lot in block 0 and does nothing elsewhere; 1 to 3 earn steadily. Where
    block 0 is in-sample, 0 wins and, flat out of sample (Sharpe ratio 0), ranks below the three
    others: w = 1/5."""
    rng = np.random.default_rng(37)
    m = 0.004 + rng.normal(0, 0.01, (80, 4))
    m[:, 0] = 0.0
    m[:20, 0] = 0.05 + rng.normal(0, 0.01, 20)
    blocks = np.split(np.arange(80), 4)
    assert all(m[np.r_[blocks[i], blocks[j]], 1:].mean(axis=0).min() > 0 for i, j in combinations(range(4), 2))
    result = probability_of_backtest_overfitting(m, blocks=4)
    assert result.splits == 6
    np.testing.assert_allclose(result.logits[:3], np.log(1 / 4))  # combinations start with (0, 1), (0, 2), (0, 3)
    assert result.pbo >= 0.5


def test_a_flat_in_sample_half_wins_when_everything_else_lost():
    """Configuration 0 does nothing in blocks 0 and 1 and earns in 2 and 3; 1 and 2 lose in 0 and 1 and
    earn less in 2 and 3. With blocks 0 and 1 in-sample, doing nothing (Sharpe ratio 0) is the best
    there: 0 is the winner, and the best out of sample (w = 3/4)."""
    rng = np.random.default_rng(38)
    m = rng.normal(0, 0.01, (40, 3))
    m[:20, 1:] -= 0.02
    m[20:, 1:] += 0.005
    m[:20, 0] = 0.0
    m[20:, 0] += 0.03
    result = probability_of_backtest_overfitting(m, blocks=4)
    assert result.logits[0] == pytest.approx(np.log(3))


def test_in_sample_luck_paid_back_out_of_sample_gives_pbo_near_one():
    """Each configuration earns in half the blocks and loses as much in the others: whichever looks
    best in-sample holds most of its losing blocks out of sample."""
    blocks, rows = 8, 50
    for seed in range(5):
        rng = np.random.default_rng(seed)
        earning = [rng.permutation(blocks) < blocks // 2 for _ in range(20)]
        sign = np.array([np.repeat(np.where(e, 1.0, -1.0), rows) for e in earning]).T
        m = 0.004 * sign + rng.normal(0, 0.01, sign.shape)
        assert probability_of_backtest_overfitting(m, blocks=blocks).pbo > 0.9


def test_a_duplicated_winner_takes_the_average_of_the_two_top_ranks():
    m = _noise(31, 400, 9)
    m[:, 2] += 0.004
    result = probability_of_backtest_overfitting(np.hstack([m, m[:, [2]]]), blocks=8)
    # rank (9 + 10) / 2 among 10: w = 9.5 / 11, in every split
    np.testing.assert_allclose(result.logits, np.log(9.5 / 1.5))


def test_a_rescaled_copy_is_a_tie_like_an_exact_duplicate():
    """The same strategy at another size has the same Sharpe ratio, up to rounding."""
    m = _noise(32, 400, 9)
    m[:, 2] += 0.004
    duplicate = probability_of_backtest_overfitting(np.hstack([m, m[:, [2]]]), blocks=8)
    for scale in (0.3, 0.7, 3.0):
        rescaled = probability_of_backtest_overfitting(np.hstack([m, scale * m[:, [2]]]), blocks=8)
        np.testing.assert_allclose(rescaled.logits, duplicate.logits, rtol=1e-12)


def test_tied_in_sample_winners_count_the_split_fractionally():
    """Configurations 0 and 1 are identical, and best, in blocks 0 and 1; out of sample 0 earns and 1
    loses. In the split with blocks 0 and 1 in-sample, picking either is equally likely: the split is
    half overfit, and its logit is the mean of +ln 4 and -ln 4."""
    rng = np.random.default_rng(33)
    m = rng.normal(0, 0.01, (40, 4))
    m[:20, 0] += 0.02
    m[:20, 1] = m[:20, 0]
    m[20:, 0] += 0.02
    m[20:, 1] -= 0.02
    result = probability_of_backtest_overfitting(m, blocks=4)
    assert result.splits == 6
    assert result.logits[0] == pytest.approx(0.0, abs=1e-12)  # combinations start with (0, 1)
    assert result.pbo * 6 % 1 == pytest.approx(0.5)
    assert result.pbo == pytest.approx(oracle(m, 4)[0])


def test_a_winner_exactly_at_the_out_of_sample_median_counts_as_overfit():
    """Two blocks. With the first in-sample, configuration 0 and its copy win; out of sample they sit
    between 2 (worse) and 3 (better): average rank 2.5 of 4, w = 1/2, logit 0, and the paper counts
    l <= 0. With the second in-sample, 3 wins and falls below 0 and its copy out of sample."""
    rng = np.random.default_rng(36)
    m = rng.normal(0, 0.01, (20, 4))
    m[:10, 0] += 0.02
    m[10:, 2] -= 0.02
    m[10:, 3] += 0.02
    m[:, 1] = m[:, 0]
    result = probability_of_backtest_overfitting(m, blocks=2)
    assert (result.splits, result.pbo) == (2, 1.0)
    assert result.logits[0] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("row", [0, -1])
def test_every_row_counts_when_blocks_do_not_divide_the_periods(row):
    m = _noise(34, 16 * 30 + 7, 6)
    changed = m.copy()
    changed[row] = [0.05, -0.05, 0.05, -0.05, 0.05, -0.05]
    before = probability_of_backtest_overfitting(m)
    after = probability_of_backtest_overfitting(changed)
    assert not np.allclose(before.logits, after.logits)


def test_bad_inputs_are_refused():
    matrix = r"^need a \(periods x configurations\) matrix with at least two configurations$"
    with pytest.raises(ValueError, match=matrix):
        probability_of_backtest_overfitting(np.ones((100, 1)), blocks=4)
    with pytest.raises(ValueError, match=matrix):
        probability_of_backtest_overfitting(np.ones(100), blocks=4)
    for blocks in (5, 0, -2):
        with pytest.raises(ValueError, match=rf"^blocks must be even and >= 2, got {blocks}$"):
            probability_of_backtest_overfitting(np.ones((100, 3)), blocks=blocks)
    with pytest.raises(ValueError, match=r"^31 periods are too few for 16 blocks \(two per block at least\)$"):
        probability_of_backtest_overfitting(_noise(35, 31, 3), blocks=16)
    assert probability_of_backtest_overfitting(_noise(35, 32, 3), blocks=16).splits == 12870
