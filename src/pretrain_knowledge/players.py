"""Players: the patch grid of an image and the rules that pick which patches play (method.md §2).

A player rule picks, for one image, the ``n`` patches of a :class:`PatchGrid` that become the
players of its game; all other patches keep their pixels in every masked image. Rules:

* ``central`` (default) — ``n`` distinct patches drawn uniformly from the central region; for
  centred objects (Fashion-MNIST, CIFAR-10);
* ``bbox`` — ``n`` distinct patches drawn from those covered by the object's bounding box
  (Stanford Cars);
* ``parts`` — the patches under the image's *visible* part keypoints (CUB's beak, crown, wings,
  …), topped up with patches drawn from the bounding box;
* ``words`` (text sources only) — ``n`` distinct content words of the sentence, drawn uniformly.

A sentence is a ``1 × W`` grid of one-unit patches (``PatchGrid(1, W, 1)``, W = the source's
``max_words``): patch id i is word i of the sentence (whitespace-separated, as the data files hold
it), so games, interactions and every table keep the image schema.

Each rule is a frozen dataclass whose fields are its options (``selection.players.options``), so
a config is checked against them before any job runs.

Coordinates: boxes and keypoints are in pixels of the *prepared* image, the same frame as the grid:
pixel ``(row i, column j)`` covers ``[j, j+1) × [i, i+1)`` in ``(x, y)``, and patch ``(r, c)`` covers
``[c·p, (c+1)·p) × [r·p, (r+1)·p)``. Patch id = ``r · n_cols + c``.

Determinism: every random choice draws from the ``rng`` the caller passes, which :func:`sample_rng`
derives from (experiment seed, image index) only; candidates are enumerated in a fixed order before
drawing, so the same seed gives the same players on every machine, for every model and checkpoint.
Player i is bit i of a coalition integer (player 0 least significant); ids are returned sorted.

This module needs only numpy (the workflow imports it to check configs; see catalog).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .typed import ConfigError, build, suggest, to_plain, setting

if TYPE_CHECKING:
    from .data.annotations import ImageAnnotation

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PatchGrid:
    """A ``height × width`` image cut into square ``patch_size`` patches, numbered row-major.

    Patch id = ``row * n_cols + col``, so ids are stable across models and checkpoints and can be
    stored with the results.
    """

    height: int
    width: int
    patch_size: int

    def __post_init__(self) -> None:
        if self.patch_size < 1 or self.height < 1 or self.width < 1:
            raise ValueError(
                f"PatchGrid needs positive sizes, got height={self.height}, width={self.width}, "
                f"patch_size={self.patch_size}"
            )
        if self.height % self.patch_size or self.width % self.patch_size:
            raise ValueError(
                f"image size {self.height}×{self.width} is not divisible by patch_size="
                f"{self.patch_size}; choose a patch size that divides both (e.g. "
                f"{math.gcd(self.height, self.width)} or one of its divisors)"
            )

    @property
    def n_rows(self) -> int:
        return self.height // self.patch_size

    @property
    def n_cols(self) -> int:
        return self.width // self.patch_size

    @property
    def n_patches(self) -> int:
        return self.n_rows * self.n_cols

    def check_patch_id(self, patch_id: int) -> None:
        if not 0 <= patch_id < self.n_patches:
            raise ValueError(
                f"patch id {patch_id} is out of range: this {self.n_rows}×{self.n_cols} grid has "
                f"patch ids 0 … {self.n_patches - 1} (id = row * {self.n_cols} + col)"
            )

    def row_col(self, patch_id: int) -> tuple[int, int]:
        """Grid row and column of a patch id."""
        self.check_patch_id(patch_id)
        return divmod(patch_id, self.n_cols)

    def patch_slice(self, patch_id: int) -> tuple[slice, slice]:
        """Pixel rows and columns of a patch: ``image[..., rows, cols]`` is the patch."""
        row, col = self.row_col(patch_id)
        p = self.patch_size
        return slice(row * p, (row + 1) * p), slice(col * p, (col + 1) * p)


@dataclass(frozen=True)
class SampleContext:
    """What a player rule may look at for one sample."""

    sample_id: int
    dataset_index: int
    """Index of the image in the downstream test set it was drawn from."""
    label: int
    image: Any = None
    """(C, H, W) uint8 tensor, the stored image (the models see it normalised)."""
    annotation: ImageAnnotation | None = None
    """Bounding box and part keypoints in pixel coordinates of ``image``, where the dataset has them."""
    words: tuple[str, ...] | None = None
    """Text: the words of the sentence the model sees (after cutting it to fit the model); a word
    the tokenizer maps to no token is given as ``""``."""


def sample_rng(seed: int, dataset_index: int) -> np.random.Generator:
    """A generator that depends only on the experiment seed and the image, never on run order."""
    return np.random.default_rng(np.random.SeedSequence([seed, dataset_index]))


def _draw(candidates: Sequence[int], k: int, rng: np.random.Generator) -> list[int]:
    """``k`` distinct entries of ``candidates`` (all of them when k ≥ len), uniformly at random."""
    if k >= len(candidates):
        return list(candidates)
    return [candidates[i] for i in sorted(rng.choice(len(candidates), size=k, replace=False))]


# ----------------------------------------------------------------------------------------------
# central
# ----------------------------------------------------------------------------------------------


def central_region(grid: PatchGrid, region: float) -> list[int]:
    """Patch ids of the centred block that spans the fraction ``region`` of each grid side.

    The margin is rounded down, so ``region`` is a lower bound on the block's share of a side.
    """
    if not 0 < region <= 1:
        raise ValueError(
            f"selection.players.region must lie in (0, 1] (the share of each grid side that "
            f"counts as central), got {region}"
        )
    # The small epsilon keeps float noise in 1 - region from shrinking the margin by a patch.
    top = int(grid.n_rows * (1 - region) / 2 + 1e-9)
    left = int(grid.n_cols * (1 - region) / 2 + 1e-9)
    rows = range(top, grid.n_rows - top)
    cols = range(left, grid.n_cols - left)
    return [r * grid.n_cols + c for r in rows for c in cols]


@dataclass(frozen=True)
class CentralRule:
    """n distinct patches drawn uniformly from the central region (method.md §2, default rule).

    Fashion-MNIST and CIFAR objects are centred, so central patches carry the object; drawing
    (rather than taking the n most central) varies the players between samples.
    """

    region: float = setting(
        0.6, "central: the share of each grid side that counts as central.", exclusive_minimum=0, maximum=1
    )
    needs: ClassVar[str | None] = None

    def check(self, grid: PatchGrid, n: int) -> str | None:
        candidates = central_region(grid, self.region)
        if len(candidates) < n:
            return (
                f"the central region holds {len(candidates)} patches of the {grid.n_rows}×"
                f"{grid.n_cols} grid but {n} players are needed: raise selection.players.region, "
                "lower selection.players.patch_size or lower selection.players.n"
            )
        return None

    def __call__(self, grid: PatchGrid, n: int, sample: SampleContext, rng: np.random.Generator) -> list[int]:
        problem = self.check(grid, n)
        if problem:
            raise ValueError(problem)
        candidates = central_region(grid, self.region)
        chosen = rng.choice(len(candidates), size=n, replace=False)
        return [candidates[i] for i in chosen]


# ----------------------------------------------------------------------------------------------
# bbox and parts
# ----------------------------------------------------------------------------------------------


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
        cx = min((box[0] + box[2]) / 2, grid.width - 1e-6)
        cy = min((box[1] + box[3]) / 2, grid.height - 1e-6)
        centre = patch_at(grid, cx, cy)
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


_MIN_OVERLAP_DOC = (
    "bbox, parts: the share of a patch's area that must lie inside the bounding box for it to count as inside."
)


@dataclass(frozen=True)
class BoxRule:
    """n distinct patches drawn uniformly from those at least ``min_overlap`` inside the bounding box.

    The box is the annotated object, so every player carries object pixels and the rest of the
    object stays visible as context. A box too small for ``n`` patches is completed with the
    patches nearest to its centre (in a fixed order, no drawing).
    """

    min_overlap: float = setting(0.5, _MIN_OVERLAP_DOC, exclusive_minimum=0, maximum=1)
    needs: ClassVar[str | None] = "boxes"

    def check(self, grid: PatchGrid, n: int) -> str | None:
        return None

    def __call__(self, grid: PatchGrid, n: int, sample: SampleContext, rng: np.random.Generator) -> list[int]:
        ann = sample.annotation
        if ann is None or ann.box is None:
            raise ValueError(
                f"selection.players.rule='bbox' needs bounding boxes, but sample {sample.sample_id} "
                f"(test image {sample.dataset_index}) has none: its dataset source has no box "
                "annotations. Use a source with boxes (cub200, stanford_cars) or rule 'central'."
            )
        box = ann.box
        chosen = _draw(box_patches(grid, box, self.min_overlap), n, rng)
        return _fill(chosen, n, grid, box, self.min_overlap, rng)


@dataclass(frozen=True)
class PartsRule:
    """The patches under the visible part keypoints, topped up from the bounding box, n in all.

    Parts are the semantic units of a bird (beak, eye, wing, …), so a player per part makes the
    interactions read as part combinations. Several keypoints can fall on one patch (e.g. eye and
    forehead); each patch counts once. With more distinct part patches than ``n``, ``n`` of them
    are drawn uniformly; with fewer, the rest are drawn from the patches at least ``min_overlap``
    inside the bounding box, and, should those run out too, taken nearest to the box centre.
    """

    min_overlap: float = setting(0.5, _MIN_OVERLAP_DOC, exclusive_minimum=0, maximum=1)
    needs: ClassVar[str | None] = "parts"

    def check(self, grid: PatchGrid, n: int) -> str | None:
        return None

    def __call__(self, grid: PatchGrid, n: int, sample: SampleContext, rng: np.random.Generator) -> list[int]:
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
        return _fill(chosen, n, grid, ann.box, self.min_overlap, rng)


# ----------------------------------------------------------------------------------------------
# words (text)
# ----------------------------------------------------------------------------------------------


STOP_WORDS: frozenset[str] = frozenset(
    """a about above after again against all am an and any are aren't as at be because been before
    being below between both but by can can't cannot could couldn't did didn't do does doesn't doing
    don't down during each few for from further had hadn't has hasn't have haven't having he he'd
    he'll he's her here here's hers herself him himself his how how's i i'd i'll i'm i've if in into
    is isn't it it's its itself let's me more most mustn't my myself no nor not of off on once only
    or other ought our ours ourselves out over own same shan't she she'd she'll she's should
    shouldn't so some such than that that's the their theirs them themselves then there there's
    these they they'd they'll they're they've this those through to too under until up very was
    wasn't we we'd we'll we're we've were weren't what what's when when's where where's which while
    who who's whom why why's with won't would wouldn't you you'd you'll you're you've your yours
    yourself yourselves 's 're 've 'd 'll 'm n't -lrb- -rrb- also just will""".split()
)
"""English stop words (the classic list of 174, plus the clitics and bracket tokens of the SST/PTB
tokenisation and three frequent fillers). Why skip them: the lab code the paper builds on draws its
text players among the non-stop-word tokens too (sjtu-xai-lab/generalizable-interaction,
utils/util.py: stop words, punctuation, single letters and digits are never players), because a
game over "the", "a" and commas says little about what the model knows."""


