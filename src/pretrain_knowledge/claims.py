"""The paper's claims, each against its controls, with intervals, tests and a verdict (method.md §7).

Two steps:

1. :func:`pretrain_knowledge.tables.sample_measures` — per experiment and sample, every quantity a
   claim compares (the real models' measure and the same measure for each control), from the
   salient sets of the final checkpoints and the convergence curves. The knowledge stage stores
   them as the long table ``knowledge/measures.parquet`` (sample_id, quantity, value).
2. :func:`claims_table` — across experiments: for every claim of :data:`CLAIMS` and every control,
   the estimate with its 95 % interval, the paired difference to the control with its interval
   (hierarchical bootstrap over seeds, then samples), a paired permutation test, Holm's correction
   within each scope, the effect size and the verdict. Scopes are each experiment and, per dataset
   × architecture, the pool over seeds.

Quantities are ratios per sample; a sample where a ratio is undefined (empty denominator) carries
no evidence for that quantity and is left out of its estimate and of the paired difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import stats
from .layout import SIMILARITIES

PAPER_LEARNABILITY = (0.13, 0.45)
"""The range of the preserved-learnability ratio the paper reports (method.md §4)."""
NEAR_CHANCE = 2.0
"""A scratch baseline whose final test accuracy is below this many times chance (1 / classes)
has learned too little for "hard to learn from scratch" to mean anything: its rows are flagged."""
SCRATCH_CONTROLLED = ("scratch shares K_pretrain",)
"""C1 controls that read the scratch baseline (every C2 row does)."""


# ----------------------------------------------------------------------------------------------
# Per-test-image accuracy (C0)
# ----------------------------------------------------------------------------------------------


def accuracy_measures(predictions: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """C0 per test image: its mean correctness over epochs 1 … E, for each model given.

    ``predictions``: model → its predictions table (epoch, index, correct). Long table with
    columns sample_id (the test image), quantity (``accuracy_<model>``), value.
    """
    frames = []
    for model, table in predictions.items():
        trained = table[table["epoch"] >= 1]
        mean = trained.groupby("index", sort=True)["correct"].mean()
        frames.append(
            pd.DataFrame(
                {
                    "sample_id": mean.index.to_numpy(dtype=np.int64),
                    "quantity": pd.array([f"accuracy_{model}"] * len(mean), dtype="string"),
                    "value": mean.to_numpy(dtype=np.float64),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def epochs_to_reach(metrics: pd.DataFrame, model: str, target: float) -> float:
    """First epoch at which ``model``'s test accuracy reaches ``target`` (NaN if never)."""
    rows = metrics[(metrics["model"].astype(str) == model) & (metrics["split"].astype(str) == "test")]
    reached = rows[rows["accuracy"] >= target - 1e-12]["epoch"]
    return float(reached.min()) if len(reached) else float("nan")


# ----------------------------------------------------------------------------------------------
# The claims
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One measure of one claim and the controls it is compared with (method.md §7).

    ``direction``: +1 when the paper expects the real models above every control, −1 below.
    """

    claim: str
    measure: str
    quantity: str
    controls: tuple[tuple[str, str], ...]
    direction: int


CLAIMS: tuple[Claim, ...] = (
    Claim("C0", "test accuracy of fine-tuning, mean over epochs 1…E", "accuracy_finetune",
          (("scratch", "accuracy_scratch"),), +1),
    Claim("C1", "preserved share of K_pretrain, by count", "preserved_count",
          (("scratch shares K_pretrain", "scratch_shares_pretrain_count"),
           ("random_probe preserved share", "random_probe_preserved_count"),
           ("chance", "chance_preserved_count")), +1),
    Claim("C1", "preserved share of K_pretrain, by strength", "preserved_strength",
          (("scratch shares K_pretrain", "scratch_shares_pretrain_strength"),
           ("random_probe preserved share", "random_probe_preserved_strength"),
           ("chance", "chance_preserved_strength")), +1),
    Claim("C2", "learnability: share of K_preserve that scratch learns", "learnability",
          (("scratch learns K_new", "scratch_learns_new"),
           ("scratch_b shares Ω_scratch (ceiling)", "scratch_b_shares_scratch"),
           ("random_probe learnability", "random_probe_learnability"),
           ("chance", "chance_learnability"),
           ("paper 13–45 %", ""),), -1),
    *(
        Claim("C3", f"area under similarity to final, {name.replace('_', ' ')}", f"area_{name}_finetune",
              (("scratch", f"area_{name}_scratch"),), +1)
        for name in SIMILARITIES
    ),
    *(
        Claim("C3", f"noise floor: scratch_b vs scratch at the end, {name.replace('_', ' ')}",
              f"noise_floor_{name}", (), 0)
        for name in SIMILARITIES
    ),
)
"""Every row of the claims table: claim, measure, and the controls it is compared with (fmt: skip)."""

COLUMNS: tuple[str, ...] = (
    "claim", "scope", "measure", "estimate", "ci_low", "ci_high", "control", "control_estimate", "diff",
    "diff_ci_low", "diff_ci_high", "p_value", "p_holm", "effect_size", "n_samples", "n_seeds", "verdict",
)  # fmt: skip
"""Columns of ``results/claims.parquet`` (results/README.md describes each)."""


def _groups(measures: Mapping[str, pd.DataFrame], quantity: str, experiments: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Experiment → the quantity's per-sample values (in sample order), or None if any lacks it."""
    out = {}
    for name in experiments:
        table = measures[name]
        rows = table[table["quantity"] == quantity].sort_values("sample_id", kind="stable")
        if rows.empty:
            return None
        out[name] = rows["value"].to_numpy(dtype=np.float64)
    return out


