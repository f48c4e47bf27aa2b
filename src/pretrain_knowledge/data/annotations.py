"""Dataset annotations beyond the label, and the data error type (no torch: configs are checked with them)."""

from __future__ import annotations

from dataclasses import dataclass


class DatasetError(FileNotFoundError):
    """A data file is missing, unreadable or malformed; the message says where and how to fix it."""


def missing(path: object, expected: str, fix: str) -> DatasetError:
    return DatasetError(f"{path}: expected {expected}, but it is missing or unreadable. {fix}")


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
