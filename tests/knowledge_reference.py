"""An independent recomputation of the knowledge tables, from method.md §4 with plain pandas/numpy.

Input is an interaction table with the columns model, epoch, sample_id, type, coalition and value
(model, epoch and type as plain values). Nothing here goes through pretrain_knowledge.knowledge;
each ``check_*`` asserts that one of the library's tables equals the recomputation. Shared by the
unit tests of the tables and by the workflow tests on a real run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def salient(shards: pd.DataFrame, model: str, epoch: int, ratio: float) -> pd.Series:
    """(sample_id, type, coalition) → signed value of the salient interactions (τ per sample)."""
    game = shards[(shards.model == model) & (shards.epoch == epoch) & (shards.coalition != 0)]
    peak = game.assign(a=game["value"].abs()).groupby("sample_id")["a"].max()
    tau = game["sample_id"].map(ratio * peak)
    return game[game["value"].abs() > tau].set_index(["sample_id", "type", "coalition"])["value"]


def final(shards: pd.DataFrame, model: str) -> int:
    return int(shards[shards.model == model]["epoch"].max())


def decompose(shards: pd.DataFrame, ratio: float) -> dict[str, pd.Series]:
    pre = salient(shards, "pretrain", final(shards, "pretrain"), ratio)
    fin = salient(shards, "finetune", final(shards, "finetune"), ratio)
    both = pre.index.intersection(fin.index)
    same_sign = both[np.sign(pre[both].to_numpy()) == np.sign(fin[both].to_numpy())]
    return {"preserved": pre[same_sign], "discarded": pre.drop(same_sign), "new": fin.drop(same_sign)}


def check_decomposition(table: pd.DataFrame, shards: pd.DataFrame, ratio: float) -> int:
    """The per-sample decomposition table; returns the number of knowledge elements checked."""
    table = table.assign(kind=table["kind"].astype(str), type=table["type"].astype(str))
    parts = decompose(shards, ratio)
    for kind, elements in parts.items():
        frame = elements.abs().rename("strength").reset_index()
        frame["order"] = frame["coalition"].map(lambda c: bin(c).count("1"))
        expected = frame.groupby(["sample_id", "type", "order"]).agg(count=("strength", "size"), strength=("strength", "sum"))
        got = table[table.kind == kind].set_index(["sample_id", "type", "order"])[["count", "strength"]]
        got = got[got["count"] > 0]
        got.index = got.index.set_levels(got.index.levels[2].astype("int64"), level=2)
        pd.testing.assert_frame_equal(got.sort_index(), expected.sort_index(), check_dtype=False, atol=1e-12, rtol=0)
    return sum(len(p) for p in parts.values())


def check_decomposition_summary(summary: pd.DataFrame, shards: pd.DataFrame, ratio: float) -> None:
    totals = summary[summary["type"].astype(str) == "all"]
    totals = totals.set_index(totals["kind"].astype(str))
    samples = sorted(shards["sample_id"].unique())
    for kind, elements in decompose(shards, ratio).items():
        per_sample = elements.groupby(level="sample_id").size().reindex(samples, fill_value=0)
        assert totals.loc[kind, "count_mean"] == pytest.approx(per_sample.mean())
        assert totals.loc[kind, "count_std"] == pytest.approx(per_sample.std())
        assert totals.loc[kind, "n_samples"] == len(samples)


def check_learnability(table: pd.DataFrame, summary: pd.DataFrame, shards: pd.DataFrame, ratio: float) -> None:
    table = table.set_index("sample_id")
    preserved = decompose(shards, ratio)["preserved"]
    scratch = salient(shards, "scratch", final(shards, "scratch"), ratio)
    common = preserved.index.intersection(scratch.index)
    learned = common[np.sign(preserved[common].to_numpy()) == np.sign(scratch[common].to_numpy())]
    samples = sorted(shards["sample_id"].unique())
    n_pre = preserved.groupby(level="sample_id").size().reindex(samples, fill_value=0)
    n_learned = pd.Series(1, index=learned).groupby(level="sample_id").size().reindex(samples, fill_value=0)
    assert table["preserved"].tolist() == n_pre.tolist()
    assert table["learned"].tolist() == n_learned.tolist()
    expected = (n_learned / n_pre.replace(0, np.nan)).to_numpy()
    np.testing.assert_allclose(table["ratio"].to_numpy(), expected, equal_nan=True)
    assert summary["ratio_mean"].iloc[0] == pytest.approx(np.nanmean(expected))
    assert summary["ratio_pooled"].iloc[0] == pytest.approx(n_learned.sum() / n_pre.sum())


def check_similarity(table: pd.DataFrame, shards: pd.DataFrame, ratio: float) -> None:
    table = table.assign(model=table["model"].astype(str)).set_index(["model", "epoch", "sample_id"])
    nonempty = shards[shards.coalition != 0]
    checked = 0
    for model in ("finetune", "scratch"):
        last = final(shards, model)
        final_values = nonempty[(nonempty.model == model) & (nonempty.epoch == last)]
        final_set = set(salient(shards, model, last, ratio).map(np.sign).items())
        for epoch in sorted(set(shards[shards.model == model].epoch)):
            values = nonempty[(nonempty.model == model) & (nonempty.epoch == epoch)]
            chosen = set(salient(shards, model, epoch, ratio).map(np.sign).items())
            for sample, game in values.groupby("sample_id"):
                a = game.sort_values(["type", "coalition"])["value"].to_numpy()
                b = final_values[final_values.sample_id == sample].sort_values(["type", "coalition"])["value"].to_numpy()
                ta = np.concatenate([np.maximum(a, 0), np.maximum(-a, 0)])
                tb = np.concatenate([np.maximum(b, 0), np.maximum(-b, 0)])
                jaccard = np.minimum(ta, tb).sum() / np.maximum(ta, tb).sum()
                mine = {x for x in chosen if x[0][0] == sample}
                theirs = {x for x in final_set if x[0][0] == sample}
                union = mine | theirs
                iou = len(mine & theirs) / len(union) if union else 1.0
                row = table.loc[(model, epoch, sample)]
                assert row["weighted_jaccard"] == pytest.approx(jaccard, abs=1e-12)
                assert row["salient_iou"] == pytest.approx(iou, abs=1e-12)
                checked += 1
        assert table.loc[(model, last)]["weighted_jaccard"].eq(1.0).all()
    assert checked == len(table)


def _share(a: pd.Series, b: pd.Series, by_strength: bool = False) -> pd.Series:
    """Per sample: the part of set a (signed values) that b holds with the same sign."""
    common = a.index.intersection(b.index)
    same = common[np.sign(a[common].to_numpy()) == np.sign(b[common].to_numpy())]
    weight = a.abs() if by_strength else pd.Series(1.0, index=a.index)
    kept = weight[same].groupby(level="sample_id").sum()
    total = weight.groupby(level="sample_id").sum()
    return (kept.reindex(total.index, fill_value=0.0) / total).rename(None)


def check_measures(measures: pd.DataFrame, shards: pd.DataFrame, ratio: float) -> int:
    """The claim quantities that are shares of salient sets; returns how many values were checked."""
    got = measures.set_index(["quantity", "sample_id"])["value"]
    sets = {m: salient(shards, m, final(shards, m), ratio) for m in sorted(set(shards.model))}
    parts = decompose(shards, ratio)
    expected = {
        "preserved_count": _share(sets["pretrain"], sets["finetune"]),
        "preserved_strength": _share(sets["pretrain"], sets["finetune"], by_strength=True),
        "scratch_shares_pretrain_count": _share(sets["pretrain"], sets["scratch"]),
        "learnability": _share(parts["preserved"], sets["scratch"]),
        "scratch_learns_new": _share(parts["new"], sets["scratch"]),
    }
    if "scratch_b" in sets:
        expected["scratch_b_shares_scratch"] = _share(sets["scratch_b"], sets["scratch"])
    if "random_probe" in sets:
        expected["random_probe_preserved_count"] = _share(sets["random_probe"], sets["finetune"])
    checked = 0
    for quantity, values in expected.items():
        for sample, value in values.items():
            assert got[(quantity, sample)] == pytest.approx(value, abs=1e-12), (quantity, sample)
            checked += 1
        # Samples whose set is empty have no ratio.
        empty = set(got[quantity].index) - set(values.index)
        assert all(np.isnan(got[(quantity, s)]) for s in empty), quantity
    return checked
