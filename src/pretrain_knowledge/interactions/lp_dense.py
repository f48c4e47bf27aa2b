"""The previous exact solver, kept as a reference (``sparsify(..., method="lp-dense")``): a batched
primal-dual interior point with a dense 2^n × 2^n normal matrix per game (n ≤ 13). It returns
the best iterate near the centre of the optimal face; the default ``method="lp"`` (:mod:`.lp`)
returns the least-norm optimum instead and needs no dense 2^n × 2^n matrix.

Why an LP: with v' = v + q, every pair (γ, q) corresponds to one decomposition
v'(T) = Σ_{S⊆T} a_S + Σ_{S∩T≠∅} o_S + o_∅ with a = I_and and o = I_or, and vice versa. Minimising
Σ|a| + Σ|o| subject to |q_T| ≤ b is therefore the basis-pursuit linear programme

    min ‖a‖₁ + ‖o‖₁   s.t.   Z a + W o − q = v,   −b ≤ q ≤ b,

with Z[T, S] = [S ⊆ T] (AND atoms) and W[T, S] = [S ∩ T ≠ ∅] (OR atoms). Its optimum is the global
optimum of the objective that the reference recipe attacks with SGD.

How: all games of a batch are solved together in torch (CPU or GPU), and the structure does
the heavy lifting: the normal matrix A Θ Aᵀ is 2^n × 2^n with entries that are *gathers* from
subset sums of the diagonal weights,

    (Z D Zᵀ)[T, T'] = ζD(T ∩ T'),
    (W D Wᵀ)[T, T'] = ΣD − ζD(N∖T) − ζD(N∖T') + ζD(N∖(T ∪ T')),

so it is formed in O(4^n) and factorised by one batched Cholesky per iteration (O(8^n / 3) flops,
~0.36 GFLOP per game at n = 10). Products with A and Aᵀ are O(n·2^n) butterflies.

Coalition convention: every length-2^n vector is indexed by the bitmask T with bit i set iff
player i ∈ T (player 0 is the least significant bit).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .transforms import and_transform, coalition_orders, or_transform, zeta_transform


@dataclass(frozen=True)
class LPSolution:
    """Best solution found for a batch: AND coefficients a (so v_and = ζa) and q, both (B, 2^n).

    The OR part follows exactly from v + q − ζa, so (a, q) fixes the whole decomposition.
    """

    a: Tensor
    q: Tensor
    l1: Tensor
    """(B,) exact L1 of the decomposition given by (a, q), after the order-≤1 merge."""
    iterations: int
    converged: Tensor
    """(B,) bool: relative gap and residuals below tolerance."""


@lru_cache(maxsize=8)
def _meet_indices(n: int, device: str) -> tuple[Tensor, Tensor]:
    """Flat tables of T ∩ T' and of (N∖T) ∩ (N∖T') over all pairs, for forming A Θ Aᵀ by gathers."""
    idx = torch.arange(1 << n, device=device)
    meet = (idx[:, None] & idx[None, :]).reshape(-1)
    return meet, meet.flip(0).contiguous()


def _superset_sum(y: Tensor) -> Tensor:
    """Zᵀy: out[S] = Σ_{T ⊇ S} y[T] (a subset sum on the complemented, i.e. flipped, array)."""
    return torch.flip(zeta_transform(torch.flip(y, dims=(-1,))), dims=(-1,))


def _or_synthesis(x: Tensor) -> Tensor:
    """W x: out[T] = Σ_{S∩T≠∅} x[S] = Σ x − Σ_{S⊆N∖T} x[S]."""
    return x.sum(-1, keepdim=True) - torch.flip(zeta_transform(x), dims=(-1,))


def _or_adjoint(y: Tensor) -> Tensor:
    """Wᵀ y: out[S] = Σ_{T∩S≠∅} y[T]; W is symmetric in (S, T), so this is W y."""
    return _or_synthesis(y)


def _normal_matrix(d_and: Tensor, d_or: Tensor, d_q: Tensor) -> Tensor:
    """A Θ Aᵀ = Z D_and Zᵀ + W D_or Wᵀ + D_q as a batched dense (B, 2^n, 2^n) matrix.

    ζD(N∖(T ∪ T')) = ζD((N∖T) ∩ (N∖T')) is the meet table read backwards, so both parts are one
    gather each; the rank-one terms of the W part are broadcasts.
    """
    batch, size = d_and.shape
    meet, meet_complement = _meet_indices(size.bit_length() - 1, str(d_and.device))
    z_or = zeta_transform(d_or)
    matrix = torch.index_select(zeta_transform(d_and), 1, meet)
    matrix += torch.index_select(z_or, 1, meet_complement)
    matrix = matrix.view(batch, size, size)
    z_or_complement = z_or.flip(-1)
    matrix -= z_or_complement[:, :, None]
    matrix -= z_or_complement[:, None, :]
    matrix += d_or.sum(-1)[:, None, None]
    matrix.diagonal(dim1=-2, dim2=-1).add_(d_q)
    return matrix


class _Problem:
    """The LP in bounded standard form for a batch, with x = [a⁺, a⁻, o⁺, o⁻, r], r = q + b ∈ [0, 2b].

    A x = Z(a⁺ − a⁻) + W(o⁺ − o⁻) − r = v − b; cost 1 on the four sign-split blocks, 0 on r.
    """

    def __init__(self, v: Tensor, bound: Tensor) -> None:
        self.bound = bound
        self.rhs = v - bound[:, None]
        self.upper = 2.0 * bound[:, None].expand_as(v)
        ones = torch.ones_like(v)
        self.cost = torch.stack((ones, ones, ones, ones, torch.zeros_like(v)), dim=1)

    def apply(self, x: Tensor) -> Tensor:
        """A x for x of shape (B, 5, 2^n)."""
        ap, am, op, om, r = x.unbind(dim=1)
        return zeta_transform(ap - am) + _or_synthesis(op - om) - r

    def adjoint(self, y: Tensor) -> Tensor:
        """Aᵀ y as (B, 5, 2^n)."""
        zy = _superset_sum(y)
        wy = _or_adjoint(y)
        return torch.stack((zy, -zy, wy, -wy, -y), dim=1)


def solve_sparsity_lp(
    v: Tensor,
    bound: Tensor,
    *,
    tol: float = 1e-8,
    feas_tol: float = 1e-7,
    max_iter: int = 80,
    progress: bool = False,
) -> LPSolution:
    """Solve min ‖a‖₁ + ‖o‖₁ s.t. Z a + W o − q = v, |q| ≤ bound for every game of the batch.

    ``v`` is (B, 2^n) float64 (coalition bitmask indexing), ``bound`` is (B,) ≥ 0. Mehrotra
    predictor-corrector with separate primal and dual step lengths; games that have converged
    stop moving so that the batch result equals the per-game result.

    Late iterations lose accuracy to the conditioning of the normal matrix (the primal residual
    can grow again), so every iterate is turned into an exact decomposition and scored by its
    true L1; the best one is returned, not the last.
    """
    problem = _Problem(v, bound.clamp_min(1e-12 * (1.0 + v.abs().amax(-1))))
    batch, size = v.shape
    scale = 1.0 + v.abs().amax(-1)[:, None, None]
    x = torch.ones(batch, 5, size, dtype=v.dtype, device=v.device) * scale / size
    x[:, 4] = 0.5 * problem.upper
    z = torch.ones_like(x)
    z[:, 4] = 1e-2
    w = torch.ones_like(v)  # dual of the upper bound, r block only
    y = torch.zeros_like(v)
    active = torch.ones(batch, dtype=torch.bool, device=v.device)
    best = _Best(v, problem.bound)
    iterations = 0
    bar = tqdm(range(max_iter), desc="sparsify (LP)", disable=not progress, leave=False)
    for iterations in bar:
        slack = problem.upper - x[:, 4]
        r_p = problem.rhs - problem.apply(x)
        r_d = problem.cost - problem.adjoint(y) - z
        r_d[:, 4] += w
        primal_obj = (problem.cost * x).sum((1, 2))
        dual_obj = (problem.rhs * y).sum(-1) - (problem.upper * w).sum(-1)
        gap = (primal_obj - dual_obj).abs() / (1.0 + primal_obj.abs())
        res_p = r_p.abs().amax(-1) / (1.0 + problem.rhs.abs().amax(-1))
        res_d = r_d.abs().amax((1, 2))
        finite = _finite(x, z) & _finite(y, w) & torch.isfinite(gap)
        stalled = best.update(x, finite) & (gap < 1e-6)
        converged = (gap < tol) & (res_p < feas_tol) & (res_d < feas_tol)
        active = active & finite & ~converged & ~stalled
        if not bool(active.any()):
            break
        bar.set_postfix(gap=float(gap[active].max()))
        n_compl = 5 * size + size
        mu = ((x * z).sum((1, 2)) + (slack * w).sum(-1)) / n_compl

        inv_theta = z / x
        inv_theta[:, 4] += w / slack
        theta = 1.0 / inv_theta
        d_and = theta[:, 0] + theta[:, 1]
        d_or = theta[:, 2] + theta[:, 3]
        normal = _normal_matrix(d_and, d_or, theta[:, 4])
        chol, ok = _cholesky(normal)
        active = active & ok

        def direction(r_xz: Tensor, r_sw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            rho = r_d - r_xz / x
            rho[:, 4] += r_sw / slack
            rhs = r_p + problem.apply(theta * rho)
            dy = torch.cholesky_solve(rhs[..., None], chol)[..., 0]
            dx = theta * (problem.adjoint(dy) - rho)
            dz = (r_xz - z * dx) / x
            dw = (r_sw + w * dx[:, 4]) / slack
            return dx, dy, dz, dw

        dx, dy, dz, dw = direction(-x * z, -slack * w)
        alpha_p = _max_step(x, dx, slack, -dx[:, 4])
        alpha_d = _max_step(z, dz, w, dw)
        mu_aff = (
            ((x + alpha_p[:, None, None] * dx) * (z + alpha_d[:, None, None] * dz)).sum((1, 2))
            + ((slack - alpha_p[:, None] * dx[:, 4]) * (w + alpha_d[:, None] * dw)).sum(-1)
        ) / n_compl
        sigma = (mu_aff / mu).clamp(0.0, 1.0) ** 3
        target = (sigma * mu)[:, None]
        dx, dy, dz, dw = direction(
            target[:, None] - x * z - dx * dz,
            target - slack * w + dx[:, 4] * dw,
        )
        alpha_p = 0.99 * _max_step(x, dx, slack, -dx[:, 4])
        alpha_d = 0.99 * _max_step(z, dz, w, dw)
        # Finished games keep their iterate exactly (a NaN direction must not leak into it).
        x = _step(x, dx, alpha_p, active)
        y = _step(y, dy, alpha_d, active)
        z = _step(z, dz, alpha_d, active)
        w = _step(w, dw, alpha_d, active)
    else:
        best.update(x, torch.isfinite(x).all(-1).all(-1))
    bar.close()
    return LPSolution(a=best.a, q=best.q, l1=best.l1, iterations=iterations, converged=~active)


class _Best:
    """Per game, the iterate whose exact decomposition has the smallest L1 so far.

    Also tells when a game has stopped improving: near the optimum the conditioning of the
    normal matrix, not the method, limits progress, and further iterations only cost time.
    """

    patience = 3

    def __init__(self, v: Tensor, bound: Tensor) -> None:
        self.v = v
        self.bound = bound[:, None]
        self.low = coalition_orders(v.shape[-1].bit_length() - 1, v.device) <= 1
        # Start from the even split (γ = q = 0), so the answer is never worse than it.
        self.a = and_transform(0.5 * v)
        self.q = torch.zeros_like(v)
        self.l1 = self._l1(self.a, self.q)
        self.since_improved = torch.zeros(v.shape[0], dtype=torch.long, device=v.device)

    def _l1(self, a: Tensor, q: Tensor) -> Tensor:
        v_and = zeta_transform(a)
        i_and = and_transform(v_and)
        i_or = or_transform(self.v + q - v_and)
        merged = torch.where(self.low, i_and + i_or, i_and).abs() + torch.where(self.low, 0.0, i_or).abs()
        return merged.sum(-1)

    def update(self, x: Tensor, finite: Tensor) -> Tensor:
        """Keep the better iterates; return (B,) True where the best has not moved for a while."""
        a = x[:, 0] - x[:, 1]
        q = torch.maximum(torch.minimum(x[:, 4] - self.bound, self.bound), -self.bound)
        l1 = self._l1(torch.where(finite[:, None], a, 0.0), torch.where(finite[:, None], q, 0.0))
        better = finite & (l1 < self.l1)
        improved = better & (l1 < self.l1 * (1 - 1e-10))
        self.a = torch.where(better[:, None], a, self.a)
        self.q = torch.where(better[:, None], q, self.q)
        self.l1 = torch.where(better, l1, self.l1)
        self.since_improved = torch.where(improved, 0, self.since_improved + 1)
        return self.since_improved >= self.patience


def _finite(*tensors: Tensor) -> Tensor:
    """(B,) True where every entry of every (B, ...) tensor is finite."""
    return torch.stack([torch.isfinite(t).flatten(1).all(1) for t in tensors]).all(0)


def _step(value: Tensor, direction: Tensor, alpha: Tensor, active: Tensor) -> Tensor:
    shape = (-1,) + (1,) * (value.ndim - 1)
    return torch.where(active.view(shape), value + alpha.view(shape) * direction, value)


def _max_step(x: Tensor, dx: Tensor, s: Tensor, ds: Tensor) -> Tensor:
    """Largest α ≤ 1 keeping x + α dx ≥ 0 and s + α ds ≥ 0, per game."""
    ratio_x = torch.where(dx < 0, -x / dx, torch.full_like(x, float("inf"))).amin((1, 2))
    ratio_s = torch.where(ds < 0, -s / ds, torch.full_like(s, float("inf"))).amin(-1)
    return torch.minimum(ratio_x, ratio_s).clamp(max=1.0)


def _cholesky(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Batched Cholesky, shifting the diagonal of the games where it breaks down.

    Late iterations make Θ span many decades, and the W-part of the normal matrix is formed with
    cancellation, so it can lose definiteness at rounding level. A small shift keeps the Newton
    direction usable; a game that still fails is reported (``ok`` False) and stops where it is,
    which by then is within rounding of its optimum.
    """
    chol, info = torch.linalg.cholesky_ex(matrix)
    shift = 1e-14
    while bool((info > 0).any()) and shift <= 1e-6:
        bad = info > 0
        diag = matrix[bad].diagonal(dim1=-2, dim2=-1)
        jitter = shift * diag.abs().amax(-1, keepdim=True).clamp_min(1.0)
        chol_bad, info_bad = torch.linalg.cholesky_ex(matrix[bad] + torch.diag_embed(jitter.expand_as(diag)))
        chol[bad] = chol_bad
        info[bad] = info_bad
        shift *= 100.0
    ok = info == 0
    chol[~ok] = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    return chol, ok
