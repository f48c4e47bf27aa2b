"""Stanford Cars from its devkit annotation files, with bounding boxes.

Layout (as torchvision's ``StanfordCars`` expects it, and as the Kaggle mirror unpacks)::

    <root>/stanford_cars/devkit/cars_meta.mat            class_names (1 × 196 cell array)
    <root>/stanford_cars/devkit/cars_train_annos.mat     annotations: bbox_x1 … bbox_y2, class, fname
    <root>/stanford_cars/cars_test_annos_withlabels.mat  the same for the test split
    <root>/stanford_cars/cars_train/*.jpg, cars_test/*.jpg

Read directly with scipy, so nothing depends on a torchvision class's private attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .annotations import DatasetError, missing
from .idx import require_root
from .images import IMAGENET_MEAN, IMAGENET_STD, RawBatch, RawSplit, decode_files

_FIX = (
    "Place the dataset as <root>/stanford_cars/ with devkit/ (cars_meta.mat, cars_train_annos.mat), "
    "cars_train/, cars_test/ and cars_test_annos_withlabels.mat. The original download URL is gone; "
    "the Kaggle mirror has the same files."
)


def _loadmat(path: Path, key: str) -> np.ndarray:
    import scipy.io as sio

    if not path.is_file():
        raise missing(path, f"a MATLAB file with {key!r}", _FIX)
    try:
        return np.atleast_1d(sio.loadmat(path, squeeze_me=True)[key])
    except (ValueError, KeyError, OSError) as err:
        raise DatasetError(f"{path}: cannot read {key!r} from it ({err}). {_FIX}") from err


def open_stanford_cars(root: Path | None, split: str, download: bool, **_: Any) -> RawSplit:
    """One split of Stanford Cars; labels are the 1-based annotation classes minus one."""
    root = require_root("stanford_cars", root)
    if download:
        raise DatasetError(f"stanford_cars cannot be downloaded automatically. {_FIX}")
    base = root / "stanford_cars"
    annos_path = base / "devkit" / "cars_train_annos.mat" if split == "train" else base / "cars_test_annos_withlabels.mat"
    folder = base / f"cars_{split}"
    if not folder.is_dir():
        raise missing(folder, f"the {split} images", _FIX)
    annos = _loadmat(annos_path, "annotations")
    class_names = tuple(str(c) for c in _loadmat(base / "devkit" / "cars_meta.mat", "class_names").tolist())
    boxes = np.asarray(
        [[float(a["bbox_x1"]), float(a["bbox_y1"]), float(a["bbox_x2"]), float(a["bbox_y2"])] for a in annos],
        dtype=np.float32,
    )
    paths = [folder / str(a["fname"]) for a in annos]
    labels = np.asarray([int(a["class"]) - 1 for a in annos], dtype=np.int64)

    def decode(idx: np.ndarray) -> RawBatch:
        return RawBatch(
            images=decode_files([paths[i] for i in idx], "stanford_cars"), boxes=torch.from_numpy(boxes[idx])
        )

    return RawSplit(
        name="stanford_cars",
        split=split,
        labels=labels,
        class_names=class_names,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        decode=decode,
        root=str(root),
    )
