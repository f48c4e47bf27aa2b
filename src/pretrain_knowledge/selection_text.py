"""The selection of a text experiment: sentences that the required final models get right, and their words.

The text counterpart of :mod:`pretrain_knowledge.selection` (method.md §2, §5), stored in the same
place (``selection/selection.pt`` and ``samples.parquet``) and read by the games and figure stages
through :func:`load_selection`, which returns either kind.

A sentence is a ``1 × W`` grid of one-unit patches (W = the source's ``max_words``): player i of
sample b is word ``players.patch_ids[b, i]`` of its sentence, so the games and interaction tables
keep the image schema (``image_height`` 1, ``image_width`` W, ``patch_size`` 1). The stored token
ids are the experiment's tokenizer's (every model of an experiment shares it); ``word_index`` says
which word each token belongs to, so a player's word is masked with all its word pieces.

Samples: ``k`` test sentences per class, drawn with the seed among those that every model of
``selection.correct_under`` classifies correctly *and* that have at least ``n`` content words
(:class:`pretrain_knowledge.players.WordsRule`); shorter sentences cannot have ``n`` players. Every
final model's correctness is stored per sample, as for images.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from .data.text import TextSet
from .game import Players
from .players import PatchGrid, SampleContext, make_rule
from .selection import (
    SELECTION_FORMAT,
    Selection,
    _shared_columns,
    _shared_dict,
    _shared_fields,
    choose_players,
    choose_samples,
    correct_columns,
    correct_under_all,
    correctness,
    required_models,
)


@dataclass(frozen=True)
class TextSelection:
    """The stored selection of a text experiment: sentences, tokens, labels and players.

    Sample ids are 0 … K-1, the row order of every tensor. Player i of sample b is word
    ``players.patch_ids[b, i]`` of ``words[b]``; coalition T has bit i set iff player i ∈ T.
    """

    token_ids: Tensor
    """(K, L) int64 token ids ([CLS] … [SEP], padded with [PAD]): what the models read."""
    word_index: Tensor
    """(K, L) int64: the word each token belongs to, −1 for [CLS], [SEP] and padding."""
    words: tuple[tuple[str, ...], ...]
    """The words each model sees (the sentence cut to fit the model, as prepared)."""
    labels: Tensor
    dataset_index: Tensor
    source_index: Tensor
    players: Players
    class_names: tuple[str, ...]
    seed: int
    rule: str = "words"
    correct: dict[str, Tensor] = field(default_factory=dict)
    """Model name → bool (K,): whether that final model classifies each sample correctly."""
    correct_under: tuple[str, ...] = ()
    """The models that had to be correct for a sentence to be drawn."""

    # The bookkeeping is the image selection's, field for field.
    players_of = Selection.players_of
    shard_ids = Selection.shard_ids
    n_samples = Selection.n_samples
    sample_ids = Selection.sample_ids
    save = Selection.save
    write = Selection.write

    def inputs(self, sample_ids: Tensor | None = None) -> Tensor:
        """int64 (K', L) token ids of the given samples (all when None)."""
        return self.token_ids if sample_ids is None else self.token_ids[sample_ids]

    def sentence(self, sample: int) -> str:
        return " ".join(self.words[sample])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SELECTION_FORMAT,
            "modality": "text",
            "token_ids": self.token_ids,
            "word_index": self.word_index,
            "words": [list(w) for w in self.words],
            **_shared_dict(self),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextSelection:
        if data.get("format") != SELECTION_FORMAT or data.get("modality") != "text":
            raise ValueError("not a text selection artefact; rerun the select stage")
        return cls(
            token_ids=data["token_ids"],
            word_index=data["word_index"],
            words=tuple(tuple(str(w) for w in s) for s in data["words"]),
            **_shared_fields(data),
        )

    def to_frame(self) -> pd.DataFrame:
        """The image selection's columns (players as word indices, row 0, patch size 1) plus the
        ``sentence`` each model sees."""
        ids = self.players.patch_ids.tolist()
        return pd.DataFrame(
            {
                **_shared_columns(self, [[0] * len(row) for row in ids], ids, 1),
                "sentence": [self.sentence(k) for k in range(self.n_samples)],
                **correct_columns(self.correct),
            }
        )


def load_selection(path: str | os.PathLike[str]) -> Selection | TextSelection:
    """The selection artefact of an image or a text experiment."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no selection artefact at {path}; it is written by the select stage "
            "(snakemake results/<experiment>/selection/selection.pt)"
        ) from None
    if isinstance(data, Mapping) and data.get("modality") == "text":
        return TextSelection.from_dict(data)
    return Selection.from_dict(data)


def make_text_selection(
    models: Mapping[str, nn.Module],
    test: TextSet,
    *,
    per_class: int,
    seed: int,
    n_players: int,
    max_words: int,
    rule: str = "words",
    rule_options: Mapping[str, Any] | None = None,
    batch_size: int = 512,
    correct_under: Sequence[str] | None = None,
) -> TextSelection:
    """Select sentences that the ``correct_under`` models (default: all) get right and that have n
    content words, then their players; every model's correctness is stored per sample."""
    required = required_models(models, correct_under)
    encoders = [getattr(m, "encoder", None) for m in models.values()]
    if any(e is None for e in encoders):
        raise ValueError("text selection needs text models (TextClassifier)")
    encoder = encoders[0]
    if any(e.vocabulary != encoder.vocabulary or e.lowercase != encoder.lowercase for e in encoders):
        raise ValueError("the final models tokenize differently; every model of an experiment must share its tokenizer")
    encoded = encoder.encode_set(test)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    hits = correctness(models, encoded.ids, encoded.labels, batch_size=batch_size, device=device)
    eligible = correct_under_all(hits, required, len(encoded.labels))
    chooser = make_rule(rule, rule_options)
    enough = torch.tensor([len(chooser.candidates(w[:max_words])) >= n_players for w in encoded.words], dtype=torch.bool)
    index = choose_samples(encoded.labels, eligible & enough, per_class, seed, range(test.num_classes))
    contexts = [
        SampleContext(sample_id=k, dataset_index=int(i), label=int(encoded.labels[i]), words=encoded.words[int(i)])
        for k, i in enumerate(index)
    ]
    players = choose_players(PatchGrid(1, max_words, 1), n_players, contexts, seed, rule, rule_options)
    ids = encoded.ids[index]
    length = int(ids.ne(encoder.pad_id).sum(1).max())
    return TextSelection(
        token_ids=ids[:, :length].contiguous(),
        word_index=encoded.word_index[index][:, :length].contiguous(),
        words=tuple(encoded.words[int(i)] for i in index),
        labels=encoded.labels[index].to(torch.int64),
        dataset_index=index,
        source_index=test.source_index[index].to(torch.int64),
        players=players,
        class_names=test.class_names,
        seed=seed,
        rule=rule,
        correct={name: h[index].clone() for name, h in hits.items()},
        correct_under=required,
    )
