"""Sparsification of stored games: the second step of extraction (method.md §3).

Reads only the games (:class:`pretrain_knowledge.results.Games`), never the model, so the solver and
its settings can change without repeating a forward pass.
"""

from __future__ import annotations

import torch

from .interactions.sparsity import sparsify
from .results import GameBatchResult, Games
from .spec import SparsifySpec


def explain(
    games: Games, settings: SparsifySpec, *, device: torch.device | str = "cpu", progress: bool = True
) -> GameBatchResult:
    """The sparse AND-OR interactions of stored games (method.md §3)."""
    interactions = sparsify(
        games.v.to(device),
        qthres=settings.qthres,
        method=settings.method,
        form=settings.form,
        progress=progress,
        **dict(settings.options),
    )
    return GameBatchResult(
        sample_ids=games.sample_ids,
        labels=games.labels,
        players=games.players,
        grid=games.grid,
        interactions=interactions.to("cpu"),
    )


def check_matching(result: GameBatchResult, tolerance: float) -> None:
    """Refuse to store interactions that do not reproduce the game (universal matching)."""
    diag = result.interactions.diagnostics
    scale = result.interactions.v.abs().amax(dim=1).clamp_min(1.0).double()
    bad = diag.matching_error > tolerance * scale
    if bool(bad.any()):
        ids = result.sample_ids[bad].tolist()
        worst = float((diag.matching_error / scale).max())
        raise RuntimeError(
            f"universal matching fails for samples {ids}: relative error {worst:.3g} exceeds "
            f"extraction.matching_tolerance={tolerance}; the sparsifier did not converge "
            "(try extraction.sparsify.method or raise the tolerance knowingly)"
        )


def check_convergence(result: GameBatchResult, max_gap: float) -> None:
    """Refuse to store interactions whose certified gap to the optimum is larger than ``max_gap``.

    A game that is off the optimum would shift its salient sets in a way no table shows; the
    error names the samples so the solver's options (``extraction.sparsify.options``) can be
    raised for them. Games without a bound (NaN gap: the reference recipe) are not checked.
    """
    gap = result.interactions.diagnostics.gap
    bad = gap > max_gap  # NaN compares False
    if bool(bad.any()):
        ids = result.sample_ids[bad].tolist()
        raise RuntimeError(
            f"sparsification did not reach the optimum for samples {ids}: certified relative gap up to "
            f"{float(gap[bad].max()):.3g} > extraction.max_gap={max_gap}; raise "
            "extraction.sparsify.options (max_iter, max_rounds) or extraction.max_gap knowingly"
        )
