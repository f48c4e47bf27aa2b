"""Text sources and containers: GLUE SST-2 (``sst2``) and seeded keyword sentences (``generated_text``).

A sentence is a sequence of **words**: the whitespace-separated tokens of the data file (GLUE's SST-2
files are already tokenised that way: ``it 's a charming and often affecting journey .``). Words
are the players of the text game (:class:`pretrain_knowledge.players.WordsRule`); the model's
tokenizer may split a word into several word-piece tokens, which are always masked together.
Sentences are cut after the source's ``max_words`` words when they are prepared, so every sentence
fits the ``1 × max_words`` word grid of the games.

Containers: :class:`TextSet` (one split: words and labels), :class:`TextTask` (a prepared task, one
file per task as for images, with the source's vocabulary for models that have none of their own)
and :class:`EncodedText` (a split as token ids of one model's tokenizer, what training and the
games feed the model). :func:`load_any_task` reads a prepared image or text task; preparation
(class subsets and caps) is :func:`pretrain_knowledge.data.prepare.prepare_text_task`.

The ``generated_text`` source (options: :class:`~pretrain_knowledge.catalog.GeneratedTextSpec`) is the
text counterpart of ``synthetic``: each class is a fixed set of keywords from one shared bank of 12,
scattered among filler words, with keywords dropped at random and a distractor keyword now and
then. Classes share keywords, and telling two classes apart needs the keywords *together*, so a
model pre-trained on classes 0–4 already knows which words matter on 5–9: pre-training helps (tests
check it). Two keywords and three fillers are not whole words of its vocabulary, so the tokenizer
splits them into several pieces, as BERT's does with rare words.
"""

from __future__ import annotations

import csv
import functools
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..catalog import GeneratedTextSpec, Sst2Spec
from ..io import save_torch
from .annotations import DatasetError, missing
from .idx import require_root
from .images import PREPARED_FORMAT, ImageSet, TaskData, load_task

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
"""BERT's special tokens, first in every vocabulary built here (ids 0 … 4)."""
TEXT_FORMAT = "pretrain_knowledge.prepared-text/1"