def is_content_word(word: str, skip_stop_words: bool = True) -> bool:
    """A word that may be a player: it has a letter or digit, is longer than one character, and (with
    ``skip_stop_words``) is not a stop word. Punctuation, single letters and digits never play."""
    if len(word) < 2 or not any(ch.isalnum() for ch in word):
        return False
    return not (skip_stop_words and word.lower() in STOP_WORDS)


@dataclass(frozen=True)
class WordsRule:
    """n distinct content words of the sentence, drawn uniformly (text sources).

    Candidates are the words the model sees (a sentence is cut to the source's ``max_words`` and to
    the model's token limit) that pass :func:`is_content_word`; ``n`` of them are drawn uniformly at
    random with the sample's seeded generator, whatever the sentence's length, so a long sentence's
    players are spread over all of it rather than its start. A player is a whole word: all the
    word-piece tokens of a word are masked together. A sentence with fewer than ``n`` candidates is
    not explained (the selection skips it, as the lab code skips sentences with fewer than 10).
    """

    skip_stop_words: bool = setting(True, "words: never draw stop words (players.STOP_WORDS) as players.")
    needs: ClassVar[str | None] = "words"

    def check(self, grid: PatchGrid, n: int) -> str | None:
        if grid.n_rows != 1 or grid.patch_size != 1:
            return "rule 'words' needs the 1 × W word grid of a text source"
        if grid.n_cols < n:
            return (
                f"{n} players but sentences keep at most {grid.n_cols} words; lower selection.players.n "
                "or raise the source's max_words option"
            )
        return None

    def candidates(self, words: Sequence[str]) -> list[int]:
        """Word indices that may be players, ascending."""
        return [i for i, w in enumerate(words) if is_content_word(w, self.skip_stop_words)]

    def __call__(self, grid: PatchGrid, n: int, sample: SampleContext, rng: np.random.Generator) -> list[int]:
        if sample.words is None:
            raise ValueError(
                f"selection.players.rule='words' needs the words of sample {sample.sample_id}; it is for text sources"
            )
        words = list(sample.words)[: grid.n_cols]
        pool = self.candidates(words)
        if len(pool) < n:
            raise ValueError(
                f"sample {sample.sample_id} (test sentence {sample.dataset_index}) has {len(pool)} content words, "
                f"fewer than the {n} players; such sentences are skipped by the selection"
            )
        return _draw(pool, n, rng)


