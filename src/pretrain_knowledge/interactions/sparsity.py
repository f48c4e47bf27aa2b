"""Sparsification: choose the AND/OR split γ and the noise correction q (method.md §3).

Two optimisers share one entry point, :func:`sparsify`:

* ``method="lp"`` (default) solves the sparsity objective exactly. It is a linear programme (see
  :mod:`.lp`), so its global optimum is computable; the interior-point solver reaches it to a
  relative gap of ``tol`` for a whole batch at once. Because every γ is admissible, the even
  split γ = q = 0 is a feasible point, so the optimum can never be worse than it, nor than the
  reference recipe.
* ``method="reference"`` is the recipe of the lab code this paper builds on, kept exact to its
  definition so earlier numbers can be reproduced: SGD with momentum 0.9 from γ = q = 0, the
  learning rate decaying log-linearly from ``lr`` to ``lr/10`` over ``niter`` iterations, q
  clipped into its bound before every evaluation, the last iterate returned. It runs batched on
  butterflies instead of dense 2^n × 2^n matrices.

Coalition convention: every ``(B, 2^n)`` tensor is indexed by the bitmask T with bit i set iff
player i ∈ T (player 0 is the least significant bit).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .lp import solve_sparsity_lp
from .transforms import (
    and_transform,
    coalition_orders,
    moebius_transform,
    n_players_of,
    or_transform,
    reconstruct,
    zeta_transform,
)
from .values import Interactions, SparsifyDiagnostics

METHODS = ("lp", "reference")
_LP_MEMORY_BUDGET = 1 << 30  # bytes of normal matrices per solve; bounds the games per chunk
_LP_MAX_PLAYERS = 13


def sparsify(
    v: Tensor,
    qthres: float = 0.04,
    method: str = "lp",
    *,
    lr: float = 1e-5,
    niter: int = 10_000,
    tol: float = 1e-8,
    max_iter: int = 80,
    chunk_size: int | None = None,
    progress: bool = False,
) -> Interactions:
    """Learn γ and q for a batch of games and return their AND-OR interactions.

    ``v`` is (B, 2^n), indexed by coalition bitmask (bit i set iff player i ∈ T). ``qthres``
    bounds |q_T| by ``qthres · |v(N) − v(∅)|`` per game. ``lr`` and ``niter`` configure the
    reference recipe; ``tol``, ``max_iter`` and ``chunk_size`` (games per LP solve) the LP.
    The result keeps v's dtype and device, with OR terms of order ≤ 1 merged into AND.
    """
    v = _check_games(v)
    if qthres < 0:
        raise ValueError(f"qthres must be ≥ 0 (the relative bound on |q|), got {qthres}")
    bound = qthres * (v[:, -1] - v[:, 0]).abs()
    if method == "lp":
        gamma, q = _lp_split(v, bound, tol=tol, max_iter=max_iter, chunk_size=chunk_size, progress=progress)
    elif method == "reference":
        gamma, q = reference_split(v, bound, lr=lr, niter=niter, progress=progress)
    else:
        raise ValueError(f"unknown sparsification method {method!r}; choose one of {METHODS}")
    return interactions_from_split(v, gamma, q, bound, method)


def _check_games(v: Tensor) -> Tensor:
    if v.ndim != 2:
        raise ValueError(f"v must have shape (B, 2^n) (one row per game), got {tuple(v.shape)}")
    n_players_of(v)
    if not torch.is_floating_point(v):
        raise TypeError(f"v must be a floating-point tensor, got {v.dtype}")
    if not bool(torch.isfinite(v).all()):
        bad = (~torch.isfinite(v)).any(-1).nonzero().flatten().tolist()
        raise ValueError(f"v has non-finite values in games {bad}; check the model's outputs")
    return v.detach()


def merge_low_order(i_and: Tensor, i_or: Tensor) -> tuple[Tensor, Tensor]:
    """Move OR terms of order ≤ 1 into AND: for |S| ≤ 1 both describe the same logical term."""
    low = coalition_orders(n_players_of(i_and), i_and.device) <= 1
    zero = torch.zeros_like(i_or)
    return i_and + torch.where(low, i_or, zero), torch.where(low, zero, i_or)


def l1_norm(i_and: Tensor, i_or: Tensor) -> Tensor:
    """Σ_S |I_and(S)| + Σ_S |I_or(S)| per game, as float64 on the CPU."""
    return (i_and.abs().sum(-1) + i_or.abs().sum(-1)).double().cpu()


def interactions_from_split(v: Tensor, gamma: Tensor, q: Tensor, bound: Tensor, method: str) -> Interactions:
    """AND-OR interactions of ``v`` for a given split γ and noise q (definitions of method.md §3)."""
    target = v + q
    i_and, i_or = merge_low_order(and_transform(0.5 * target + gamma), or_transform(0.5 * target - gamma))
    even_and, even_or = and_transform(0.5 * v), or_transform(0.5 * v)
    diagnostics = SparsifyDiagnostics(
        l1_even=l1_norm(*merge_low_order(even_and, even_or)),
        l1_final=l1_norm(i_and, i_or),
        q_bound=bound.double().cpu(),
        matching_error=(reconstruct(i_and, i_or) - target).abs().amax(-1).double().cpu(),
        method=method,
    )
    return Interactions(v=v, I_and=i_and, I_or=i_or, gamma=gamma, q=q, diagnostics=diagnostics)


def _lp_split(
    v: Tensor, bound: Tensor, *, tol: float, max_iter: int, chunk_size: int | None, progress: bool
) -> tuple[Tensor, Tensor]:
    """γ and q at the LP optimum, solved in float64 in chunks of games that fit the memory budget."""
    n = n_players_of(v)
    if n > _LP_MAX_PLAYERS:
        raise ValueError(
            f"method='lp' needs a dense 2^n × 2^n matrix per game; n = {n} > {_LP_MAX_PLAYERS} is too "
            "large. Use fewer players or sparsification method 'reference'."
        )
    if chunk_size is None:
        chunk_size = max(1, _LP_MEMORY_BUDGET // (3 * 8 * 4**n))
    v64, bound64 = v.double(), bound.double()
    gammas, qs = [], []
    starts = range(0, v.shape[0], chunk_size)
    for start in tqdm(starts, desc="sparsify (LP chunks)", disable=not progress or len(starts) == 1):
        chunk = slice(start, start + chunk_size)
        solution = solve_sparsity_lp(v64[chunk], bound64[chunk], tol=tol, max_iter=max_iter, progress=progress)
        gammas.append(zeta_transform(solution.a) - 0.5 * (v64[chunk] + solution.q))
        qs.append(solution.q)
    return torch.cat(gammas).to(v.dtype), torch.cat(qs).to(v.dtype)


def reference_split(
    v: Tensor, bound: Tensor, *, lr: float = 1e-5, niter: int = 10_000, progress: bool = False
) -> tuple[Tensor, Tensor]:
    """The lab code's SGD recipe for γ (its ``p``) and q, batched; returns the last iterate.

    The gradient of the L1 loss is the adjoint transforms applied to the signs of the
    interactions, so it is computed in closed form rather than by autograd (which would record
    every butterfly pass). The update is torch's SGD with momentum 0.9 and no dampening. Every
    game's loss depends only on its own parameters, so the batch gives each game exactly the
    trajectory it would have alone.
    """
    if niter < 1:
        raise ValueError(f"niter must be ≥ 1, got {niter}")
    schedule = np.logspace(math.log10(lr), math.log10(lr) - 1, niter)
    limit = bound[:, None]
    gamma, q = torch.zeros_like(v), torch.zeros_like(v)
    momentum_gamma = momentum_q = None
    for it in tqdm(range(niter), desc="sparsify (reference)", disable=not progress, mininterval=2.0):
        q = torch.maximum(torch.minimum(q, limit), -limit)
        if it + 1 == niter:
            break
        grad_and, grad_or = _l1_gradients(0.5 * (v + q) + gamma, 0.5 * (v + q) - gamma)
        grad_gamma, grad_q = grad_and - grad_or, 0.5 * (grad_and + grad_or)
        if momentum_gamma is None:
            momentum_gamma, momentum_q = grad_gamma, grad_q
        else:
            momentum_gamma = momentum_gamma * 0.9 + grad_gamma
            momentum_q = momentum_q * 0.9 + grad_q
        gamma = gamma - float(schedule[it]) * momentum_gamma
        q = q - float(schedule[it]) * momentum_q
    return gamma, q


def _l1_gradients(v_and: Tensor, v_or: Tensor) -> tuple[Tensor, Tensor]:
    """∂/∂v_and and ∂/∂v_or of Σ|and_transform(v_and)| + Σ|or_transform(v_or)|.

    The adjoint of the Möbius transform is the superset Möbius transform (a flip on each side);
    the OR transform is a negated Möbius of the flipped game except at ∅, where it copies v_or(∅).
    """
    sign_and = torch.sign(and_transform(v_and))
    sign_or = torch.sign(or_transform(v_or))
    grad_and = torch.flip(moebius_transform(torch.flip(sign_and, dims=(-1,))), dims=(-1,))
    head, tail = sign_or[..., :1], sign_or[..., 1:]
    grad_or = -moebius_transform(torch.flip(torch.cat((torch.zeros_like(head), tail), dim=-1), dims=(-1,)))
    grad_or[..., :1] += head
    return grad_and, grad_or