def _paper_range(low: float, high: float) -> str:
    lo, hi = PAPER_LEARNABILITY
    if math.isnan(low):
        return "inconclusive"
    if lo <= low and high <= hi:
        return "supported"
    if high < lo or low > hi:
        return "contradicted"
    return "inconclusive"


def near_chance(accuracy: float, classes: int) -> str | None:
    """Why a scratch baseline is not evaluable, or None (see :data:`NEAR_CHANCE`; 0 classes: unknown)."""
    if classes < 1:
        return None
    chance = 1.0 / classes
    if accuracy < NEAR_CHANCE * chance:
        return f"not evaluable: scratch near chance ({accuracy:.3f}, chance {chance:.3f})"
    return None


def _rows(claim: Claim, scope: str, measures: Mapping[str, pd.DataFrame], experiments: Sequence[str], seed: int) -> list[dict]:
    real = _groups(measures, claim.quantity, experiments)
    if real is None:
        return []
    rows = []
    controls = claim.controls or (("", ""),)
    for label, quantity in controls:
        control = _groups(measures, quantity, experiments) if quantity else None
        result = stats.compare(real, control, seed=seed)
        if label.startswith("paper"):
            verdict = _paper_range(result.ci_low, result.ci_high)
        elif control is None:
            verdict = "missing control" if label else "n/a"
        else:
            verdict = stats.verdict(result.diff_ci_low, result.diff_ci_high, claim.direction)
        rows.append(
            {
                "claim": claim.claim,
                "scope": scope,
                "measure": claim.measure,
                "estimate": result.estimate,
                "ci_low": result.ci_low,
                "ci_high": result.ci_high,
                "control": label or "none",
                "control_estimate": result.control_estimate,
                "diff": result.diff,
                "diff_ci_low": result.diff_ci_low,
                "diff_ci_high": result.diff_ci_high,
                "p_value": result.p_value,
                "effect_size": result.effect_size,
                "n_samples": result.n_samples,
                "n_seeds": result.n_seeds,
                "verdict": verdict,
            }
        )
    return rows


def scopes(experiments: Mapping[str, str]) -> dict[str, list[str]]:
    """Scope → its experiments: each experiment alone, and per group (dataset × architecture) of
    several seeds the pool over them, named ``pooled`` when there is one group, else
    ``pooled:<group>``."""
    out: dict[str, list[str]] = {name: [name] for name in experiments}
    groups: dict[str, list[str]] = {}
    for name, group in experiments.items():
        groups.setdefault(group, []).append(name)
    for group, names in groups.items():
        if len(names) > 1:  # one experiment alone is its own scope already
            out["pooled" if len(groups) == 1 else f"pooled:{group}"] = names
    return out


