"""Player rules that read dataset annotations: ``bbox`` (Stanford Cars) and ``parts`` (CUB-200-2011).

A player rule picks, for one image, the ``n`` patches of a :class:`~pretrain_knowledge.game.PatchGrid`
that become the players of its game (method.md §2); all other patches keep their pixels in every
masked image. On fine-grained datasets the object is small and off-centre, so the default
``central`` rule (in :mod:`pretrain_knowledge.selection`) would spend players on background. These
rules put them on the object instead:

* ``bbox`` — ``n`` distinct patches drawn uniformly from those covered by the object's bounding box;
* ``parts`` — the patches under the image's *visible* part keypoints (CUB's beak, crown, wings, …),
  topped up with patches drawn from the bounding box when the parts fall on fewer than ``n``
  distinct patches.

Coordinates: boxes and keypoints come from :class:`~pretrain_knowledge.data.ImageAnnotation` in
pixels of the *prepared* (resized or cropped) image, the same frame as the grid: pixel
``(row i, column j)`` covers ``[j, j+1) × [i, i+1)`` in ``(x, y)``, and patch ``(r, c)`` covers
``[c·p, (c+1)·p) × [r·p, (r+1)·p)``. Patch id = ``r · n_cols + c``.

Determinism: every random choice draws from the ``rng`` the caller passes, which
:func:`pretrain_knowledge.selection.sample_rng` derives from (experiment seed, image index) only;
candidates are enumerated in a fixed order before drawing, so the same seed gives the same players
on every machine, for every model and checkpoint. Coalition convention downstream: player i is
bit i of a coalition integer (player 0 least significant); the caller sorts the returned ids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .game import PatchGrid
from .selection import SampleContext, register_player_rule

Box = tuple[float, float, float, float]


def patch_at(grid: PatchGrid, x: float, y: float) -> int | None:
    """Id of the patch that contains the point (x, y), or None when it lies outside the image."""
    if not (0 <= x < grid.width and 0 <= y < grid.height):
        return None
    row = int(math.floor(y / grid.patch_size))
    col = int(math.floor(x / grid.patch_size))
    return row * grid.n_cols + col


def box_coverage(grid: PatchGrid, box: Box) -> np.ndarray:
    """float (n_patches,): the share of each patch's area that lies inside ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    p = grid.patch_size
    edges_x = np.arange(grid.n_cols) * p
    edges_y = np.arange(grid.n_rows) * p
    wx = np.clip(np.minimum(edges_x + p, x1) - np.maximum(edges_x, x0), 0, p)
    wy = np.clip(np.minimum(edges_y + p, y1) - np.maximum(edges_y, y0), 0, p)
    return (wy[:, None] * wx[None, :]).reshape(-1) / float(p * p)


def box_patches(grid: PatchGrid, box: Box, min_overlap: float) -> list[int]:
    """Ids (ascending) of the patches whose area lies at least ``min_overlap`` inside ``box``.

    A box smaller than every patch would cover none; the patch holding its centre is then the
    one patch the box selects, so a tiny object still yields a candidate.
    """
    if not 0 < min_overlap <= 1:
        raise ValueError(
            "selection.players.options.min_overlap must lie in (0, 1] (the share of a patch that "
            f"must be inside the bounding box), got {min_overlap}"
        )
    coverage = box_coverage(grid, box)
    ids = [int(i) for i in np.flatnonzero(coverage >= min_overlap - 1e-9)]
    if not ids:
        centre = patch_at(grid, min((box[0] + box[2]) / 2, grid.width - 1e-6), min((box[1] + box[3]) / 2, grid.height - 1e-6))
        ids = [] if centre is None else [centre]
    return ids


