"""Independent references for the interaction engine, shared by the tests and the benchmarks.

Each is written from the definitions in method.md, never through the engine: brute-force
transforms with explicit loops, the sparsity LP's optimum by scipy's HiGHS, and the reference
recipe as the lab code writes it (dense matrices, one game, torch's SGD).

Coalition convention: index T of a game vector has bit i set iff player i ∈ T.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linprog


def subset(a: int, b: int) -> bool:
    return a & b == a


def popcount(x: int) -> int:
    return bin(x).count("1")


def brute_and(v: np.ndarray) -> np.ndarray:
    size = v.shape[-1]
    out = np.zeros_like(v)
    for s in range(size):
        for t in range(size):
            if subset(t, s):
                out[..., s] += (-1) ** (popcount(s) - popcount(t)) * v[..., t]
    return out


def brute_or(v: np.ndarray) -> np.ndarray:
    size = v.shape[-1]
    full = size - 1
    out = np.zeros_like(v)
    out[..., 0] = v[..., 0]
    for s in range(1, size):
        for t in range(size):
            if subset(t, s):
                out[..., s] -= (-1) ** (popcount(s) - popcount(t)) * v[..., full ^ t]
    return out


def brute_reconstruct(i_and: np.ndarray, i_or: np.ndarray) -> np.ndarray:
    size = i_and.shape[-1]
    out = np.zeros_like(i_and)
    for t in range(size):
        out[t] = i_or[0] + sum(i_and[s] for s in range(size) if subset(s, t))
        out[t] += sum(i_or[s] for s in range(1, size) if s & t)
    return out


def random_games(batch: int, n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1 << n, generator=g, dtype=torch.float64).to(dtype)


def mlp_games(batch: int, n: int, seed: int) -> torch.Tensor:
    """Smooth, saturating games like a classifier's log-odds over masked inputs."""
    g = torch.Generator().manual_seed(seed)
    members = ((torch.arange(1 << n)[:, None] >> torch.arange(n)) & 1).double()
    games = []
    for _ in range(batch):
        w1 = torch.randn(n, 16, generator=g, dtype=torch.float64)
        b1 = torch.randn(16, generator=g, dtype=torch.float64)
        w2 = torch.randn(16, generator=g, dtype=torch.float64) / 4
        games.append(torch.relu(members @ w1 + b1) @ w2)
    return torch.stack(games)


def highs_optimum(v: np.ndarray, qthres: float, form: str = "and-or") -> float:
    """Global optimum of Σ|I_and| + Σ|I_or| s.t. |q| ≤ qthres·|v(N) − v(∅)|, by scipy's HiGHS.

    Built independently from the atoms' definitions: the game v + q must equal
    Σ_S a_S [S ⊆ T] + Σ_{S≠∅} o_S [S ∩ T ≠ ∅] (the constant is carried by a_∅); ``form="and"``
    drops the OR atoms. Sparse formulation: the OR atoms are W = J − K with J all ones and
    K[T, S] = [S ∩ T = ∅], so W o = t·1 − K o with one extra variable t = Σ o; Z and K have 3^n
    nonzeros each.
    """
    return float(highs_solution(v, qthres, form)[0])


def highs_solution(v: np.ndarray, qthres: float, form: str = "and-or") -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """HiGHS optimum and one optimal (a, o, q) of the sparse formulation (a vertex, not canonical)."""
    size = v.shape[0]
    matrix = _sparse_constraints(size, form)
    bound = qthres * abs(v[-1] - v[0])
    if form == "and":
        cost = np.r_[np.ones(2 * size), np.zeros(size)]
        bounds = [(0, None)] * (2 * size) + [(-bound, bound)] * size
        result = linprog(cost, A_eq=matrix, b_eq=v, bounds=bounds, method="highs")
        assert result.status == 0, result.message
        a = result.x[:size] - result.x[size : 2 * size]
        return result.fun, a, np.zeros(size), result.x[2 * size :]
    cost = np.r_[np.ones(4 * size), np.zeros(size + 1)]
    bounds = [(0, None)] * (4 * size) + [(-bound, bound)] * size + [(None, None)]
    result = linprog(cost, A_eq=matrix, b_eq=np.r_[v, 0.0], bounds=bounds, method="highs")
    assert result.status == 0, result.message
    x = result.x
    a = x[:size] - x[size : 2 * size]
    o = x[2 * size : 3 * size] - x[3 * size : 4 * size]
    return result.fun, a, o, x[4 * size : 5 * size]


