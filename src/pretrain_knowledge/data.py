"""Datasets: named sources, class subsets and caps, and the prepared tensor files stages read.

Every source is opened as a :class:`RawSplit` (labels known, pixels decoded on demand), so class
subsets and per-class caps are applied *before* any image is decoded; a 200-class CUB tree costs
only the images that are kept. :func:`prepare_split` then decodes, resizes and converts the kept
images into an :class:`ImageSet`, a typed, in-memory split that :func:`save_task` writes as one
prepared file per task (``train`` and ``test`` splits together). Training and interaction
extraction read those files, so every stage sees the same pixels.

Normalisation (documented once, stored in every prepared file and checkpoint): images are kept as
``uint8`` in ``[0, 255]``; a model sees ``(x / 255 - mean) / std`` per channel. ``mean`` and
``std`` are the source's training-split statistics (``normalization="source"``, the default for
the small datasets) or ImageNet's (``normalization="imagenet"``, the default for CUB, Cars and
image folders, which are meant for ImageNet-pretrained models). Zero in normalised space is
therefore the dataset mean, the default masking baseline of method.md §2.

Annotations (bounding boxes, part keypoints) are stored in pixel coordinates of the *stored*
image, i.e. after resizing/cropping: a pixel ``(row i, column j)`` covers ``[j, j+1) × [i, i+1)``
in ``(x, y)``. Boxes are ``(x0, y0, x1, y1)``; parts are ``(x, y, visible)`` with visible 0/1.
Keypoints that a crop pushes out of the image are marked invisible.

Sources: ``fashion_mnist``, ``mnist``, ``cifar10``, ``cub200``, ``stanford_cars``,
``imagefolder`` and ``synthetic`` (generated, for tests and the tiny workflow config).
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from pretrain_knowledge.io import save_torch

FASHION_MNIST_DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's "L" conversion

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

# Training-split statistics of the fixed datasets (per channel, pixel values scaled to [0, 1]).
_SOURCE_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}

SPLITS = ("train", "test")


class DatasetError(FileNotFoundError):
    """A data file is missing, unreadable or malformed; the message says where and how to fix it."""


# --------------------------------------------------------------------------------------------
# Typed containers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartLocation:
    """One annotated keypoint of an image, in stored-image pixel coordinates."""

    name: str
    x: float
    y: float
    visible: bool


@dataclass(frozen=True)
class ImageAnnotation:
    """What a dataset knows about one image beyond its label (used by player-selection rules)."""

    box: tuple[float, float, float, float] | None
    """(x0, y0, x1, y1) of the object's bounding box, or None if the dataset has none."""
    parts: tuple[PartLocation, ...]


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


# --------------------------------------------------------------------------------------------
# Raw sources
# --------------------------------------------------------------------------------------------


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


def _missing(path: Path, expected: str, fix: str) -> DatasetError:
    return DatasetError(f"{path}: expected {expected}, but it is missing or unreadable. {fix}")


