"""Extraction of the games: the first of two steps that the workflow runs as separate jobs.

1. :func:`play` — the games: every masked forward pass of one model checkpoint on one shard of
   the selected samples, stored as :class:`~pretrain_knowledge.results.Games`. This is the only
   step that needs the model (and a GPU, when there is one).
2. :func:`pretrain_knowledge.sparsification.explain` — their sparse AND-OR interactions (method.md
   §3), from the stored games alone, so a change of the sparsification never repeats a forward pass.

Storage is two hive-partitioned datasets with the same keys (``pretrain_knowledge.layout``)::

    results/<experiment>/games/model=<model>/epoch=<epoch>/shard-<k>.parquet
    results/<experiment>/interactions/model=<model>/epoch=<epoch>/shard-<k>.parquet

A shard holds nothing that depends on the directory it sits in: ``model`` and ``epoch`` live only
in the path. ``pd.read_parquet("results/<experiment>/interactions")`` returns one table with
``model`` and ``epoch`` added by pyarrow's hive discovery — as **categoricals** (``epoch`` has
integer categories; use ``df.epoch.astype(int)``). :func:`pretrain_knowledge.results.read_interactions`
reads an explicit list of shards and returns ``model`` as a categorical in model order and ``epoch``
as int64.

Model names (:data:`pretrain_knowledge.layout.MODELS`): ``pretrain`` is the pre-trained backbone
read through its linear probe (method.md §1), so its epoch is the probe's last epoch; ``finetune``
and ``scratch`` carry the epoch of their checkpoint (0 = before training).
"""

from __future__ import annotations

import torch
from torch import nn

from .game import evaluate_games
from .results import Games
from .selection import Selection


def play(
    model: nn.Module,
    selection: Selection,
    sample_ids: torch.Tensor,
    *,
    baseline: float = 0.0,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Games:
    """The games of the given samples under one model; ``baseline`` in normalised input space."""
    if len(sample_ids) == 0:
        raise ValueError("a shard must hold at least one sample")
    model = model.to(device).eval()
    players = selection.players_of(sample_ids)
    v = evaluate_games(
        model,
        selection.inputs(sample_ids),
        selection.labels[sample_ids],
        players,
        baseline=baseline,
        batch_size=batch_size,
        progress=progress,
    )
    return Games(
        sample_ids=sample_ids.to(torch.int64),
        labels=selection.labels[sample_ids].to(torch.int64),
        players=players.patch_ids,
        grid=players.grid,
        v=v,
    )


def check_finite(games: Games, where: str) -> None:
    """Refuse games with NaN or inf values, naming the samples and the checkpoint (``where``)."""
    bad = ~torch.isfinite(games.v).all(dim=1)
    if bool(bad.any()):
        ids = games.sample_ids[bad].tolist()
        raise ValueError(
            f"{where}: the model's log-odds are not finite for samples {ids} (sample ids of the "
            "selection); the checkpoint's outputs overflow or are NaN. Check its training log, or "
            "lower the learning rate of that model and retrain it."
        )
