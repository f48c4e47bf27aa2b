"""Claims statistics against known answers: coverage, exact permutation p-values, Holm, verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from pretrain_knowledge import stats


def test_bootstrap_interval_covers_the_mean_at_its_nominal_rate() -> None:
    rng = np.random.default_rng(1)
    reps, covered = 300, 0
    for rep in range(reps):
        sample = rng.normal(1.0, 2.0, size=40)
        low, high = stats.bootstrap_interval({0: sample}, n_boot=500, seed=rep)
        covered += low <= 1.0 <= high
    # Percentile intervals under-cover slightly at n = 40; 300 repetitions leave a sd of 1.3 points.
    assert 0.90 <= covered / reps <= 0.98


def test_bootstrap_interval_widens_with_between_seed_spread() -> None:
    rng = np.random.default_rng(2)
    within = rng.normal(0.0, 1.0, size=(3, 30))
    apart = within + np.array([[0.0], [3.0], [6.0]])
    narrow = stats.bootstrap_interval({0: apart.ravel()})
    wide = stats.bootstrap_interval({s: apart[s] for s in range(3)})
    assert (wide[1] - wide[0]) > 3 * (narrow[1] - narrow[0])
    assert stats.pooled_mean({s: apart[s] for s in range(3)}) == pytest.approx(apart.mean())


def test_exact_permutation_p_values() -> None:
    assert stats.paired_permutation_p([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    assert stats.paired_permutation_p([1.0] * 6) == pytest.approx(2 / 64)
    assert stats.paired_permutation_p([1, -1, 2, -2]) == pytest.approx(1.0)
    # Against scipy's exact paired permutation test on the same statistic (mean difference).
    d = np.array([0.3, -0.1, 0.8, 0.5, -0.4, 0.9, 0.2, 0.6])
    reference = scipy_stats.permutation_test(
        (d,), np.mean, permutation_type="samples", alternative="two-sided", n_resamples=np.inf
    )
    assert stats.paired_permutation_p(d) == pytest.approx(reference.pvalue)


def test_monte_carlo_permutation_is_calibrated_under_the_null() -> None:
    rng = np.random.default_rng(3)
    p = [stats.paired_permutation_p(rng.normal(size=30), n_perm=2000, seed=i) for i in range(200)]
    assert 0.01 <= np.mean(np.array(p) < 0.05) <= 0.10
    assert stats.paired_permutation_p(rng.normal(1.0, 1.0, size=30), n_perm=2000) < 0.01


def test_holm_adjustment_by_hand() -> None:
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = stats.holm([0.2, float("nan"), 0.01])
    assert adjusted[0] == pytest.approx(0.2) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_effect_size_and_verdicts() -> None:
    assert stats.effect_size([1, 2, 3]) == pytest.approx(2.0)
    assert stats.verdict(0.1, 0.3, +1) == "supported"
    assert stats.verdict(0.1, 0.3, -1) == "contradicted"
    assert stats.verdict(-0.3, -0.1, -1) == "supported"
    assert stats.verdict(-0.1, 0.3, +1) == "inconclusive"
    assert stats.verdict(float("nan"), float("nan"), +1) == "inconclusive"


def test_compare_pairs_samples_and_drops_undefined_ones() -> None:
    real = {0: [0.5, 0.6, float("nan"), 0.7], 1: [0.4, 0.5, 0.6, 0.5]}
    control = {0: [0.1, 0.2, 0.3, 0.2], 1: [0.2, 0.1, 0.2, 0.3]}
    result = stats.compare(real, control)
    assert result.n_seeds == 2 and result.n_samples == 7
    assert result.diff == pytest.approx(np.nanmean(np.array(real[0] + real[1]) - np.array(control[0] + control[1])))
    assert result.diff_ci_low > 0 and result.p_value == pytest.approx(2 / 2**7)
    alone = stats.compare(real, None)
    assert math.isnan(alone.diff) and alone.estimate == pytest.approx(np.nanmean(real[0] + real[1]))
