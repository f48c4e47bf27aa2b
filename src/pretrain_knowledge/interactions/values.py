"""Typed results of sparsification, in shapiq's ``InteractionValues`` spirit but batched.

Coalition convention: every ``(B, 2^n)`` tensor here is indexed by coalition bitmask, bit i set
iff player i ∈ T (player 0 is the least significant bit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .transforms import n_players_of, reconstruct


@dataclass(frozen=True)
class SparsifyDiagnostics:
    """Per-game figures of one sparsification, each a tensor ``(B,)`` on the CPU.

    They let every downstream table say how trustworthy each game's interactions are: how much
    the optimiser gained over the even split, how close ``q`` came to its bound, whether the
    decomposition still reproduces the model's outputs (universal matching), and whether the
    optimiser converged and how far from the optimum it can be at most (``gap``).

    ``converged``, ``gap``, ``iterations`` and ``form`` may be left out (tables written before
    they existed); they then read "unknown": False, NaN, -1 and "and-or".
    """

    l1_even: Tensor
    """float64. Σ|I_and| + Σ|I_or| with no optimisation (γ = q = 0; for form "and": q = 0)."""
    l1_final: Tensor
    """float64. Σ|I_and| + Σ|I_or| of the returned interactions."""
    q_bound: Tensor
    """float64. qthres · |v(N) − v(∅)|, the bound on every |q_T|."""
    matching_error: Tensor
    """float64. max_T |v(T) + q_T − (Σ_{S⊆T} I_and(S) + Σ_{S∩T≠∅} I_or(S) + I_or(∅))|."""
    method: str = "lp"
    """Which optimiser produced the values (``lp``, ``lp-dense`` or ``reference``)."""
    converged: Tensor = field(default=None)  # type: ignore[assignment]
    """bool. The optimiser met its own stopping test (the reference recipe has none: False)."""
    gap: Tensor = field(default=None)  # type: ignore[assignment]
    """float64. (l1_final − L) / l1_final for a certified lower bound L on the optimum of the
    objective; ≤ 0 up to rounding at an exact finish, NaN where no bound is known."""
    iterations: Tensor = field(default=None)  # type: ignore[assignment]
    """int64. Iterations the optimiser ran (interior-point steps, or SGD steps)."""
    form: str = "and-or"
    """``and-or`` (AND and OR terms) or ``and`` (AND terms only, I_or = 0)."""

    def __post_init__(self) -> None:
        games = self.l1_final.shape[0]
        unknown = {
            "converged": torch.zeros(games, dtype=torch.bool),
            "gap": torch.full((games,), float("nan"), dtype=torch.float64),
            "iterations": torch.full((games,), -1, dtype=torch.int64),
        }
        for name, default in unknown.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)


@dataclass(frozen=True)
class Interactions:
    """AND-OR interactions of a batch of B games on the same n players.

    ``I_and`` and ``I_or`` already have their order-≤1 OR terms merged into the AND terms
    (method.md §3), so ``I_or`` is 0 at every coalition of order ≤ 1.
    """

    v: Tensor
    """(B, 2^n) the game values v(x_T)."""
    I_and: Tensor
    """(B, 2^n) AND interactions I_and(S)."""
    I_or: Tensor
    """(B, 2^n) OR interactions I_or(S)."""
    gamma: Tensor
    """(B, 2^n) the AND/OR split: v_and = 0.5 (v + q) + γ, v_or = 0.5 (v + q) − γ."""
    q: Tensor
    """(B, 2^n) the learned noise correction, |q_T| ≤ q_bound."""
    diagnostics: SparsifyDiagnostics

    @property
    def n_players(self) -> int:
        return n_players_of(self.v)

    @property
    def batch_size(self) -> int:
        return int(self.v.shape[0])

    def reconstruction(self) -> Tensor:
        """Σ_{S⊆T} I_and(S) + Σ_{S∩T≠∅} I_or(S) + I_or(∅) for every T: equals v + q."""
        return reconstruct(self.I_and, self.I_or)

    def to(self, device: torch.device | str) -> Interactions:
        return Interactions(
            v=self.v.to(device),
            I_and=self.I_and.to(device),
            I_or=self.I_or.to(device),
            gamma=self.gamma.to(device),
            q=self.q.to(device),
            diagnostics=self.diagnostics,
        )
