"""The knowledge stage's tables (method.md §4): per-sample frames of one experiment and their summaries.

Input is the interaction table of every explained checkpoint of one experiment (the columns of
:data:`pretrain_knowledge.results.COLUMNS` plus ``model`` and ``epoch``); Ω of a model is taken at
its last explained epoch. Every summary states its number of samples and its spread (sd, sem).
Table names are :data:`pretrain_knowledge.layout.KNOWLEDGE_TABLES`; results/README.md documents
their columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .interactions import Interactions, reconstruct
from .knowledge import (
    KIND_DTYPE,
    KnowledgeDecomposition,
    SalientSet,
    chance_overlap,
    decompose,
    decomposition_frame,
    learnability_frame,
    members_frame,
    overlap,
    overlap_strength,
    preserved_learnability,
    salient_sets,
    similarity,
    similarity_frame,
)
from .layout import CONVERGENCE_MODELS, KNOWLEDGE_TABLES, MODELS, SCRATCH_BASELINE, SIMILARITIES
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


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    num, den = num.to(torch.float64), den.to(torch.float64)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(torch.float64).tiny), float("nan"))


def _subset(base: SalientSet, mask: Tensor) -> SalientSet:
    """The elements of ``base`` where ``mask`` holds (e.g. K_preserve inside Ω_pretrain)."""
    return SalientSet(values=base.values, mask=base.mask & mask, tau=base.tau)


def _count(a: SalientSet) -> Tensor:
    return a.count()


def _strength(a: SalientSet) -> Tensor:
    return a.strength.flatten(1).sum(1)


def _preservation(pre: SalientSet, fin: SalientSet, match_sign: bool) -> dict[str, Tensor]:
    """C1's two ratios for one 'pre-trained' model: how much of its salient set fine-tuning keeps."""
    kept = overlap(pre, fin, match_sign)
    return {
        "count": _ratio(kept, _count(pre)),
        "strength": _ratio(overlap_strength(pre, fin, match_sign), _strength(pre)),
    }


def _area(curve: Mapping[int, Tensor]) -> Tensor:
    """Area under similarity-to-final against epoch / last epoch (trapezoids), in [0, 1] per sample."""
    epochs = sorted(curve)
    last = epochs[-1] if epochs[-1] > 0 else 1
    x = torch.tensor([e / last for e in epochs], dtype=torch.float64)
    y = torch.stack([curve[e].to(torch.float64) for e in epochs], dim=1)
    return torch.trapezoid(y, x, dim=1)


def sample_measures(
    final: Mapping[str, SalientSet],
    final_interactions: Mapping[str, Interactions],
    curves: Mapping[str, Mapping[str, Mapping[int, Tensor]]],
    sample_ids: Sequence[int] | np.ndarray | Tensor,
    match_sign: bool = True,
) -> pd.DataFrame:
    """Every claim's per-sample quantities for one experiment, as a long table.

    ``final``: model → salient set of its last explained checkpoint (pretrain, finetune, scratch,
    and the controls scratch_b and random_probe when present). ``final_interactions``: the same
    models' interactions (for the noise floor). ``curves``: model (finetune, scratch) → similarity
    measure → epoch → similarity to the final checkpoint. Columns: sample_id, quantity, value.
    """
    pre, fin = final["pretrain"], final["finetune"]
    # C1 and C2 compare with a converged scratch model when one is trained (layout.SCRATCH_BASELINE).
    scr = final.get(SCRATCH_BASELINE, final["scratch"])
    parts: dict[str, Tensor] = {}
    decomposition = decompose(pre, fin, match_sign)
    for kind, value in _preservation(pre, fin, match_sign).items():
        parts[f"preserved_{kind}"] = value
    for kind, value in _preservation(pre, scr, match_sign).items():
        parts[f"scratch_shares_pretrain_{kind}"] = value
    parts["chance_preserved_count"] = _ratio(chance_overlap(pre, fin, match_sign), _count(pre))
    parts["chance_preserved_strength"] = _ratio(chance_overlap(pre, fin, match_sign, strength=True), _strength(pre))
    preserved = _subset(pre, decomposition.preserved)
    parts["learnability"] = _learnability(decomposition, scr, match_sign)
    parts["chance_learnability"] = _ratio(chance_overlap(preserved, scr, match_sign), _count(preserved))
    new = _subset(fin, decomposition.new)
    parts["scratch_learns_new"] = _ratio(overlap(new, scr, match_sign), _count(new))
    if "random_probe" in final:
        rp = final["random_probe"]
        for kind, value in _preservation(rp, fin, match_sign).items():
            parts[f"random_probe_preserved_{kind}"] = value
        parts["random_probe_learnability"] = _learnability(decompose(rp, fin, match_sign), scr, match_sign)
    if "scratch_b" in final:
        parts["scratch_b_shares_scratch"] = _ratio(overlap(final["scratch_b"], scr, match_sign), _count(final["scratch_b"]))
        floor = similarity(final_interactions["scratch_b"], final_interactions["scratch"], final["scratch_b"], scr, match_sign)
        for name, value in floor.items():
            parts[f"noise_floor_{name}"] = value
    for model, measures in curves.items():
        for name, curve in measures.items():
            parts[f"area_{name}_{model}"] = _area(curve)
    ids = np.asarray(torch.as_tensor(sample_ids), dtype=np.int64)
    return pd.DataFrame(
        {
            "sample_id": np.tile(ids, len(parts)),
            "quantity": pd.array(np.repeat(list(parts), len(ids)), dtype="string"),
            "value": np.concatenate([v.numpy().astype(np.float64) for v in parts.values()]),
        }
    )


