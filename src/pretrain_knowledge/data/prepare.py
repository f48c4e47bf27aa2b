"""Preparation: class subsets, per-class caps, resizing and channels, into the files stages read.

Class subsets and caps are applied *before* any image is decoded, so a 200-class CUB tree costs
only the images that are kept. Labels become positions in the requested class list (classes 5–9
become 0–4). Boxes and keypoints move with every resize or crop; keypoints a crop removes become
invisible.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..catalog import SOURCES, source_facts
from ..layout import SPLITS
from .images import IMAGENET_MEAN, IMAGENET_STD, ImageSet, RawBatch, RawSplit, TaskData
from .sources import open_source
from .text import RawText, TextSet, TextTask

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's "L" conversion


def select_indices(
    labels: np.ndarray, classes: Sequence[int] | None, per_class: int | None = None, seed: int = 0
) -> np.ndarray:
    """Indices of the images of ``classes``, at most ``per_class`` of each, drawn with ``seed``.

    The draw for one class depends only on (seed, class), so adding a class never changes which
    images another class gets. Returned indices are sorted (source order).
    """
    present = np.unique(labels)
    wanted = list(present) if classes is None else list(classes)
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"class list has duplicates: {wanted}")
    absent = sorted(set(wanted) - set(present.tolist()))
    if absent:
        raise ValueError(
            f"classes {absent} do not occur in this split (it has classes {present.min()}..{present.max()})"
        )
    if per_class is not None and per_class < 1:
        raise ValueError(f"per-class cap must be >= 1 or None; got {per_class}")
    chosen = []
    for c in wanted:
        idx = np.flatnonzero(labels == c)
        if per_class is not None and idx.size > per_class:
            g = torch.Generator().manual_seed(int(seed) * 100_003 + int(c))
            idx = np.sort(idx[torch.randperm(idx.size, generator=g)[:per_class].numpy()])
        chosen.append(idx)
    return np.sort(np.concatenate(chosen))


def _convert_channels(images: Tensor, channels: int) -> Tensor:
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if images.shape[1] == 3 and channels == 1:
        w = torch.tensor(_LUMA).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")


def _convert_stats(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    if len(values) == channels:
        return values
    if len(values) == 1:
        return values * channels
    return (sum(w * v for w, v in zip(_LUMA, values, strict=True)),)


def _resize(
    img: Tensor, box: Tensor | None, parts: Tensor | None, size: int, mode: str
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Resize uint8 (..., C, H, W) images to size×size and move their annotations with them.

    ``box`` is (..., 4) and ``parts`` (..., P, 3), matching the leading dims of ``img``.
    """
    from torchvision.transforms.v2.functional import center_crop, resize

    h, w = int(img.shape[-2]), int(img.shape[-1])
    if mode == "stretch":
        out = resize(img, [size, size], antialias=True)
        sx, sy, ox, oy = size / w, size / h, 0, 0
    elif mode == "center_crop":
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        out = center_crop(resize(img, [nh, nw], antialias=True), [size, size])
        sx, sy = nw / w, nh / h
        ox, oy = (nw - size) // 2, (nh - size) // 2
    else:
        raise ValueError(f"resize mode must be 'stretch' or 'center_crop'; got {mode!r}")
    if box is not None:
        box = box * torch.tensor([sx, sy, sx, sy]) - torch.tensor([ox, oy, ox, oy], dtype=torch.float32)
        box = box.clamp(0, size)
    if parts is not None:
        parts = parts.clone()
        parts[..., 0] = parts[..., 0] * sx - ox
        parts[..., 1] = parts[..., 1] * sy - oy
        x, y = parts[..., 0], parts[..., 1]
        inside = (x >= 0) & (x < size) & (y >= 0) & (y < size)
        parts[..., 2] = torch.where(inside, parts[..., 2], torch.zeros_like(parts[..., 2]))
    return out, box, parts


def _standardise(
    batch: RawBatch, image_size: int | None, resize_mode: str
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    imgs = batch.images
    if isinstance(imgs, Tensor):
        if image_size is None or tuple(imgs.shape[-2:]) == (image_size, image_size):
            return imgs, batch.boxes, batch.parts
        return _resize(imgs, batch.boxes, batch.parts, image_size, resize_mode)
    if image_size is None:
        if len({tuple(t.shape[-2:]) for t in imgs}) > 1:
            raise ValueError("images differ in size; set an image size (--image-size / data.image_size)")
        return torch.stack(imgs), batch.boxes, batch.parts
    out, boxes, parts = [], [], []
    for i, img in enumerate(imgs):
        b = None if batch.boxes is None else batch.boxes[i]
        p = None if batch.parts is None else batch.parts[i]
        img, b, p = _resize(img, b, p, image_size, resize_mode)
        out.append(img)
        boxes.append(b)
        parts.append(p)
    return (
        torch.stack(out) if out else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8),
        None if batch.boxes is None else torch.stack(boxes),  # type: ignore[arg-type]
        None if batch.parts is None else torch.stack(parts),  # type: ignore[arg-type]
    )


