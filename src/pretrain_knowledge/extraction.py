"""Interaction extraction: one model checkpoint × one shard of the selected samples → one Parquet.

The unit of work is small on purpose: a cluster spreads (model, checkpoint, shard) jobs over GPU
nodes, and a local run resumes after an interruption by redoing only the shards that are missing.

Storage is a hive-partitioned dataset::

    results/<experiment>/interactions/model=<model>/epoch=<epoch>/shard-<k>.parquet

Each shard holds the columns of :data:`pretrain_knowledge.results.COLUMNS` (one row per sample,
type and coalition) and nothing that depends on the directory it sits in: ``model`` and ``epoch``
live only in the path. ``pd.read_parquet("results/<experiment>/interactions")`` therefore returns
one table with ``model`` and ``epoch`` added by pyarrow's hive discovery — as **categoricals**
(``epoch`` has integer categories; use ``df.epoch.astype(int)``). :func:`read_interactions`
reads an explicit list of shards instead and returns ``model`` as a categorical in model order
and ``epoch`` as int64; the workflow uses it so that shards left over from an earlier config are
never mixed in.

Model names (:data:`MODELS`): ``pretrain`` is the pre-trained backbone read through its linear
probe (method.md §1), so its epoch is the probe's last epoch; ``finetune`` and ``scratch`` carry
the epoch of their checkpoint (0 = before training).

Coalition convention: a coalition S is the integer with bit i set iff player i ∈ S (player 0 is
the least significant bit); player i of a sample is patch ``players[i]`` of its grid.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from .game import evaluate_games
from .interactions import sparsify
from .io import write_parquet
from .results import GameBatchResult
from .selection import Selection

MODELS: tuple[str, ...] = ("pretrain", "finetune", "scratch")
"""Models whose interactions are explained, in table order."""
MODEL_DTYPE = pd.CategoricalDtype(list(MODELS))

_PARTITION = re.compile(r"^(model|epoch)=(.+)$")


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, so the same rule runs on a laptop and a GPU node."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def extract(
    model: nn.Module,
    selection: Selection,
    sample_ids: torch.Tensor,
    *,
    qthres: float = 0.04,
    method: str = "lp",
    options: Mapping[str, Any] | None = None,
    baseline: float = 0.0,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> GameBatchResult:
    """Games, then sparse AND-OR interactions, of the given samples under one model.

    ``baseline`` is in normalised input space (0 = the dataset mean, method.md §2).
    """
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
    # The LP runs where the model ran: on a GPU node it is a batched Cholesky per iteration,
    # on CPU cores ~2 s per n = 10 game, which would hold the GPU idle for hours.
    interactions = sparsify(
        v.to(device), qthres=qthres, method=method, progress=progress, **dict(options or {})
    )
    return GameBatchResult(
        sample_ids=sample_ids.to(torch.int64),
        labels=selection.labels[sample_ids].to(torch.int64),
        players=players.patch_ids,
        grid=players.grid,
        interactions=interactions.to("cpu"),
    )


def check_matching(result: GameBatchResult, tolerance: float) -> None:
    """Refuse to store interactions that do not reproduce the game (universal matching)."""
    diag = result.interactions.diagnostics
    scale = result.interactions.v.abs().amax(dim=1).clamp_min(1.0).double()
    bad = diag.matching_error > tolerance * scale
    if bool(bad.any()):
        ids = result.sample_ids[bad].tolist()
        worst = float((diag.matching_error / scale).max())
        raise RuntimeError(
            f"universal matching fails for samples {ids}: relative error {worst:.3g} exceeds "
            f"extraction.matching_tolerance={tolerance}; the sparsifier did not converge "
            "(try extraction.sparsify.method or raise the tolerance knowingly)"
        )


def write_shard(result: GameBatchResult, path: str | os.PathLike[str]) -> pd.DataFrame:
    """Write one shard atomically; the path carries model and epoch (hive layout)."""
    frame = result.to_frame()
    write_parquet(frame, path)
    return frame


def shard_path(root: str | os.PathLike[str], model: str, epoch: int, shard: int) -> Path:
    """Hive path of one shard below ``results/<experiment>/interactions``."""
    return Path(root) / f"model={model}" / f"epoch={epoch}" / f"shard-{shard}.parquet"


def partition_keys(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{"model": ..., "epoch": ...}`` from a hive shard path."""
    keys = {}
    for part in Path(path).parts:
        match = _PARTITION.match(part)
        if match:
            keys[match.group(1)] = match.group(2)
    if set(keys) != {"model", "epoch"}:
        raise ValueError(
            f"{path} is not a hive shard path .../model=<model>/epoch=<epoch>/shard-<k>.parquet"
        )
    return keys


def read_interactions(paths: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """Concatenate the given shards, with ``model`` (categorical, :data:`MODELS`) and ``epoch`` (int64)."""
    frames = []
    for path in paths:
        keys = partition_keys(path)
        if keys["model"] not in MODELS:
            raise ValueError(f"{path}: unknown model {keys['model']!r}, expected one of {MODELS}")
        frame = pd.read_parquet(path)
        frame.insert(0, "epoch", int(keys["epoch"]))
        frame.insert(0, "model", pd.Categorical([keys["model"]] * len(frame), dtype=MODEL_DTYPE))
        frames.append(frame)
    if not frames:
        raise ValueError("no interaction shards given")
    out = pd.concat(frames, ignore_index=True)
    out["model"] = out["model"].astype(MODEL_DTYPE)
    out["epoch"] = out["epoch"].astype("int64")
    return out


def batch_of(frame: pd.DataFrame, model: str, epoch: int) -> GameBatchResult:
    """The games of one model and checkpoint over all shards, samples in ascending id order."""
    rows = frame[(frame["model"] == model) & (frame["epoch"] == epoch)]
    if rows.empty:
        raise ValueError(f"no interactions for model={model} epoch={epoch}")
    rows = rows.sort_values(["sample_id", "type", "coalition"], kind="stable")
    return GameBatchResult.from_frame(rows)
