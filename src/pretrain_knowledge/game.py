"""The game a classifier plays on one image (method.md §2).

Players are square patches of the image; a masked sample ``x_T`` keeps the pixels of the players
in ``T``, gives the players outside ``T`` the baseline, and leaves every background (non-player)
pixel untouched. The value of a coalition is the model's log-odds of the true label,
``v(x_T) = z_y − logsumexp_{c≠y} z_c``.

Coalition convention: a coalition T ⊆ N = {0, …, n-1} is the integer with bit i set iff player
i ∈ T (player 0 is the least significant bit). Every ``(..., 2^n)`` tensor here is indexed that
way; player i of image b is the patch ``players.patch_ids[b, i]``.

The number of masked images is ``B · 2^n`` (a million for 1 000 images at n = 10), so they are
never materialised: each chunk of ``batch_size`` masked images is built on the model's device from
a ``(2^n, n)`` membership table at patch resolution and fed to the model at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .players import PatchGrid

MAX_PLAYERS = 20
"""Upper bound on n for all-coalition evaluation: 2^20 masked images per image is already days."""


@dataclass(frozen=True)
class Players:
    """The n players of each of B images: player i of image b is patch ``patch_ids[b, i]``.

    Coalition convention: coalition T has bit i set iff player i (column i of ``patch_ids``) is in
    T, player 0 being the least significant bit.
    """

    grid: PatchGrid
    patch_ids: Tensor
    """(B, n) int64 patch ids, distinct within each row."""

    def __post_init__(self) -> None:
        ids = self.patch_ids
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.shape[1] < 1:
            shape = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(
                f"Players.patch_ids must be a (B, n) integer tensor with n ≥ 1, got {shape}"
            )
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ValueError(f"Players.patch_ids must be integers, got dtype {ids.dtype}")
        ids = ids.detach().to("cpu", torch.int64)
        object.__setattr__(self, "patch_ids", ids)
        bad = (ids < 0) | (ids >= self.grid.n_patches)
        if bad.any():
            b, i = (int(j) for j in bad.nonzero()[0])
            self.grid.check_patch_id(int(ids[b, i]))
        sorted_ids = ids.sort(dim=1).values
        dup = (sorted_ids[:, 1:] == sorted_ids[:, :-1]).any(dim=1)
        if dup.any():
            b = int(dup.nonzero()[0])
            raise ValueError(
                f"duplicate patch ids for image {b}: {ids[b].tolist()}; each image's players must "
                "be distinct patches"
            )

    @property
    def n_images(self) -> int:
        return int(self.patch_ids.shape[0])

    @property
    def n_players(self) -> int:
        return int(self.patch_ids.shape[1])

    def patch_to_player(self) -> Tensor:
        """(B, n_patches) int64: the player index of each patch, or n for background patches.

        Using n (not −1) for background lets a membership table with an always-true column n
        decide "keep this patch" for players and background in one lookup.
        """
        table = torch.full((self.n_images, self.grid.n_patches), self.n_players, dtype=torch.int64)
        players = torch.arange(self.n_players).expand(self.n_images, -1)
        return table.scatter_(1, self.patch_ids, players)

    def player_map(self) -> Tensor:
        """(B, H, W) int64: the player index of every pixel, −1 on background (for drawing)."""
        g = self.grid
        per_patch = self.patch_to_player().view(-1, g.n_rows, 1, g.n_cols, 1)
        pixels = per_patch.expand(-1, -1, g.patch_size, -1, g.patch_size)
        pixels = pixels.reshape(-1, g.height, g.width)
        return torch.where(pixels == self.n_players, -1, pixels)


def coalition_orders(n: int, device: torch.device | str | None = None) -> Tensor:
    """Order |T| (popcount) of every coalition index T = 0 … 2^n - 1, as int64."""
    idx = torch.arange(1 << n, device=device)
    orders = torch.zeros_like(idx)
    for i in range(n):
        orders += (idx >> i) & 1
    return orders


def log_odds(logits: Tensor, labels: Tensor) -> Tensor:
    """Log-odds of the true label, ``z_y − logsumexp_{c≠y} z_c`` = log p_y / (1 − p_y).

    Computed from the logits, never as log of a softmax: when the model is confident, 1 − p_y
    rounds to 0 and the softmax route returns inf. Shapes: logits (..., K) with K ≥ 2, labels
    (...); result (...), in the logits' dtype.
    """
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(
            f"log_odds needs logits (..., K) with K ≥ 2 classes, got {tuple(logits.shape)}"
        )
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape {tuple(logits.shape[:-1])} (one per logit row), got "
            f"{tuple(labels.shape)}"
        )
    labels = labels.to(device=logits.device, dtype=torch.int64).unsqueeze(-1)
    z_y = logits.gather(-1, labels).squeeze(-1)
    is_true = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, labels, True)
    others = logits.masked_fill(is_true, -math.inf)
    return z_y - torch.logsumexp(others, dim=-1)


def membership_table(coalitions: Tensor, n_players: int) -> Tensor:
    """(K, n) bool: entry [k, i] says whether player i is in coalition ``coalitions[k]``.

    Coalition convention: bit i of the integer coalition set iff player i ∈ T (player 0 = least
    significant bit).
    """
    bits = torch.arange(n_players, device=coalitions.device)
    return ((coalitions.to(torch.int64).unsqueeze(-1) >> bits) & 1).bool()


def _model_device_dtype(model: nn.Module, images: Tensor) -> tuple[torch.device, torch.dtype]:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return images.device, images.dtype


def _baseline_tensor(
    baseline: float | Tensor, images: Tensor, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """The baseline reshaped to (1 or B, C, H or 1, W or 1), so one code path serves all forms.

    Accepted: a scalar, a per-channel (C,), an image (C, H, W) or one image per sample (B, C, H, W).
    """
    b, c, h, w = images.shape
    base = torch.as_tensor(baseline, dtype=dtype, device=device)
    shapes = {0: (1, 1, 1, 1), 1: (1, c, 1, 1), 3: (1, c, h, w), 4: (b, c, h, w)}
    expected = {0: (), 1: (c,), 3: (c, h, w), 4: (b, c, h, w)}
    if base.dim() not in shapes or tuple(base.shape) != expected[base.dim()]:
        raise ValueError(
            f"baseline of shape {tuple(base.shape)} does not fit images {tuple(images.shape)}: "
            f"give a scalar, a per-channel tensor ({c},), an image ({c}, {h}, {w}) or one image "
            f"per sample ({b}, {c}, {h}, {w})"
        )
    return base.reshape(shapes[base.dim()])


def _check_inputs(images: Tensor, labels: Tensor, players: Players) -> None:
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(
            "images must be a floating (B, C, H, W) tensor, got "
            f"{tuple(images.shape)} {images.dtype}"
        )
    b, _, h, w = images.shape
    if labels.shape != (b,):
        raise ValueError(f"labels must have shape ({b},), one per image, got {tuple(labels.shape)}")
    if players.n_images != b:
        raise ValueError(
            f"players has patch ids for {players.n_images} images but {b} images were given"
        )
    g = players.grid
    if (g.height, g.width) != (h, w):
        raise ValueError(
            f"players.grid is {g.height}×{g.width} but the images are {h}×{w}; build the "
            "PatchGrid from the image size the model sees"
        )
    if players.n_players > MAX_PLAYERS:
        raise ValueError(
            f"{players.n_players} players means 2^{players.n_players} masked images per image; "
            f"at most {MAX_PLAYERS} are supported"
        )


class _ChunkMasker:
    """Builds chunks of masked images for rows r = image · K + k of the (B, K) coalition grid.

    The keep/replace decision is made per patch (a lookup in the membership table), then
    broadcast over the patch's pixels inside a single ``torch.where`` on a 6-d patch view of the
    images, so no pixel-resolution mask or index tensor is ever built.
    """

    def __init__(self, images: Tensor, players: Players, coalitions: Tensor, base: Tensor) -> None:
        g = players.grid
        device = images.device
        b, c = images.shape[:2]
        self.k = int(coalitions.numel())
        self.view = (c, g.n_rows, g.patch_size, g.n_cols, g.patch_size)
        self.images = images.reshape(b, *self.view)
        self.base = base.expand(base.shape[0], c, g.height, g.width).reshape(-1, *self.view)
        table = membership_table(coalitions.to(device), players.n_players)
        always = torch.ones(self.k, 1, dtype=torch.bool, device=device)
        self.table = torch.cat([table, always], dim=1)  # column n: background, always kept
        self.patch_player = players.patch_to_player().to(device)
        self.out_shape = (c, g.height, g.width)

    def rows(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        r = torch.arange(start, stop, device=self.images.device)
        return r // self.k, r % self.k

    def __call__(self, image_idx: Tensor, coal_idx: Tensor) -> Tensor:
        keep = self.table[coal_idx.unsqueeze(1), self.patch_player[image_idx]]  # (m, n_patches)
        _, n_rows, _, n_cols, _ = self.view
        keep = keep.view(-1, 1, n_rows, 1, n_cols, 1)
        base = self.base[image_idx] if self.base.shape[0] > 1 else self.base
        masked = torch.where(keep, self.images[image_idx], base)
        return masked.view(-1, *self.out_shape)


def mask_images(
    images: Tensor,
    players: Players,
    image_idx: Tensor,
    coalitions: Tensor,
    baseline: float | Tensor = 0.0,
) -> Tensor:
    """Masked samples ``x_T``: row j is image ``image_idx[j]`` under coalition ``coalitions[j]``.

    Coalition convention: bit i of ``coalitions[j]`` set iff player i ∈ T (player 0 = least
    significant bit). Players in T keep their pixels, players outside T take the baseline
    (scalar, (C,), (C, H, W) or (B, C, H, W)); background pixels are never changed.
    Returns (len(image_idx), C, H, W) in the images' dtype and device. For figures and tests;
    :func:`evaluate_games` builds the same images chunk by chunk.
    """
    labels = torch.zeros(images.shape[0], dtype=torch.int64)
    _check_inputs(images, labels, players)
    image_idx = image_idx.to(images.device, torch.int64)
    coalitions = coalitions.to(images.device, torch.int64)
    if image_idx.shape != coalitions.shape or image_idx.dim() != 1:
        raise ValueError("image_idx and coalitions must be 1-d tensors of the same length")
    base = _baseline_tensor(baseline, images, images.device, images.dtype)
    masker = _ChunkMasker(images, players, coalitions, base)
    return masker(image_idx, torch.arange(coalitions.numel(), device=images.device))


def _module_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


def evaluate_coalitions(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    players: Players,
    coalitions: Tensor,
    baseline: float | Tensor = 0.0,
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """v(x_T) for the given coalitions T of every image: (B, K) float64 on the CPU.

    Coalition convention: ``coalitions`` is a (K,) integer tensor, bit i set iff player i ∈ T
    (player 0 = least significant bit); column k of the result is coalition ``coalitions[k]``.
    Masked images are built on the model's device in chunks of ``batch_size`` (chunks run across
    image boundaries so every forward pass is full) under ``torch.inference_mode``, so memory is
    bounded by the chunk, not by B · K. The model runs in eval mode (each submodule's mode is
    restored afterwards) and in its own dtype; log-odds are taken in float64 (float32 on MPS).
    """
    _check_inputs(images, labels, players)
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    coalitions = torch.as_tensor(coalitions, dtype=torch.int64)
    if coalitions.dim() != 1:
        raise ValueError(f"coalitions must be a 1-d integer tensor, got {tuple(coalitions.shape)}")
    n = players.n_players
    if coalitions.numel() and (coalitions.min() < 0 or coalitions.max() >= 1 << n):
        raise ValueError(f"coalitions must lie in 0 … 2^{n} − 1 for {n} players")
    device, dtype = _model_device_dtype(model, images)
    out_dtype = torch.float32 if device.type == "mps" else torch.float64
    modes = _module_modes(model)
    model.eval()
    try:
        with torch.inference_mode():
            x = images.to(device=device, dtype=dtype)
            y = labels.to(device=device, dtype=torch.int64)
            base = _baseline_tensor(baseline, images, device, dtype)
            masker = _ChunkMasker(x, players, coalitions, base)
            total = images.shape[0] * masker.k
            out = torch.empty(total, dtype=out_dtype, device=device)
            starts = range(0, total, batch_size)
            for start in tqdm(starts, desc="game", unit="chunk", disable=not progress):
                stop = min(start + batch_size, total)
                image_idx, coal_idx = masker.rows(start, stop)
                logits = model(masker(image_idx, coal_idx))
                if start == 0:
                    _check_logits(logits, stop - start, y)
                out[start:stop] = log_odds(logits.to(out_dtype), y[image_idx])
    finally:
        for module, was_training in modes:
            module.training = was_training
    return out.view(images.shape[0], masker.k).to("cpu", torch.float64)


def _check_logits(logits: object, rows: int, labels: Tensor) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != rows:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"the model must return logits (batch, n_classes) as one tensor, got {shape}; wrap it "
            "so that forward returns the logits"
        )
    n_classes = logits.shape[1]
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels must lie in 0 … {n_classes - 1} for a model with {n_classes} classes"
        )


def evaluate_games(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    players: Players,
    baseline: float | Tensor = 0.0,
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """v(x_T) for all 2^n coalitions of every image: (B, 2^n) float64 on the CPU.

    Coalition convention: column T holds coalition T, bit i set iff player i ∈ T (player 0 = least
    significant bit); so column 0 is v(x_∅) (all players at the baseline) and column 2^n − 1 is
    v(x_N) (the original image). See :func:`evaluate_coalitions` for chunking, device and modes.
    """
    n = players.n_players
    if n > MAX_PLAYERS:
        _check_inputs(images, labels, players)
    coalitions = torch.arange(1 << n, dtype=torch.int64)
    return evaluate_coalitions(
        model, images, labels, players, coalitions, baseline, batch_size, progress
    )
