"""How much the knowledge depends on each analysis choice (method.md §8).

The sparsity objective's optimum is generally a face, not a point, and the analysis has further
free choices (the bound on q, the AND-only form of the paper's Eq. (2), the optimiser, the salience
threshold). Each variant changes one of them (``pretrain_knowledge.spec.SensitivitySpec``); its
interactions are re-solved from the stored games, and its claim quantities recomputed
(``results/<experiment>/sensitivity/<variant>/``). This module turns them into

* the headline table of one experiment (:func:`headline_table`): the main measures per variant
  with their intervals;
* the robustness of every verdict (:func:`robustness`): whether a claim's verdict is the same
  under every variant.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from . import stats

DEFAULT = "default"
"""The variant name of the experiment's own settings."""

HEADLINE: dict[str, str] = {
    "preserved_count": "preserved share of K_pretrain (count)",
    "learnability": "learnability of preserved knowledge",
    "area_weighted_jaccard_finetune": "similarity area, fine-tuning",
    "area_weighted_jaccard_scratch": "similarity area, scratch",
}
"""The headline measures the sensitivity table reports, with their labels."""

COLUMNS: tuple[str, ...] = (
    "variant", "factor", "value", "quantity", "label", "estimate", "ci_low", "ci_high", "n_samples",
)  # fmt: skip


def factor_of(variant: str) -> tuple[str, str]:
    """(factor, value) of a variant name ``<factor>=<value>``; the default is ("default", "")."""
    factor, _, value = variant.partition("=")
    return (factor, value) if value else (DEFAULT, "")


def headline_table(measures: Mapping[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Every headline measure of every variant of one experiment: estimate and 95 % interval.

    ``measures``: variant (``default`` first) → that variant's long measures table.
    """
    rows = []
    for variant, table in measures.items():
        factor, value = factor_of(variant)
        for quantity, label in HEADLINE.items():
            values = table[table["quantity"] == quantity]["value"].to_numpy(dtype=np.float64)
            low, high = stats.bootstrap_interval({0: values}, seed=seed)
            rows.append(
                {
                    "variant": variant,
                    "factor": factor,
                    "value": value,
                    "quantity": quantity,
                    "label": label,
                    "estimate": float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"),
                    "ci_low": low,
                    "ci_high": high,
                    "n_samples": int(np.isfinite(values).sum()),
                }
            )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in ("variant", "factor", "value", "quantity", "label"):
        frame[column] = frame[column].astype("string")
    return frame.astype({"n_samples": "int64"})


KEY = ("claim", "scope", "measure", "control")
"""Columns that identify a row of the claims table across variants."""


def robustness(default: pd.DataFrame, variants: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The default claims table with a ``robust`` column, and every variant's verdicts side by side.

    ``robust`` is True when a row's verdict is the same under every variant, False when one differs,
    NA without variants. The second table has one row per claim row and one column per variant.
    """
    keyed = default.set_index(list(KEY))
    verdicts = pd.DataFrame({DEFAULT: keyed["verdict"].astype(str)})
    for name, table in variants.items():
        verdicts[name] = table.set_index(list(KEY))["verdict"].astype(str).reindex(verdicts.index)
    if variants:
        same = verdicts.eq(verdicts[DEFAULT], axis=0).all(axis=1)
        robust = pd.array(same.to_numpy(), dtype="boolean")
    else:
        robust = pd.array([pd.NA] * len(verdicts), dtype="boolean")
    out = default.copy()
    out["robust"] = robust
    return out, verdicts.reset_index()
