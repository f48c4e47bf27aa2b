"""AND-OR interactions: transforms, sparsification and their typed results (method.md §3).

Coalition convention: a coalition T is the integer with bit i set iff player i ∈ T (player 0 is
the least significant bit); every ``(..., 2^n)`` tensor in this package is indexed that way.
"""

from .sparsify import FORMS, METHODS, SPARSIFY_OPTIONS, max_players, sparsify
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
