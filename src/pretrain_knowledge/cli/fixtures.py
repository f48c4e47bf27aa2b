"""Stage ``make-fixtures``: tiny fake CUB-200-2011, Stanford Cars and CIFAR-10 trees, fake weights.

Not part of the workflow's DAG; it lets a user (and the tests) run ``config/paper.yaml`` end to
end without the real datasets or ImageNet weights, on the real file formats
(:mod:`pretrain_knowledge.testing`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..catalog import ARCHITECTURES

from ..testing import FIXTURE_DATASETS, FakeTree, write_fixtures

_ARCHS = tuple(a for a, info in ARCHITECTURES.items() if info.weights_file)


def run(args: argparse.Namespace) -> int:
    written = write_fixtures(
        args.out,
        tuple(args.datasets),
        classes=args.classes,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        seed=args.seed,
        weights=tuple(args.weights),
    )
    for name, item in written.items():
        if isinstance(item, FakeTree):
            n_train = sum(im.train for im in item.images)
            print(f"{name}: root {item.root} ({len(item.class_names)} classes, {n_train} train / "
                  f"{len(item.images) - n_train} test images)")
        else:
            print(f"{name}: random weights {item} ({Path(item).stat().st_size / 2**20:.0f} MiB)")
    return 0


def build_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Write <out>/cub200/CUB_200_2011/…, <out>/stanford_cars/stanford_cars/… "
        "(torchvision's StanfordCars layout) and <out>/cifar10/cifar-10-batches-py/… with a few "
        "seeded images per class, and optionally <out>/weights/<arch>.pth: randomly initialised "
        "torchvision state dicts shaped like the ImageNet files. Point a dataset's `root` and an "
        "architecture's `weights` at them to smoke-test a paper config offline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="folder to write into")
    p.add_argument("--datasets", nargs="+", choices=FIXTURE_DATASETS, default=list(FIXTURE_DATASETS),
                   help="which dataset trees to write")
    p.add_argument("--classes", type=int, default=3, help="classes per dataset (CIFAR-10: at most 10)")
    p.add_argument("--train-per-class", type=int, default=6, help="training images per class")
    p.add_argument("--test-per-class", type=int, default=4, help="test images per class")
    p.add_argument("--seed", type=int, default=0, help="seed of images, boxes, keypoints and weights")
    p.add_argument("--weights", nargs="*", choices=_ARCHS, default=[],
                   help="architectures to write random ImageNet-shaped weights for (vgg16 is ~530 MB)")
    return p