def claims_table(
    measures: Mapping[str, pd.DataFrame],
    groups: Mapping[str, str],
    seed: int = 0,
    flags: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The claims table: every claim × control × scope (module doc); Holm within each scope.

    ``measures``: experiment → its long measures table (sample and accuracy measures together).
    ``groups``: experiment → its dataset × architecture, which decides the pooled scopes.
    ``flags``: experiment → why its scratch baseline is not evaluable (:func:`near_chance`); the
    rows that read that baseline keep their numbers but carry the reason as their verdict.
    """
    rows = []
    for scope, names in scopes(groups).items():
        scope_rows = [row for claim in CLAIMS for row in _rows(claim, scope, measures, names, seed)]
        reasons = sorted({(flags or {})[n] for n in names if n in (flags or {})})
        for row in scope_rows:
            if reasons and (row["claim"] == "C2" or row["control"] in SCRATCH_CONTROLLED):
                row["verdict"] = "; ".join(reasons)
        adjusted = stats.holm([row["p_value"] for row in scope_rows])
        for row, p in zip(scope_rows, adjusted, strict=True):
            row["p_holm"] = p
        rows += scope_rows
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "robust"])
    for column in ("claim", "scope", "measure", "control", "verdict"):
        table[column] = table[column].astype("string")
    return table.astype({"n_samples": "int64", "n_seeds": "int64"})


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "–"
    return f"{x:.1e}" if x < 1e-3 else f"{x:.3f}"


def accuracy_summary(metrics: pd.DataFrame, classes: int) -> dict[str, float]:
    """Final test accuracy of every downstream model, chance, and the epochs fine-tuning and scratch
    need to reach scratch's final accuracy (C0), for one experiment's metrics table."""
    test = metrics[(metrics["split"].astype(str) == "test") & (metrics["model"].astype(str) != "pretrain")]
    last = test.sort_values("epoch").groupby(test["model"].astype(str), observed=True)["accuracy"].last()
    target = float(last["scratch"])
    return {
        "chance": 1.0 / classes if classes else float("nan"),
        **{f"final_{model}": float(acc) for model, acc in last.items()},
        "reach_finetune": epochs_to_reach(metrics, "finetune", target),
        "reach_scratch": epochs_to_reach(metrics, "scratch", target),
    }


def claims_markdown(table: pd.DataFrame, reach: pd.DataFrame | None = None, verdicts: pd.DataFrame | None = None) -> str:
    """The claims table as a readable report: one section per scope, pooled scopes first; then the
    verdicts under every sensitivity variant (``verdicts``, from sensitivity.robustness)."""
    lines = [
        "# Claims",
        "",
        "Each claim of the paper against its controls (docs/method.md §7). *estimate* is the real models' "
        "measure with its 95 % bootstrap interval (seeds, then samples within seeds); *diff* is the paired "
        "difference to the control with its interval; *p* a paired permutation test, Holm-corrected within "
        "the scope. A claim is **supported** when the interval of the difference excludes 0 in the paper's "
        "direction, **contradicted** when it excludes 0 in the other, otherwise **inconclusive**.",
        "",
    ]
    order = sorted(table["scope"].unique(), key=lambda s: (not str(s).startswith("pooled"), str(s)))
    for scope in order:
        part = table[table["scope"] == scope]
        seeds = int(part["n_seeds"].max()) if len(part) else 0
        lines += [f"## {scope} ({seeds} seed{'s' if seeds != 1 else ''})", ""]
        lines += [
            "| claim | measure | estimate [95 % CI] | control | control value | diff [95 % CI] | p (Holm) | n | verdict | robust |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in part.itertuples(index=False):
            robust = "–" if "robust" not in part or pd.isna(row.robust) else ("yes" if row.robust else "**no**")
            estimate = f"{_fmt(row.estimate)} [{_fmt(row.ci_low)}, {_fmt(row.ci_high)}]"
            diff = "–" if math.isnan(row.diff) else f"{_fmt(row.diff)} [{_fmt(row.diff_ci_low)}, {_fmt(row.diff_ci_high)}]"
            lines.append(
                f"| {row.claim} | {row.measure} | {estimate} | {row.control} | {_fmt(row.control_estimate)} | {diff} | "
                f"{_p(row.p_value)} ({_p(row.p_holm)}) | {row.n_samples} | **{row.verdict}** | {robust} |"
            )
        lines.append("")
    if verdicts is not None and len(verdicts):
        tested = verdicts[verdicts["control"] != "none"]
        first = order[0] if order else None
        tested = tested[tested["scope"] == first]
        variants = [c for c in tested.columns if c not in ("claim", "scope", "measure", "control")]
        lines += [f"## Verdicts under every sensitivity variant ({first})", "",
                  "| claim | measure | control | " + " | ".join(variants) + " |",
                  "|---|---|---|" + "---|" * len(variants)]  # fmt: skip
        for row in tested.itertuples(index=False):
            cells = [str(row[4 + i]) for i in range(len(variants))]
            lines.append(f"| {row.claim} | {row.measure} | {row.control} | " + " | ".join(cells) + " |")
        lines.append("")
    if reach is not None and len(reach):
        models = [c.removeprefix("final_") for c in reach.columns if c.startswith("final_")]
        lines += [
            "## Final test accuracy, and epochs to reach scratch's final accuracy (C0)", "",
            "| experiment | chance | " + " | ".join(models) + " | epochs: finetune | epochs: scratch |",
            "|---|---|" + "---|" * len(models) + "---|---|",
        ]  # fmt: skip
        for row in reach.to_dict("records"):
            finals = " | ".join(_fmt(row[f"final_{m}"]) for m in models)
            lines.append(
                f"| {row['experiment']} | {_fmt(row['chance'])} | {finals} | {_fmt(row['reach_finetune'], 0)} | "
                f"{_fmt(row['reach_scratch'], 0)} |"
            )
        lines.append("")
    return "\n".join(lines)
