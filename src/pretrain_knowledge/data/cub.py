"""CUB-200-2011 in its official layout (``CUB_200_2011/``), with boxes and the 15 part keypoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .annotations import DatasetError
from .idx import require_root
from .images import IMAGENET_MEAN, IMAGENET_STD, RawBatch, RawSplit, decode_files, read_table


def open_cub200(root: Path | None, split: str, download: bool, **_: Any) -> RawSplit:
    """CUB-200-2011 in its official layout, with boxes and the 15 part keypoints."""
    root = require_root("cub200", root)
    base = root / "CUB_200_2011" if (root / "CUB_200_2011").is_dir() else root
    fix = (
        "Download CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ and unpack it "
        "so that the root holds CUB_200_2011/ (images.txt, images/, parts/, ...). It cannot be downloaded "
        "automatically."
    )
    if download:
        raise DatasetError(f"cub200 cannot be downloaded automatically. {fix}")
    images = {
        int(r[0]): " ".join(r[1:]) for r in read_table(base / "images.txt", fix, "'<id> <path>' lines")
    }
    labels = {
        int(r[0]): int(r[1]) - 1 for r in read_table(base / "image_class_labels.txt", fix, "'<id> <class>'")
    }
    is_train = {
        int(r[0]): r[1] == "1" for r in read_table(base / "train_test_split.txt", fix, "'<id> <0|1>'")
    }
    bbox = {
        int(r[0]): [float(v) for v in r[1:5]] for r in read_table(base / "bounding_boxes.txt", fix, "boxes")
    }
    classes = sorted(
        (int(r[0]), " ".join(r[1:])) for r in read_table(base / "classes.txt", fix, "'<id> <name>'")
    )
    part_rows = read_table(base / "parts" / "parts.txt", fix, "'<part id> <name>' lines")
    part_ids = [int(r[0]) for r in part_rows]
    part_names = tuple(" ".join(r[1:]) for r in part_rows)
    ids = sorted(i for i in images if is_train.get(i) == (split == "train"))
    missing = [i for i in ids if i not in labels or i not in bbox]
    if missing:
        raise DatasetError(f"{base}: image ids {missing[:5]} lack a class label or bounding box")
    row_of = {img_id: row for row, img_id in enumerate(ids)}
    col_of = {pid: col for col, pid in enumerate(part_ids)}
    parts = np.zeros((len(ids), len(part_ids), 3), dtype=np.float32)
    for r in read_table(base / "parts" / "part_locs.txt", fix, "'<img> <part> <x> <y> <visible>' lines"):
        row = row_of.get(int(r[0]))
        if row is not None:
            parts[row, col_of[int(r[1])]] = (float(r[2]), float(r[3]), float(r[4]))
    boxes = np.asarray([bbox[i] for i in ids], dtype=np.float32)
    boxes[:, 2:] += boxes[:, :2]  # (x, y, w, h) → (x0, y0, x1, y1)
    paths = [base / "images" / images[i] for i in ids]

    def decode(idx: np.ndarray) -> RawBatch:
        return RawBatch(
            images=decode_files([paths[i] for i in idx], "cub200"),
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


