"""Knowledge primitives against brute-force references built from Python sets and loops.

Coalitions are bitmasks: bit i set iff player i ∈ S (player 0 least significant).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pretrain_knowledge import knowledge as K
from pretrain_knowledge.interactions import Interactions, SparsifyDiagnostics

TYPES = ("and", "or")


def make(i_and: list | torch.Tensor, i_or: list | torch.Tensor) -> Interactions:
    """Interactions holding given I_and/I_or (B, 2^n); the other fields are irrelevant here."""
    i_and = torch.as_tensor(i_and, dtype=torch.float64)
    i_or = torch.as_tensor(i_or, dtype=torch.float64)
    b = i_and.shape[0]
    zeros = torch.zeros(b, dtype=torch.float64)
    diag = SparsifyDiagnostics(zeros, zeros, zeros, zeros, "test")
    return Interactions(
        torch.zeros_like(i_and), i_and, i_or, torch.zeros_like(i_and), torch.zeros_like(i_and), diag
    )


def popcount(s: int) -> int:
    return bin(s).count("1")


# --- brute-force references -------------------------------------------------------------------


def ref_tau(inter: Interactions, ratio: float, scope: str) -> list[float]:
    peaks = []
    for b in range(inter.batch_size):
        peak = 0.0
        for tensor in (inter.I_and, inter.I_or):
            for s in range(1, tensor.shape[1]):
                peak = max(peak, abs(float(tensor[b, s])))
        peaks.append(peak)
    if scope == "model":
        peaks = [max(peaks)] * len(peaks)
    return [ratio * p for p in peaks]


def ref_salient(inter: Interactions, taus: list[float]) -> list[dict[tuple[str, int], float]]:
    """Per sample: {(type, S): signed I} of the salient interactions."""
    out = []
    for b, tau in enumerate(taus):
        elems = {}
        for t, tensor in zip(TYPES, (inter.I_and, inter.I_or)):
            for s in range(1, tensor.shape[1]):
                x = float(tensor[b, s])
                if abs(x) > tau:
                    elems[(t, s)] = x
        out.append(elems)
    return out


def as_signed(elems: dict[tuple[str, int], float]) -> set[tuple[str, int, int]]:
    return {(t, s, 1 if x > 0 else -1) for (t, s), x in elems.items()}


def key_set(elems: dict, match_sign: bool) -> set:
    return as_signed(elems) if match_sign else set(elems)


def ref_decompose(
    pre: dict, fine: dict, match_sign: bool
) -> dict[str, list[tuple[str, int, float]]]:
    """Per kind: list of (type, S, strength) with the documented strength source."""
    kp, kf = key_set(pre, match_sign), key_set(fine, match_sign)
    out = {"preserved": [], "discarded": [], "new": []}
    for key in kp & kf:
        out["preserved"].append((key[0], key[1], abs(pre[key[:2]])))
    for key in kp - kf:
        out["discarded"].append((key[0], key[1], abs(pre[key[:2]])))
    for key in kf - kp:
        out["new"].append((key[0], key[1], abs(fine[key[:2]])))
    return out


def ref_weighted_jaccard(
    a: Interactions, b: Interactions, sample: int, include_empty: bool
) -> float:
    num = den = 0.0
    start = 0 if include_empty else 1
    for ta, tb in ((a.I_and, b.I_and), (a.I_or, b.I_or)):
        for s in range(start, ta.shape[1]):
            x, y = float(ta[sample, s]), float(tb[sample, s])
            for px, py in ((max(x, 0), max(y, 0)), (max(-x, 0), max(-y, 0))):
                num += min(px, py)
                den += max(px, py)
    return num / den if den > 0 else 1.0


# --- random correlated models -------------------------------------------------------------------


def random_models(
    seed: int, b: int = 7, n: int = 5
) -> tuple[Interactions, Interactions, Interactions]:
    """Pretrain, finetune and scratch interactions sharing structure, with sign flips."""
    g = torch.Generator().manual_seed(seed)
    size = 1 << n

    def sparse() -> torch.Tensor:
        keep = torch.rand(2, b, size, generator=g) < 0.35
        return torch.randn(2, b, size, generator=g, dtype=torch.float64) ** 3 * keep

    pre = sparse()
    flip = torch.where(torch.rand(2, b, size, generator=g) < 0.15, -1.0, 1.0).double()
    fine = pre * flip * (torch.rand(2, b, size, generator=g) < 0.7) + 0.3 * sparse()
    scratch = 0.5 * fine * (torch.rand(2, b, size, generator=g) < 0.5) + sparse()
    for x in (pre, fine, scratch):
        x[1, :, 0] = 5.0  # the empty coalition must never matter
        x[1, :, [1 << i for i in range(n)]] = 0.0  # order-1 OR terms are merged away
    return tuple(make(x[0], x[1]) for x in (pre, fine, scratch))


@pytest.mark.parametrize("scope", ["sample", "model"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_salient_sets_match_brute_force(seed: int, scope: str) -> None:
    for inter in random_models(seed):
        taus = ref_tau(inter, 0.05, scope)
        sal = K.salient_sets(inter, ratio=0.05, scope=scope)
        assert sal.tau.tolist() == pytest.approx(taus, rel=1e-15)
        for b, elems in enumerate(ref_salient(inter, taus)):
            assert set(sal.members(b)) == as_signed(elems)
            assert int(sal.count()[b]) == len(elems)
            assert float(sal.strength[b].sum()) == pytest.approx(
                sum(abs(x) for x in elems.values())
            )


@pytest.mark.parametrize("match_sign", [True, False])
@pytest.mark.parametrize("seed", [3, 4])
def test_decomposition_counts_and_strengths_per_order(seed: int, match_sign: bool) -> None:
    pre, fine, _ = random_models(seed)
    sp, sf = K.salient_sets(pre), K.salient_sets(fine)
    dec = K.decompose(sp, sf, match_sign=match_sign)
    frame = K.decomposition_frame(dec, sample_ids=[10 * b for b in range(pre.batch_size)])
    n = pre.n_players
    assert len(frame) == pre.batch_size * 3 * 2 * n
    table = frame.set_index(["sample_id", "kind", "type", "order"])
    ref_pre = ref_salient(pre, ref_tau(pre, 0.05, "sample"))
    ref_fine = ref_salient(fine, ref_tau(fine, 0.05, "sample"))
    seen_flip = False
    for b in range(pre.batch_size):
        ref = ref_decompose(ref_pre[b], ref_fine[b], match_sign)
        seen_flip |= any(
            ref_pre[b][k] * ref_fine[b][k] < 0 for k in set(ref_pre[b]) & set(ref_fine[b])
        )
        for kind, elems in ref.items():
            assert int(dec.total_count(kind)[b]) == len(elems)
            assert float(dec.total_strength(kind)[b]) == pytest.approx(sum(e[2] for e in elems))
            for t in TYPES:
                for order in range(1, n + 1):
                    chosen = [e[2] for e in elems if e[0] == t and popcount(e[1]) == order]
                    row = table.loc[(10 * b, kind, t, order)]
                    assert row["count"] == len(chosen)
                    assert row["strength"] == pytest.approx(sum(chosen), abs=1e-12)
    assert seen_flip, "the random models should contain sign flips"


def test_opposite_signs_are_discarded_and_new() -> None:
    pre = make([[0.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.5]])
    fine = make([[0.0, -2.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.5]])
    sp, sf = K.salient_sets(pre), K.salient_sets(fine)
    signed = K.decompose(sp, sf, match_sign=True)
    assert [int(signed.total_count(k)[0]) for k in K.KINDS] == [1, 1, 1]
    assert float(signed.total_strength("discarded")[0]) == 1.0  # pretrain's |I|
    assert float(signed.total_strength("new")[0]) == 2.0  # finetune's |I|
    assert float(signed.total_strength("preserved")[0]) == 0.5
    unsigned = K.decompose(sp, sf, match_sign=False)
    assert [int(unsigned.total_count(k)[0]) for k in K.KINDS] == [2, 0, 0]
    assert float(unsigned.total_strength("preserved")[0]) == 1.5
    assert float(K.salient_iou(sp, sf, match_sign=True)[0]) == pytest.approx(1 / 3)
    assert float(K.salient_iou(sp, sf, match_sign=False)[0]) == 1.0
    members = K.members_frame(signed, sample_ids=[7])
    got = {(r.kind, r.type, r.coalition, r.sign, r.strength) for r in members.itertuples()}
    assert got == {
        ("preserved", "or", 3, 1, 0.5),
        ("discarded", "and", 1, 1, 1.0),
        ("new", "and", 1, -1, 2.0),
    }


def test_hand_computed_threshold_ignores_empty_coalition_and_is_strict() -> None:
    # n = 2: peak over S ≠ ∅ is 1.0, so τ = 0.05; I(∅) = 9 and 3 must not raise it.
    inter = make([[9.0, 1.0, -0.5, 0.05]], [[3.0, 0.0, 0.0, -0.2]])
    sal = K.salient_sets(inter)
    assert float(sal.tau[0]) == pytest.approx(0.05)
    assert set(sal.members(0)) == {("and", 1, 1), ("and", 2, -1), ("or", 3, -1)}
    exact = K.salient_sets(inter, tau=0.5)
    assert set(exact.members(0)) == {("and", 1, 1)}  # |−0.5| is not > 0.5


def test_per_model_tau_uses_the_largest_sample() -> None:
    inter = make([[0.0, 10.0, 0.0, 0.0], [0.0, 0.6, 0.4, 0.0]], [[0.0] * 4, [0.0] * 4])
    per_sample = K.salient_sets(inter, scope="sample")
    per_model = K.salient_sets(inter, scope="model")
    assert per_sample.tau.tolist() == pytest.approx([0.5, 0.03])
    assert per_model.tau.tolist() == pytest.approx([0.5, 0.5])
    assert set(per_sample.members(1)) == {("and", 1, 1), ("and", 2, 1)}
    assert set(per_model.members(1)) == {("and", 1, 1)}
    via_peak = K.salient_sets(inter, tau=0.05 * K.interaction_peak(inter).max())
    assert torch.equal(via_peak.mask, per_model.mask)


def test_empty_sets_have_documented_answers() -> None:
    zero = make([[0.0] * 8, [1.0] + [0.0] * 7], [[0.0] * 8, [0.0] * 8])
    sal = K.salient_sets(zero)
    assert sal.count().tolist() == [0, 0]
    assert K.salient_iou(sal, sal).tolist() == [1.0, 1.0]
    assert K.weighted_jaccard(zero, zero).tolist() == [1.0, 1.0]
    learn = K.preserved_learnability(K.decompose(sal, sal), sal)
    assert learn.preserved.tolist() == [0, 0]
    assert all(math.isnan(x) for x in learn.ratio.tolist())
    assert math.isnan(learn.pooled)
    frame = K.learnability_frame(learn, sample_ids=[3, 4])
    assert frame["ratio"].isna().all() and frame["preserved"].tolist() == [0, 0]
    one = make([[0.0, 1.0, 0.0, 0.0]], [[0.0] * 4])
    none = make([[0.0] * 4], [[0.0] * 4])
    assert K.salient_iou(K.salient_sets(one), K.salient_sets(none)).tolist() == [0.0]


@pytest.mark.parametrize("match_sign", [True, False])
def test_preserved_learnability_matches_sets(match_sign: bool) -> None:
    pre, fine, scratch = random_models(5, b=9)
    sets = [ref_salient(x, ref_tau(x, 0.05, "sample")) for x in (pre, fine, scratch)]
    dec = K.decompose(K.salient_sets(pre), K.salient_sets(fine), match_sign=match_sign)
    learn = K.preserved_learnability(dec, K.salient_sets(scratch))
    total_kept = total_learned = 0
    for b in range(pre.batch_size):
        kept = key_set(sets[0][b], match_sign) & key_set(sets[1][b], match_sign)
        learned = kept & key_set(sets[2][b], match_sign)
        total_kept, total_learned = total_kept + len(kept), total_learned + len(learned)
        assert int(learn.preserved[b]) == len(kept)
        assert int(learn.learned[b]) == len(learned)
        expected = len(learned) / len(kept) if kept else float("nan")
        assert float(learn.ratio[b]) == pytest.approx(expected, nan_ok=True)
    assert learn.pooled == pytest.approx(total_learned / total_kept)
    assert 0 < total_learned < total_kept


def test_learnability_requires_matching_sign_of_scratch() -> None:
    pre = make([[0.0, 1.0, 1.0, 0.0]], [[0.0] * 4])
    scratch = make([[0.0, -1.0, 1.0, 0.0]], [[0.0] * 4])
    sp = K.salient_sets(pre)
    signed = K.preserved_learnability(K.decompose(sp, sp, True), K.salient_sets(scratch))
    unsigned = K.preserved_learnability(K.decompose(sp, sp, False), K.salient_sets(scratch))
    assert signed.ratio.tolist() == [0.5]
    assert unsigned.ratio.tolist() == [1.0]


@pytest.mark.parametrize("include_empty", [False, True])
def test_weighted_jaccard_matches_definition(include_empty: bool) -> None:
    pre, fine, scratch = random_models(6)
    for a, b in ((pre, fine), (fine, scratch), (pre, pre)):
        got = K.weighted_jaccard(a, b, include_empty=include_empty)
        ref = [ref_weighted_jaccard(a, b, s, include_empty) for s in range(a.batch_size)]
        assert got.tolist() == pytest.approx(ref, rel=1e-12)
    assert K.weighted_jaccard(pre, pre).tolist() == [1.0] * pre.batch_size


def test_weighted_jaccard_hand_values() -> None:
    a = make([[7.0, 2.0, 0.0, 0.0]], [[0.0] * 4])
    half = make([[-7.0, 1.0, 0.0, 0.0]], [[0.0] * 4])
    flipped = make([[7.0, -2.0, 0.0, 0.0]], [[0.0] * 4])
    assert K.weighted_jaccard(a, half).tolist() == [0.5]
    assert K.weighted_jaccard(a, flipped).tolist() == [0.0]
    assert K.weighted_jaccard(a, half, include_empty=True).tolist() == [pytest.approx(1 / 16)]


def test_salient_iou_matches_sets() -> None:
    pre, fine, _ = random_models(7)
    sp, sf = K.salient_sets(pre), K.salient_sets(fine)
    for match_sign in (True, False):
        got = K.salient_iou(sp, sf, match_sign=match_sign).tolist()
        for b in range(pre.batch_size):
            x = set(sp.members(b)) if match_sign else {m[:2] for m in sp.members(b)}
            y = set(sf.members(b)) if match_sign else {m[:2] for m in sf.members(b)}
            assert got[b] == pytest.approx(len(x & y) / len(x | y))


def test_frames_have_stable_dtypes() -> None:
    pre, fine, scratch = random_models(8, b=3, n=4)
    dec = K.decompose(K.salient_sets(pre), K.salient_sets(fine))
    ids = torch.tensor([11, 12, 13])
    frame = K.decomposition_frame(dec, ids)
    assert frame.dtypes.astype(str).to_dict() == {
        "sample_id": "int64",
        "kind": "category",
        "type": "category",
        "order": "int16",
        "count": "int64",
        "strength": "float64",
    }
    assert list(frame["kind"].cat.categories) == list(K.KINDS)
    assert sorted(frame["sample_id"].unique().tolist()) == [11, 12, 13]
    members = K.members_frame(dec, ids)
    assert len(members) == sum(int(dec.total_count(k).sum()) for k in K.KINDS)
    assert members["sign"].dtype == np.int8 and members["coalition"].dtype == np.int64
    sim = K.similarity_frame(K.similarity(pre, fine, dec.pretrain, dec.finetune), ids)
    assert list(sim.columns) == ["sample_id", "weighted_jaccard", "scale_free_jaccard", "salient_iou"]
    assert all(sim[c].dtype == np.float64 for c in sim.columns[1:])


def test_bad_input_is_refused_with_a_reason() -> None:
    inter = make([[0.0, 1.0, float("nan"), 0.0]], [[0.0] * 4])
    with pytest.raises(ValueError, match="NaN"):
        K.salient_sets(inter)
    ok = make([[0.0, 1.0, 0.0, 0.0]], [[0.0] * 4])
    with pytest.raises(ValueError, match="scope"):
        K.salient_sets(ok, scope="dataset")
    with pytest.raises(ValueError, match="tau"):
        K.salient_sets(ok, tau=-1.0)
    other = make([[0.0] * 8], [[0.0] * 8])
    with pytest.raises(ValueError, match="same samples and players"):
        K.decompose(K.salient_sets(ok), K.salient_sets(other))
    with pytest.raises(ValueError, match="sample_ids"):
        K.decomposition_frame(K.decompose(K.salient_sets(ok), K.salient_sets(ok)), [1, 2])