def prepare_split(
    raw: RawSplit,
    classes: Sequence[int] | None = None,
    per_class: int | None = None,
    *,
    seed: int = 0,
    image_size: int | None = None,
    channels: int | None = None,
    resize_mode: str = "stretch",
    normalization: str = "source",
) -> ImageSet:
    """Select, decode and standardise one split into an :class:`ImageSet`.

    Labels become positions in ``classes`` (so classes 5–9 become 0–4). ``resize_mode``
    ``stretch`` keeps the whole image (and every keypoint); ``center_crop`` keeps the aspect ratio.
    """
    if normalization not in ("source", "imagenet"):
        raise ValueError(f"normalization must be 'source' or 'imagenet'; got {normalization!r}")
    wanted = sorted(np.unique(raw.labels).tolist()) if classes is None else [int(c) for c in classes]
    idx = select_indices(raw.labels, wanted, per_class, seed)
    images, boxes, parts = _standardise(raw.decode(idx), image_size, resize_mode)
    channels = channels or int(images.shape[1])
    images = _convert_channels(images, channels)
    mean, std = (raw.mean, raw.std) if normalization == "source" else (IMAGENET_MEAN, IMAGENET_STD)
    remap = {c: k for k, c in enumerate(wanted)}
    return ImageSet(
        images=images.contiguous(),
        labels=torch.tensor([remap[int(c)] for c in raw.labels[idx]], dtype=torch.int64),
        class_names=tuple(raw.class_names[c] for c in wanted),
        source_classes=tuple(wanted),
        source_index=torch.from_numpy(idx.astype(np.int64)),
        mean=_convert_stats(tuple(mean), channels),
        std=_convert_stats(tuple(std), channels),
        boxes=None if boxes is None else boxes.float(),
        parts=None if parts is None else parts.float(),
        part_names=raw.part_names if parts is not None else (),
    )


def prepare_task(
    source: str,
    classes: Sequence[int] | None,
    *,
    root: str | os.PathLike[str] | None = None,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
    channels: int | None = None,
    resize_mode: str = "stretch",
    normalization: str | None = None,
    download: bool = False,
    source_options: dict[str, Any] | None = None,
    raw: dict[str, RawSplit] | None = None,
) -> TaskData:
    """Build one task (train + test over ``classes``) from a source.

    Pass ``raw`` (split → :class:`RawSplit`) to reuse opened splits for several tasks.
    """
    options = dict(source_options or {})
    norm = normalization or SOURCES[source].normalization
    splits = raw or {s: open_source(source, s, root, download=download, **options) for s in SPLITS}
    caps = {"train": train_per_class, "test": test_per_class}
    kw = dict(
        seed=seed, image_size=image_size, channels=channels, resize_mode=resize_mode, normalization=norm
    )
    parts = {s: prepare_split(splits[s], classes, caps[s], **kw) for s in SPLITS}  # type: ignore[arg-type]
    info = {
        "source": source,
        "root": splits["train"].root,
        "classes": list(parts["train"].source_classes),
        "train_per_class": train_per_class,
        "test_per_class": test_per_class,
        "seed": seed,
        "image_size": list(parts["train"].image_size),
        "channels": parts["train"].channels,
        "resize_mode": resize_mode,
        "normalization": norm,
        "source_options": options,
        "train_counts": parts["train"].class_counts(),
        "test_counts": parts["test"].class_counts(),
    }
    return TaskData(train=parts["train"], test=parts["test"], info=info)


# ----------------------------------------------------------------------------------------------
# Preparation
# ----------------------------------------------------------------------------------------------


def prepare_text_split(
    raw: RawText, classes: Sequence[int] | None = None, per_class: int | None = None, *, seed: int = 0
) -> TextSet:
    """Keep ``classes`` (relabelled 0..K-1 in the given order), at most ``per_class`` sentences each,
    drawn with ``seed`` exactly as images are (:func:`~pretrain_knowledge.data.prepare.select_indices`)."""
    wanted = sorted(np.unique(raw.labels).tolist()) if classes is None else [int(c) for c in classes]
    idx = select_indices(raw.labels, wanted, per_class, seed)
    remap = {c: k for k, c in enumerate(wanted)}
    return TextSet(
        words=tuple(raw.words[i] for i in idx),
        labels=torch.tensor([remap[int(c)] for c in raw.labels[idx]], dtype=torch.int64),
        class_names=tuple(raw.class_names[c] for c in wanted),
        source_classes=tuple(wanted),
        source_index=torch.from_numpy(idx.astype(np.int64)),
    )


def prepare_text_task(
    source: str,
    classes: Sequence[int] | None,
    *,
    root: str | os.PathLike[str] | None = None,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int = 0,
    download: bool = False,
    source_options: dict[str, Any] | None = None,
    raw: dict[str, RawText] | None = None,
) -> TextTask:
    """Build one text task (train + test over ``classes``) from a text source."""
    options = dict(source_options or {})
    splits = raw or {s: open_source(source, s, root, download=download, **options) for s in SPLITS}
    caps = {"train": train_per_class, "test": test_per_class}
    parts = {s: prepare_text_split(splits[s], classes, caps[s], seed=seed) for s in SPLITS}  # type: ignore[arg-type]
    info = {
        "source": source,
        "modality": "text",
        "root": splits["train"].root,
        "classes": list(parts["train"].source_classes),
        "train_per_class": train_per_class,
        "test_per_class": test_per_class,
        "seed": seed,
        "source_options": options,
        "max_words": source_facts(source, options).max_words,
        "vocabulary": list(splits["train"].vocabulary),
        "train_counts": parts["train"].class_counts(),
        "test_counts": parts["test"].class_counts(),
    }
    return TextTask(train=parts["train"], test=parts["test"], info=info)
