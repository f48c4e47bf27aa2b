"""Knowledge primitives of method.md §4: salient interactions, their decomposition and similarity.

Coalition convention: every coalition-indexed tensor here has a last dimension of 2^n, and entry S
is the coalition with bit i set iff player i ∈ S (player 0 is the least significant bit); the
order |S| is the popcount of S. Interaction types are stacked on a dimension of size 2 in the order
of :data:`TYPES`, so ``x[b, 0, S]`` is about I_and(S) and ``x[b, 1, S]`` about I_or(S) of sample b.

A piece of knowledge is an element ``(type, S, sign)`` with S ≠ ∅. The empty coalition is never
knowledge: I_and(∅) and I_or(∅) are the model's output on the fully masked image, i.e. a bias that
involves no player, so it is excluded from τ, from the salient sets and (by default) from the
weighted Jaccard similarity.

Every analysis runs on the CPU in float64: the tensors are small (B × 2 × 2^n) and float64 makes
the threshold comparisons reproducible across devices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .interactions import Interactions, coalition_orders
from .layout import INTERACTION_TYPES as TYPES
from .layout import KINDS, SIMILARITIES
from .results import TYPE_DTYPE

KIND_DTYPE = pd.CategoricalDtype(list(KINDS))

Scope = Literal["sample", "model"]
Kind = Literal["preserved", "discarded", "new"]


def stack_interactions(interactions: Interactions) -> Tensor:
    """I_and and I_or as one float64 CPU tensor (B, 2, 2^n), indexed [sample, type, coalition S].

    Non-finite values would silently fall out of every ``> τ`` comparison, so they are refused.
    """
    stacked = torch.stack((interactions.I_and, interactions.I_or), dim=1)
    stacked = stacked.detach().to("cpu", torch.float64)
    if stacked.shape[-1] < 2:
        raise ValueError(
            "knowledge needs at least one player (interactions of shape (B, 2^n), n ≥ 1)"
        )
    bad = (~torch.isfinite(stacked)).flatten(1).any(1)
    if bool(bad.any()):
        raise ValueError(
            f"interactions of batch rows {bad.nonzero().flatten().tolist()} contain NaN or inf; "
            "check the game values v and the sparsification diagnostics of these samples"
        )
    return stacked


def interaction_peak(interactions: Interactions) -> Tensor:
    """max over both types and S ≠ ∅ of |I_type(S)| per sample, float64 (B,).

    Exposed so that a per-model τ can be taken over several shards: take the max of the peaks of
    all shards of one model and pass ``ratio · peak`` as ``tau`` to :func:`salient_sets`.
    """
    return stack_interactions(interactions)[..., 1:].abs().flatten(1).amax(1)


def salient_threshold(
    interactions: Interactions, ratio: float = 0.05, scope: Scope = "sample"
) -> Tensor:
    """τ per sample, float64 (B,): ``ratio`` times the peak |I| of the sample or of the whole batch.

    ``scope="model"`` treats the batch as all samples of one model, so one τ serves every sample.
    """
    if not ratio >= 0:
        raise ValueError(f"the salience ratio must be ≥ 0 (method.md §4 uses 0.05), got {ratio}")
    peak = interaction_peak(interactions)
    if scope == "model":
        peak = peak.amax().expand_as(peak).clone()
    elif scope != "sample":
        raise ValueError(f"the τ scope must be 'sample' or 'model', got {scope!r}")
    return ratio * peak


@dataclass(frozen=True)
class SalientSet:
    """Salient interactions Ω of B samples: the (type, S) with S ≠ ∅ and |I_type(S)| > τ.

    Stored as masks rather than Python sets so that counts, strengths and set algebra over a
    batch are single tensor operations. Tensors are (B, 2, 2^n) indexed [sample, type, S], bit i
    of S set iff player i ∈ S; ``mask[..., 0]`` is always False.
    """

    values: Tensor
    """float64 (B, 2, 2^n): the signed interactions I_type(S) the set was taken from."""
    mask: Tensor
    """bool (B, 2, 2^n): True iff (type, S) is salient."""
    tau: Tensor
    """float64 (B,): the threshold used for each sample."""

    @property
    def batch_size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def n_players(self) -> int:
        return int(self.mask.shape[-1]).bit_length() - 1

    @property
    def sign(self) -> Tensor:
        """int8 (B, 2, 2^n): sign of I_type(S) where salient, 0 elsewhere."""
        return torch.where(self.mask, torch.sign(self.values), 0).to(torch.int8)

    @property
    def strength(self) -> Tensor:
        """float64 (B, 2, 2^n): |I_type(S)| where salient, 0 elsewhere."""
        return torch.where(self.mask, self.values.abs(), 0.0)

    def count(self) -> Tensor:
        """|Ω| per sample, int64 (B,)."""
        return self.mask.flatten(1).sum(1)

    def members(self, sample: int) -> list[tuple[str, int, int]]:
        """The elements (type, S bitmask, sign) of one sample, for inspection and reports."""
        types, coalitions = self.mask[sample].nonzero(as_tuple=True)
        signs = self.sign[sample, types, coalitions]
        return [
            (TYPES[t], int(s), int(g))
            for t, s, g in zip(types.tolist(), coalitions.tolist(), signs.tolist())
        ]


def salient_sets(
    interactions: Interactions,
    ratio: float = 0.05,
    scope: Scope = "sample",
    tau: Tensor | float | None = None,
) -> SalientSet:
    """Salient interactions of every sample (method.md §4); ``tau`` overrides ``ratio``/``scope``.

    The comparison is strict (|I| > τ), so a game whose interactions are all 0 has no knowledge.
    """
    values = stack_interactions(interactions)
    if tau is None:
        tau_t = salient_threshold(interactions, ratio, scope)
    else:
        tau_t = _explicit_tau(tau, values.shape[0])
    mask = values.abs() > tau_t[:, None, None]
    mask[..., 0] = False
    return SalientSet(values=values, mask=mask, tau=tau_t)


def _explicit_tau(tau: Tensor | float, batch_size: int) -> Tensor:
    """A given τ as float64 (B,); one number serves every sample (a per-model τ)."""
    tau_t = torch.as_tensor(tau, dtype=torch.float64).detach().cpu()
    if tau_t.dim() == 0:
        tau_t = tau_t.expand(batch_size)
    if tau_t.shape != (batch_size,) or not bool((tau_t >= 0).all()):
        raise ValueError(
            f"tau must be a number ≥ 0 or a tensor ({batch_size},) of them, got {tau!r}"
        )
    return tau_t.clone()


def _check_same_games(a: SalientSet, b: SalientSet, what: str) -> None:
    if a.mask.shape != b.mask.shape:
        raise ValueError(
            f"{what}: salient sets must cover the same samples and players, "
            f"got shapes {tuple(a.mask.shape)} and {tuple(b.mask.shape)} (B, 2, 2^n)"
        )


def _matched(a: SalientSet, b: SalientSet, match_sign: bool) -> Tensor:
    """bool (B, 2, 2^n): salient in both, and with the same sign when ``match_sign``."""
    both = a.mask & b.mask
    return both & (a.sign == b.sign) if match_sign else both


def _ratio_or(num: Tensor, den: Tensor, empty: float) -> Tensor:
    """num / den as float64, with ``empty`` where den is 0."""
    num, den = num.to(torch.float64), den.to(torch.float64)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(torch.float64).tiny), empty)


def _tilde(interactions: Interactions, include_empty: bool) -> Tensor:
    """Ĩ = [max(I_and,0), max(−I_and,0), max(I_or,0), max(−I_or,0)] as float64 (B, 4·2^n)."""
    stacked = stack_interactions(interactions)
    if not include_empty:
        stacked = stacked[..., 1:]
    return torch.cat((stacked.clamp_min(0), (-stacked).clamp_min(0)), dim=-1).flatten(1)


def weighted_jaccard(
    a: Interactions, b: Interactions, include_empty: bool = False, scale_free: bool = False
) -> Tensor:
    """‖min(Ĩ_a, Ĩ_b)‖₁ / ‖max(Ĩ_a, Ĩ_b)‖₁ per sample, float64 (B,) (method.md §4, Figure 4).

    Splitting each interaction into positive and negative parts makes opposite-signed effects
    count as disagreement rather than cancel. S = ∅ is left out unless ``include_empty``, because
    it is a bias, not knowledge. Two all-zero games are identical, so their similarity is 1.
    ``scale_free`` divides each Ĩ by its L1 norm first (method.md §7, C3): a model whose logits
    only grow in scale then keeps a similarity of 1 to its final pattern.
    """
    ta, tb = _tilde(a, include_empty), _tilde(b, include_empty)
    if scale_free:
        ta = ta / ta.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        tb = tb / tb.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    if ta.shape != tb.shape:
        raise ValueError(
            "weighted_jaccard: games must cover the same samples and players, got shapes "
            f"{tuple(a.I_and.shape)} and {tuple(b.I_and.shape)} (B, 2^n)"
        )
    return _ratio_or(torch.minimum(ta, tb).sum(1), torch.maximum(ta, tb).sum(1), empty=1.0)


def salient_iou(a: SalientSet, b: SalientSet, match_sign: bool = True) -> Tensor:
    """|Ω_a ∩ Ω_b| / |Ω_a ∪ Ω_b| per sample, float64 (B,).

    Elements are (type, S, sign) when ``match_sign`` (an opposite-signed pair is two distinct
    elements: it adds 2 to the union and 0 to the intersection), else (type, S). The IoU of two
    empty sets is defined as 1: they are equal, and a similarity curve should not break on them.
    """
    _check_same_games(a, b, "salient_iou")
    inter = _matched(a, b, match_sign).flatten(1).sum(1)
    return _ratio_or(inter, a.count() + b.count() - inter, empty=1.0)


def overlap(a: SalientSet, b: SalientSet, match_sign: bool = True) -> Tensor:
    """int64 (B,): |Ω_a ∩ Ω_b| per sample (same type and S, and the same sign when ``match_sign``)."""
    _check_same_games(a, b, "overlap")
    return _matched(a, b, match_sign).flatten(1).sum(1)


def overlap_strength(a: SalientSet, b: SalientSet, match_sign: bool = True) -> Tensor:
    """float64 (B,): Σ|I_a| over Ω_a ∩ Ω_b — the part of a's strength that b shares."""
    _check_same_games(a, b, "overlap_strength")
    return torch.where(_matched(a, b, match_sign), a.values.abs(), 0.0).flatten(1).sum(1)


