"""Typed image data: one split of a task (:class:`ImageSet`), a prepared task (:class:`TaskData`)
and its file, and a source split before decoding (:class:`RawSplit`).

Normalisation (documented once, stored in every prepared file and checkpoint): images are kept as
``uint8`` in ``[0, 255]``; a model sees ``(x / 255 - mean) / std`` per channel. Zero in normalised
space is therefore the dataset mean, the default masking baseline of method.md §2.

Annotations are stored in pixel coordinates of the *stored* image (after resizing or cropping): a
pixel ``(row i, column j)`` covers ``[j, j+1) × [i, i+1)`` in ``(x, y)``. Boxes are
``(x0, y0, x1, y1)``; parts are ``(x, y, visible)`` with visible 0/1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..io import save_torch
from .annotations import DatasetError, ImageAnnotation, PartLocation, missing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageSet:
    """One split of one task: uint8 images, labels ``0..K-1`` and optional per-image annotations.

    ``labels[i] = k`` means class ``class_names[k]``, which is class ``source_classes[k]`` of the
    source dataset; ``source_index[i]`` is the image's position in the source split, so results
    can always be traced back to the original file.
    """

    images: Tensor
    """uint8 (N, C, H, W)."""
    labels: Tensor
    """int64 (N,), values in 0..K-1."""
    class_names: tuple[str, ...]
    source_classes: tuple[int, ...]
    source_index: Tensor
    """int64 (N,)."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    boxes: Tensor | None = None
    """float32 (N, 4) boxes (x0, y0, x1, y1) in stored-image pixels, or None."""
    parts: Tensor | None = None
    """float32 (N, P, 3) keypoints (x, y, visible) in stored-image pixels, or None."""
    part_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W); got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if tuple(self.labels.shape) != (n,) or tuple(self.source_index.shape) != (n,):
            raise ValueError("labels and source_index must have one entry per image")
        if len(self.class_names) != len(self.source_classes):
            raise ValueError("class_names and source_classes must have the same length")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean/std need {self.channels} channel values; got {self.mean}, {self.std}")
        if self.boxes is not None and tuple(self.boxes.shape) != (n, 4):
            raise ValueError(f"boxes must be (N, 4); got {tuple(self.boxes.shape)}")
        if self.parts is not None:
            if self.parts.ndim != 3 or self.parts.shape[0] != n or self.parts.shape[2] != 3:
                raise ValueError(f"parts must be (N, P, 3); got {tuple(self.parts.shape)}")
            if len(self.part_names) != self.parts.shape[1]:
                raise ValueError("part_names must name every part")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 images (any device) → float32 model input, per the module's normalisation."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        return (images.float() / 255.0 - mean) / std

    def batch(self, idx: Tensor, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """(normalised images, labels) of rows ``idx``: the data-container side of the training loop
        (text sets answer the same call with token ids, :class:`~pretrain_knowledge.data.text.EncodedText`)."""
        x = self.normalize(self.images[idx].to(device, non_blocking=True))
        return x, self.labels[idx].to(device, non_blocking=True)

    def normalized(self, index: Tensor | slice | None = None) -> Tensor:
        return self.normalize(self.images if index is None else self.images[index])

    def annotation(self, i: int) -> ImageAnnotation:
        box = None if self.boxes is None else tuple(float(v) for v in self.boxes[i].tolist())
        parts: tuple[PartLocation, ...] = ()
        if self.parts is not None:
            parts = tuple(
                PartLocation(name, float(x), float(y), bool(v > 0))
                for name, (x, y, v) in zip(self.part_names, self.parts[i].tolist(), strict=True)
            )
        return ImageAnnotation(box=box, parts=parts)  # type: ignore[arg-type]

    def take(self, index: Tensor | Sequence[int]) -> ImageSet:
        idx = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(
            images=self.images[idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            source_classes=self.source_classes,
            source_index=self.source_index[idx],
            mean=self.mean,
            std=self.std,
            boxes=None if self.boxes is None else self.boxes[idx],
            parts=None if self.parts is None else self.parts[idx],
            part_names=self.part_names,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of tensors and builtins: loadable with ``torch.load(weights_only=True)``."""
        return {
            "images": self.images.contiguous(),
            "labels": self.labels,
            "class_names": list(self.class_names),
            "source_classes": list(self.source_classes),
            "source_index": self.source_index,
            "mean": list(self.mean),
            "std": list(self.std),
            "boxes": self.boxes,
            "parts": self.parts,
            "part_names": list(self.part_names),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageSet:
        return cls(
            images=d["images"],
            labels=d["labels"],
            class_names=tuple(d["class_names"]),
            source_classes=tuple(int(c) for c in d["source_classes"]),
            source_index=d["source_index"],
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            boxes=d.get("boxes"),
            parts=d.get("parts"),
            part_names=tuple(d.get("part_names") or ()),
        )


@dataclass(frozen=True)
class TaskData:
    """A prepared task: train and test splits over the same classes, and how they were made."""

    train: ImageSet
    test: ImageSet
    info: dict[str, Any] = field(default_factory=dict)
    """Plain-dict provenance: source, root, classes, caps, seed, image size, normalisation."""

    def __post_init__(self) -> None:
        if self.train.class_names != self.test.class_names:
            raise ValueError("train and test splits must share their classes")

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


PREPARED_FORMAT = "pretrain_knowledge.prepared/1"


def save_task(task: TaskData, path: str | os.PathLike[str]) -> None:
    """Write a prepared task atomically; it reloads with ``torch.load(weights_only=True)``."""
    save_torch(
        {
            "format": PREPARED_FORMAT,
            "train": task.train.to_dict(),
            "test": task.test.to_dict(),
            "info": task.info,
        },
        path,
    )


def load_task(path: str | os.PathLike[str]) -> TaskData:
    """Read a file written by :func:`save_task` (``prepare-data``)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(
            f"prepared data file {p} does not exist; create it with "
            "`python -m pretrain_knowledge prepare-data ... --upstream-out/--downstream-out` "
            "(see `python -m pretrain_knowledge prepare-data --help`)"
        )
    try:
        d = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise DatasetError(
            f"prepared data file {p} is unreadable ({err}); delete it and rerun prepare-data"
        ) from err
    if not isinstance(d, dict) or d.get("format") != PREPARED_FORMAT:
        raise DatasetError(
            f"{p} is not a prepared data file (expected format {PREPARED_FORMAT!r}); rerun prepare-data"
        )
    return TaskData(
        train=ImageSet.from_dict(d["train"]), test=ImageSet.from_dict(d["test"]), info=dict(d["info"])
    )




@dataclass(frozen=True)
class RawBatch:
    """Decoded images before resizing: a uint8 stack, or a list when sizes differ."""

    images: Tensor | list[Tensor]
    boxes: Tensor | None = None
    """float32 (n, 4) in the original pixels."""
    parts: Tensor | None = None
    """float32 (n, P, 3) in the original pixels."""


@dataclass(frozen=True)
class RawSplit:
    """One split of a source: labels for every image; pixels decoded only for selected indices."""

    name: str
    split: str
    labels: np.ndarray
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    decode: Callable[[np.ndarray], RawBatch]
    part_names: tuple[str, ...] = ()
    root: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])



def read_image(path: Path) -> Tensor:
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    try:
        with Image.open(path) as img:
            return pil_to_tensor(img.convert("RGB"))
    except OSError as err:
        raise DatasetError(f"{path}: cannot read image ({err})") from err


def decode_files(paths: Sequence[Path], name: str) -> list[Tensor]:
    return [read_image(p) for p in tqdm(paths, desc=f"decode {name}", unit="img", disable=len(paths) < 200)]


def read_table(path: Path, fix: str, expected: str) -> list[list[str]]:
    if not path.is_file():
        raise missing(path, expected, fix)
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


