"""Sparsification: choose the AND/OR split γ and the noise correction q (method.md §3 and §8).

Three optimisers share one entry point, :func:`sparsify`:

* ``method="lp"`` (default) solves the sparsity objective exactly and returns its least-norm
  optimum (see :mod:`.lp`): the objective is a linear programme whose optimum is generally a face,
  and the point of that face with the smallest Euclidean norm of the interactions is unique, does
  not depend on how players are labelled and is what an ε-regularised objective reaches. It
  needs no dense 2^n × 2^n matrix; a certified lower bound gives each game's gap.
* ``method="lp-dense"`` is the previous exact solver (see :mod:`.lp_dense`): a batched
  interior point with a dense 2^n × 2^n normal matrix per game, returning a central point of
  the optimal face. Kept as a reference for tests and benchmarks; n ≤ 13.
* ``method="reference"`` is the recipe of the lab code this paper builds on, kept exact to its
  definition so earlier numbers can be reproduced: SGD with momentum 0.9 from γ = q = 0, the
  learning rate decaying log-linearly from ``lr`` to ``lr/10`` over ``niter`` iterations, q
  clipped into its bound before every evaluation, the last iterate returned. It runs batched on
  butterflies instead of dense 2^n × 2^n matrices.

Two forms: ``form="and-or"`` (default) learns γ and q; ``form="and"`` is the paper's AND-only
Eq. (2): γ = (v + q)/2, so v_or = 0 and I_or = 0, and only q is learned, minimising
‖Möbius(v + q)‖₁.

Coalition convention: every ``(B, 2^n)`` tensor is indexed by the bitmask T with bit i set iff
player i ∈ T (player 0 is the least significant bit).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..catalog import MAX_PLAYERS, SPARSIFY_FORMS, SPARSIFY_FORMS_OF, SPARSIFY_METHODS, SPARSIFY_OPTIONS
from . import lp
from .lp import solve_least_norm
from .lp_dense import solve_sparsity_lp
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

METHODS = SPARSIFY_METHODS
"""Sparsification methods; ``lp`` is the default."""
FORMS = SPARSIFY_FORMS
"""Decomposition forms: AND and OR terms, or AND terms only (the paper's Eq. 2)."""
_DEFAULTS: dict[str, dict[str, Any]] = {
    "lp": {"tol": lp.TOL, "max_iter": lp.MAX_ITER, "max_rounds": lp.MAX_ROUNDS},
    "reference": {"lr": 1e-5, "niter": 10_000},
    "lp-dense": {"tol": 1e-8, "max_iter": 80, "chunk_size": None},
}
_MAX_PLAYERS = MAX_PLAYERS
_FORMS_OF = SPARSIFY_FORMS_OF
_LP_MEMORY_BUDGET = 1 << 30  # bytes of dense normal matrices per lp-dense solve


def max_players(method: str) -> int:
    """Largest number of players ``method`` supports within the documented memory.

    ``lp`` keeps O(2^n) vectors and one |R| × |R| matrix per game (R: the working set of
    coalitions), ``lp-dense`` a 2^n × 2^n matrix per game, ``reference`` O(2^n) vectors.
    """
    _check_method(method)
    return _MAX_PLAYERS[method]


def sparsify(
    v: Tensor,
    qthres: float = 0.04,
    method: str = "lp",
    *,
    form: str = "and-or",
    progress: bool = False,
    **options: Any,
) -> Interactions:
    """Learn γ and q for a batch of games and return their AND-OR interactions.

    ``v`` is (B, 2^n), indexed by coalition bitmask (bit i set iff player i ∈ T), any float dtype
    and device. ``qthres`` bounds |q_T| by ``qthres · |v(N) − v(∅)|`` per game. ``options`` are
    the method's keyword options (:data:`SPARSIFY_OPTIONS`): ``tol``, ``max_iter``,
    ``max_rounds`` for ``lp``; ``lr``, ``niter`` for ``reference``; ``tol``, ``max_iter``,
    ``chunk_size`` for ``lp-dense``. The result keeps v's dtype and device, with OR terms of
    order ≤ 1 merged into AND; ``progress`` shows a bar on stderr.
    """
    _check_method(method)
    settings = _settings(method, form, options)
    v = _check_games(v)
    n = n_players_of(v)
    if n > _MAX_PLAYERS[method]:
        raise ValueError(
            f"method={method!r} supports at most {_MAX_PLAYERS[method]} players, got n = {n}; "
            f"use fewer players or another method (max_players: "
            f"{ {m: _MAX_PLAYERS[m] for m in METHODS} })"
        )
    if qthres < 0:
        raise ValueError(f"qthres must be ≥ 0 (the relative bound on |q|), got {qthres}")
    bound = qthres * (v[:, -1] - v[:, 0]).abs()
    if method == "lp":
        gamma, q, extra = _lp_split(v, bound, form, progress=progress, **settings)
    elif method == "lp-dense":
        gamma, q, extra = _lp_dense_split(v, bound, progress=progress, **settings)
    elif form == "and":
        gamma, q = reference_and_split(v, bound, progress=progress, **settings)
        extra = _reference_extra(v.shape[0], settings["niter"])
    else:
        gamma, q = reference_split(v, bound, progress=progress, **settings)
        extra = _reference_extra(v.shape[0], settings["niter"])
    return interactions_from_split(v, gamma, q, bound, method, form=form, **extra)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown sparsification method {method!r}; choose one of {METHODS}")


def _settings(method: str, form: str, options: dict[str, Any]) -> dict[str, Any]:
    """The method's options with defaults filled in; refuses unknown names and forms."""
    if form not in FORMS:
        raise ValueError(f"unknown sparsification form {form!r}; choose one of {FORMS}")
    if form not in _FORMS_OF[method]:
        supported = [m for m in METHODS if form in _FORMS_OF[m]]
        raise ValueError(
            f"form={form!r} is not available with method={method!r}; it is supported by "
            f"methods {supported}"
        )
    valid = SPARSIFY_OPTIONS[method]
    for name in options:
        if name not in valid:
            raise ValueError(
                f"unknown option {name!r} for sparsification method {method!r}; valid options: "
                f"{list(valid)}"
            )
    return {**_DEFAULTS[method], **options}


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


def interactions_from_split(
    v: Tensor,
    gamma: Tensor,
    q: Tensor,
    bound: Tensor,
    method: str,
    *,
    form: str = "and-or",
    converged: Tensor | None = None,
    lower_bound: Tensor | None = None,
    iterations: Tensor | None = None,
) -> Interactions:
    """AND-OR interactions of ``v`` for a given split γ and noise q (definitions of method.md §3).

    ``lower_bound`` (per game, float64) is a certified lower bound on the optimum; the gap is
    measured from the returned interactions' exact L1, so it covers every rounding on the way.
    """
    target = v + q
    i_and, i_or = merge_low_order(and_transform(0.5 * target + gamma), or_transform(0.5 * target - gamma))
    if form == "and":
        l1_start = l1_norm(and_transform(v), torch.zeros_like(v))
    else:
        l1_start = l1_norm(*merge_low_order(and_transform(0.5 * v), or_transform(0.5 * v)))
    l1_final = l1_norm(i_and, i_or)
    gap = None
    if lower_bound is not None:
        gap = (l1_final - lower_bound) / l1_final.clamp_min(torch.finfo(torch.float64).tiny)
    diagnostics = SparsifyDiagnostics(
        l1_even=l1_start,
        l1_final=l1_final,
        q_bound=bound.double().cpu(),
        matching_error=(reconstruct(i_and, i_or) - target).abs().amax(-1).double().cpu(),
        method=method,
        converged=None if converged is None else converged.bool().cpu(),
        gap=gap,
        iterations=None if iterations is None else iterations.long().cpu(),
        form=form,
    )
    return Interactions(v=v, I_and=i_and, I_or=i_or, gamma=gamma, q=q, diagnostics=diagnostics)


def _lp_split(
    v: Tensor, bound: Tensor, form: str, *, tol: float, max_iter: int, max_rounds: int, progress: bool
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """γ and q at the least-norm LP optimum, solved in float64 game by game."""
    v64, bound64 = v.double(), bound.double()
    solution = solve_least_norm(
        v64, bound64, form, tol=tol, max_iter=max_iter, max_rounds=max_rounds, progress=progress
    )
    v_and = zeta_transform(solution.a)
    synthesis = v_and + _or_synthesis(solution.o)
    limit = bound64[:, None]
    q = torch.maximum(torch.minimum(synthesis - v64, limit), -limit)
    if form == "and":
        gamma = 0.5 * (v64 + q)
    else:
        gamma = v_and - 0.5 * (v64 + q)
    extra = {
        "converged": solution.converged,
        "lower_bound": solution.lower_bound,
        "iterations": solution.iterations,
    }
    return gamma.to(v.dtype), q.to(v.dtype), extra


def _or_synthesis(o: Tensor) -> Tensor:
    """W o: out[T] = Σ_{S∩T≠∅} o[S]."""
    return o.sum(-1, keepdim=True) - torch.flip(zeta_transform(o), dims=(-1,))


def _lp_dense_split(
    v: Tensor, bound: Tensor, *, tol: float, max_iter: int, chunk_size: int | None, progress: bool
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """γ and q from the dense interior point, in chunks of games that fit the memory budget."""
    n = n_players_of(v)
    if chunk_size is None:
        chunk_size = max(1, _LP_MEMORY_BUDGET // (3 * 8 * 4**n))
    v64, bound64 = v.double(), bound.double()
    gammas, qs, converged, iterations = [], [], [], []
    starts = range(0, v.shape[0], chunk_size)
    for start in tqdm(starts, desc="sparsify (dense LP chunks)", disable=not progress or len(starts) == 1):
        chunk = slice(start, start + chunk_size)
        solution = solve_sparsity_lp(v64[chunk], bound64[chunk], tol=tol, max_iter=max_iter, progress=progress)
        gammas.append(zeta_transform(solution.a) - 0.5 * (v64[chunk] + solution.q))
        qs.append(solution.q)
        converged.append(solution.converged.cpu())
        iterations.append(torch.full((solution.q.shape[0],), solution.iterations, dtype=torch.int64))
    extra = {"converged": torch.cat(converged), "iterations": torch.cat(iterations)}
    return torch.cat(gammas).to(v.dtype), torch.cat(qs).to(v.dtype), extra


def _reference_extra(games: int, niter: int) -> dict[str, Tensor]:
    """The recipe has no stopping test and no bound: not converged, gap unknown."""
    return {
        "converged": torch.zeros(games, dtype=torch.bool),
        "iterations": torch.full((games,), niter, dtype=torch.int64),
    }


def _schedule(lr: float, niter: int) -> np.ndarray:
    if niter < 1:
        raise ValueError(f"niter must be ≥ 1, got {niter}")
    return np.logspace(math.log10(lr), math.log10(lr) - 1, niter)


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
    schedule = _schedule(lr, niter)
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


def reference_and_split(
    v: Tensor, bound: Tensor, *, lr: float = 1e-5, niter: int = 10_000, progress: bool = False
) -> tuple[Tensor, Tensor]:
    """The recipe for the AND-only form: γ fixed at (v + q)/2 (so v_or = 0), SGD on q alone.

    The loss is ‖Möbius(v + q)‖₁; same schedule, momentum and clipping as :func:`reference_split`.
    """
    schedule = _schedule(lr, niter)
    limit = bound[:, None]
    q = torch.zeros_like(v)
    momentum = None
    for it in tqdm(range(niter), desc="sparsify (reference, AND)", disable=not progress, mininterval=2.0):
        q = torch.maximum(torch.minimum(q, limit), -limit)
        if it + 1 == niter:
            break
        grad = _moebius_adjoint(torch.sign(and_transform(v + q)))
        momentum = grad if momentum is None else momentum * 0.9 + grad
        q = q - float(schedule[it]) * momentum
    return 0.5 * (v + q), q


def _moebius_adjoint(signs: Tensor) -> Tensor:
    """Mᵀ s: the adjoint of the Möbius transform is the superset Möbius transform."""
    return torch.flip(moebius_transform(torch.flip(signs, dims=(-1,))), dims=(-1,))


def _l1_gradients(v_and: Tensor, v_or: Tensor) -> tuple[Tensor, Tensor]:
    """∂/∂v_and and ∂/∂v_or of Σ|and_transform(v_and)| + Σ|or_transform(v_or)|.

    The adjoint of the Möbius transform is the superset Möbius transform (a flip on each side);
    the OR transform is a negated Möbius of the flipped game except at ∅, where it copies v_or(∅).
    """
    sign_and = torch.sign(and_transform(v_and))
    sign_or = torch.sign(or_transform(v_or))
    grad_and = _moebius_adjoint(sign_and)
    head, tail = sign_or[..., :1], sign_or[..., 1:]
    grad_or = -moebius_transform(torch.flip(torch.cat((torch.zeros_like(head), tail), dim=-1), dims=(-1,)))
    grad_or[..., :1] += head
    return grad_and, grad_or