def _positions(n: int) -> Tensor:
    """float64 (n+1,): how many coalitions each order has, C(n, o)."""
    return torch.tensor([math.comb(n, o) for o in range(n + 1)], dtype=torch.float64)


def chance_overlap(a: SalientSet, b: SalientSet, match_sign: bool = True, strength: bool = False) -> Tensor:
    """float64 (B,): the expected overlap of Ω_a with a set drawn at random with Ω_b's sizes.

    The random set has, for every type and order, as many elements as Ω_b, placed uniformly among
    the C(n, o) coalitions of that order, each with a random sign (method.md §7, chance). An element
    of Ω_a of type t and order o then lies in it with probability m_{t,o} / C(n, o), and has its
    sign with probability 1/2. ``strength`` weighs each element of Ω_a by its |I| (the expectation
    of :func:`overlap_strength`) instead of counting it.
    """
    _check_same_games(a, b, "chance_overlap")
    source = a.strength if strength else a.mask.to(torch.float64)
    per_order = _by_order(source)  # (B, 2, n+1)
    rate = _by_order(b.mask.to(torch.float64)) / _positions(a.n_players)
    expected = (per_order * rate).flatten(1).sum(1)
    return expected / 2 if match_sign else expected


def _by_order(x: Tensor) -> Tensor:
    """Sum a (B, 2, 2^n) tensor over the coalitions of each order: (B, 2, n+1), index = |S|."""
    n = int(x.shape[-1]).bit_length() - 1
    out = torch.zeros(*x.shape[:-1], n + 1, dtype=x.dtype)
    return out.index_add_(-1, coalition_orders(n), x)