def _learnability(decomposition: KnowledgeDecomposition, scratch: SalientSet, match_sign: bool) -> Tensor:
    """|K_preserve ∩ Ω_scratch| / |K_preserve| (method.md §4), NaN where K_preserve is empty."""
    preserved = _subset(decomposition.pretrain, decomposition.preserved)
    return _ratio(overlap(preserved, scratch, match_sign), _count(preserved))


CORE_MODELS: tuple[str, ...] = ("pretrain", "finetune", "scratch")
"""The models every experiment explains; the controls of method.md §7 are optional."""


FAITHFULNESS: tuple[str, ...] = (
    "v_span", "n_salient_and", "n_salient_or", "salient_max_error", "salient_r2", "q_at_bound",
)  # fmt: skip
"""Per-game faithfulness columns (results/README.md, ``knowledge/faithfulness.parquet``)."""


def faithfulness(interactions: Interactions, salient: SalientSet) -> dict[str, Tensor]:
    """How well one checkpoint's salient interactions alone describe each game (issue: weak games).

    ``v_span`` = |v(N) − v(∅)|; the salient counts per type; the largest error over all 2^n
    coalitions of the model output v against the reconstruction from the salient terms and the two
    bias terms I(∅) alone, relative to ``v_span``, and that reconstruction's R² over coalitions; the
    share of coalitions whose correction q sits at its bound.
    """
    v = interactions.v.to(torch.float64)
    keep = salient.mask.clone()
    keep[..., 0] = True  # the empty coalition is a bias, not knowledge, but belongs to every model
    i_and = torch.where(keep[:, 0], interactions.I_and.to(torch.float64), 0.0)
    i_or = torch.where(keep[:, 1], interactions.I_or.to(torch.float64), 0.0)
    error = v - reconstruct(i_and, i_or)
    span = (v[:, -1] - v[:, 0]).abs()
    spread = ((v - v.mean(1, keepdim=True)) ** 2).sum(1)
    bound = interactions.diagnostics.q_bound.to(torch.float64)[:, None]
    at_bound = (interactions.q.to(torch.float64).abs() >= bound * (1 - 1e-6)) & (bound > 0)
    return {
        "v_span": span,
        "n_salient_and": salient.mask[:, 0].sum(1).to(torch.float64),
        "n_salient_or": salient.mask[:, 1].sum(1).to(torch.float64),
        "salient_max_error": _ratio(error.abs().amax(1), span),
        "salient_r2": torch.where(spread > 0, 1 - (error**2).sum(1) / spread.clamp_min(1e-300), float("nan")),
        "q_at_bound": at_bound.to(torch.float64).mean(1),
    }


