"""AND-OR interactions: transforms, sparsification and their typed results (method.md §3).

Coalition convention: a coalition T is the integer with bit i set iff player i ∈ T (player 0 is
the least significant bit); every ``(..., 2^n)`` tensor in this package is indexed that way.

The solver (:mod:`.sparsity` and what it uses) is imported on first use of ``sparsify``, so code
that only reads interactions (the games and knowledge stages) does not depend on it: a change to
the solver reruns the sparsify stage, never a forward pass (see ``pretrain_knowledge.provenance``).
"""

from __future__ import annotations

import importlib
from typing import Any

from .transforms import (
    and_transform,
    coalition_orders,
    inverse_and_transform,
    inverse_or_transform,
    moebius_transform,
    n_players_of,
    or_transform,
    reconstruct,
    zeta_transform,
)
from .values import Interactions, SparsifyDiagnostics

__all__ = [
    "FORMS",
    "METHODS",
    "SPARSIFY_OPTIONS",
    "Interactions",
    "SparsifyDiagnostics",
    "and_transform",
    "coalition_orders",
    "inverse_and_transform",
    "inverse_or_transform",
    "max_players",
    "moebius_transform",
    "n_players_of",
    "or_transform",
    "reconstruct",
    "sparsify",
    "zeta_transform",
]


_LAZY = ("FORMS", "METHODS", "SPARSIFY_OPTIONS", "max_players", "sparsify")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.sparsity"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
