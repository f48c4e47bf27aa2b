"""Sparsification on real games: a small CNN trained here on generated images, then explained.

Checks the default's promise on games with a classifier's structure: never worse than the even
split, never worse than the reference recipe, equal to HiGHS's global optimum, and the same point
whatever the players are called.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pretrain_knowledge.game import PatchGrid, Players, evaluate_games
from pretrain_knowledge.interactions import sparsify

from references import highs_optimum, relabel, salient


def generated_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """16×16 images: class 0 has a bright square top-left, class 1 bottom-right, plus noise."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    images = 0.3 * torch.randn(n, 1, 16, 16, generator=generator)
    for i, label in enumerate(labels.tolist()):
        r = 2 if label == 0 else 9
        images[i, 0, r : r + 5, r : r + 5] += 1.5
    return images, labels


@pytest.fixture(scope="module")
def cnn_games() -> torch.Tensor:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(64, 2),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        images, labels = generated_images(64, g)
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    images, labels = generated_images(6, g)
    grid = PatchGrid(16, 16, 4)
    patch_ids = torch.stack([torch.randperm(16, generator=g)[:7] for _ in range(6)])
    v = evaluate_games(model, images, labels, Players(grid, patch_ids), batch_size=64)
    assert v.shape == (6, 128)
    return v


def test_default_beats_even_split_and_reference_on_cnn_games(cnn_games: torch.Tensor) -> None:
    default = sparsify(cnn_games)
    reference = sparsify(cnn_games, method="reference", lr=1e-3, niter=1000)
    d, r = default.diagnostics, reference.diagnostics
    assert bool((d.l1_final <= d.l1_even * (1 + 1e-12)).all())
    assert bool((d.l1_final <= r.l1_final * (1 + 1e-12)).all()), (d.l1_final, r.l1_final)
    # The reference recipe does move (a real competitor, not the even split again); at this
    # learning rate it is as noisy as reported and can end above where it started.
    assert bool((reference.gamma.abs().amax(-1) > 1e-3).all())


def test_default_reaches_the_global_optimum_on_cnn_games(cnn_games: torch.Tensor) -> None:
    default = sparsify(cnn_games)
    for b in range(cnn_games.shape[0]):
        optimum = highs_optimum(cnn_games[b].numpy(), 0.04)
        assert default.diagnostics.l1_final[b].item() == pytest.approx(optimum, rel=1e-6)


@pytest.mark.slow
def test_relabelling_players_permutes_the_interactions_of_cnn_games(cnn_games: torch.Tensor) -> None:
    permutation = [6, 2, 0, 5, 1, 3, 4]
    default = sparsify(cnn_games)
    moved = sparsify(relabel(cnn_games, permutation))
    assert bool(default.diagnostics.converged.all()) and float(default.diagnostics.gap.max()) <= 1e-5
    for b in range(cnn_games.shape[0]):
        scale = abs(float(cnn_games[b, -1] - cnn_games[b, 0]))
        back_and, back_or = relabel(default.I_and[b], permutation), relabel(default.I_or[b], permutation)
        assert float((moved.I_and[b] - back_and).abs().max()) <= 1e-5 * scale
        assert float((moved.I_or[b] - back_or).abs().max()) <= 1e-5 * scale
        assert salient(moved.I_and[b], moved.I_or[b]) == salient(back_and, back_or)
