"""Independent references for the interaction engine, shared by the tests and the benchmarks.

Each is written from the definitions in method.md, never through the engine: brute-force
transforms with explicit loops, the sparsity LP's optimum by scipy's HiGHS, and the reference
recipe as the lab code writes it (dense matrices, one game, torch's SGD).

Coalition convention: index T of a game vector has bit i set iff player i ∈ T.
"""

from __future__ import annotations

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


def highs_optimum(v: np.ndarray, qthres: float) -> float:
    """Global optimum of Σ|I_and| + Σ|I_or| s.t. |q| ≤ qthres·|v(N) − v(∅)|, by scipy's HiGHS.

    Built independently from the atoms' definitions: the game v + q must equal
    Σ_S a_S [S ⊆ T] + Σ_{S≠∅} o_S [S ∩ T ≠ ∅] (+ the constant, carried by a_∅).
    """
    size = v.shape[0]
    rows, cols = np.arange(size)[:, None], np.arange(size)[None, :]
    and_atoms = sp.csc_matrix(((rows & cols) == cols).astype(float))
    or_atoms = sp.csc_matrix(((rows & cols) != 0).astype(float))
    bound = qthres * abs(v[-1] - v[0])
    matrix = sp.hstack([and_atoms, -and_atoms, or_atoms, -or_atoms, -sp.eye(size)]).tocsc()
    cost = np.r_[np.ones(4 * size), np.zeros(size)]
    bounds = [(0, None)] * (4 * size) + [(-bound, bound)] * size
    result = linprog(cost, A_eq=matrix, b_eq=v, bounds=bounds, method="highs")
    assert result.status == 0, result.message
    return float(result.fun)


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
