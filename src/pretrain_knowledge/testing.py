"""Tiny fake dataset trees in each paper dataset's real on-disk layout, and fake ImageNet weights.

The paper-scale datasets (CUB-200-2011, Stanford Cars, CIFAR-10) and ImageNet weights cannot be
downloaded here or in CI, yet the loaders, the annotation-based player rules and the whole paper
workflow must be exercised on *their* file formats, not on a convenient substitute. These
generators write a few images per class in exactly the layout the real archives unpack to, so
the same code paths run; ``python -m pretrain_knowledge make-fixtures`` does it from the shell
(e.g. to smoke-test ``config/paper.yaml`` on a laptop before spending GPU hours).

Every image shows one object: a class-coloured ellipse on a noisy, class-tinted background,
filling the written bounding box, so that even randomly initialised networks separate the classes after a
few steps and annotation-based players can be checked against the box. Everything is seeded:
the same arguments write byte-identical text and label files and identical pixels.

Each writer returns a :class:`FakeTree` that records the ground truth it wrote (labels, splits,
boxes and keypoints in *original* image pixels) so tests can compare the loaders against it.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.cifar import CIFAR10_CLASSES

CUB_PARTS = (
    "back",
    "beak",
    "belly",
    "breast",
    "crown",
    "forehead",
    "left eye",
    "left leg",
    "left wing",
    "nape",
    "right eye",
    "right leg",
    "right wing",
    "tail",
    "throat",
)
"""The 15 part names of CUB-200-2011's parts/parts.txt, in file order (part ids 1…15)."""


# Class colours, the first three far apart in brightness (which random ReLU networks pick up
# first), the rest well-separated hues.
_PALETTE = np.array(
    [
        (250, 250, 250),
        (10, 10, 10),
        (40, 180, 60),
        (220, 40, 40),
        (40, 80, 220),
        (230, 200, 30),
        (200, 50, 200),
        (30, 200, 210),
        (240, 130, 20),
        (120, 60, 20),
    ],
    dtype=np.float64,
)

FIXTURE_DATASETS = ("cub200", "stanford_cars", "cifar10")


@dataclass(frozen=True)
class FakeImage:
    """Ground truth of one written image (coordinates in its original pixels)."""

    image_id: int
    """1-based id as the dataset numbers it (CUB ids, Cars annotation order; CIFAR row + 1)."""
    label: int
    """0-based class index (the loaders' convention)."""
    train: bool
    path: str
    """File path relative to the dataset root ('' for CIFAR-10, whose pixels live in batches)."""
    width: int
    height: int
    box: tuple[float, float, float, float] | None
    """(x0, y0, x1, y1) of the object, or None (CIFAR-10 has no boxes)."""
    parts: tuple[tuple[float, float, bool], ...] = ()
    """(x, y, visible) per part id 1…15 (CUB only); invisible parts are written as 0 0 0."""


@dataclass(frozen=True)
class FakeTree:
    """What a writer put on disk: the root to give the loader, class names and every image."""

    source: str
    root: Path
    class_names: tuple[str, ...]
    images: tuple[FakeImage, ...]

    def split(self, train: bool) -> list[FakeImage]:
        """Images of one split, in the order the loaders enumerate them (ascending id)."""
        return sorted((im for im in self.images if im.train == train), key=lambda im: im.image_id)


