"""The image game (method.md §2) checked against masked images and log-odds built by hand.

Coalition convention: coalition T is the integer with bit i set iff player i ∈ T (player 0 is the
least significant bit); column T of every (B, 2^n) value tensor is coalition T.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pretrain_knowledge.game import (
    PatchGrid,
    Players,
    evaluate_coalitions,
    evaluate_games,
    log_odds,
    mask_images,
)

torch.set_num_threads(2)


class TinyCNN(nn.Module):
    def __init__(self, channels: int = 1, n_classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(32, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class Recorder(nn.Module):
    """Passes inputs through to the wrapped model and keeps a copy of every batch it sees."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batches: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.clone())
        return self.model(x)


class PixelSum(nn.Module):
    """Two logits (w · Σx, 0): its log-odds for label 0 is exactly w · Σx."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.weight * x.flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def make_case(
    n_images: int = 3, n_players: int = 4, channels: int = 1, dtype=torch.float32, seed: int = 0
):
    gen = torch.Generator().manual_seed(seed)
    model = TinyCNN(channels).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype) * 0.5)
    images = torch.randn(n_images, channels, 12, 12, generator=gen, dtype=dtype)
    labels = torch.randint(0, 5, (n_images,), generator=gen)
    grid = PatchGrid(12, 12, 3)
    ids = torch.stack(
        [torch.randperm(grid.n_patches, generator=gen)[:n_players] for _ in range(n_images)]
    )
    return model, images, labels, Players(grid, ids)


def mask_by_hand(image: torch.Tensor, grid: PatchGrid, ids: list[int], coalition: int, baseline):
    """x_T built patch by patch with slices: players outside T take the baseline."""
    out = image.clone()
    base = torch.as_tensor(baseline, dtype=image.dtype)
    if base.dim() == 1:
        base = base.view(-1, 1, 1).expand_as(image)
    elif base.dim() == 0:
        base = base.expand_as(image)
    for i, pid in enumerate(ids):
        if not (coalition >> i) & 1:
            rows, cols = grid.patch_slice(pid)
            out[:, rows, cols] = base[:, rows, cols]
    return out


def reference_log_odds(model: nn.Module, x: torch.Tensor, label: int) -> float:
    model.eval()
    with torch.no_grad():
        z = model(x.unsqueeze(0))[0].double()
    others = [math.exp(float(z[c] - z.max())) for c in range(z.numel()) if c != label]
    return float(z[label]) - (float(z.max()) + math.log(sum(others)))


# --- patch grid and players ---------------------------------------------------------------------


def test_patch_grid_ids_are_row_major_and_slices_cover_the_image():
    grid = PatchGrid(8, 12, 4)
    assert (grid.n_rows, grid.n_cols, grid.n_patches) == (2, 3, 6)
    assert grid.row_col(4) == (1, 1)
    assert grid.patch_slice(5) == (slice(4, 8), slice(8, 12))
    covered = torch.zeros(8, 12, dtype=torch.int64)
    for pid in range(grid.n_patches):
        rows, cols = grid.patch_slice(pid)
        covered[rows, cols] += 1
    assert bool((covered == 1).all())


def test_patch_grid_errors_name_the_problem():
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        PatchGrid(28, 28, 5)
    with pytest.raises(ValueError, match="out of range"):
        PatchGrid(8, 8, 4).patch_slice(4)


def test_player_map_marks_players_and_background():
    grid = PatchGrid(6, 6, 2)
    players = Players(grid, torch.tensor([[4, 0], [8, 1]]))
    pmap = players.player_map()
    expected = torch.full((2, 6, 6), -1)
    for b, ids in enumerate([[4, 0], [8, 1]]):
        for i, pid in enumerate(ids):
            rows, cols = grid.patch_slice(pid)
            expected[b, rows, cols] = i
    assert torch.equal(pmap, expected)


def test_players_reject_duplicates_and_out_of_range_ids():
    grid = PatchGrid(12, 12, 3)
    with pytest.raises(ValueError, match="duplicate patch ids for image 1"):
        Players(grid, torch.tensor([[0, 1, 2], [3, 5, 3]]))
    with pytest.raises(ValueError, match="patch id 16 is out of range"):
        Players(grid, torch.tensor([[0, 16]]))
    with pytest.raises(ValueError, match="patch id -1 is out of range"):
        Players(grid, torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match=r"\(B, n\) integer tensor"):
        Players(grid, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="must be integers"):
        Players(grid, torch.tensor([[0.0, 1.0]]))


# --- log-odds -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_odds_matches_float64_brute_force(dtype):
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(50, 7, generator=gen, dtype=torch.float64) * 4).to(dtype)
    labels = torch.randint(0, 7, (50,), generator=gen)
    got = log_odds(logits, labels)
    assert got.dtype == dtype
    z = logits.double()
    for row in range(50):
        y = int(labels[row])
        p = math.exp(z[row, y]) / sum(math.exp(z[row, c]) for c in range(7))
        expected = math.log(p / (1 - p))
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert abs(float(got[row]) - expected) < tol * max(1.0, abs(expected))


def test_log_odds_is_finite_for_a_logit_gap_of_100():
    logits = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, 100.0], [-100.0, 0.0, 0.0]])
    got = log_odds(logits, torch.tensor([0, 0, 0]))
    assert bool(torch.isfinite(got).all())
    expected = torch.tensor(
        [100 - math.log(2), -100 - math.log1p(math.exp(-100)), -100 - math.log(2)]
    )
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5)
    # the softmax route the method forbids overflows here, which is why log_odds avoids it
    p = torch.softmax(logits[0], 0)[0]
    assert not bool(torch.isfinite(torch.log(p / (1 - p))))


def test_log_odds_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="labels must have shape"):
        log_odds(torch.zeros(4, 3), torch.zeros(3, dtype=torch.int64))


# --- the game -----------------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", [0.0, 0.7, "per_channel", "image", "per_image"])
def test_empty_and_full_coalitions_match_hand_built_images(baseline):
    model, images, labels, players = make_case(channels=3)
    if baseline == "per_channel":
        baseline = torch.tensor([0.5, -1.0, 2.0])
    elif baseline == "image":
        baseline = torch.randn(3, 12, 12, generator=torch.Generator().manual_seed(9))
    elif baseline == "per_image":
        baseline = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(9))
    v = evaluate_games(model, images, labels, players, baseline=baseline, batch_size=5)
    n = players.n_players
    assert v.shape == (3, 1 << n) and v.dtype == torch.float64
    for b in range(3):
        ids = players.patch_ids[b].tolist()
        base = (
            baseline[b] if isinstance(baseline, torch.Tensor) and baseline.dim() == 4 else baseline
        )
        x_empty = mask_by_hand(images[b], players.grid, ids, 0, base)
        assert not torch.equal(x_empty, images[b])
        y = int(labels[b])
        assert v[b, 0] == pytest.approx(reference_log_odds(model, x_empty, y), abs=1e-5)
        assert v[b, (1 << n) - 1] == pytest.approx(
            reference_log_odds(model, images[b], y), abs=1e-5
        )


def test_every_masked_image_the_model_sees_is_built_as_specified():
    model, images, labels, players = make_case(n_images=2, n_players=3, channels=2)
    baseline = torch.tensor([0.25, -0.5])
    recorder = Recorder(model)
    evaluate_games(recorder, images, labels, players, baseline=baseline, batch_size=6)
    seen = torch.cat(recorder.batches)
    assert seen.shape == (2 * 8, 2, 12, 12)
    background = players.player_map() < 0
    for row in range(seen.shape[0]):
        b, coalition = divmod(row, 8)
        expected = mask_by_hand(
            images[b], players.grid, players.patch_ids[b].tolist(), coalition, baseline
        )
        assert torch.equal(seen[row], expected)
        assert torch.equal(seen[row][:, background[b]], images[b][:, background[b]])
    assert max(batch.shape[0] for batch in recorder.batches) == 6
    assert len(recorder.batches) == math.ceil(16 / 6)


def test_mask_images_matches_hand_built_images():
    _, images, _, players = make_case(n_images=2, n_players=3)
    image_idx = torch.tensor([1, 0, 1])
    coalitions = torch.tensor([0b101, 0b010, 0b000])
    got = mask_images(images, players, image_idx, coalitions, baseline=-2.0)
    for j in range(3):
        b = int(image_idx[j])
        ids = players.patch_ids[b].tolist()
        assert torch.equal(
            got[j], mask_by_hand(images[b], players.grid, ids, int(coalitions[j]), -2.0)
        )


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_chunk_size_does_not_change_values(dtype, tol):
    model, images, labels, players = make_case(n_images=3, n_players=5, dtype=dtype)
    runs = [
        evaluate_games(model, images, labels, players, batch_size=bs) for bs in (1, 7, 64, 1000)
    ]
    for other in runs[1:]:
        torch.testing.assert_close(other, runs[0], rtol=0, atol=tol)


def test_coalition_bits_on_a_model_linear_in_the_pixel_sum():
    """v(T) = w · (background sum + Σ_{i∈T} patch sum of player i), known per bit."""
    grid = PatchGrid(6, 6, 2)
    ids = torch.tensor([[7, 0, 4], [2, 8, 3]])
    players = Players(grid, ids)
    images = torch.full((2, 1, 6, 6), 0.125, dtype=torch.float64)  # background
    for b in range(2):
        for i, pid in enumerate(ids[b].tolist()):
            rows, cols = grid.patch_slice(pid)
            images[b, 0, rows, cols] = (b + 1) * 2.0**i  # player i's pixels
    w = 0.5
    v = evaluate_games(
        PixelSum(w), images, torch.zeros(2, dtype=torch.int64), players, batch_size=3
    )
    background_sum = 0.125 * (36 - 3 * 4)
    for b in range(2):
        for coalition in range(8):
            members = [i for i in range(3) if coalition & (1 << i)]
            expected = w * (background_sum + sum((b + 1) * 2.0**i * 4 for i in members))
            assert float(v[b, coalition]) == expected
    # hand-picked entries: T = 1 is {player 0} = patch 7 of image 0, T = 4 is {player 2}
    assert float(v[0, 1] - v[0, 0]) == w * 1.0 * 4
    assert float(v[0, 4] - v[0, 0]) == w * 4.0 * 4


def test_evaluate_coalitions_matches_the_columns_of_evaluate_games():
    model, images, labels, players = make_case(n_images=2, n_players=4, dtype=torch.float64)
    full = evaluate_games(model, images, labels, players)
    picked = torch.tensor([15, 0, 9, 6])
    part = evaluate_coalitions(model, images, labels, players, picked, batch_size=3)
    torch.testing.assert_close(part, full[:, picked], rtol=0, atol=1e-12)


def test_logit_gap_of_100_gives_finite_values():
    grid = PatchGrid(4, 4, 2)
    players = Players(grid, torch.tensor([[0, 3]]))
    images = torch.zeros(1, 1, 4, 4)
    images[0, 0, :2, :2] = 1.0  # player 0 holds all the mass: Σx = 4 with it, 0 without

    class Confident(nn.Module):
        def forward(self, x):
            s = x.flatten(1).sum(1, keepdim=True)
            return torch.cat([25.0 * s, torch.zeros_like(s), torch.zeros_like(s)], dim=1)

    v = evaluate_games(Confident(), images, torch.tensor([0]), players)
    assert bool(torch.isfinite(v).all())
    expected = torch.tensor(
        [[-math.log(2), 100 - math.log(2), -math.log(2), 100 - math.log(2)]], dtype=torch.float64
    )
    torch.testing.assert_close(v, expected, rtol=0, atol=1e-5)


def test_model_runs_in_eval_mode_and_keeps_its_modes():
    model, images, labels, players = make_case(n_images=1, n_players=3)
    model.train()
    model.features.eval()  # a mixed state, e.g. a frozen backbone
    v1 = evaluate_games(model, images, labels, players)
    v2 = evaluate_games(model, images, labels, players)
    assert torch.equal(v1, v2)  # dropout was off
    assert model.training and model.dropout.training and model.head.training
    assert not model.features.training and not model.features[0].training


@pytest.mark.parametrize(
    "change,message",
    [
        ("labels", r"labels must have shape \(3,\)"),
        ("players", "players has patch ids for 2 images"),
        ("grid", "players.grid is 6×6 but the images are 12×12"),
        ("baseline", "baseline of shape"),
        ("label_range", "labels must lie in 0 … 4"),
        ("images", "floating"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, message):
    model, images, labels, players = make_case()
    baseline = 0.0
    if change == "labels":
        labels = labels[:2]
    elif change == "players":
        players = Players(players.grid, players.patch_ids[:2])
    elif change == "grid":
        players = Players(PatchGrid(6, 6, 3), torch.tensor([[0, 1], [1, 2], [2, 3]]))
    elif change == "baseline":
        baseline = torch.zeros(2)
    elif change == "label_range":
        labels = torch.tensor([0, 1, 5])
    elif change == "images":
        images = images.to(torch.int64)
    with pytest.raises(ValueError, match=message):
        evaluate_games(model, images, labels, players, baseline=baseline)
