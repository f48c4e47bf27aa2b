"""The knowledge stage's tables (method.md §4): per-sample frames of one experiment and their summaries.

Input is the interaction table of every explained checkpoint of one experiment (the columns of
:data:`pretrain_knowledge.results.COLUMNS` plus ``model`` and ``epoch``); Ω of a model is taken at
its last explained epoch. Every summary states its number of samples and its spread (sd, sem).
Table names are :data:`pretrain_knowledge.layout.KNOWLEDGE_TABLES`; results/README.md documents
their columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .knowledge import (
    KIND_DTYPE,
    decompose,
    decomposition_frame,
    learnability_frame,
    members_frame,
    preserved_learnability,
    salient_iou,
    salient_sets,
    similarity_frame,
    weighted_jaccard,
)
from .layout import KNOWLEDGE_TABLES, MODELS
from .results import batch_of
from .spec import KnowledgeSpec


def describe(frame: pd.DataFrame, keys: list[str], columns: Sequence[str]) -> pd.DataFrame:
    """Mean, sample sd and sem of ``columns`` per group, plus the number of samples."""
    grouped = frame.groupby(keys, observed=True, sort=True)
    out = grouped.size().rename("n_samples").reset_index()
    for column in columns:
        stats = grouped[column].agg(["mean", "std", "sem"])
        stats.columns = [f"{column}_{s}" for s in stats.columns]
        out = out.merge(stats.reset_index(), on=keys)
    return out


def decomposition_summary(decomposition: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, type, order), per (kind, type) over all orders, and per kind over both types."""
    values = ["count", "strength"]
    per_order = describe(decomposition, ["kind", "type", "order"], values)
    per_type = decomposition.groupby(["sample_id", "kind", "type"], observed=True)[values].sum()
    per_kind = decomposition.groupby(["sample_id", "kind"], observed=True)[values].sum()
    by_type = describe(per_type.reset_index(), ["kind", "type"], values)
    by_kind = describe(per_kind.reset_index(), ["kind"], values).assign(type="all")
    parts = []
    for part in (per_order, by_type, by_kind):
        part = part.assign(type=part["type"].astype(str))
        if "order" not in part:
            part = part.assign(order=pd.NA)
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out["kind"] = out["kind"].astype(str).astype(KIND_DTYPE)
    out["type"] = pd.Categorical(out["type"], categories=["and", "or", "all"])
    out["order"] = out["order"].astype("Int16")
    out["count_mean"] = out["count_mean"].astype("float64")
    columns = ["kind", "type", "order", "n_samples"]
    columns += [f"{v}_{s}" for v in values for s in ("mean", "std", "sem")]
    return out[columns].sort_values(["kind", "type", "order"], na_position="last", ignore_index=True)


def learnability_summary(learnability: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd of the per-sample ratio over samples that have preserved knowledge, and pooled."""
    valid = learnability.dropna(subset=["ratio"])
    preserved, learned = int(learnability["preserved"].sum()), int(learnability["learned"].sum())
    return pd.DataFrame(
        {
            "n_samples": [len(learnability)],
            "n_with_preserved": [len(valid)],
            "ratio_mean": [valid["ratio"].mean()],
            "ratio_std": [valid["ratio"].std()],
            "ratio_sem": [valid["ratio"].sem()],
            "ratio_median": [valid["ratio"].median()],
            "ratio_pooled": [learned / preserved if preserved else np.nan],
            "preserved_mean": [learnability["preserved"].mean()],
            "learned_mean": [learnability["learned"].mean()],
        }
    ).astype({"n_samples": "int64", "n_with_preserved": "int64"})


def knowledge_tables(
    interactions: pd.DataFrame, settings: KnowledgeSpec = KnowledgeSpec()
) -> dict[str, pd.DataFrame]:
    """All knowledge tables of one experiment from its interaction table (method.md §4).

    ``interactions`` holds every explained checkpoint (columns of results.COLUMNS plus model and
    epoch). Ω of a model is taken at its last explained epoch; similarity compares every explained
    checkpoint of finetune and scratch with that final one.
    """
    salience, tau_scope, match_sign = settings.salience, settings.tau_scope, settings.match_sign
    pairs = interactions[["model", "epoch"]].drop_duplicates()
    missing = [m for m in MODELS if m not in set(pairs["model"].astype(str))]
    if missing:
        raise ValueError(f"no interactions of models {missing}; every model of {MODELS} is needed")
    epochs = {m: sorted(int(e) for e in pairs[pairs["model"] == m]["epoch"]) for m in MODELS}
    batches = {(m, e): batch_of(interactions, m, e) for m in MODELS for e in epochs[m]}
    ids = batches["pretrain", epochs["pretrain"][-1]].sample_ids
    for key, batch in batches.items():
        if not torch.equal(batch.sample_ids, ids):
            raise ValueError(f"model={key[0]} epoch={key[1]} covers other samples than pretrain")
    sets = {
        key: salient_sets(b.interactions, ratio=salience, scope=tau_scope)  # type: ignore[arg-type]
        for key, b in batches.items()
    }
    final = {m: (m, epochs[m][-1]) for m in MODELS}
    decomposition = decompose(sets[final["pretrain"]], sets[final["finetune"]], match_sign)
    learn = preserved_learnability(decomposition, sets[final["scratch"]])
    similarity = []
    for model in ("finetune", "scratch"):
        last = batches[final[model]]
        for epoch in epochs[model]:
            batch = batches[model, epoch]
            frame = similarity_frame(
                weighted_jaccard(batch.interactions, last.interactions),
                salient_iou(sets[model, epoch], sets[final[model]], match_sign),
                ids,
            )
            frame.insert(0, "epoch", epoch)
            frame.insert(0, "model", model)
            similarity.append(frame)
    similarity_table = pd.concat(similarity, ignore_index=True)
    similarity_table["model"] = pd.Categorical(
        similarity_table["model"], categories=["finetune", "scratch"]
    )
    similarity_table["epoch"] = similarity_table["epoch"].astype("int64")
    decomposition_table = decomposition_frame(decomposition, ids)
    learnability_table = learnability_frame(learn, ids)
    tables = {
        "decomposition": decomposition_table,
        "decomposition_summary": decomposition_summary(decomposition_table),
        "members": members_frame(decomposition, ids),
        "learnability": learnability_table,
        "learnability_summary": learnability_summary(learnability_table),
        "similarity": similarity_table,
        "similarity_summary": describe(
            similarity_table, ["model", "epoch"], ["weighted_jaccard", "salient_iou"]
        ),
    }
    return {name: tables[name] for name in KNOWLEDGE_TABLES}


def with_experiment(frame: pd.DataFrame, experiment: str) -> pd.DataFrame:
    frame = frame.copy()
    frame.insert(0, "experiment", pd.array([experiment] * len(frame), dtype="string"))
    return frame