def _draw(
    rng: np.random.Generator, width: int, height: int, label: int, box: tuple[float, float, float, float]
) -> np.ndarray:
    """uint8 (H, W, 3): an ellipse of the class colour filling ``box`` on a noisy background.

    The background is tinted towards the class colour too, so the whole image carries the class
    and random networks separate the classes after a few steps.
    """
    tint = 0.5 * _PALETTE[label % len(_PALETTE)] + 0.5 * 120.0
    image = tint + rng.normal(0.0, 20.0, size=(height, width, 3))
    x0, y0, x1, y1 = box
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    ry, rx = max((y1 - y0) / 2, 1.0), max((x1 - x0) / 2, 1.0)
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 <= 1.0
    colour = _PALETTE[label % len(_PALETTE)] + rng.normal(0.0, 12.0, size=3)
    image[inside] = colour + rng.normal(0.0, 10.0, size=(int(inside.sum()), 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _random_box(rng: np.random.Generator, width: int, height: int) -> tuple[float, float, float, float]:
    """An integer box covering 45–80 % of each side, placed at random inside the image."""
    bw = int(rng.integers(int(0.45 * width), int(0.8 * width) + 1))
    bh = int(rng.integers(int(0.45 * height), int(0.8 * height) + 1))
    x0 = int(rng.integers(0, width - bw + 1))
    y0 = int(rng.integers(0, height - bh + 1))
    return float(x0), float(y0), float(x0 + bw), float(y0 + bh)


def _save_jpeg(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="RGB").save(path, format="JPEG", quality=95)


def _sizes(rng: np.random.Generator, low: int, high: int) -> tuple[int, int]:
    """Varying (width, height), as in the real datasets, so the loaders must resize."""
    return int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))


def _check_counts(classes: int, train_per_class: int, test_per_class: int, max_classes: int) -> None:
    if not 2 <= classes <= max_classes:
        raise ValueError(f"fixtures need 2 … {max_classes} classes; got {classes}")
    # Two per split at least: scipy's squeeze_me turns a one-element .mat struct array into a
    # scalar, which torchvision's StanfordCars cannot iterate (the real files never have one).
    if train_per_class < 1 or test_per_class < 1 or classes * min(train_per_class, test_per_class) < 2:
        raise ValueError("fixtures need at least one image per class and two per split")


# ----------------------------------------------------------------------------------------------
# CUB-200-2011
# ----------------------------------------------------------------------------------------------


def write_cub200(
    root: str | os.PathLike[str],
    *,
    classes: int = 3,
    train_per_class: int = 6,
    test_per_class: int = 4,
    seed: int = 0,
    size: tuple[int, int] = (48, 80),
) -> FakeTree:
    """Write ``<root>/CUB_200_2011/`` as the official CUB_200_2011.tgz unpacks.

    Files: images.txt, image_class_labels.txt, classes.txt, train_test_split.txt,
    bounding_boxes.txt (x y width height), parts/parts.txt (the 15 part names),
    parts/part_locs.txt (image part x y visible; every image lists all 15 parts, invisible ones
    as 0.0 0.0 0) and images/<NNN.Class_name>/<Class_name>_<id>.jpg. Image ids interleave the
    splits, as in the real file. Visible keypoints lie inside the box; about a third of the parts
    of each image are invisible.
    """
    _check_counts(classes, train_per_class, test_per_class, 200)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 200]))
    base = Path(root) / "CUB_200_2011"
    names = [f"{c + 1:03d}.Fake_bird_{c + 1}" for c in range(classes)]
    images: list[FakeImage] = []
    image_id = 0
    for label, name in enumerate(names):
        splits = [True] * train_per_class + [False] * test_per_class
        rng.shuffle(splits)
        for is_train in splits:
            image_id += 1
            width, height = _sizes(rng, *size)
            box = _random_box(rng, width, height)
            parts = []
            for _ in CUB_PARTS:
                if rng.random() < 0.35:
                    parts.append((0.0, 0.0, False))
                else:
                    x = float(rng.integers(int(box[0]), int(box[2])))
                    y = float(rng.integers(int(box[1]), int(box[3])))
                    parts.append((x, y, True))
            rel = f"{name}/{name.split('.', 1)[1]}_{image_id:04d}.jpg"
            _save_jpeg(_draw(rng, width, height, label, box), base / "images" / rel)
            images.append(FakeImage(image_id, label, is_train, rel, width, height, box, tuple(parts)))

    def lines(rows: list[str]) -> str:
        return "".join(f"{row}\n" for row in rows)

    (base / "parts").mkdir(parents=True, exist_ok=True)
    (base / "classes.txt").write_text(lines([f"{c + 1} {n}" for c, n in enumerate(names)]))
    (base / "images.txt").write_text(lines([f"{im.image_id} {im.path}" for im in images]))
    (base / "image_class_labels.txt").write_text(lines([f"{im.image_id} {im.label + 1}" for im in images]))
    (base / "train_test_split.txt").write_text(lines([f"{im.image_id} {int(im.train)}" for im in images]))
    boxes = []
    for im in images:
        assert im.box is not None
        x0, y0, x1, y1 = im.box
        boxes.append(f"{im.image_id} {x0:.1f} {y0:.1f} {x1 - x0:.1f} {y1 - y0:.1f}")
    (base / "bounding_boxes.txt").write_text(lines(boxes))
    (base / "parts" / "parts.txt").write_text(lines([f"{i + 1} {n}" for i, n in enumerate(CUB_PARTS)]))
    locs = [
        f"{im.image_id} {p + 1} {x:.1f} {y:.1f} {int(visible)}"
        for im in images
        for p, (x, y, visible) in enumerate(im.parts)
    ]
    (base / "parts" / "part_locs.txt").write_text(lines(locs))
    return FakeTree("cub200", Path(root), tuple(names), tuple(images))


