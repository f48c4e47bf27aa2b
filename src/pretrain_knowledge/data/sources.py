"""The registry of data sources: each name of :data:`pretrain_knowledge.catalog.SOURCES` → its reader.

A reader opens one split as a :class:`~pretrain_knowledge.data.images.RawSplit` (labels known,
pixels decoded on demand), or for a text source as a :class:`~pretrain_knowledge.data.text.RawText`,
and fails with the missing file, what was expected there and how to get it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..catalog import SOURCE_OPTIONS, SOURCES
from ..layout import SPLITS
from .cars import open_stanford_cars
from .cifar import open_cifar10
from .cub import open_cub200
from .folder import open_imagefolder
from .idx import open_fashion_mnist, open_mnist
from .images import RawSplit
from .synthetic import open_synthetic
from .text import RawText, open_generated_text, open_sst2

READERS: dict[str, Callable[..., RawSplit | RawText]] = {
    "fashion_mnist": open_fashion_mnist,
    "mnist": open_mnist,
    "cifar10": open_cifar10,
    "cub200": open_cub200,
    "stanford_cars": open_stanford_cars,
    "imagefolder": open_imagefolder,
    "synthetic": open_synthetic,
    "sst2": open_sst2,
    "generated_text": open_generated_text,
}
"""Source name → reader(root, split, download, **options)."""


def open_source(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    **options: Any,
) -> RawSplit | RawText:
    """Open one split of a registered source without decoding its images."""
    if name not in READERS:
        raise ValueError(f"unknown data source {name!r}; choose one of {sorted(SOURCES)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if options and name not in SOURCE_OPTIONS:
        raise ValueError(f"source {name!r} takes no options; got {sorted(options)}")
    return READERS[name](None if root is None else Path(root), split, download, **options)
