"""Any image-folder tree: ``<root>/train/<class>/<image>`` and ``<root>/test/<class>/<image>``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .annotations import DatasetError, missing
from .idx import require_root
from .images import IMAGENET_MEAN, IMAGENET_STD, RawBatch, RawSplit, decode_files


def open_imagefolder(root: Path | None, split: str, download: bool, **_: Any) -> RawSplit:
    """Any torchvision ImageFolder tree, one per split: ``<root>/train/<class>/*`` and ``<root>/test/...``."""
    import torchvision.datasets as tvd

    root = require_root("imagefolder", root)
    folder = root / split
    if not folder.is_dir():
        raise missing(
            folder, f"an ImageFolder tree for the {split} split (<root>/{split}/<class>/<image>)", ""
        )
    ds = tvd.ImageFolder(str(folder))
    if split == "test" and (root / "train").is_dir():
        train_classes = sorted(e.name for e in os.scandir(root / "train") if e.is_dir())
        if train_classes != ds.classes:
            raise DatasetError(
                f"{folder}: its classes {ds.classes} differ from {root / 'train'}: {train_classes}"
            )
    paths = [Path(p) for p, _ in ds.samples]
    return RawSplit(
        name="imagefolder",
        split=split,
        labels=np.asarray(ds.targets, dtype=np.int64),
        class_names=tuple(ds.classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        decode=lambda idx: RawBatch(images=decode_files([paths[i] for i in idx], "imagefolder")),
        root=str(root),
    )