# ----------------------------------------------------------------------------------------------
# Stanford Cars (torchvision's StanfordCars layout)
# ----------------------------------------------------------------------------------------------


def _savemat(path: Path, content: dict[str, np.ndarray]) -> None:
    """``scipy.io.savemat`` without the creation time it writes into the header, for byte-identical reruns."""
    import io

    import scipy.io as sio

    buffer = io.BytesIO()
    sio.savemat(buffer, content)
    data = bytearray(buffer.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by pretrain_knowledge.fixtures".ljust(116)
    path.write_bytes(bytes(data))


def _cars_annotations(images: list[FakeImage]) -> np.ndarray:
    """A 1×N struct array with the devkit's fields (bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname)."""
    dtype = [(f, object) for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    out = np.empty((1, len(images)), dtype=dtype)
    for k, im in enumerate(images):
        assert im.box is not None
        x0, y0, x1, y1 = (int(v) for v in im.box)
        out[0, k] = (
            np.uint16(x0),
            np.uint16(y0),
            np.uint16(x1),
            np.uint16(y1),
            np.uint8(im.label + 1),
            Path(im.path).name,
        )
    return out


def write_stanford_cars(
    root: str | os.PathLike[str],
    *,
    classes: int = 3,
    train_per_class: int = 6,
    test_per_class: int = 4,
    seed: int = 0,
    size: tuple[int, int] = (48, 80),
) -> FakeTree:
    """Write ``<root>/stanford_cars/`` as torchvision 0.29's ``StanfordCars(root)`` reads it.

    Files: devkit/cars_meta.mat (class_names, a 1×K cell array), devkit/cars_train_annos.mat and
    cars_test_annos_withlabels.mat (an ``annotations`` 1×N struct array with bbox_x1, bbox_y1,
    bbox_x2, bbox_y2, class (1-based) and fname), cars_train/NNNNN.jpg and cars_test/NNNNN.jpg.
    Each split numbers its files from 00001 like the real ones; classes are interleaved.
    """
    _check_counts(classes, train_per_class, test_per_class, 196)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 196]))
    base = Path(root) / "stanford_cars"
    names = [f"Fakemake Model{c + 1} Sedan {2000 + c}" for c in range(classes)]
    images: list[FakeImage] = []
    for is_train, per_class, folder in ((True, train_per_class, "cars_train"), (False, test_per_class, "cars_test")):
        labels = np.tile(np.arange(classes), per_class)
        for k, label in enumerate(labels, start=1):
            width, height = _sizes(rng, *size)
            box = tuple(float(int(v)) for v in _random_box(rng, width, height))
            rel = f"{folder}/{k:05d}.jpg"
            _save_jpeg(_draw(rng, width, height, int(label), box), base / rel)  # type: ignore[arg-type]
            images.append(FakeImage(k, int(label), is_train, rel, width, height, box))  # type: ignore[arg-type]
    (base / "devkit").mkdir(parents=True, exist_ok=True)
    meta = np.empty((1, classes), dtype=object)
    meta[0, :] = names
    _savemat(base / "devkit" / "cars_meta.mat", {"class_names": meta})
    train = [im for im in images if im.train]
    test = [im for im in images if not im.train]
    _savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": _cars_annotations(train)})
    _savemat(base / "cars_test_annos_withlabels.mat", {"annotations": _cars_annotations(test)})
    return FakeTree("stanford_cars", Path(root), tuple(names), tuple(images))