@lru_cache(maxsize=8)
def _sparse_constraints(size: int, form: str) -> sp.csc_matrix:
    """The equality matrix of the sparse formulation, which depends only on n and the form.

    Built once per n, as the solver under test keeps its operators across games, so that a
    per-game time of HiGHS is its solve alone (the Python loop below costs 20–40 ms at n = 10).
    Columns: a⁺, a⁻ (and o⁺, o⁻) ≥ 0, q, and for "and-or" the OR offset c with W = J − K:
    Z a + c·1 − K o − q = v and c = Σ o."""
    full = size - 1
    rows, cols = [], []
    for t in range(size):
        s = t
        while True:  # every subset s of t
            rows.append(t)
            cols.append(s)
            if s == 0:
                break
            s = (s - 1) & t
    rows_, cols_ = np.array(rows), np.array(cols)
    ones = np.ones(len(rows_))
    subset_of = sp.csc_matrix((ones, (rows_, cols_)), shape=(size, size))  # [S ⊆ T]
    if form == "and":
        return sp.hstack([subset_of, -subset_of, -sp.eye(size)]).tocsc()
    disjoint = sp.csc_matrix((ones, (full ^ rows_, cols_)), shape=(size, size))  # [S ⊆ N∖T]
    column = sp.csc_matrix(np.ones((size, 1)))
    top = sp.hstack([subset_of, -subset_of, -disjoint, disjoint, -sp.eye(size), column])
    total = np.r_[np.zeros(2 * size), np.ones(size), -np.ones(size), np.zeros(size), -1.0]
    return sp.vstack([top, sp.csr_matrix(total[None, :])]).tocsc()


def least_norm_optimum(v: np.ndarray, qthres: float, form: str = "and-or") -> tuple[np.ndarray, np.ndarray]:
    """The optimum of least Euclidean norm of (I_and, I_or), by SLSQP, for tiny games (n ≤ 3).

    Two stages from the definitions: HiGHS gives the optimal L1; SLSQP then minimises ‖x‖² over
    split variables x = x⁺ − x⁻ ≥ 0 with Σ(x⁺ + x⁻) ≤ L1* and |A x − v| ≤ b, the atoms being the
    AND sets and the OR sets of order ≥ 2 (order-≤1 OR atoms equal AND atoms). Returns (I_and,
    I_or) indexed by coalition.
    """
    from scipy.optimize import minimize

    size = v.shape[0]
    optimum = highs_optimum(v, qthres, form)
    bound = qthres * abs(v[-1] - v[0])
    rows, sets = np.arange(size)[:, None], np.arange(size)[None, :]
    and_atoms = ((rows & sets) == sets).astype(float)
    or_sets = [s for s in range(size) if popcount(s) >= 2] if form == "and-or" else []
    or_atoms = ((rows & np.array(or_sets, dtype=int)[None, :]) != 0).astype(float).reshape(size, len(or_sets))
    atoms = np.hstack([and_atoms, or_atoms])
    m = atoms.shape[1]
    split = np.hstack([atoms, -atoms])
    constraints = [
        {"type": "ineq", "fun": lambda z: optimum * (1 + 1e-9) - z.sum(), "jac": lambda z: -np.ones(2 * m)},
        {"type": "ineq", "fun": lambda z: bound - (split @ z - v), "jac": lambda z: -split},
        {"type": "ineq", "fun": lambda z: bound + (split @ z - v), "jac": lambda z: split},
    ]
    start = np.r_[np.maximum(np.linalg.lstsq(atoms, v, rcond=None)[0], 0), np.maximum(-np.linalg.lstsq(atoms, v, rcond=None)[0], 0)]
    result = minimize(
        lambda z: z @ z, start, jac=lambda z: 2 * z, bounds=[(0, None)] * (2 * m),
        constraints=constraints, method="SLSQP", options={"ftol": 1e-15, "maxiter": 2000},
    )
    x = result.x[:m] - result.x[m:]
    i_and = x[:size].copy()
    i_or = np.zeros(size)
    i_or[or_sets] = x[size:]
    return i_and, i_or


def dense_lp_l1(v: torch.Tensor, qthres: float) -> torch.Tensor:
    """L1 at the previous exact solver's point (dense interior point, a central optimum)."""
    from pretrain_knowledge.interactions import sparsify

    return sparsify(v, qthres, method="lp-dense").diagnostics.l1_final


