"""MNIST-style idx files: Fashion-MNIST (the default, from the Debian package) and MNIST.

The Debian package ``dataset-fashion-mnist`` ships the four files gzipped; torchvision's
``<root>/FashionMNIST/raw/`` layout is accepted too.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..catalog import FASHION_MNIST_DEFAULT_ROOT
from .annotations import DatasetError, missing
from .images import RawBatch, RawSplit

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(d) for d in range(10))
# Training-split statistics (per channel, pixel values scaled to [0, 1]).
_STATS = {"fashion_mnist": ((0.2860,), (0.3530,)), "mnist": ((0.1307,), (0.3081,))}


def _read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(
            f"{path}: cannot read this idx file ({type(err).__name__}: {err}); it is truncated or "
            "corrupt. Reinstall it (apt-get install --reinstall dataset-fashion-mnist for the "
            "default Fashion-MNIST root) or download it again."
        ) from err
    if len(data) < 4:
        raise DatasetError(f"{path}: truncated idx file")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte idx file (magic {data[:4].hex()})")
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: truncated idx header; re-download or reinstall the file")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: idx header says {dims} but holds {body.size} bytes")
    return body.reshape(dims)


def _find_idx(root: Path, stem: str, subdir: str) -> Path | None:
    for folder in (root, root / subdir / "raw", root / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _idx_source(
    name: str, root: Path, split: str, download: bool, subdir: str, classes: tuple[str, ...], tv_class: str
) -> RawSplit:
    prefix = "train" if split == "train" else "t10k"
    if download:
        import torchvision.datasets as tvd

        try:
            getattr(tvd, tv_class)(str(root), train=split == "train", download=True)
        except Exception as err:  # noqa: BLE001 - network errors come in many types
            raise DatasetError(f"downloading {name} into {root} with torchvision failed: {err}") from err
    paths = {}
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        found = _find_idx(root, f"{prefix}-{kind}", subdir)
        if found is None:
            fix = (
                "Install the Debian package (apt-get install dataset-fashion-mnist) for the default root "
                f"{Path(FASHION_MNIST_DEFAULT_ROOT)}, or"
                if name == "fashion_mnist"
                else "Either"
            )
            raise missing(
                root,
                f"the idx file {prefix}-{kind}[.gz] (directly, or in {subdir}/raw/ as torchvision lays it out)",
                f"{fix} pass a root holding it, or ask for download (--download / data.download: true) when online.",
            )
        paths[kind] = found
    images = _read_idx(paths["images-idx3-ubyte"])
    labels = _read_idx(paths["labels-idx1-ubyte"]).astype(np.int64)
    if images.ndim != 3 or images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{paths['images-idx3-ubyte']}: {images.shape} images do not match {labels.shape} labels"
        )
    tensor = torch.from_numpy(images.copy()).unsqueeze(1)
    mean, std = _STATS[name]
    return RawSplit(
        name=name,
        split=split,
        labels=labels,
        class_names=classes,
        mean=mean,
        std=std,
        decode=lambda idx: RawBatch(images=tensor[torch.from_numpy(idx)]),
        root=str(root),
    )


def open_fashion_mnist(root: Path | None, split: str, download: bool, **_: Any) -> RawSplit:
    return _idx_source(
        "fashion_mnist",
        root or Path(FASHION_MNIST_DEFAULT_ROOT),
        split,
        download,
        "FashionMNIST",
        FASHION_MNIST_CLASSES,
        "FashionMNIST",
    )


def open_mnist(root: Path | None, split: str, download: bool, **_: Any) -> RawSplit:
    root = require_root("mnist", root)
    return _idx_source("mnist", root, split, download, "MNIST", MNIST_CLASSES, "MNIST")




def require_root(name: str, root: Path | None) -> Path:
    if root is None:
        raise DatasetError(f"source {name!r} needs a data root (--root / data.root); none was given")
    return root