@dataclass(frozen=True)
class KnowledgeDecomposition:
    """Preserved, discarded and new knowledge of B samples (method.md §4), as (B, 2, 2^n) masks.

    With ``match_sign`` a (type, S) salient in both models with opposite signs is in ``discarded``
    (the pretrain element is gone) and in ``new`` (the finetune element is new): the model kept the
    coalition but reversed its effect, which is not preserved knowledge. Strengths of preserved and
    discarded elements are the pretrain model's |I| (what pre-training supplied), of new elements
    the finetune model's |I| (what fine-tuning built).
    """

    pretrain: SalientSet
    finetune: SalientSet
    preserved: Tensor
    discarded: Tensor
    new: Tensor
    match_sign: bool = True

    @property
    def batch_size(self) -> int:
        return self.pretrain.batch_size

    @property
    def n_players(self) -> int:
        return self.pretrain.n_players

    def mask(self, kind: Kind) -> Tensor:
        """bool (B, 2, 2^n) of one kind."""
        if kind not in KINDS:
            raise ValueError(f"knowledge kind must be one of {KINDS}, got {kind!r}")
        return getattr(self, kind)

    def source(self, kind: Kind) -> SalientSet:
        """The model whose |I| and sign describe elements of this kind."""
        return self.finetune if kind == "new" else self.pretrain

    def strength(self, kind: Kind) -> Tensor:
        """float64 (B, 2, 2^n): |I| of the elements of this kind (see class doc), 0 elsewhere."""
        return torch.where(self.mask(kind), self.source(kind).values.abs(), 0.0)

    def count_by_order(self, kind: Kind) -> Tensor:
        """int64 (B, 2, n+1): number of elements per sample, type and order |S| (index 0 is 0)."""
        return _by_order(self.mask(kind).to(torch.int64))

    def strength_by_order(self, kind: Kind) -> Tensor:
        """float64 (B, 2, n+1): Σ|I| per sample, type and order |S|."""
        return _by_order(self.strength(kind))

    def total_count(self, kind: Kind) -> Tensor:
        """int64 (B,): |K_kind| per sample."""
        return self.mask(kind).flatten(1).sum(1)

    def total_strength(self, kind: Kind) -> Tensor:
        """float64 (B,): Σ|I| over K_kind per sample."""
        return self.strength(kind).flatten(1).sum(1)


