"""Which images are explained, and which patches are their players (method.md §2 and §5).

The selection is made once per experiment and stored as an artefact that every later stage
reads, so that all models and all checkpoints play exactly the same games: same images, same
labels, same players. Two parts:

* **samples** — ``k`` test images per class, drawn with a seed from the images that the final
  models of ``selection.correct_under`` classify correctly (default: probe, fine-tuned and scratch
  model), so that differences between their interactions are not differences in correctness;
  every model's correctness is stored per sample as a covariate;
* **players** — for each sample, ``n`` distinct patches of a :class:`~pretrain_knowledge.game.PatchGrid`
  chosen by a *player rule* of :mod:`pretrain_knowledge.players` (default ``central``, drawn
  from the central region of the grid).

Coalition convention for everything downstream: player i of sample b is patch
``patch_ids[b, i]``; a coalition T is the integer with bit i set iff player i ∈ T (player 0 is the
least significant bit).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .data.images import ImageSet
from .game import Players
from .io import save_torch, write_parquet
from .players import PatchGrid, SampleContext, choose_player_ids

SELECTION_FORMAT = 2
"""Version of the stored artefact; bumped when its fields change."""


def choose_players(
    grid: PatchGrid,
    n: int,
    samples: Sequence[SampleContext],
    seed: int,
    rule: str = "central",
    options: Mapping[str, Any] | None = None,
) -> Players:
    """Players of every sample by the named rule (:func:`pretrain_knowledge.players.choose_player_ids`)."""
    rows = choose_player_ids(grid, n, samples, seed, rule, options)
    return Players(grid=grid, patch_ids=torch.tensor(rows, dtype=torch.int64).reshape(len(rows), n))


@torch.inference_mode()
def correctness(
    models: Mapping[str, nn.Module],
    images: Tensor,
    labels: Tensor,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Model name → bool (N,): where that model predicts the true label."""
    out = {}
    for name, model in models.items():
        model.eval().to(device)
        hits = torch.zeros(len(labels), dtype=torch.bool)
        starts = range(0, len(labels), batch_size)
        for start in tqdm(starts, desc=f"classify {name}", unit="batch", mininterval=2):
            x = images[start : start + batch_size].to(device)
            pred = model(x).argmax(dim=1).cpu()
            hits[start : start + batch_size] = pred == labels[start : start + batch_size]
        out[name] = hits
    return out


def required_models(models: Mapping[str, nn.Module], correct_under: Sequence[str] | None) -> tuple[str, ...]:
    """The models that must classify a sample correctly (``selection.correct_under``; None: all)."""
    required = tuple(models) if correct_under is None else tuple(correct_under)
    unknown = sorted(set(required) - set(models))
    if unknown:
        raise ValueError(f"selection.correct_under names {unknown}, which are not among the models {sorted(models)}")
    return required


def correct_under_all(hits: Mapping[str, Tensor], required: Sequence[str], n: int) -> Tensor:
    """bool (N,): True where every required model is correct (all True when none is required)."""
    eligible = torch.ones(n, dtype=torch.bool)
    for name in required:
        eligible &= hits[name]
    return eligible


