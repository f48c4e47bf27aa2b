"""Sparsification of AND-OR interactions (placeholder: even split, being replaced by the solvers)."""

from __future__ import annotations

import torch
from torch import Tensor

from .transforms import and_transform, or_transform, reconstruct, coalition_orders
from .values import Interactions, SparsifyDiagnostics


def sparsify(v: Tensor, qthres: float = 0.04, method: str = "auto", **options) -> Interactions:
    """Learn γ and q for a batch of games ``v`` of shape (B, 2^n) (bit i of T set iff i ∈ T)."""
    v = v.detach()
    gamma = torch.zeros_like(v)
    q = torch.zeros_like(v)
    i_and = and_transform(0.5 * v)
    i_or = or_transform(0.5 * v)
    l1 = (i_and.abs().sum(-1) + i_or.abs().sum(-1)).double().cpu()
    low = coalition_orders(v.shape[-1].bit_length() - 1, v.device) <= 1
    i_and = i_and + torch.where(low, i_or, torch.zeros_like(i_or))
    i_or = torch.where(low, torch.zeros_like(i_or), i_or)
    err = (reconstruct(i_and, i_or) - v).abs().amax(-1).double().cpu()
    bound = qthres * (v[:, -1] - v[:, 0]).abs().double().cpu()
    return Interactions(v, i_and, i_or, gamma, q, SparsifyDiagnostics(l1, l1, bound, err, "even"))