def decompose(
    pretrain: SalientSet, finetune: SalientSet, match_sign: bool = True
) -> KnowledgeDecomposition:
    """Split Ω_pretrain and Ω_finetune into preserved, discarded and new knowledge."""
    _check_same_games(pretrain, finetune, "decompose")
    preserved = _matched(pretrain, finetune, match_sign)
    return KnowledgeDecomposition(
        pretrain=pretrain,
        finetune=finetune,
        preserved=preserved,
        discarded=pretrain.mask & ~preserved,
        new=finetune.mask & ~preserved,
        match_sign=match_sign,
    )


@dataclass(frozen=True)
class PreservedLearnability:
    """How much preserved knowledge a model trained from scratch also learns (paper: 13–45 %)."""

    preserved: Tensor
    """int64 (B,): |K_preserve|."""
    learned: Tensor
    """int64 (B,): |K_preserve ∩ Ω_scratch|."""

    @property
    def ratio(self) -> Tensor:
        """float64 (B,): learned / preserved; NaN where K_preserve is empty (nothing to learn)."""
        return _ratio_or(self.learned, self.preserved, empty=float("nan"))

    @property
    def pooled(self) -> float:
        """Σ learned / Σ preserved (samples weighted by |K_preserve|); NaN if Σ is 0."""
        total = int(self.preserved.sum())
        return float(self.learned.sum()) / total if total else float("nan")


def preserved_learnability(
    decomposition: KnowledgeDecomposition, scratch: SalientSet
) -> PreservedLearnability:
    """|K_preserve ∩ Ω_scratch| / |K_preserve| with the decomposition's sign rule.

    With sign matching, a scratch element counts only with the sign of the preserved element
    (the pretrain sign, equal to the finetune sign there); without it, (type, S) suffices.
    """
    _check_same_games(decomposition.pretrain, scratch, "preserved_learnability")
    learned = decomposition.preserved & scratch.mask
    if decomposition.match_sign:
        learned &= scratch.sign == decomposition.pretrain.sign
    return PreservedLearnability(
        preserved=decomposition.total_count("preserved"),
        learned=learned.flatten(1).sum(1),
    )


def _sample_ids(
    sample_ids: Tensor | Sequence[int] | np.ndarray | None, batch_size: int
) -> np.ndarray:
    ids = (
        np.arange(batch_size)
        if sample_ids is None
        else np.asarray(torch.as_tensor(sample_ids).cpu())
    )
    if ids.shape != (batch_size,):
        raise ValueError(
            f"sample_ids must have shape ({batch_size},) to match the batch, got {ids.shape}"
        )
    return ids.astype(np.int64)


