"""AND (Harsanyi/Möbius) and OR transforms as O(n·2^n) butterflies.

Coalition convention: a game on n players is a tensor ``(..., 2^n)`` whose entry at index T is the
value of the coalition T, where T is the integer with bit i set iff player i ∈ T (player 0 is the
least significant bit). The complement N∖T is ``(2^n - 1) ^ T``, i.e. the reversed array.

Dense 2^n × 2^n matrices cost O(4^n) memory and time per game; the butterflies below cost
O(n·2^n), batch over any leading dimensions, run on any device and dtype, and are differentiable
(no in-place writes on tensors that autograd needs).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..game import coalition_orders  # noqa: F401  (part of this package's API)


def n_players_of(values: Tensor) -> int:
    """Number of players n of a game tensor ``(..., 2^n)``; raises when the size is no power of 2."""
    size = values.shape[-1]
    n = size.bit_length() - 1
    if size < 1 or (1 << n) != size:
        raise ValueError(
            f"expected the last dimension to have 2^n entries (one per coalition), got {size}"
        )
    return n


def _butterfly(values: Tensor, sign: int) -> Tensor:
    """Apply x[T ∪ {i}] += sign · x[T] for every bit i in turn (subset-sum / Möbius pass).

    Works on one copy in place: each pass touches half the entries, which keeps the transform
    memory-bound at ~n · 2^n reads and writes per game. Autograd follows the in-place updates
    on the copy, so the transform stays differentiable.
    """
    n = n_players_of(values)
    lead = values.shape[:-1]
    x = values.clone(memory_format=torch.contiguous_format)
    for i in range(n):
        blocks = x.view(*lead, 1 << (n - 1 - i), 2, 1 << i)
        if sign > 0:
            blocks[..., 1, :] += blocks[..., 0, :]
        else:
            blocks[..., 1, :] -= blocks[..., 0, :]
    return x


def zeta_transform(values: Tensor) -> Tensor:
    """Subset sums: out[T] = Σ_{S ⊆ T} values[S]. Inverse of :func:`moebius_transform`."""
    return _butterfly(values, +1)


def moebius_transform(values: Tensor) -> Tensor:
    """Möbius inversion: out[S] = Σ_{T ⊆ S} (-1)^{|S|-|T|} values[T]."""
    return _butterfly(values, -1)


def and_transform(v_and: Tensor) -> Tensor:
    """AND (Harsanyi) interactions of the AND part of a game: I_and(S) = Σ_{T⊆S} (-1)^{|S|-|T|} v_and(T).

    ``v_and`` is ``(..., 2^n)`` indexed by coalition bitmask (bit i set iff player i ∈ T). The
    result has the same shape and indexing: entry S is I_and(S).
    """
    return moebius_transform(v_and)


def inverse_and_transform(i_and: Tensor) -> Tensor:
    """Rebuild v_and from AND interactions: v_and(T) = Σ_{S⊆T} I_and(S) (same bitmask indexing)."""
    return zeta_transform(i_and)


def or_transform(v_or: Tensor) -> Tensor:
    """OR interactions of the OR part of a game (method.md §3).

    I_or(S) = -Σ_{T⊆S} (-1)^{|S|-|T|} v_or(N∖T) for S ≠ ∅, and I_or(∅) = v_or(∅). Input and output
    are ``(..., 2^n)`` indexed by coalition bitmask (bit i set iff player i ∈ T); N∖T is the
    reversed array, so this is a Möbius butterfly on the flipped game.
    """
    complement = torch.flip(v_or, dims=(-1,))
    i_or = -moebius_transform(complement)
    return torch.cat((v_or[..., :1], i_or[..., 1:]), dim=-1)


def inverse_or_transform(i_or: Tensor) -> Tensor:
    """Rebuild v_or from OR interactions: v_or(T) = I_or(∅) + Σ_{S≠∅, S∩T≠∅} I_or(S).

    Uses Σ_{S∩T≠∅} = Σ_{all S≠∅} − Σ_{∅≠S⊆N∖T}, i.e. one zeta butterfly and a flip.
    """
    nonempty = torch.cat((torch.zeros_like(i_or[..., :1]), i_or[..., 1:]), dim=-1)
    sums = zeta_transform(nonempty)
    return i_or[..., :1] + sums[..., -1:] - torch.flip(sums, dims=(-1,))


def reconstruct(i_and: Tensor, i_or: Tensor) -> Tensor:
    """Universal matching (method.md §3): Σ_{S⊆T} I_and(S) + Σ_{S∩T≠∅} I_or(S) + I_or(∅)."""
    return inverse_and_transform(i_and) + inverse_or_transform(i_or)
