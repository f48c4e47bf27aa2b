"""The ``synthetic`` source: stroke-motif images generated from a seed, for tests and offline runs.

Each class is a fixed layout of three stroke motifs (from one bank of eight) on a 3×3 grid, with
jitter, contrast changes, a faint distractor and noise. Classes share motifs, so pre-training on
classes 0–4 helps on 5–9. Boxes are the motifs' extent and parts their centres, so the
annotation-based player rules run on it too. Options: :class:`~pretrain_knowledge.catalog.SyntheticSpec`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..catalog import SyntheticSpec
from .images import RawBatch, RawSplit


def _motif_bank(k: int) -> Tensor:
    """Eight k×k stroke patterns; every class is a layout of three of them."""
    m = torch.zeros(8, k, k)
    c = k // 2
    ar = torch.arange(k)
    m[0, c, :] = 1  # horizontal bar
    m[1, :, c] = 1  # vertical bar
    m[2, ar, ar] = 1  # diagonal
    m[3, ar, k - 1 - ar] = 1  # anti-diagonal
    m[4, c, :] = 1
    m[4, :, c] = 1  # plus
    m[5, ar, ar] = 1
    m[5, ar, k - 1 - ar] = 1  # cross
    m[6, 0, :] = m[6, -1, :] = m[6, :, 0] = m[6, :, -1] = 1  # ring
    m[7, (ar[:, None] + ar[None, :]) % 2 == 0] = 1  # checker
    return m


def _synthetic_layouts(spec: SyntheticSpec) -> list[list[tuple[int, int]]]:
    g = torch.Generator().manual_seed(10_007 + spec.structure_seed)
    seen: set[tuple[tuple[int, int], ...]] = set()
    layouts: list[list[tuple[int, int]]] = []
    while len(layouts) < spec.num_classes:
        cells = torch.randperm(9, generator=g)[: spec.motifs_per_class].tolist()
        motifs = torch.randint(0, 8, (spec.motifs_per_class,), generator=g).tolist()
        key = tuple(sorted(zip(motifs, cells, strict=True)))
        if key not in seen:
            seen.add(key)
            layouts.append(list(key))
    return layouts


@functools.lru_cache(maxsize=8)
def generate_synthetic(spec: SyntheticSpec, split: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Generate (uint8 images (N,C,S,S), labels, boxes (N,4), parts (N,P,3)) deterministically.

    The boxes enclose the class's motifs and the parts are their centres, so annotation-based
    player rules can be tested on synthetic data too. Cached (opening the test split also needs
    the train split's statistics); callers index the tensors, which copies them.
    """
    if spec.num_classes < 2 or spec.image_size < 12:
        raise ValueError("synthetic data needs num_classes >= 2 and image_size >= 12")
    s, per = spec.image_size, spec.train_per_class if split == "train" else spec.test_per_class
    k = max(3, (s // 6) | 1)
    bank = _motif_bank(k)
    layouts = _synthetic_layouts(spec)
    g = torch.Generator().manual_seed(spec.seed * 2 + (0 if split == "train" else 1))
    colours = 0.5 + 0.5 * torch.rand(
        8, spec.channels, generator=torch.Generator().manual_seed(spec.structure_seed)
    )
    n = spec.num_classes * per
    labels = torch.arange(spec.num_classes).repeat_interleave(per)
    canvas = torch.zeros(n, spec.channels, s + 2 * k, s + 2 * k)
    boxes = torch.zeros(n, 4)
    parts = torch.zeros(n, spec.motifs_per_class, 3)
    cell = s / 3
    jitter = max(1, s // 14)
    for i in range(n):
        items = list(layouts[int(labels[i])])
        distractor = (
            int(torch.randint(0, 8, (1,), generator=g)),
            int(torch.randint(0, 9, (1,), generator=g)),
        )
        lo = torch.tensor([float(s), float(s)])
        hi = torch.tensor([0.0, 0.0])
        for j, (motif, pos) in enumerate([*items, distractor]):
            shift = torch.randint(-jitter, jitter + 1, (2,), generator=g)
            cx = int(cell * (pos % 3 + 0.5)) + int(shift[0])
            cy = int(cell * (pos // 3 + 0.5)) + int(shift[1])
            amp = 0.6 + 0.4 * float(torch.rand((), generator=g))
            if j == len(items):
                amp *= 0.6  # the distractor is fainter, so it never dominates the class motifs
            x0, y0 = cx - k // 2 + k, cy - k // 2 + k
            patch = bank[motif][None] * colours[motif][:, None, None] * amp
            region = canvas[i, :, y0 : y0 + k, x0 : x0 + k]
            torch.maximum(region, patch, out=region)
            if j < len(items):
                parts[i, j] = torch.tensor([cx + 0.5, cy + 0.5, 1.0])
                lo = torch.minimum(lo, torch.tensor([cx - k // 2, cy - k // 2], dtype=torch.float32))
                hi = torch.maximum(hi, torch.tensor([cx - k // 2 + k, cy - k // 2 + k], dtype=torch.float32))
        boxes[i] = torch.cat([lo.clamp(0, s), hi.clamp(0, s)])
    images = canvas[:, :, k : k + s, k : k + s]
    images = images + spec.noise * torch.randn(images.shape, generator=g)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, labels, boxes, parts


def open_synthetic(root: Path | None, split: str, download: bool, **options: Any) -> RawSplit:
    spec = SyntheticSpec(**options)
    images, labels, boxes, parts = generate_synthetic(spec, split)
    train_images = images if split == "train" else generate_synthetic(spec, "train")[0]
    flat = train_images.float().div(255).transpose(0, 1).reshape(spec.channels, -1)
    mean = tuple(round(float(v), 4) for v in flat.mean(1))
    std = tuple(round(float(v), 4) for v in flat.std(1))
    return RawSplit(
        name="synthetic",
        split=split,
        labels=labels.numpy(),
        class_names=tuple(f"synthetic-{c}" for c in range(spec.num_classes)),
        mean=mean,
        std=std,
        decode=lambda idx: RawBatch(
            images=images[torch.from_numpy(idx)],
            boxes=boxes[torch.from_numpy(idx)],
            parts=parts[torch.from_numpy(idx)],
        ),
        part_names=tuple(f"motif{j}" for j in range(spec.motifs_per_class)),
    )