PLAYER_RULES: dict[str, type] = {"central": CentralRule, "bbox": BoxRule, "parts": PartsRule, "words": WordsRule}
"""Rule name (``selection.players.rule``) → its class; the class's fields are its options."""


def _rule_class(rule: str) -> type:
    if rule not in PLAYER_RULES:
        raise ValueError(
            f"unknown player rule selection.players.rule={rule!r}.{suggest(rule, list(PLAYER_RULES))} "
            f"Known rules: {sorted(PLAYER_RULES)}"
        )
    return PLAYER_RULES[rule]


def _options_of(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def rule_options(rule: str, options: Mapping[str, Any] | None, where: str = "selection.players.options") -> dict[str, Any]:
    """The rule's own options with their defaults, checked; keys of other rules are dropped.

    All rules share one ``selection.players.options`` mapping and a dataset may switch rules over
    the global one, so another rule's key is not an error; a key that no rule takes is a typo.
    """
    cls = _rule_class(rule)
    options = dict(options or {})
    known = {name for c in PLAYER_RULES.values() for name in _options_of(c)}
    for key in options:
        if key not in known:
            raise ConfigError(
                f"config: {where}.{key}: no player rule takes this option.{suggest(key, sorted(known))} "
                f"Options of {rule!r}: {_options_of(cls) or 'none'}."
            )
    own = {k: v for k, v in options.items() if k in _options_of(cls)}
    return to_plain(build(cls, own, where))


def make_rule(rule: str, options: Mapping[str, Any] | None = None) -> Any:
    """The rule object for a name and its options (validated as in :func:`rule_options`)."""
    return _rule_class(rule)(**rule_options(rule, options))


def check_rule(
    rule: str,
    grid: PatchGrid,
    n: int,
    options: Mapping[str, Any] | None,
    *,
    boxes: bool,
    parts: bool,
    words: bool = False,
) -> str | None:
    """Why ``rule`` cannot give ``n`` players on ``grid`` for a source with/without boxes and parts,
    or for a text source (``words``): text needs rule ``words``, which fits nothing else."""
    obj = make_rule(rule, options)
    if words and obj.needs != "words":
        return f"rule {rule!r} is for images; a text source's players are words: use rule 'words'"
    if obj.needs == "words" and not words:
        return "rule 'words' is for text sources; use rule 'central'"
    if obj.needs == "boxes" and not boxes:
        return f"rule {rule!r} needs bounding boxes, which this dataset's source has not; use rule 'central'"
    if obj.needs == "parts" and not (parts or boxes):
        return f"rule {rule!r} needs part keypoints or boxes, which this dataset's source has not; use rule 'central'"
    return obj.check(grid, n)


def choose_player_ids(
    grid: PatchGrid,
    n: int,
    samples: Sequence[SampleContext],
    seed: int,
    rule: str = "central",
    options: Mapping[str, Any] | None = None,
) -> list[list[int]]:
    """Players of every sample by the named rule; ids sorted so player order is canonical."""
    chooser = make_rule(rule, options)
    if n < 1 or n > grid.n_patches:
        raise ValueError(f"selection.players.n={n} must lie in 1 … {grid.n_patches} (patches of the grid)")
    return [
        sorted(int(i) for i in chooser(grid, n, sample, sample_rng(seed, sample.dataset_index)))
        for sample in samples
    ]