def _read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read idx file ({err})") from err
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
                f"{FASHION_MNIST_DEFAULT_ROOT}, or"
                if name == "fashion_mnist"
                else "Either"
            )
            raise _missing(
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
    mean, std = _SOURCE_STATS[name]
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


def _open_fashion_mnist(root: Path | None, split: str, download: bool, **_: Any) -> RawSplit:
    return _idx_source(
        "fashion_mnist",
        root or FASHION_MNIST_DEFAULT_ROOT,
        split,
        download,
        "FashionMNIST",
        FASHION_MNIST_CLASSES,
        "FashionMNIST",
    )


def _open_mnist(root: Path | None, split: str, download: bool, **_: Any) -> RawSplit:
    root = _require_root("mnist", root)
    return _idx_source("mnist", root, split, download, "MNIST", MNIST_CLASSES, "MNIST")


def _require_root(name: str, root: Path | None) -> Path:
    if root is None:
        raise DatasetError(f"source {name!r} needs a data root (--root / data.root); none was given")
    return root


def _open_cifar10(root: Path | None, split: str, download: bool, **_: Any) -> RawSplit:
    """CIFAR-10's python batches, read directly so fake test trees need no matching checksums."""
    root = _require_root("cifar10", root)
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
            raise _missing(
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
    mean, std = _SOURCE_STATS["cifar10"]
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


def _read_image(path: Path) -> Tensor:
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    try:
        with Image.open(path) as img:
            return pil_to_tensor(img.convert("RGB"))
    except OSError as err:
        raise DatasetError(f"{path}: cannot read image ({err})") from err


def _decode_files(paths: Sequence[Path], name: str) -> list[Tensor]:
    return [_read_image(p) for p in tqdm(paths, desc=f"decode {name}", unit="img", disable=len(paths) < 200)]


def _read_table(path: Path, fix: str, expected: str) -> list[list[str]]:
    if not path.is_file():
        raise _missing(path, expected, fix)
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _open_cub200(root: Path | None, split: str, download: bool, **_: Any) -> RawSplit:
    """CUB-200-2011 in its official layout, with boxes and the 15 part keypoints."""
    root = _require_root("cub200", root)
    base = root / "CUB_200_2011" if (root / "CUB_200_2011").is_dir() else root
    fix = (
        "Download CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ and unpack it "
        "so that the root holds CUB_200_2011/ (images.txt, images/, parts/, ...). It cannot be downloaded "
        "automatically."
    )
    if download:
        raise DatasetError(f"cub200 cannot be downloaded automatically. {fix}")
    images = {
        int(r[0]): " ".join(r[1:]) for r in _read_table(base / "images.txt", fix, "'<id> <path>' lines")
    }
    labels = {
        int(r[0]): int(r[1]) - 1 for r in _read_table(base / "image_class_labels.txt", fix, "'<id> <class>'")
    }
    is_train = {
        int(r[0]): r[1] == "1" for r in _read_table(base / "train_test_split.txt", fix, "'<id> <0|1>'")
    }
    bbox = {
        int(r[0]): [float(v) for v in r[1:5]] for r in _read_table(base / "bounding_boxes.txt", fix, "boxes")
    }
    classes = sorted(
        (int(r[0]), " ".join(r[1:])) for r in _read_table(base / "classes.txt", fix, "'<id> <name>'")
    )
    part_rows = _read_table(base / "parts" / "parts.txt", fix, "'<part id> <name>' lines")
    part_ids = [int(r[0]) for r in part_rows]
    part_names = tuple(" ".join(r[1:]) for r in part_rows)
    ids = sorted(i for i in images if is_train.get(i) == (split == "train"))
    missing = [i for i in ids if i not in labels or i not in bbox]
    if missing:
        raise DatasetError(f"{base}: image ids {missing[:5]} lack a class label or bounding box")
    row_of = {img_id: row for row, img_id in enumerate(ids)}
    col_of = {pid: col for col, pid in enumerate(part_ids)}
    parts = np.zeros((len(ids), len(part_ids), 3), dtype=np.float32)
    for r in _read_table(base / "parts" / "part_locs.txt", fix, "'<img> <part> <x> <y> <visible>' lines"):
        row = row_of.get(int(r[0]))
        if row is not None:
            parts[row, col_of[int(r[1])]] = (float(r[2]), float(r[3]), float(r[4]))
    boxes = np.asarray([bbox[i] for i in ids], dtype=np.float32)
    boxes[:, 2:] += boxes[:, :2]  # (x, y, w, h) → (x0, y0, x1, y1)
    paths = [base / "images" / images[i] for i in ids]

    def decode(idx: np.ndarray) -> RawBatch:
        return RawBatch(
            images=_decode_files([paths[i] for i in idx], "cub200"),
            boxes=torch.from_numpy(boxes[idx]),
            parts=torch.from_numpy(parts[idx]),
        )

    return RawSplit(
        name="cub200",
        split=split,
        labels=np.asarray([labels[i] for i in ids], dtype=np.int64),
        class_names=tuple(n for _, n in classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        decode=decode,
        part_names=part_names,
        root=str(root),
    )


def _open_stanford_cars(root: Path | None, split: str, download: bool, **_: Any) -> RawSplit:
    """torchvision's StanfordCars for files and labels; boxes read from the same annotation file."""
    import scipy.io as sio
    import torchvision.datasets as tvd

    root = _require_root("stanford_cars", root)
    fix = (
        "Place the dataset as torchvision's StanfordCars expects: <root>/stanford_cars/ with devkit/ "
        "(cars_meta.mat, cars_train_annos.mat), cars_train/, cars_test/ and cars_test_annos_withlabels.mat. "
        "The original download URL is gone; the Kaggle mirror has the same files."
    )
    if download:
        raise DatasetError(f"stanford_cars cannot be downloaded automatically. {fix}")
    try:
        ds = tvd.StanfordCars(str(root), split=split, download=False)
    except (RuntimeError, FileNotFoundError, OSError) as err:
        raise _missing(root / "stanford_cars", "torchvision's StanfordCars layout", f"{fix} ({err})") from err
    annos = sio.loadmat(ds._annotations_mat_path, squeeze_me=True)["annotations"]
    annos = np.atleast_1d(annos)
    boxes = np.asarray(
        [[float(a["bbox_x1"]), float(a["bbox_y1"]), float(a["bbox_x2"]), float(a["bbox_y2"])] for a in annos],
        dtype=np.float32,
    )
    paths = [Path(p) for p, _ in ds._samples]

    def decode(idx: np.ndarray) -> RawBatch:
        return RawBatch(
            images=_decode_files([paths[i] for i in idx], "stanford_cars"), boxes=torch.from_numpy(boxes[idx])
        )

    return RawSplit(
        name="stanford_cars",
        split=split,
        labels=np.asarray([c for _, c in ds._samples], dtype=np.int64),
        class_names=tuple(str(c) for c in ds.classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        decode=decode,
        root=str(root),
    )


def _open_imagefolder(root: Path | None, split: str, download: bool, **_: Any) -> RawSplit:
    """Any torchvision ImageFolder tree, one per split: ``<root>/train/<class>/*`` and ``<root>/test/...``."""
    import torchvision.datasets as tvd

    root = _require_root("imagefolder", root)
    folder = root / split
    if not folder.is_dir():
        raise _missing(
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
        decode=lambda idx: RawBatch(images=_decode_files([paths[i] for i in idx], "imagefolder")),
        root=str(root),
    )


# --------------------------------------------------------------------------------------------
# Synthetic source
# --------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class SyntheticSpec:
    """How the synthetic source generates images.

    Each class is a fixed layout of ``motifs_per_class`` stroke motifs on a 3×3 grid of cells,
    drawn from one shared bank of 8 motifs. Images jitter each motif, vary its contrast, add a
    distractor motif and Gaussian noise. Because every class is built from the same motifs,
    features learned on one class subset (upstream) transfer to a disjoint one (downstream).
    The layouts depend only on ``structure_seed``; the samples on ``seed`` and the split.
    """

    num_classes: int = 10
    train_per_class: int = 200
    test_per_class: int = 100
    image_size: int = 28
    channels: int = 1
    seed: int = 0
    structure_seed: int = 0
    noise: float = 0.25
    motifs_per_class: int = 3


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


def _open_synthetic(root: Path | None, split: str, download: bool, **options: Any) -> RawSplit:
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


SOURCES: dict[str, Callable[..., RawSplit]] = {
    "fashion_mnist": _open_fashion_mnist,
    "mnist": _open_mnist,
    "cifar10": _open_cifar10,
    "cub200": _open_cub200,
    "stanford_cars": _open_stanford_cars,
    "imagefolder": _open_imagefolder,
    "synthetic": _open_synthetic,
}
"""Registered sources: name → opener(root, split, download, **options)."""

SYNTHETIC_OPTIONS = tuple(SyntheticSpec.__dataclass_fields__)


def open_source(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    **options: Any,
) -> RawSplit:
    """Open one split of a registered source without decoding its images.

    ``options`` are source-specific; only ``synthetic`` takes any (the fields of
    :class:`SyntheticSpec`).
    """
    if name not in SOURCES:
        raise ValueError(f"unknown data source {name!r}; choose one of {sorted(SOURCES)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if options and name != "synthetic":
        raise ValueError(f"source {name!r} takes no options; got {sorted(options)}")
    return SOURCES[name](None if root is None else Path(root), split, download, **options)


# --------------------------------------------------------------------------------------------
# Selection and preparation
# --------------------------------------------------------------------------------------------


def parse_classes(spec: str | Sequence[int] | None) -> list[int] | None:
    """``"0-4"``, ``"0,2,5-7"``, a list of ints, or ``"all"``/None (every class)."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        return [int(c) for c in spec]
    text = spec.strip()
    if text.lower() in ("", "all"):
        return None
    out: list[int] = []
    for part in text.split(","):
        if "-" in part.strip()[1:]:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


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


def default_normalization(source: str) -> str:
    return "imagenet" if source in ("cub200", "stanford_cars", "imagefolder") else "source"


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
    norm = normalization or default_normalization(source)
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
