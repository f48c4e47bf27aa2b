"""CIFAR-10's python batches, read directly (torchvision's ``cifar-10-batches-py/`` layout)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .annotations import DatasetError, missing
from .idx import require_root
from .images import RawBatch, RawSplit

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def open_cifar10(root: Path | None, split: str, download: bool, **_: Any) -> RawSplit:
    """CIFAR-10's python batches, read directly so fake test trees need no matching checksums."""
    root = require_root("cifar10", root)
    if download:
        import torchvision.datasets as tvd

        try:
            tvd.CIFAR10(str(root), train=split == "train", download=True)
        except Exception as err:  # noqa: BLE001
            raise DatasetError(f"downloading cifar10 into {root} with torchvision failed: {err}") from err
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    arrays, labels = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise missing(
                path,
                "a CIFAR-10 python batch (torchvision layout <root>/cifar-10-batches-py/)",
                "Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it "
                "under the root, or ask for download (--download) when online.",
            )
        with open(path, "rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
        arrays.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    tensor = torch.from_numpy(np.concatenate(arrays))
    mean, std = _STATS
    return RawSplit(
        name="cifar10",
        split=split,
        labels=np.asarray(labels, dtype=np.int64),
        class_names=CIFAR10_CLASSES,
        mean=mean,
        std=std,
        decode=lambda idx: RawBatch(images=tensor[torch.from_numpy(idx)]),
        root=str(root),
    )