# ----------------------------------------------------------------------------------------------
# Containers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawText:
    """One split of a text source: every sentence as words, and its labels."""

    name: str
    split: str
    words: tuple[tuple[str, ...], ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    vocabulary: tuple[str, ...]
    """A word-piece vocabulary of the source's training split (for models without their own)."""
    root: str = ""

    def __len__(self) -> int:
        return len(self.words)


@dataclass(frozen=True)
class TextSet:
    """One split of a text task: sentences as words, labels ``0..K-1``, and where each came from."""

    words: tuple[tuple[str, ...], ...]
    labels: Tensor
    """int64 (N,)."""
    class_names: tuple[str, ...]
    source_classes: tuple[int, ...]
    source_index: Tensor
    """int64 (N,): the sentence's row in the source split."""

    def __post_init__(self) -> None:
        n = len(self.words)
        if tuple(self.labels.shape) != (n,) or tuple(self.source_index.shape) != (n,):
            raise ValueError("labels and source_index must have one entry per sentence")
        if len(self.class_names) != len(self.source_classes):
            raise ValueError("class_names and source_classes must have the same length")

    def __len__(self) -> int:
        return len(self.words)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def sentence(self, i: int) -> str:
        return " ".join(self.words[i])

    def to_dict(self) -> dict[str, Any]:
        return {
            "words": [list(w) for w in self.words],
            "labels": self.labels,
            "class_names": list(self.class_names),
            "source_classes": list(self.source_classes),
            "source_index": self.source_index,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextSet:
        return cls(
            words=tuple(tuple(str(w) for w in s) for s in d["words"]),
            labels=d["labels"],
            class_names=tuple(d["class_names"]),
            source_classes=tuple(int(c) for c in d["source_classes"]),
            source_index=d["source_index"],
        )


@dataclass(frozen=True)
class TextTask:
    """A prepared text task: train and test splits over the same classes, and how they were made.

    ``info["vocabulary"]`` is the source's word-piece vocabulary: a model without one of its own
    (``tiny_bert``, or BERT trained from scratch without a model folder) builds its tokenizer from
    it, and since both tasks of a dataset store the same one, every model of an experiment
    tokenizes alike.
    """

    train: TextSet
    test: TextSet
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.train.class_names != self.test.class_names:
            raise ValueError("train and test splits must share their classes")

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def to_dict(self) -> dict[str, Any]:
        return {"format": TEXT_FORMAT, "train": self.train.to_dict(), "test": self.test.to_dict(), "info": self.info}


@dataclass(frozen=True)
class EncodedText:
    """A split as one model's token ids: what training, selection and the games feed a text model.

    ``ids`` (N, L) int64 are padded with the tokenizer's [PAD] id to the longest sentence;
    ``word_index[i, t]`` is the word of sentence i that token t belongs to, −1 for [CLS], [SEP] and
    padding. ``words[i]`` are the words the model sees (a sentence cut to fit the token limit).
    """

    ids: Tensor
    word_index: Tensor
    labels: Tensor
    words: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def batch(self, idx: Tensor, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """(token ids, labels) of rows ``idx``: the data-container side of the training loop."""
        return self.ids[idx].to(device, non_blocking=True), self.labels[idx].to(device, non_blocking=True)


def save_text_task(task: TextTask, path: str | os.PathLike[str]) -> None:
    save_torch(task.to_dict(), path)


def load_any_task(path: str | os.PathLike[str]) -> TaskData | TextTask:
    """A prepared task file (``prepare-data``), image or text, by its format tag."""
    p = Path(path)
    if not p.is_file():
        return load_task(p)  # raises with the message that says how to make it
    try:
        d = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise DatasetError(f"prepared data file {p} is unreadable ({err}); delete it and rerun prepare-data") from err
    fmt = d.get("format") if isinstance(d, dict) else None
    if fmt == TEXT_FORMAT:
        return TextTask(TextSet.from_dict(d["train"]), TextSet.from_dict(d["test"]), dict(d["info"]))
    if fmt == PREPARED_FORMAT:
        return TaskData(ImageSet.from_dict(d["train"]), ImageSet.from_dict(d["test"]), dict(d["info"]))
    raise DatasetError(f"{p} is not a prepared data file (format {fmt!r}); rerun prepare-data")


# ----------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------


def build_vocabulary(
    sentences: Sequence[Sequence[str]], *, min_count: int = 2, extra: Sequence[str] = ()
) -> tuple[str, ...]:
    """A word-piece vocabulary built from a corpus, for models that ship none (``tiny_bert``).

    Special tokens first, then every character of the corpus alone and as a continuation piece
    (``x``, ``##x``), so any word tokenizes without [UNK], then the lower-cased words seen at least
    ``min_count`` times and the ``extra`` pieces; a rarer word is split into pieces, as BERT's
    tokenizer splits words outside its vocabulary. Sorted within each group, so it is deterministic.
    """
    counts = Counter(w.lower() for s in sentences for w in s)
    chars = sorted({ch for w in counts for ch in w if not ch.isspace()})
    words = sorted(w for w, c in counts.items() if c >= min_count and len(w) > 1)
    out: list[str] = list(SPECIAL_TOKENS)
    for token in [*chars, *(f"##{c}" for c in chars), *words, *sorted(extra)]:
        if token not in out:
            out.append(token)
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# generated_text
# ----------------------------------------------------------------------------------------------

KEYWORDS = (
    "brilliant", "gripping", "tender", "witty", "vivid", "masterful",
    "dull", "clumsy", "bleak", "hollow", "tedious", "lackluster",
)
"""The shared keyword bank; a class is a fixed set of them."""
FILLERS = (
    "the", "a", "this", "that", "it", "is", "was", "and", "of", "with", "in", "its", "an", "to",
    "movie", "film", "story", "plot", "cast", "scene", "director", "script", "ending", "actors",
    "music", "camera", "pace", "tone", "feels", "seems", "overall", "really", "quite", "somewhat",
    "cinematography", "screenplay", "soundtrack", ",", ".",
)
"""Filler words: stop words, neutral content words and punctuation, drawn uniformly."""
SPLIT_WORDS = ("masterful", "lackluster", "cinematography", "screenplay", "soundtrack")
"""Words left out of the generated vocabulary as wholes: each tokenizes into several pieces."""
SPLIT_PIECES = ("master", "##ful", "lack", "##lus", "##ter", "cinema", "##tography", "screen", "##play", "sound", "##track")


def generated_vocabulary() -> tuple[str, ...]:
    """The vocabulary of ``generated_text``: every word whole except :data:`SPLIT_WORDS`."""
    words = [w for w in (*KEYWORDS, *FILLERS) if w not in SPLIT_WORDS]
    return build_vocabulary([words], min_count=1, extra=SPLIT_PIECES)


def generated_class_keywords(spec: GeneratedTextSpec) -> list[tuple[int, ...]]:
    """Each class's keyword ids (indices into :data:`KEYWORDS`), distinct sets, from ``structure_seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([10_007, spec.structure_seed]))
    seen: set[tuple[int, ...]] = set()
    out: list[tuple[int, ...]] = []
    while len(out) < spec.num_classes:
        key = tuple(sorted(int(k) for k in rng.choice(len(KEYWORDS), spec.keywords_per_class, replace=False)))
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


@functools.lru_cache(maxsize=8)
def generate_text(spec: GeneratedTextSpec, split: str) -> tuple[tuple[tuple[str, ...], ...], np.ndarray]:
    """(sentences as words, labels) of one split, deterministic in the spec and the split.

    A sentence of class c has a length drawn from [min_words, max_words]; each keyword of c is kept
    with probability ``keep`` (at least two, or all when the class has fewer), a distractor keyword
    of another class joins with probability 0.3, and filler words fill the other positions; the
    keywords' positions are drawn at random.
    """
    if spec.min_words > spec.max_words:
        raise ValueError(f"generated_text: min_words {spec.min_words} exceeds max_words {spec.max_words}")
    per = spec.train_per_class if split == "train" else spec.test_per_class
    classes = generated_class_keywords(spec)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0 if split == "train" else 1]))
    sentences: list[tuple[str, ...]] = []
    labels = np.repeat(np.arange(spec.num_classes, dtype=np.int64), per)
    for label in labels:
        keys = list(classes[int(label)])
        kept = [k for k in keys if rng.random() < spec.keep]
        need = min(2, len(keys))
        if len(kept) < need:
            kept = sorted(rng.choice(keys, need, replace=False).tolist())
        if rng.random() < 0.3:
            others = [k for k in range(len(KEYWORDS)) if k not in keys]
            kept.append(int(rng.choice(others)))
        length = int(rng.integers(max(spec.min_words, len(kept) + 1), spec.max_words + 1))
        words = [FILLERS[int(i)] for i in rng.integers(0, len(FILLERS), length)]
        for k, pos in zip(kept, rng.choice(length, len(kept), replace=False), strict=True):
            words[int(pos)] = KEYWORDS[k]
        sentences.append(tuple(words))
    return tuple(sentences), labels


def open_generated_text(root: Path | None, split: str, download: bool, **options: Any) -> RawText:
    spec = GeneratedTextSpec(**options)
    words, labels = generate_text(spec, split)
    return RawText(
        name="generated_text",
        split=split,
        words=words,
        labels=labels,
        class_names=tuple(
            "+".join(KEYWORDS[k] for k in keys) for keys in generated_class_keywords(spec)
        ),
        vocabulary=generated_vocabulary(),
    )


# ----------------------------------------------------------------------------------------------
# sst2
# ----------------------------------------------------------------------------------------------

SST2_CLASSES = ("negative", "positive")
_SST2_FIX = (
    "Put GLUE's SST-2 files there: train.tsv and dev.tsv with a header line 'sentence<TAB>label' (the "
    "SST-2/ folder of GLUE's download, or <root>/SST-2/). With download: true and the `datasets` "
    "package installed, they are written from the hub's glue/sst2 when the node is online."
)


def _sst2_folder(root: Path) -> Path:
    return root / "SST-2" if (root / "SST-2" / "train.tsv").is_file() else root


def _download_sst2(root: Path) -> None:
    """Write train.tsv and dev.tsv from the hub's ``glue/sst2`` (the optional online path)."""
    try:
        import datasets  # noqa: PLC0415 - optional dependency, only for this path
    except ImportError as err:
        raise DatasetError(f"sst2: download needs the `datasets` package (pip install datasets). {_SST2_FIX}") from err
    try:
        glue = datasets.load_dataset("glue", "sst2")
    except Exception as err:  # noqa: BLE001 - offline raises many types
        raise DatasetError(f"sst2: could not load glue/sst2 through `datasets` ({err}). {_SST2_FIX}") from err
    root.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train.tsv"), ("validation", "dev.tsv")):
        with open(root / name, "w", newline="") as fh:
            fh.write("sentence\tlabel\n")
            for row in glue[split]:
                fh.write(f"{row['sentence'].strip()}\t{int(row['label'])}\n")


@functools.lru_cache(maxsize=4)
def _read_sst2(path: Path, max_words: int) -> tuple[tuple[tuple[str, ...], ...], np.ndarray]:
    if not path.is_file():
        raise missing(path, "GLUE SST-2's tab-separated sentences and labels", _SST2_FIX)
    words, labels = [], []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["sentence", "label"]:
            raise DatasetError(f"{path}: expected the header 'sentence<TAB>label', got {header!r}. {_SST2_FIX}")
        for line, row in enumerate(reader, start=2):
            if len(row) < 2 or row[1].strip() not in ("0", "1"):
                raise DatasetError(f"{path}, line {line}: expected '<sentence><TAB><0 or 1>', got {row!r}")
            words.append(tuple(row[0].split())[:max_words])
            labels.append(int(row[1]))
    return tuple(words), np.asarray(labels, dtype=np.int64)


def open_sst2(root: Path | None, split: str, download: bool, **options: Any) -> RawText:
    """GLUE SST-2: ``train.tsv`` is the train split and ``dev.tsv`` the test split (GLUE's test
    labels are not public, so the dev set is where every SST-2 accuracy is reported)."""
    spec = Sst2Spec(**options)
    root = require_root("sst2", root)
    folder = _sst2_folder(root)
    if download and not (folder / "train.tsv").is_file():
        _download_sst2(root)
        folder = _sst2_folder(root)
    words, labels = _read_sst2(folder / ("train.tsv" if split == "train" else "dev.tsv"), spec.max_words)
    train_words = words if split == "train" else _read_sst2(folder / "train.tsv", spec.max_words)[0]
    return RawText(
        name="sst2",
        split=split,
        words=words,
        labels=labels,
        class_names=SST2_CLASSES,
        vocabulary=_sst2_vocabulary(train_words),
        root=str(root),
    )


@functools.lru_cache(maxsize=2)
def _sst2_vocabulary(train_words: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    return build_vocabulary(train_words, min_count=2)