def _popcounts(size: int) -> np.ndarray:
    return np.array([popcount(t) for t in range(size)])


def dense_and_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """M[S, T] = (-1)^{|S|-|T|} [T ⊆ S]: v_and → I_and as a dense matrix."""
    idx, orders = np.arange(1 << n), _popcounts(1 << n)
    inside = (idx[None, :] & idx[:, None]) == idx[None, :]
    signs = np.where((orders[:, None] - orders[None, :]) % 2 == 0, 1.0, -1.0)
    return torch.from_numpy(np.where(inside, signs, 0.0)).to(dtype)


def dense_or_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """v_or → I_or as a dense matrix: -M with columns at N∖T, and row ∅ copying v_or(∅)."""
    full = (1 << n) - 1
    matrix = -dense_and_matrix(n, dtype)[:, full - torch.arange(1 << n)]
    matrix[0] = 0.0
    matrix[0, 0] = 1.0
    return matrix


def dense_reference_recipe(
    v: torch.Tensor,
    bound: float,
    lr: float,
    niter: int,
    matrices: tuple[torch.Tensor, torch.Tensor] | None = None,
    steps: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The recipe written the lab code's way: one game, dense matrices, plain SGD with momentum.

    Runs the first ``steps`` iterations of an ``niter``-long schedule (all by default) and returns
    γ, q and the last loss.
    """
    n = v.shape[0].bit_length() - 1
    to_and, to_or = matrices if matrices is not None else (dense_and_matrix(n, v.dtype), dense_or_matrix(n, v.dtype))
    rates = np.logspace(np.log10(lr), np.log10(lr) - 1, niter)
    p = torch.zeros_like(v, requires_grad=True)
    q = torch.zeros_like(v, requires_grad=True)
    opt = torch.optim.SGD([p, q], lr=0.0, momentum=0.9)
    loss = torch.zeros(())
    for it in range(niter if steps is None else steps):
        q.data = torch.clamp(q.data, -bound, bound)
        loss = (to_and @ (0.5 * (v + q) + p)).abs().sum() + (to_or @ (0.5 * (v + q) - p)).abs().sum()
        if it + 1 < niter:
            opt.zero_grad()
            opt.param_groups[0]["lr"] = rates[it]
            loss.backward()
            opt.step()
    return p.detach(), q.detach(), float(loss.detach())


def dense_reference_and_recipe(v: torch.Tensor, bound: float, lr: float, niter: int) -> torch.Tensor:
    """The recipe for the AND-only form, the lab code's way: γ tied to (v + q)/2, SGD on q alone.

    Loss ‖M (v + q)‖₁ with the dense Möbius matrix; torch's SGD with momentum 0.9; q clipped into
    its bound before every evaluation. Returns q.
    """
    n = v.shape[0].bit_length() - 1
    to_and = dense_and_matrix(n, v.dtype)
    rates = np.logspace(np.log10(lr), np.log10(lr) - 1, niter)
    q = torch.zeros_like(v, requires_grad=True)
    opt = torch.optim.SGD([q], lr=0.0, momentum=0.9)
    for it in range(niter):
        q.data = torch.clamp(q.data, -bound, bound)
        loss = (to_and @ (v + q)).abs().sum()
        if it + 1 < niter:
            opt.zero_grad()
            opt.param_groups[0]["lr"] = rates[it]
            loss.backward()
            opt.step()
    return q.detach()


def relabel(values: torch.Tensor, permutation: list[int]) -> torch.Tensor:
    """The same game with player i renamed permutation[i]: out[π(T)] = values[T]."""
    size = values.shape[-1]
    target = torch.zeros(size, dtype=torch.long)
    for t in range(size):
        target[t] = sum(1 << permutation[i] for i in range(len(permutation)) if t >> i & 1)
    out = torch.empty_like(values)
    out[..., target] = values
    return out


def salient(i_and: torch.Tensor, i_or: torch.Tensor, ratio: float = 0.05) -> set[tuple[str, int]]:
    """Salient (type, S), S ≠ ∅, of one game: |I_type(S)| > ratio · max over both types and S ≠ ∅."""
    tail = torch.cat((i_and[1:], i_or[1:])).abs()
    tau = ratio * float(tail.max())
    return {("and", s) for s in range(1, i_and.shape[0]) if abs(float(i_and[s])) > tau} | {
        ("or", s) for s in range(1, i_or.shape[0]) if abs(float(i_or[s])) > tau
    }