# ----------------------------------------------------------------------------------------------
# CIFAR-10 (python version)
# ----------------------------------------------------------------------------------------------


def write_cifar10(
    root: str | os.PathLike[str],
    *,
    classes: int = 3,
    train_per_class: int = 6,
    test_per_class: int = 4,
    seed: int = 0,
) -> FakeTree:
    """Write ``<root>/cifar-10-batches-py/`` as cifar-10-python.tar.gz unpacks.

    data_batch_1 … data_batch_5 and test_batch are pickles of a dict with ``batch_label``,
    ``labels`` (list of ints), ``data`` (uint8 N×3072, each row the red, then green, then blue
    32×32 plane) and ``filenames``; batches.meta holds ``label_names``. The training images are
    dealt round-robin over the five batches. Only the first ``classes`` of the ten classes occur.
    """
    _check_counts(classes, train_per_class, test_per_class, 10)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 10]))
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    images: list[FakeImage] = []
    rows: dict[bool, list[np.ndarray]] = {True: [], False: []}
    for is_train, per_class in ((True, train_per_class), (False, test_per_class)):
        for k, label in enumerate(np.tile(np.arange(classes), per_class)):
            box = (8.0, 8.0, 24.0, 24.0)
            pixels = _draw(rng, 32, 32, int(label), box)
            rows[is_train].append(pixels.transpose(2, 0, 1).reshape(-1))
            images.append(FakeImage(k + 1, int(label), is_train, "", 32, 32, None))

    def dump(name: str, entries: list[FakeImage], data: list[np.ndarray], batch_label: str) -> None:
        payload = {
            "batch_label": batch_label,
            "labels": [im.label for im in entries],
            "data": np.stack(data).astype(np.uint8) if data else np.zeros((0, 3072), np.uint8),
            "filenames": [f"fake_{CIFAR10_CLASSES[im.label]}_{im.image_id}.png" for im in entries],
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(payload, fh, protocol=2)

    train = [im for im in images if im.train]
    for b in range(5):
        dump(f"data_batch_{b + 1}", train[b::5], rows[True][b::5], f"training batch {b + 1} of 5")
    dump("test_batch", [im for im in images if not im.train], rows[False], "testing batch 1 of 1")
    with open(folder / "batches.meta", "wb") as fh:
        meta = {"num_cases_per_batch": 10000, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}
        pickle.dump(meta, fh, protocol=2)
    # Training images in the order the loader reads them: batch 1, then 2, … (not id order).
    ordered = [im for b in range(5) for im in train[b::5]]
    renumbered = [
        FakeImage(i + 1, im.label, True, "", 32, 32, None) for i, im in enumerate(ordered)
    ] + [im for im in images if not im.train]
    return FakeTree("cifar10", Path(root), CIFAR10_CLASSES[:classes], tuple(renumbered))


WRITERS = {"cub200": write_cub200, "stanford_cars": write_stanford_cars, "cifar10": write_cifar10}


# ----------------------------------------------------------------------------------------------
# Fake ImageNet weights
# ----------------------------------------------------------------------------------------------


def write_random_weights(arch: str, path: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Save a randomly initialised torchvision ``arch`` state dict, as the ImageNet files hold one.

    Same keys, shapes and dtypes as torchvision's published ``<arch>-<hash>.pth`` files (the
    1000-class head included), so the weights-loading path runs exactly as with real weights;
    only the values are random (ResNets with zero-initialised residual branches). BatchNorm
    running statistics are set from forward passes of random images, as training would have
    set them: left at their initial 0 / 1, a deep
    network's eval-mode activations blow up and nothing downstream of it could learn.
    Sizes: resnet50 ≈ 100 MB, vgg16 ≈ 530 MB, vit_b_16 ≈ 330 MB.
    """
    import torch
    import torchvision.models as tvm
    from torch import nn

    from .io import save_torch

    if arch == "vit_s_16":
        return _write_random_timm_vit_s(path, seed)
    if arch not in ("resnet18", "resnet50", "vgg16", "vit_b_16"):
        raise ValueError(f"no ImageNet architecture {arch!r}; choose resnet18, resnet50, vgg16, vit_b_16 or vit_s_16")
    torch.manual_seed(seed)
    # Residual branches start at zero (torchvision's zero_init_residual), as in a trained
    # ResNet whose blocks are near-identities: otherwise 16 random branches add up to features
    # ten times larger than real ImageNet features, and no learning rate suits them.
    model = getattr(tvm, arch)(**({"zero_init_residual": True} if arch.startswith("resnet") else {}))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the calibration batches
        model.train()
        with torch.no_grad():
            for _ in range(4):
                model(torch.randn(16, 3, 64, 64))
        for norm in norms:
            norm.momentum = 0.1
    save_torch(model.state_dict(), path)
    return Path(path)


def _write_random_timm_vit_s(path: str | os.PathLike[str], seed: int) -> Path:
    """Random ViT-S/16 weights under timm's key names (``vit_small_patch16_224``), the layout the
    ImageNet-21k → 1k files come in, so the key mapping of :mod:`pretrain_knowledge.models` runs."""
    import torch

    from .io import save_torch

    torch.manual_seed(seed)
    dim, mlp, layers = 384, 1536, 12
    state = {
        "cls_token": torch.randn(1, 1, dim) * 0.02,
        "pos_embed": torch.randn(1, 197, dim) * 0.02,
        "patch_embed.proj.weight": torch.randn(dim, 3, 16, 16) * 0.02,
        "patch_embed.proj.bias": torch.zeros(dim),
        "norm.weight": torch.ones(dim),
        "norm.bias": torch.zeros(dim),
        "head.weight": torch.randn(1000, dim) * 0.02,
        "head.bias": torch.zeros(1000),
    }
    for i in range(layers):
        shapes = {"norm1": (dim,), "attn.qkv": (3 * dim, dim), "attn.proj": (dim, dim), "norm2": (dim,),
                  "mlp.fc1": (mlp, dim), "mlp.fc2": (dim, mlp)}
        for name, shape in shapes.items():
            norm = name.startswith("norm")
            state[f"blocks.{i}.{name}.weight"] = torch.ones(shape) if norm else torch.randn(shape) * 0.02
            state[f"blocks.{i}.{name}.bias"] = torch.zeros(shape[0])
    save_torch(state, path)
    return Path(path)


def write_fixtures(
    out: str | os.PathLike[str],
    datasets: tuple[str, ...] = FIXTURE_DATASETS,
    *,
    classes: int = 3,
    train_per_class: int = 6,
    test_per_class: int = 4,
    seed: int = 0,
    weights: tuple[str, ...] = (),
) -> dict[str, FakeTree | Path]:
    """Write ``<out>/<dataset>/`` (the root to configure) for each dataset and ``<out>/weights/<arch>.pth``."""
    unknown = sorted(set(datasets) - set(WRITERS))
    if unknown:
        raise ValueError(f"no fixture writer for {unknown}; choose from {sorted(WRITERS)}")
    written: dict[str, FakeTree | Path] = {}
    for name in datasets:
        written[name] = WRITERS[name](
            Path(out) / name,
            classes=classes,
            train_per_class=train_per_class,
            test_per_class=test_per_class,
            seed=seed,
        )
    for arch in weights:
        written[arch] = write_random_weights(arch, Path(out) / "weights" / f"{arch}.pth", seed=seed)
    return written