def decomposition_frame(
    decomposition: KnowledgeDecomposition, sample_ids: Tensor | Sequence[int] | None = None
) -> pd.DataFrame:
    """Long table of counts and strengths: one row per (sample, kind, type, order 1…n).

    Rows with count 0 are kept so that averages over samples (with spread) count the zeros.
    Columns: sample_id int64, kind category, type category, order int16, count int64,
    strength float64. Totals per sample are a groupby away (sum over type and order).
    """
    ids = _sample_ids(sample_ids, decomposition.batch_size)
    n = decomposition.n_players
    counts = torch.stack([decomposition.count_by_order(k)[..., 1:] for k in KINDS], dim=1)
    strengths = torch.stack([decomposition.strength_by_order(k)[..., 1:] for k in KINDS], dim=1)
    b, k, t, o = np.meshgrid(ids, np.arange(3), np.arange(2), np.arange(1, n + 1), indexing="ij")
    return pd.DataFrame(
        {
            "sample_id": b.ravel().astype(np.int64),
            "kind": pd.Categorical.from_codes(k.ravel(), dtype=KIND_DTYPE),
            "type": pd.Categorical.from_codes(t.ravel(), dtype=TYPE_DTYPE),
            "order": o.ravel().astype(np.int16),
            "count": counts.numpy().ravel().astype(np.int64),
            "strength": strengths.numpy().ravel().astype(np.float64),
        }
    )


def members_frame(
    decomposition: KnowledgeDecomposition, sample_ids: Tensor | Sequence[int] | None = None
) -> pd.DataFrame:
    """One row per element of preserved, discarded and new knowledge (for drawing examples).

    Columns: sample_id int64, kind category, type category, coalition int64 (bit i set iff
    player i ∈ S), order int16, sign int8 and strength float64, both taken from the model that
    describes the kind (pretrain for preserved/discarded, finetune for new).
    """
    ids = _sample_ids(sample_ids, decomposition.batch_size)
    parts = []
    for code, kind in enumerate(KINDS):
        b, t, s = decomposition.mask(kind).nonzero(as_tuple=True)
        src = decomposition.source(kind)
        parts.append(
            pd.DataFrame(
                {
                    "sample_id": ids[b.numpy()],
                    "kind": pd.Categorical.from_codes(np.full(len(b), code), dtype=KIND_DTYPE),
                    "type": pd.Categorical.from_codes(t.numpy(), dtype=TYPE_DTYPE),
                    "coalition": s.numpy().astype(np.int64),
                    "order": coalition_orders(src.n_players)[s].numpy().astype(np.int16),
                    "sign": src.sign[b, t, s].numpy().astype(np.int8),
                    "strength": src.values[b, t, s].abs().numpy().astype(np.float64),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def learnability_frame(
    learnability: PreservedLearnability, sample_ids: Tensor | Sequence[int] | None = None
) -> pd.DataFrame:
    """Per-sample table: sample_id int64, preserved, learned int64, ratio float64 (NaN if 0/0)."""
    ids = _sample_ids(sample_ids, int(learnability.preserved.shape[0]))
    return pd.DataFrame(
        {
            "sample_id": ids,
            "preserved": learnability.preserved.numpy().astype(np.int64),
            "learned": learnability.learned.numpy().astype(np.int64),
            "ratio": learnability.ratio.numpy().astype(np.float64),
        }
    )


def similarity(a: Interactions, b: Interactions, set_a: SalientSet, set_b: SalientSet, match_sign: bool = True) -> dict[str, Tensor]:
    """Every measure of :data:`SIMILARITIES` between two models' interactions, float64 (B,) each."""
    return {
        "weighted_jaccard": weighted_jaccard(a, b),
        "scale_free_jaccard": weighted_jaccard(a, b, scale_free=True),
        "salient_iou": salient_iou(set_a, set_b, match_sign),
    }


def similarity_frame(measures: dict[str, Tensor], sample_ids: Tensor | Sequence[int] | None = None) -> pd.DataFrame:
    """Per-sample table: sample_id int64 and one float64 column per measure of :data:`SIMILARITIES`."""
    first = next(iter(measures.values()))
    ids = _sample_ids(sample_ids, int(first.shape[0]))
    return pd.DataFrame(
        {
            "sample_id": ids,
            **{name: measures[name].detach().cpu().numpy().astype(np.float64) for name in SIMILARITIES},
        }
    )