def nearest_patches(grid: PatchGrid, box: Box | None, exclude: Sequence[int]) -> list[int]:
    """All other patches, nearest first to the box's centre (the image centre without a box).

    Ties are broken by patch id, so the order is fixed; used only when the annotated region
    holds fewer than ``n`` patches.
    """
    if box is None:
        cx, cy = grid.width / 2, grid.height / 2
    else:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    p = grid.patch_size
    taken = set(exclude)
    scored = []
    for pid in range(grid.n_patches):
        if pid in taken:
            continue
        row, col = divmod(pid, grid.n_cols)
        d = ((col + 0.5) * p - cx) ** 2 + ((row + 0.5) * p - cy) ** 2
        scored.append((d, pid))
    return [pid for _, pid in sorted(scored)]


def _draw(candidates: Sequence[int], k: int, rng: np.random.Generator) -> list[int]:
    """``k`` distinct entries of ``candidates`` (all of them when k ≥ len), uniformly at random."""
    if k >= len(candidates):
        return list(candidates)
    return [candidates[i] for i in sorted(rng.choice(len(candidates), size=k, replace=False))]


def _fill(
    chosen: list[int], n: int, grid: PatchGrid, box: Box | None, min_overlap: float, rng: np.random.Generator
) -> list[int]:
    """Top ``chosen`` up to ``n`` patches: first drawn from the box, then the nearest to it."""
    if len(chosen) < n and box is not None:
        pool = [pid for pid in box_patches(grid, box, min_overlap) if pid not in chosen]
        chosen = chosen + _draw(pool, n - len(chosen), rng)
    if len(chosen) < n:
        chosen = chosen + nearest_patches(grid, box, chosen)[: n - len(chosen)]
    return chosen


def _require_box(sample: SampleContext, rule: str) -> Box:
    ann = sample.annotation
    if ann is None or ann.box is None:
        raise ValueError(
            f"selection.players.rule={rule!r} needs bounding boxes, but sample {sample.sample_id} "
            f"(test image {sample.dataset_index}) has none: its dataset source has no box "
            "annotations. Use a source with boxes (cub200, stanford_cars) or rule 'central'."
        )
    return ann.box


@register_player_rule("bbox")
def bbox_players(
    grid: PatchGrid,
    n: int,
    sample: SampleContext,
    rng: np.random.Generator,
    min_overlap: float = 0.5,
) -> list[int]:
    """n distinct patches drawn uniformly from those at least ``min_overlap`` inside the bounding box.

    The box is the annotated object, so every player carries object pixels and the rest of the
    object stays visible as context. A box too small for ``n`` patches is completed with the
    patches nearest to its centre (in a fixed order, no drawing).
    """
    box = _require_box(sample, "bbox")
    return _fill(_draw(box_patches(grid, box, min_overlap), n, rng), n, grid, box, min_overlap, rng)


@register_player_rule("parts")
def part_players(
    grid: PatchGrid,
    n: int,
    sample: SampleContext,
    rng: np.random.Generator,
    min_overlap: float = 0.5,
) -> list[int]:
    """The patches under the visible part keypoints, topped up from the bounding box, n in all.

    Parts are the semantic units of a bird (beak, eye, wing, …), so a player per part makes the
    interactions read as part combinations. Several keypoints can fall on one patch (e.g. eye and
    forehead); each patch counts once. With more distinct part patches than ``n``, ``n`` of them
    are drawn uniformly; with fewer, the rest are drawn from the patches at least ``min_overlap``
    inside the bounding box, and, should those run out too, taken nearest to the box centre.
    Images without a box (another source) still work when they have keypoints.
    """
    ann = sample.annotation
    if ann is None or (not ann.parts and ann.box is None):
        raise ValueError(
            f"selection.players.rule='parts' needs part keypoints or bounding boxes, but sample "
            f"{sample.sample_id} (test image {sample.dataset_index}) has neither: use a source "
            "with part annotations (cub200) or rule 'bbox' / 'central'."
        )
    under_parts: list[int] = []
    for part in ann.parts:
        if part.visible:
            pid = patch_at(grid, part.x, part.y)
            if pid is not None and pid not in under_parts:
                under_parts.append(pid)
    chosen = _draw(under_parts, n, rng)
    return _fill(chosen, n, grid, ann.box, min_overlap, rng)
