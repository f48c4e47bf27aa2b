"""Datasets: named sources, class subsets and caps, and the prepared files the stages read.

One module per source family (:mod:`.idx` Fashion-MNIST and MNIST, :mod:`.cifar`, :mod:`.cub`,
:mod:`.cars`, :mod:`.folder`, :mod:`.synthetic`, and the text sources ``sst2`` and
``generated_text`` in :mod:`.text`), registered in :mod:`.sources`; typed containers in
:mod:`.images` (images) and :mod:`.text` (sentences); preparation in :mod:`.prepare`. This package's own namespace stays free of torch
(the workflow imports it to check configs): import the containers from their modules.
"""

from __future__ import annotations

from ..catalog import SOURCES
from .annotations import DatasetError, ImageAnnotation, PartLocation

__all__ = ["DatasetError", "ImageAnnotation", "PartLocation", "available_sources"]


def available_sources() -> list[str]:
    """Every registered data source, by the name a config uses."""
    return sorted(SOURCES)