def knowledge_tables(
    interactions: pd.DataFrame, settings: KnowledgeSpec = KnowledgeSpec()
) -> dict[str, pd.DataFrame]:
    """All knowledge tables of one experiment from its interaction table (method.md §4, §7).

    ``interactions`` holds every explained checkpoint (columns of results.COLUMNS plus model and
    epoch). Ω of a model is taken at its last explained epoch; similarity compares every explained
    checkpoint of finetune and scratch with that final one. ``measures`` holds every claim's
    per-sample quantities, the controls' included when their interactions are there.
    """
    match_sign = settings.match_sign
    pairs = interactions[["model", "epoch"]].drop_duplicates()
    present = set(pairs["model"].astype(str))
    missing = [m for m in CORE_MODELS if m not in present]
    if missing:
        raise ValueError(f"no interactions of models {missing}; every model of {CORE_MODELS} is needed")
    models = [m for m in MODELS if m in present]
    epochs = {m: sorted(int(e) for e in pairs[pairs["model"] == m]["epoch"]) for m in models}
    batches = {(m, e): batch_of(interactions, m, e) for m in models for e in epochs[m]}
    ids = batches["pretrain", epochs["pretrain"][-1]].sample_ids
    for key, batch in batches.items():
        if not torch.equal(batch.sample_ids, ids):
            raise ValueError(f"model={key[0]} epoch={key[1]} covers other samples than pretrain")
    sets = {
        key: salient_sets(b.interactions, ratio=settings.salience, scope=settings.tau_scope)  # type: ignore[arg-type]
        for key, b in batches.items()
    }
    final = {m: (m, epochs[m][-1]) for m in models}
    decomposition = decompose(sets[final["pretrain"]], sets[final["finetune"]], match_sign)
    learn = preserved_learnability(decomposition, sets[final["scratch"]])
    curves: dict[str, dict[str, dict[int, torch.Tensor]]] = {}
    similarity_rows = []
    for model in CONVERGENCE_MODELS:
        last = final[model]
        curves[model] = {name: {} for name in SIMILARITIES}
        for epoch in epochs[model]:
            measures = similarity(
                batches[model, epoch].interactions, batches[last].interactions, sets[model, epoch], sets[last], match_sign
            )
            for name, value in measures.items():
                curves[model][name][epoch] = value
            frame = similarity_frame(measures, ids)
            frame.insert(0, "epoch", epoch)
            frame.insert(0, "model", model)
            similarity_rows.append(frame)
    similarity_table = pd.concat(similarity_rows, ignore_index=True)
    similarity_table["model"] = pd.Categorical(similarity_table["model"], categories=list(CONVERGENCE_MODELS))
    similarity_table["epoch"] = similarity_table["epoch"].astype("int64")
    faithful_rows = []
    for (model, epoch), batch in batches.items():
        columns = {k: t.numpy() for k, t in faithfulness(batch.interactions, sets[model, epoch]).items()}
        faithful_rows.append(pd.DataFrame({"model": model, "epoch": epoch, "sample_id": ids.numpy(), **columns}))
    faithful = pd.concat(faithful_rows, ignore_index=True)
    faithful["model"] = pd.Categorical(faithful["model"], categories=list(MODELS))
    faithful = faithful.astype({"epoch": "int64", "n_salient_and": "int64", "n_salient_or": "int64"})
    decomposition_table = decomposition_frame(decomposition, ids)
    learnability_table = learnability_frame(learn, ids)
    measures_table = sample_measures(
        {m: sets[final[m]] for m in models},
        {m: batches[final[m]].interactions for m in models},
        curves,
        ids,
        match_sign,
    )
    tables = {
        "decomposition": decomposition_table,
        "decomposition_summary": decomposition_summary(decomposition_table),
        "members": members_frame(decomposition, ids),
        "learnability": learnability_table,
        "learnability_summary": learnability_summary(learnability_table),
        "similarity": similarity_table,
        "similarity_summary": describe(similarity_table, ["model", "epoch"], list(SIMILARITIES)),
        "measures": measures_table,
        "faithfulness": faithful,
        "faithfulness_summary": describe(faithful, ["model", "epoch"], list(FAITHFULNESS)),
    }
    return {name: tables[name] for name in KNOWLEDGE_TABLES}


def with_experiment(frame: pd.DataFrame, experiment: str) -> pd.DataFrame:
    frame = frame.copy()
    frame.insert(0, "experiment", pd.array([experiment] * len(frame), dtype="string"))
    return frame


