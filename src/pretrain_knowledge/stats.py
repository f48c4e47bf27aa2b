"""The statistics behind every claim (method.md §7): intervals, paired tests, corrections, verdicts.

Data are paired per sample: a measure of the real models and the same measure of a control, on
the same image, in each seed (experiment) of a grid. Samples within a seed share the models and
are not independent of each other in the way seeds are, so intervals come from a hierarchical
bootstrap: seeds are resampled, then samples within each drawn seed. With one seed only the
samples are resampled, and the interval says nothing about another training run — the report
states the number of seeds beside every interval.

Everything is seeded: the same input gives the same interval and p-value on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP = 2000
PERMUTATIONS = 20000
EXACT_UP_TO = 16
"""Paired permutation tests enumerate all 2^n sign flips up to this many pairs."""

Groups = Mapping[object, Sequence[float] | np.ndarray]
"""Seed (or any cluster) → per-sample values of that seed."""


def _clean(groups: Groups) -> list[np.ndarray]:
    """Per-group float arrays without NaN (a sample where a ratio is undefined carries no evidence)."""
    out = []
    for values in groups.values():
        array = np.asarray(values, dtype=np.float64)
        array = array[~np.isnan(array)]
        if array.size:
            out.append(array)
    return out


def pooled_mean(groups: Groups) -> float:
    """The mean over all samples of all groups (groups of equal size weigh equally)."""
    arrays = _clean(groups)
    return float(np.concatenate(arrays).mean()) if arrays else float("nan")


def bootstrap_interval(
    groups: Groups,
    *,
    confidence: float = CONFIDENCE,
    n_boot: int = BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of :func:`pooled_mean` under the hierarchical bootstrap (module doc)."""
    arrays = _clean(groups)
    if not arrays or sum(a.size for a in arrays) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    if len(arrays) == 1:
        values = arrays[0]
        means = values[rng.integers(values.size, size=(n_boot, values.size))].mean(axis=1)
    else:
        means = np.empty(n_boot)
        for b in range(n_boot):
            chosen = rng.integers(len(arrays), size=len(arrays))
            draws = [arrays[g][rng.integers(arrays[g].size, size=arrays[g].size)] for g in chosen]
            means[b] = np.concatenate(draws).mean()
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_permutation_p(differences: Sequence[float] | np.ndarray, *, n_perm: int = PERMUTATIONS, seed: int = 0) -> float:
    """Two-sided p-value of a zero mean difference, flipping the sign of each pair under H0.

    Exact (all 2^n flips) for n ≤ :data:`EXACT_UP_TO` pairs; otherwise a seeded Monte Carlo
    estimate, counted with the observed statistic included so that p > 0.
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    observed = abs(d.mean())
    tolerance = 1e-12 * max(1.0, np.abs(d).max())
    if d.size <= EXACT_UP_TO:
        signs = np.array(list(product((1.0, -1.0), repeat=d.size)))
        stats = np.abs(signs @ d) / d.size
        return float(np.mean(stats >= observed - tolerance))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 104729]))
    hits = 0
    for start in range(0, n_perm, 4096):
        size = min(4096, n_perm - start)
        signs = rng.choice((-1.0, 1.0), size=(size, d.size))
        hits += int(np.sum(np.abs(signs @ d) / d.size >= observed - tolerance))
    return (hits + 1) / (n_perm + 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p_values, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(p))
    out = np.full(p.shape, np.nan)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    m = len(order)
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out.tolist()


def effect_size(differences: Sequence[float] | np.ndarray) -> float:
    """Cohen's d_z of paired differences: their mean over their standard deviation."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    if d.size < 2:
        return float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return math.copysign(math.inf, d.mean()) if d.mean() else 0.0
    return float(d.mean() / sd)


VERDICTS = ("supported", "contradicted", "inconclusive")


def verdict(low: float, high: float, direction: int) -> str:
    """supported when the interval of the difference excludes 0 in the paper's direction (+1: the
    real models above the control, −1: below), contradicted when it excludes 0 the other way."""
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if low > 0:
        return "supported" if direction > 0 else "contradicted"
    if high < 0:
        return "supported" if direction < 0 else "contradicted"
    return "inconclusive"


@dataclass(frozen=True)
class Comparison:
    """A measure of the real models against one control, over samples within seeds."""

    estimate: float
    ci_low: float
    ci_high: float
    control_estimate: float
    diff: float
    diff_ci_low: float
    diff_ci_high: float
    p_value: float
    effect_size: float
    n_samples: int
    n_seeds: int


def compare(real: Groups, control: Groups | None, *, seed: int = 0, n_boot: int = BOOTSTRAP) -> Comparison:
    """Estimate, interval, paired difference to ``control`` (same keys and sample order) and its test.

    Without a control (``None``) the difference fields are NaN: the measure is reported alone.
    """
    estimate = pooled_mean(real)
    low, high = bootstrap_interval(real, seed=seed, n_boot=n_boot)
    n_samples = int(sum(np.sum(~np.isnan(np.asarray(v, dtype=np.float64))) for v in real.values()))
    n_seeds = len(_clean(real))
    if control is None:
        nan = float("nan")
        return Comparison(estimate, low, high, nan, nan, nan, nan, nan, nan, n_samples, n_seeds)
    diffs = {
        key: np.asarray(real[key], dtype=np.float64) - np.asarray(control[key], dtype=np.float64) for key in real
    }
    d_low, d_high = bootstrap_interval(diffs, seed=seed + 1, n_boot=n_boot)
    flat = np.concatenate([v for v in diffs.values()]) if diffs else np.array([])
    return Comparison(
        estimate=estimate,
        ci_low=low,
        ci_high=high,
        control_estimate=pooled_mean(control),
        diff=pooled_mean(diffs),
        diff_ci_low=d_low,
        diff_ci_high=d_high,
        p_value=paired_permutation_p(flat, seed=seed),
        effect_size=effect_size(flat),
        n_samples=int(np.sum(~np.isnan(flat))),
        n_seeds=len(_clean(diffs)),
    )