def correct_columns(correct: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """The per-sample covariates of a selection table: ``correct_<model>``, bool."""
    return {f"correct_{name}": hits.numpy().astype(bool) for name, hits in correct.items()}


def choose_samples(
    labels: Tensor, eligible: Tensor, per_class: int, seed: int, classes: Sequence[int]
) -> Tensor:
    """Dataset indices of ``per_class`` eligible images per class, drawn with ``seed``.

    Returned sorted by (class, dataset index) so that sample ids are stable and readable.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    chosen = []
    labels_np = labels.numpy()
    eligible_np = eligible.numpy()
    for cls in classes:
        pool = np.flatnonzero((labels_np == cls) & eligible_np)
        if len(pool) < per_class:
            total = int((labels_np == cls).sum())
            raise ValueError(
                f"class {cls} has only {len(pool)} of {total} test images that every model of "
                f"selection.correct_under classifies correctly, fewer than selection.per_class={per_class}: "
                "lower selection.per_class, require fewer models (selection.correct_under) or train longer"
            )
        chosen.append(np.sort(rng.choice(pool, size=per_class, replace=False)))
    return torch.from_numpy(np.concatenate(chosen).astype(np.int64))


def _shared_dict(s: Any) -> dict[str, Any]:
    """The stored fields every selection has (image or text), in their stored order."""
    g = s.players.grid
    return {
        "labels": s.labels,
        "dataset_index": s.dataset_index,
        "source_index": s.source_index,
        "patch_ids": s.players.patch_ids,
        "grid": {"height": g.height, "width": g.width, "patch_size": g.patch_size},
        "class_names": list(s.class_names),
        "seed": s.seed,
        "rule": s.rule,
        "correct": dict(s.correct),
        "correct_under": list(s.correct_under),
    }


def _shared_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments every selection reads back from :func:`_shared_dict`."""
    return {
        "labels": data["labels"],
        "dataset_index": data["dataset_index"],
        "source_index": data["source_index"],
        "players": Players(grid=PatchGrid(**data["grid"]), patch_ids=data["patch_ids"]),
        "class_names": tuple(data["class_names"]),
        "seed": int(data["seed"]),
        "rule": str(data["rule"]),
        "correct": dict(data["correct"]),
        "correct_under": tuple(data["correct_under"]),
    }


def _shared_columns(s: Any, rows: list[list[int]], cols: list[list[int]], patch_size: int) -> dict[str, Any]:
    """The samples-table columns every selection has, players given as grid rows and columns."""
    return {
        "sample_id": s.sample_ids.numpy(),
        "dataset_index": s.dataset_index.numpy().astype(np.int64),
        "source_index": s.source_index.numpy().astype(np.int64),
        "label": s.labels.numpy().astype(np.int64),
        "class_name": [s.class_names[int(y)] for y in s.labels],
        "patch_ids": [row.tolist() for row in s.players.patch_ids],
        "player_rows": rows,
        "player_cols": cols,
        "patch_size": np.full(s.n_samples, patch_size, dtype=np.int64),
    }


@dataclass(frozen=True)
class Selection:
    """The stored selection of one experiment: images, labels and players of each sample.

    Sample ids are 0 … K-1, the row order of every tensor. Player i of sample b is patch
    ``players.patch_ids[b, i]``; coalition T has bit i set iff player i ∈ T.
    """

    images: Tensor
    """(K, C, H, W) uint8 stored images; :meth:`inputs` normalises them as the models see them."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    """Per-channel normalisation of the downstream data (model input = (x/255 − mean)/std)."""
    labels: Tensor
    """(K,) int64 labels in the downstream task's label space."""
    dataset_index: Tensor
    """(K,) int64 index of each image in the prepared downstream test set."""
    source_index: Tensor
    """(K,) int64 index of each image in the source dataset's test split (its original file)."""
    players: Players
    class_names: tuple[str, ...]
    """Downstream class names, indexed by label."""
    seed: int
    rule: str = "central"
    correct: dict[str, Tensor] = field(default_factory=dict)
    """Model name → bool (K,): whether that final model classifies each sample correctly."""
    correct_under: tuple[str, ...] = ()
    """The models that had to be correct for a test image to be drawn."""

    def inputs(self, sample_ids: Tensor | None = None) -> Tensor:
        """float32 (K', C, H, W) model inputs of the given samples (all when None)."""
        images = self.images if sample_ids is None else self.images[sample_ids]
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (images.float() / 255.0 - mean) / std

    def players_of(self, sample_ids: Tensor) -> Players:
        return Players(grid=self.players.grid, patch_ids=self.players.patch_ids[sample_ids])

    @property
    def n_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def sample_ids(self) -> Tensor:
        return torch.arange(self.n_samples, dtype=torch.int64)

    def shard_ids(self, shard: int, n_shards: int) -> Tensor:
        """Sample ids of one of ``n_shards`` contiguous, near-equal shards (may be empty)."""
        if not 0 <= shard < n_shards:
            raise ValueError(f"shard {shard} out of range for extraction.shards={n_shards}")
        parts = np.array_split(np.arange(self.n_samples), n_shards)
        return torch.from_numpy(parts[shard].astype(np.int64))

    def to_dict(self) -> dict[str, Any]:
        """Tensors and plain values only, so the file loads with ``weights_only=True``."""
        return {
            "format": SELECTION_FORMAT,
            "images": self.images,
            "mean": list(self.mean),
            "std": list(self.std),
            **_shared_dict(self),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Selection:
        if data.get("format") != SELECTION_FORMAT:
            raise ValueError(
                f"selection artefact has format {data.get('format')!r}, expected "
                f"{SELECTION_FORMAT}; rerun the select stage"
            )
        return cls(
            images=data["images"],
            mean=tuple(float(m) for m in data["mean"]),
            std=tuple(float(m) for m in data["std"]),
            **_shared_fields(data),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        save_torch(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Selection:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no selection artefact at {path}; it is written by the select stage "
                "(snakemake results/<experiment>/selection/selection.pt)"
            ) from None
        return cls.from_dict(data)

    def to_frame(self) -> pd.DataFrame:
        """One row per sample, for people and joins: ids, label, class name and players."""
        g = self.players.grid
        ids = self.players.patch_ids.tolist()
        rows = [[i // g.n_cols for i in row] for row in ids]
        cols = [[i % g.n_cols for i in row] for row in ids]
        return pd.DataFrame({**_shared_columns(self, rows, cols, g.patch_size), **correct_columns(self.correct)})

    def write(self, artefact: str | os.PathLike[str], table: str | os.PathLike[str]) -> None:
        self.save(artefact)
        write_parquet(self.to_frame(), table)


def make_selection(
    models: Mapping[str, nn.Module],
    test: ImageSet,
    *,
    per_class: int,
    seed: int,
    n_players: int,
    patch_size: int,
    rule: str = "central",
    rule_options: Mapping[str, Any] | None = None,
    batch_size: int = 512,
    correct_under: Sequence[str] | None = None,
) -> Selection:
    """Select samples that the ``correct_under`` models (default: all) get right, then their players.

    Every model's correctness is stored per sample, whether it was required or not (method.md §5).
    """
    required = required_models(models, correct_under)
    height, width = test.image_size
    grid = PatchGrid(height=height, width=width, patch_size=patch_size)
    # On a GPU node, classify there: three ImageNet-size models over a 10 000-image test set
    # take hours on CPU cores.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    hits = correctness(models, test.normalized(), test.labels, batch_size=batch_size, device=device)
    eligible = correct_under_all(hits, required, len(test.labels))
    index = choose_samples(test.labels, eligible, per_class, seed, range(test.num_classes))
    contexts = [
        SampleContext(
            sample_id=k,
            dataset_index=int(i),
            label=int(test.labels[i]),
            image=test.images[i],
            annotation=test.annotation(int(i)),
        )
        for k, i in enumerate(index)
    ]
    players = choose_players(grid, n_players, contexts, seed, rule, rule_options)
    return Selection(
        images=test.images[index].contiguous(),
        mean=test.mean,
        std=test.std,
        labels=test.labels[index].to(torch.int64),
        dataset_index=index,
        source_index=test.source_index[index].to(torch.int64),
        players=players,
        class_names=test.class_names,
        seed=seed,
        rule=rule,
        correct={name: h[index].clone() for name, h in hits.items()},
        correct_under=required,
    )

