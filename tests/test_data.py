"""Data sources, class subsets, caps and prepared files, on generated data and tiny fake trees."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain_knowledge.catalog import SyntheticSpec
from pretrain_knowledge.data.annotations import DatasetError
from pretrain_knowledge.data.images import IMAGENET_MEAN, PREPARED_FORMAT, load_task, save_task
from pretrain_knowledge.data.prepare import prepare_split, prepare_task, select_indices
from pretrain_knowledge.data.sources import open_source
from pretrain_knowledge.data.synthetic import generate_synthetic
from pretrain_knowledge.spec import parse_classes

SMALL = dict(num_classes=6, train_per_class=30, test_per_class=10, image_size=16)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def _fake_idx_tree(root: Path, n_train: int = 60, n_test: int = 20, gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        suffix = ".gz" if gz else ""
        _write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        arrays[prefix] = images
        arrays[prefix + "_labels"] = labels
    return arrays


# --------------------------------------------------------------------------- subsets and caps


@pytest.mark.parametrize("classes,cap", [([4, 1, 3], 7), ([0, 5], None), ([2], 30)])
def test_class_subsets_and_caps_are_exact(classes, cap):
    raw = open_source("synthetic", "train", **SMALL)
    split = prepare_split(raw, classes, cap, seed=3)
    expected = min(cap or 30, 30)
    assert split.source_classes == tuple(classes)
    assert split.class_names == tuple(f"synthetic-{c}" for c in classes)
    assert split.class_counts() == [expected] * len(classes)
    # Labels are positions in the requested list, and map back to the source labels.
    assert np.array_equal(raw.labels[split.source_index.numpy()], np.asarray(classes)[split.labels.numpy()])
    assert torch.equal(split.images, raw.decode(split.source_index.numpy()).images)


def test_caps_depend_on_seed_and_class_only():
    labels = np.repeat(np.arange(5), 40)
    a = select_indices(labels, [1, 2], per_class=10, seed=0)
    b = select_indices(labels, [2, 1, 4], per_class=10, seed=0)
    c = select_indices(labels, [1, 2], per_class=10, seed=1)
    assert set(a) <= set(b)  # adding a class leaves other classes' draws alone
    assert not np.array_equal(a, c)
    assert np.array_equal(a, np.sort(a)) and len(np.unique(a)) == 20
    with pytest.raises(ValueError, match="do not occur"):
        select_indices(labels, [7])
    with pytest.raises(ValueError, match="duplicates"):
        select_indices(labels, [1, 1])


def test_parse_classes():
    assert parse_classes("0-4") == [0, 1, 2, 3, 4]
    assert parse_classes("5,7-8, 2") == [5, 7, 8, 2]
    assert parse_classes("all") is None and parse_classes(None) is None
    assert parse_classes([3, 1]) == [3, 1]


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_seedable():
    a = generate_synthetic(SyntheticSpec(**SMALL, seed=1), "train")
    b = generate_synthetic(SyntheticSpec(**SMALL, seed=1), "train")
    c = generate_synthetic(SyntheticSpec(**SMALL, seed=2), "train")
    t = generate_synthetic(SyntheticSpec(**SMALL, seed=1), "test")
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0][: len(t[0])], t[0])
    images, labels, boxes, parts = a
    assert images.shape == (180, 1, 16, 16) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [30] * 6
    # The parts are the class motifs' centres and lie inside the object box.
    inside = (parts[..., 0] >= boxes[:, None, 0]) & (parts[..., 0] <= boxes[:, None, 2])
    inside &= (parts[..., 1] >= boxes[:, None, 1]) & (parts[..., 1] <= boxes[:, None, 3])
    assert bool(inside.all())


def test_synthetic_classes_differ_in_their_mean_image():
    images, labels, _, _ = generate_synthetic(SyntheticSpec(**SMALL), "train")
    means = torch.stack([images[labels == c].float().mean(0) for c in range(6)])
    dist = torch.cdist(means.flatten(1), means.flatten(1))
    assert float(dist[~torch.eye(6, dtype=torch.bool)].min()) > 5.0


def test_synthetic_three_channels_and_stats():
    raw = open_source("synthetic", "train", **{**SMALL, "channels": 3})
    split = prepare_split(raw)
    assert split.channels == 3 and len(split.mean) == 3
    x = split.normalized()
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=0.02)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=0.02)


# --------------------------------------------------------------------------- idx sources


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_fashion_mnist_reads_idx_files(tmp_path, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "FashionMNIST" / "raw"
    arrays = _fake_idx_tree(folder, gz=layout == "flat")
    task = prepare_task("fashion_mnist", [5, 9], root=tmp_path, train_per_class=4)
    assert task.train.class_names == ("Sandal", "Ankle boot")
    assert task.train.class_counts() == [4, 4] and task.test.class_counts() == [2, 2]
    idx = task.train.source_index.numpy()
    assert np.array_equal(task.train.images[:, 0].numpy(), arrays["train"][idx])
    assert np.array_equal(task.test.images[:, 0].numpy(), arrays["t10k"][task.test.source_index.numpy()])
    assert task.train.mean == (0.2860,)


def test_missing_fashion_mnist_names_path_and_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        open_source("fashion_mnist", "train", missing)
    text = str(err.value)
    assert str(missing) in text and "train-images-idx3-ubyte" in text
    assert "dataset-fashion-mnist" in text and "download" in text


def test_corrupt_idx_file_is_reported(tmp_path):
    _fake_idx_tree(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00\x00\x00\x05"))
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        open_source("fashion_mnist", "train", tmp_path)


def test_truncated_gz_file_names_the_file(tmp_path):
    """The Debian package ships .gz files; a cut-off one used to raise a bare EOFError."""
    _fake_idx_tree(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz.*truncated"):
        open_source("fashion_mnist", "train", tmp_path)


def test_mnist_needs_a_root():
    with pytest.raises(DatasetError, match="needs a data root"):
        open_source("mnist", "train")


# --------------------------------------------------------------------------- cifar10 / imagefolder / cub


def test_cifar10_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), "labels": list(range(10))}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    task = prepare_task("cifar10", [3, 5], root=tmp_path, image_size=16)
    assert task.train.images.shape == (10, 3, 16, 16) and task.test.class_counts() == [1, 1]
    assert task.train.class_names == ("cat", "dog")
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz"):
        open_source("cifar10", "train", tmp_path / "empty")


def _save_png(path: Path, shape: tuple[int, int], value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*shape, 3), value, dtype=np.uint8)).save(path)


def test_imagefolder_resizes_mixed_sizes(tmp_path):
    for split in ("train", "test"):
        for c, name in enumerate(("ant", "bee")):
            for i in range(3):
                _save_png(tmp_path / split / name / f"{i}.png", (20 + 5 * i, 30), 40 * c + i)
    task = prepare_task("imagefolder", None, root=tmp_path, image_size=12)
    assert task.train.images.shape == (6, 3, 12, 12)
    assert task.train.class_names == ("ant", "bee") and task.train.mean == IMAGENET_MEAN
    with pytest.raises(ValueError, match="image size"):
        prepare_task("imagefolder", None, root=tmp_path)


def _fake_cub(root: Path) -> None:
    base = root / "CUB_200_2011"
    rows = []  # (id, class, is_train, path, (w, h), box xywh)
    for i in range(1, 7):
        cls = 1 + (i - 1) % 2
        rows.append(
            (i, cls, int(i <= 4), f"{cls:03d}.Bird{cls}/img{i}.jpg", (40, 20), (4.0, 2.0, 20.0, 10.0))
        )
    for i, cls, _, rel, (w, h), _ in rows:
        _save_png(base / "images" / rel, (h, w), 10 * i)
    (base / "images.txt").write_text("".join(f"{r[0]} {r[3]}\n" for r in rows))
    (base / "image_class_labels.txt").write_text("".join(f"{r[0]} {r[1]}\n" for r in rows))
    (base / "train_test_split.txt").write_text("".join(f"{r[0]} {r[2]}\n" for r in rows))
    (base / "bounding_boxes.txt").write_text("".join(f"{r[0]} {' '.join(map(str, r[5]))}\n" for r in rows))
    (base / "classes.txt").write_text("1 001.Bird1\n2 002.Bird2\n")
    (base / "parts").mkdir()
    (base / "parts" / "parts.txt").write_text("1 beak\n2 left wing\n")
    locs = []
    for r in rows:
        locs.append(f"{r[0]} 1 10.0 8.0 1\n")
        locs.append(f"{r[0]} 2 38.0 18.0 {r[0] % 2}\n")
    (base / "parts" / "part_locs.txt").write_text("".join(locs))


def test_cub200_split_boxes_and_parts_follow_resize(tmp_path):
    _fake_cub(tmp_path)
    train = prepare_split(open_source("cub200", "train", tmp_path), image_size=20)
    test = prepare_split(open_source("cub200", "test", tmp_path), image_size=20)
    assert len(train) == 4 and len(test) == 2
    assert train.class_names == ("001.Bird1", "002.Bird2") and train.part_names == ("beak", "left wing")
    # 40×20 → 20×20: x halves, y stays.
    assert torch.allclose(train.boxes[0], torch.tensor([2.0, 2.0, 12.0, 12.0]))
    ann = train.annotation(0)
    assert (
        ann.parts[0].name == "beak"
        and (ann.parts[0].x, ann.parts[0].y) == (5.0, 8.0)
        and ann.parts[0].visible
    )
    assert ann.parts[1].visible and train.annotation(1).parts[1].visible is False  # id 2: wing hidden
    # center_crop keeps the aspect ratio: 40×20 → 40×20 scaled to side 20 → crop x in [10, 30).
    crop = prepare_split(
        open_source("cub200", "train", tmp_path), image_size=20, resize_mode="center_crop"
    )
    assert crop.parts[0, 0].tolist() == [0.0, 8.0, 1.0]  # beak x 10 → 0 after the crop, kept
    assert crop.parts[0, 1].tolist() == [28.0, 18.0, 0.0]  # wing x 38 → 28: outside, marked invisible
    assert torch.allclose(crop.boxes[0], torch.tensor([0.0, 2.0, 14.0, 12.0]))


def test_cub200_missing_file_names_it(tmp_path):
    _fake_cub(tmp_path)
    (tmp_path / "CUB_200_2011" / "bounding_boxes.txt").unlink()
    with pytest.raises(DatasetError) as err:
        open_source("cub200", "train", tmp_path)
    assert "bounding_boxes.txt" in str(err.value) and "CUB_200_2011.tgz" in str(err.value)


def test_stanford_cars_reads_boxes(tmp_path):
    sio = pytest.importorskip("scipy.io")
    base = tmp_path / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    fields = [
        ("bbox_x1", "O"),
        ("bbox_y1", "O"),
        ("bbox_x2", "O"),
        ("bbox_y2", "O"),
        ("class", "O"),
        ("fname", "O"),
    ]
    for split, folder, mat in (
        ("train", "cars_train", base / "devkit" / "cars_train_annos.mat"),
        ("test", "cars_test", base / "cars_test_annos_withlabels.mat"),
    ):
        annos = np.array([(2, 4, 30, 16, 1, "a.jpg"), (0, 0, 20, 10, 2, "b.jpg")], dtype=fields)
        sio.savemat(mat, {"annotations": annos})
        for name in ("a.jpg", "b.jpg"):
            _save_png(base / folder / name, (20, 40), 99)
    sio.savemat(
        base / "devkit" / "cars_meta.mat", {"class_names": np.array(["Car A", "Car B"], dtype=object)}
    )
    split = prepare_split(open_source("stanford_cars", "train", tmp_path), image_size=10)
    assert split.class_names == ("Car A", "Car B") and split.labels.tolist() == [0, 1]
    assert torch.allclose(split.boxes[0], torch.tensor([0.5, 2.0, 7.5, 8.0]))  # ×(10/40, 10/20)
    with pytest.raises(DatasetError, match="stanford_cars"):
        open_source("stanford_cars", "train", tmp_path / "missing")


# --------------------------------------------------------------------------- prepared files


def test_prepared_file_roundtrip_weights_only(tmp_path):
    task = prepare_task("synthetic", [1, 3], train_per_class=5, source_options=SMALL)
    path = tmp_path / "task.pt"
    save_task(task, path)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == PREPARED_FORMAT
    back = load_task(path)
    assert torch.equal(back.train.images, task.train.images) and torch.equal(
        back.test.labels, task.test.labels
    )
    assert torch.equal(back.train.parts, task.train.parts) and back.train.part_names == task.train.part_names
    assert back.info == task.info and back.train.mean == task.train.mean


def test_missing_prepared_file_says_how_to_make_it(tmp_path):
    with pytest.raises(DatasetError, match="prepare-data"):
        load_task(tmp_path / "nope.pt")


def test_channel_conversion():
    task = prepare_task("synthetic", [0], train_per_class=2, channels=3, source_options=SMALL)
    assert task.train.channels == 3 and len(task.train.std) == 3
    assert torch.equal(task.train.images[:, 0], task.train.images[:, 2])
