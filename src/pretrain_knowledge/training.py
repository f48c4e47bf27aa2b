"""One training loop for the four models of an experiment (method.md §1).

Modes:

- ``pretrain``: train a fresh (or ImageNet-initialised) model on the upstream task. With
  ImageNet weights and ``epochs=0`` it only writes the weights as ``epoch-000.pt``.
- ``probe``: the pretrained backbone, frozen and *kept in eval mode* (BatchNorm statistics and
  dropout untouched), with a new linear head trained on the downstream task. Its output is
  ``v_pretrain``.
- ``finetune``: the pretrained backbone with a new head; every layer trained.
- ``scratch``: the same architecture from random initialisation, trained like ``finetune``.

Text models (:mod:`pretrain_knowledge.models_text`) train in the same loop: their splits are
tokenized once by the model's own tokenizer (:class:`~pretrain_knowledge.data.text.EncodedText`), and
the loop reads any container through ``batch(idx, device) -> (inputs, labels)``; with ``weights``,
pretrain stores the loaded language model as epoch 0.

Every mode writes ``<out_dir>/epoch-000.pt`` before training and ``epoch-NNN.pt`` after each
epoch: a dict of state_dicts plus a plain-dict ``config`` (torchvision-reference style), written
atomically and loadable with ``torch.load(weights_only=True)``. Metrics go to one Parquet table
with the workflow's schema (see :data:`METRIC_COLUMNS`).

Reproducibility: initialisation (and dropout) draw from torch's global generator seeded with
``seed`` inside a forked RNG state; batch order and augmentation share one generator seeded with
``seed + 1``. The same config therefore gives bitwise-identical weights on the CPU with the same
thread count, which the workflow fixes from the config (``threads``) and records in the
checkpoint. A manifest of every checkpoint's size and SHA-256 is written at the end
(:mod:`pretrain_knowledge.integrity`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .catalog import ARCHITECTURES
from .data.images import ImageSet
from .data.text import EncodedText, TextSet
from .device import resolve_device
from .integrity import IntegrityError, manifest_of, verify_file, write_manifest
from .io import save_torch, write_parquet
from .layout import MODES, SPLITS, checkpoint_name
from .models import Classifier, build_model, model_from_config, replace_head
from .models_text import TextClassifier, build_text_model
from .spec import ModeSpec
from .typed import fields_of, to_plain

OPTIMIZERS: tuple[str, ...] = typing.get_args(fields_of(ModeSpec)["optimizer"][1])
SCHEDULES: tuple[str, ...] = typing.get_args(fields_of(ModeSpec)["schedule"][1])
AUGMENTATIONS: tuple[str, ...] = typing.get_args(fields_of(ModeSpec)["augment"][1])
CHECKPOINT_FORMAT = "pretrain_knowledge.checkpoint/1"
PREDICTION_COLUMNS = ("epoch", "index", "correct")
"""Columns of a predictions table: epoch int64, index int64 (position in the test split), correct bool."""
METRIC_COLUMNS = ("model", "epoch", "split", "loss", "accuracy", "seconds")
"""Columns of a metrics table: one row per (model, epoch, split).

``model`` is the mode; ``split`` is ``train`` or ``test``. Epoch 0 rows evaluate the untrained
model on both splits. For epochs ≥ 1 the ``train`` row holds the running mean loss/accuracy over
that epoch's mini-batches (as torchvision's reference reports it) and the epoch's training wall
seconds; the ``test`` row is an eval-mode pass after the epoch and its wall seconds.
"""


class CheckpointError(FileNotFoundError):
    """A checkpoint is missing, unreadable or not one of ours."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig(ModeSpec):
    """Everything that determines a training run: the mode's hyper-parameters (:class:`ModeSpec`,
    where their defaults live) plus what the experiment adds; stored verbatim in every checkpoint."""

    mode: str
    arch: str = "small_cnn"
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    """CPU threads the run was made with (set by the stage; results on the CPU depend on it)."""
    weights: str | None = None
    """pretrain only: ImageNet weights, a file path or ``"imagenet"`` (torchvision API)."""
    init: str | None = None
    """probe/finetune: path of the pretrained checkpoint to start from."""
    text_model: str | None = None
    """Text: the model folder or hub name whose tokenizer and configuration every mode uses (its
    weights load only in pretrain, as ``weights``); None builds them from the data's vocabulary."""
    keep: tuple[int, ...] | None = None
    """Epochs whose checkpoints are kept once training ends (None: all); the others are deleted."""

    def __post_init__(self) -> None:
        checks = [
            (self.mode in MODES, f"mode must be one of {MODES}; got {self.mode!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}; got {self.schedule!r}"),
            (self.augment in AUGMENTATIONS, f"augment must be one of {AUGMENTATIONS}; got {self.augment!r}"),
            (self.epochs >= 0, f"epochs must be >= 0; got {self.epochs}"),
            (self.lr > 0, f"lr must be > 0; got {self.lr}"),
            (self.batch_size >= 1 and self.eval_batch_size >= 1, "batch sizes must be >= 1"),
            (
                self.mode in ("probe", "finetune") or self.init is None,
                f"--init is for probe/finetune, not {self.mode}",
            ),
            (
                self.mode not in ("probe", "finetune") or self.init is not None,
                f"{self.mode} needs --init (a pretrain checkpoint)",
            ),
            (
                self.mode == "pretrain" or self.weights is None,
                "ImageNet weights belong to the pretrain stage",
            ),
            (
                ARCHITECTURES[self.arch].modality == "image" or self.augment == "none",
                f"text models take no augmentation; got augment={self.augment!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)



@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    split: str
    loss: float
    accuracy: float
    seconds: float


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint (see :func:`load_checkpoint`)."""

    path: Path
    epoch: int
    model_state: dict[str, Tensor]
    config: dict[str, Any]
    """{"train": TrainConfig fields, "model": Classifier.config, "data": normalisation/classes, "init": ...}."""
    optimizer_state: dict[str, Any] | None


@dataclass(frozen=True)
class TrainResult:
    model: Classifier
    checkpoints: list[Path]
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    """One row per (epoch, test image): whether the model classified it correctly (:data:`PREDICTION_COLUMNS`)."""


def checkpoint_path(out_dir: str | os.PathLike[str], epoch: int) -> Path:
    """``<out_dir>/epoch-NNN.pt``: the file names every stage and rule relies on."""
    return Path(out_dir) / checkpoint_name(epoch)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _rerun(path: Path) -> str:
    manifest = manifest_of(path)
    if manifest.is_file():
        return f"rerun the training job that wrote it: rm {manifest} && snakemake (with your usual options)"
    return "rerun the stage that writes it (pretrain/probe/finetune/scratch)"


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """A checkpoint, verified against its folder's manifest when it has one (integrity module)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist; {_rerun(p)}")
    try:
        verify_file(p)
    except IntegrityError as err:
        raise CheckpointError(str(err)) from None
    try:
        d = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {p} is unreadable ({err}); {_rerun(p)}") from err
    if not isinstance(d, dict) or d.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{p} is not a pretrain_knowledge checkpoint (expected format {CHECKPOINT_FORMAT!r}); "
            "ImageNet weight files go to the pretrain stage's --weights option"
        )
    return Checkpoint(
        path=p,
        epoch=int(d["epoch"]),
        model_state=d["model"],
        config=d["config"],
        optimizer_state=d.get("optimizer"),
    )


def load_classifier(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Classifier:
    """A checkpoint as a ready-to-use classifier in eval mode.

    Its logits are over the checkpoint's own classes: the downstream classes for probe, finetune
    and scratch (the probe's classifier is the frozen backbone plus its linear head), the
    upstream classes for pretrain. Inputs are normalised as ``config["data"]`` says
    (:meth:`pretrain_knowledge.data.ImageSet.normalize`).
    """
    ckpt = load_checkpoint(path)
    model = model_from_config(ckpt.config["model"])
    model.load_state_dict(ckpt.model_state)
    return model.to(device).eval()


def _save_checkpoint(
    out_dir: Path,
    epoch: int,
    model: Classifier,
    optimizer: torch.optim.Optimizer | None,
    config: dict[str, Any],
    metrics: list[EpochMetrics],
) -> Path:
    path = checkpoint_path(out_dir, epoch)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": state,
        "config": config,
        "metrics": [dataclasses.asdict(m) for m in metrics if m.epoch == epoch],
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    save_torch(payload, path)
    return path


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    starts = list(range(0, n, batch_size))
    # A trailing batch of one would break BatchNorm in train mode; fold it into the previous one.
    if generator is not None and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else n
        yield order[s:e]


def _progress(batches: Iterator[Tensor], n: int, batch_size: int, desc: str) -> Iterator[Tensor]:
    """Batches with a tqdm bar on stderr, which Snakemake sends to the rule's log."""
    total = len(range(0, n, batch_size))
    return tqdm(batches, total=total, desc=desc, unit="batch", file=sys.stderr, mininterval=5.0, leave=False)


def _augment(x: Tensor, kind: str, generator: torch.Generator) -> Tensor:
    """Random crop after zero padding (zero = the dataset mean) and, for flip_crop, a mirror flip."""
    if kind == "none":
        return x
    b, _, h, w = x.shape
    pad = max(1, min(h, w) // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).tolist()
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).tolist()
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    if kind == "flip_crop":
        flip = torch.rand(b, generator=generator) < 0.5
        out = torch.where(flip.view(b, 1, 1, 1).to(out.device), out.flip(-1), out)
    return out


def _autocast(device: torch.device, amp: bool) -> Any:
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


FROZEN_BACKBONE: tuple[str, ...] = ("probe", "random_probe")
"""Modes that train only a linear head on a frozen backbone (kept in eval mode)."""
RANDOM_INIT: tuple[str, ...] = ("pretrain", "scratch", "scratch_b", "random_probe", "scratch_converged")
"""Modes that start from random weights (pretrain: unless ImageNet weights are given)."""


def set_train_mode(model: Classifier, mode: str) -> None:
    """Train mode for what is trained; a frozen backbone stays in eval mode."""
    model.train()
    if mode in FROZEN_BACKBONE:
        model.backbone.eval()


def train_one_epoch(
    model: Classifier,
    data: ImageSet | EncodedText,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    mode: str,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    augment: str = "none",
    label_smoothing: float = 0.0,
    amp: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    desc: str = "train",
) -> tuple[float, float]:
    """One pass over ``data`` in shuffled mini-batches; returns running (mean loss, accuracy)."""
    set_train_mode(model, mode)
    total_loss, correct, seen = 0.0, 0, 0
    for idx in _progress(_batches(len(data), batch_size, generator), len(data), batch_size, desc):
        x, y = data.batch(idx, device)
        x = _augment(x, augment, generator)
        with _autocast(device, amp):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        batch_loss = float(loss.detach())
        if not math.isfinite(batch_loss):
            raise FloatingPointError(f"{desc}: loss became {batch_loss}; lower the learning rate")
        total_loss += batch_loss * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
    return total_loss / max(seen, 1), correct / max(seen, 1)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    data: ImageSet | EncodedText,
    *,
    batch_size: int = 500,
    device: torch.device | None = None,
    amp: bool = False,
    desc: str = "eval",
    correct_out: list[Tensor] | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` in eval mode over all of ``data``.

    ``correct_out`` receives, batch by batch, whether each image was classified correctly.
    """
    device = device or next(model.parameters()).device
    model.eval()
    total_loss, correct = 0.0, 0
    for idx in _progress(_batches(len(data), batch_size, None), len(data), batch_size, desc):
        x, y = data.batch(idx, device)
        with _autocast(device, amp):
            logits = model(x)
        total_loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        hits = logits.argmax(1) == y
        correct += int(hits.sum())
        if correct_out is not None:
            correct_out.append(hits.cpu())
    return total_loss / max(len(data), 1), correct / max(len(data), 1)


def _make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """The learning rate at ``step`` as a share of the peak: a linear warm-up over ``warmup`` steps,
    then constant or a cosine decay to 0 over the remaining steps (ViTs from scratch need the
    warm-up to train at all)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))


def _make_scheduler(
    opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "constant" and warmup == 0:
        return None
    total = max(1, cfg.epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total, warmup, cfg.schedule))


def _resize_vit(model: Classifier, image_size: int) -> Classifier:
    """A ViT for another input side: position embeddings interpolated, every other weight kept.

    ImageNet weights are stored at 224 px by the pretrain stage, which does not see the data; a
    downstream run at another resolution adapts them here, as ViT fine-tuning at 384 px does.
    """
    from torchvision.models.vision_transformer import interpolate_embeddings

    backbone = interpolate_embeddings(image_size, 16, model.backbone.state_dict())  # type: ignore[arg-type]
    resized = model_from_config({**model.config, "image_size": image_size})
    resized.backbone.load_state_dict(backbone)
    resized.head.load_state_dict(model.head.state_dict())
    return resized


def _initial_text_model(
    cfg: TrainConfig, train: TextSet | None, data_info: dict[str, Any] | None
) -> tuple[TextClassifier, dict[str, Any]]:
    """The epoch-0 text model of a mode. Pre-training with ``weights`` is loading the pre-trained
    language model (its MLM encoder) as epoch 0, exactly as ImageNet weights are for images; its
    head (two classes) is a placeholder that probe and finetune replace. A mode without ``init``
    starts fresh (its weights random unless pretrain loads ``weights``), one with ``init`` from
    that checkpoint, so further modes need no text-specific case here."""
    if cfg.init is None:
        vocabulary = (data_info or {}).get("vocabulary")
        weights = cfg.weights if cfg.mode == "pretrain" else None
        classes = 2 if train is None else train.num_classes
        if train is None and weights is None:
            raise ValueError(f"{cfg.mode} needs training data (or, for pretrain, pre-trained weights)")
        model = build_text_model(cfg.arch, classes, weights=weights, text_model=cfg.text_model, vocabulary=vocabulary)
        if cfg.mode in FROZEN_BACKBONE:  # random_probe: a random backbone, frozen as the probe's
            model.backbone.requires_grad_(False)
        return model, {}
    assert cfg.init is not None and train is not None
    ckpt = load_checkpoint(cfg.init)
    model = model_from_config(ckpt.config["model"])
    model.load_state_dict(ckpt.model_state)
    replace_head(model, train.num_classes)  # type: ignore[arg-type]
    if cfg.mode in FROZEN_BACKBONE:
        model.backbone.requires_grad_(False)
    return model, {"path": str(cfg.init), "epoch": ckpt.epoch, "mode": ckpt.config["train"]["mode"]}  # type: ignore[return-value]


def _initial_model(
    cfg: TrainConfig, train: ImageSet | TextSet | None, data_info: dict[str, Any] | None = None
) -> tuple[Classifier | TextClassifier, dict[str, Any]]:
    """Build the epoch-0 model of a mode; the global RNG must already be seeded."""
    if ARCHITECTURES[cfg.arch].modality == "text":
        if train is not None and not isinstance(train, TextSet):
            raise ValueError(f"{cfg.arch} is a text model; give it a prepared text task")
        return _initial_text_model(cfg, train, data_info)
    if isinstance(train, TextSet):
        raise ValueError(f"{cfg.arch} is an image model; give it a prepared image task")
    if cfg.mode in RANDOM_INIT:
        if train is None:
            if cfg.weights is None:
                raise ValueError(f"{cfg.mode} needs training data (or, for pretrain, ImageNet weights)")
            return build_model(cfg.arch, 1000, in_channels=3, weights=cfg.weights), {}
        size = train.image_size
        if size[0] != size[1]:
            raise ValueError(f"images must be square; got {size}")
        model = build_model(
            cfg.arch, train.num_classes, in_channels=train.channels, image_size=size[0], weights=cfg.weights
        )
        if cfg.mode in FROZEN_BACKBONE:  # random_probe: a random backbone, frozen as the probe's
            model.backbone.requires_grad_(False)
        return model, {}
    assert cfg.init is not None and train is not None
    ckpt = load_checkpoint(cfg.init)
    model = model_from_config(ckpt.config["model"])
    model.load_state_dict(ckpt.model_state)
    if model.in_channels != train.channels:
        raise ValueError(
            f"{cfg.init} expects {model.in_channels}-channel images but the data has {train.channels}; "
            f"prepare the data with --channels {model.in_channels}"
        )
    if model.arch.startswith("vit") and train.image_size != (model.image_size, model.image_size):
        model = _resize_vit(model, train.image_size[0])
    replace_head(model, train.num_classes)
    if cfg.mode in FROZEN_BACKBONE:
        model.backbone.requires_grad_(False)
    return model, {"path": str(cfg.init), "epoch": ckpt.epoch, "mode": ckpt.config["train"]["mode"]}


def metrics_frame(rows: list[EpochMetrics], model_name: str) -> pd.DataFrame:
    """Metrics rows as the workflow's table (columns :data:`METRIC_COLUMNS`, fixed dtypes)."""
    frame = pd.DataFrame(
        [dataclasses.asdict(r) for r in rows], columns=["epoch", "split", "loss", "accuracy", "seconds"]
    )
    frame.insert(0, "model", model_name)
    return frame.astype(
        {
            "model": str,
            "epoch": "int64",
            "split": str,
            "loss": "float64",
            "accuracy": "float64",
            "seconds": "float64",
        }
    )[list(METRIC_COLUMNS)]


def _data_config(data: ImageSet | TextSet | None, info: dict[str, Any] | None) -> dict[str, Any]:
    if data is None:
        return {}
    if isinstance(data, TextSet):
        # The vocabulary is already in the model's config; once per checkpoint is enough.
        return {
            "class_names": list(data.class_names),
            "source_classes": list(data.source_classes),
            "info": {k: v for k, v in (info or {}).items() if k != "vocabulary"},
        }
    return {
        "class_names": list(data.class_names),
        "source_classes": list(data.source_classes),
        "mean": list(data.mean),
        "std": list(data.std),
        "image_size": list(data.image_size),
        "channels": data.channels,
        "info": dict(info or {}),
    }


def train(
    cfg: TrainConfig,
    train_data: ImageSet | TextSet | None,
    test_data: ImageSet | TextSet | None,
    out_dir: str | os.PathLike[str],
    metrics_path: str | os.PathLike[str] | None = None,
    *,
    data_info: dict[str, Any] | None = None,
    manifest_path: str | os.PathLike[str] | None = None,
    predictions_path: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Run one mode: checkpoints at epoch 0 and after each epoch, metrics after each epoch.

    Initialisation and dropout draw from torch's global generator, seeded with ``cfg.seed`` inside a
    forked RNG state (the caller's generator is left as it was); batch order and augmentation draw
    from one generator seeded with ``cfg.seed + 1``. With the same thread count (set by the caller,
    recorded in ``cfg.threads``) the CPU gives bitwise-identical weights. ``manifest_path`` gets the
    size and SHA-256 of every checkpoint once all are written (:mod:`pretrain_knowledge.integrity`).
    """
    device = resolve_device(cfg.device)
    cuda = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(cfg.seed)
        result = _train(cfg, train_data, test_data, Path(out_dir), metrics_path, device, data_info)
    if predictions_path is not None:
        write_parquet(result.predictions, predictions_path)
    if cfg.keep is not None:
        result = dataclasses.replace(result, checkpoints=_prune(result.checkpoints, cfg.keep))
    if manifest_path is not None:
        write_manifest(result.checkpoints, manifest_path)
    return result


def _prune(checkpoints: list[Path], keep: tuple[int, ...]) -> list[Path]:
    """Delete the checkpoints of epochs not in ``keep`` (every epoch of a paper-size grid is ~0.4 TB)."""
    kept = []
    for epoch, path in enumerate(checkpoints):
        if epoch in keep or epoch == len(checkpoints) - 1:
            kept.append(path)
        else:
            path.unlink()
    return kept


def _train(
    cfg: TrainConfig,
    train_data: ImageSet | TextSet | None,
    test_data: ImageSet | TextSet | None,
    out: Path,
    metrics_path: str | os.PathLike[str] | None,
    device: torch.device,
    data_info: dict[str, Any] | None,
) -> TrainResult:
    if (train_data is None) != (test_data is None):
        raise ValueError("give both train and test data, or neither (pretrain from ImageNet weights only)")
    if train_data is None and cfg.epochs:
        raise ValueError("without data, only epochs=0 is possible (ImageNet weights saved as epoch 0)")
    if train_data is not None and len(train_data) == 0:
        raise ValueError("the training split is empty")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
    raw_train = train_data
    model, init_info = _initial_model(cfg, train_data, data_info)
    model.to(device)
    if isinstance(model, TextClassifier):
        # Token ids of this model's tokenizer: what the loop feeds it (batch(idx) like images).
        train_data = None if train_data is None else model.encoder.encode_set(train_data)  # type: ignore[arg-type]
        test_data = None if test_data is None else model.encoder.encode_set(test_data)  # type: ignore[arg-type]
    config = {
        "train": to_plain(cfg),
        "model": model.config,
        "data": _data_config(raw_train, data_info),
        "init": init_info,
    }
    params = [
        p
        for p in (model.head.parameters() if cfg.mode in FROZEN_BACKBONE else model.parameters())
        if p.requires_grad
    ]
    optimizer = _make_optimizer(params, cfg)
    steps = len(range(0, len(train_data), cfg.batch_size)) if train_data is not None else 0
    scheduler = _make_scheduler(optimizer, cfg, steps)
    scaler = torch.amp.GradScaler(
        "cuda", enabled=cfg.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    )
    shuffle = torch.Generator().manual_seed(cfg.seed + 1)
    rows: list[EpochMetrics] = []
    test_hits: dict[int, Tensor] = {}

    def record(epoch: int, split: str, loss: float, acc: float, seconds: float) -> None:
        rows.append(EpochMetrics(epoch, split, loss, acc, seconds))

    def evaluate_split(epoch: int, split: str, data: ImageSet | EncodedText) -> None:
        t0 = time.perf_counter()
        hits: list[Tensor] = []
        loss, acc = evaluate(
            model,
            data,
            batch_size=cfg.eval_batch_size,
            device=device,
            amp=cfg.amp,
            desc=f"{cfg.mode} {split} {epoch}",
            correct_out=hits if split == "test" else None,
        )
        record(epoch, split, loss, acc, time.perf_counter() - t0)
        if hits:
            test_hits[epoch] = torch.cat(hits)

    def evaluate_test(epoch: int) -> None:
        assert test_data is not None
        evaluate_split(epoch, "test", test_data)

    if train_data is not None:
        evaluate_split(0, "train", train_data)
        evaluate_test(0)
    saver = optimizer if cfg.save_optimizer else None
    checkpoints = [_save_checkpoint(out, 0, model, saver, config, rows)]
    _log_epoch(cfg, rows, 0)
    for epoch in range(1, cfg.epochs + 1):
        assert train_data is not None
        t0 = time.perf_counter()
        loss, acc = train_one_epoch(
            model,
            train_data,
            optimizer,
            scheduler,
            mode=cfg.mode,
            batch_size=cfg.batch_size,
            device=device,
            generator=shuffle,
            augment=cfg.augment,
            label_smoothing=cfg.label_smoothing,
            amp=cfg.amp,
            scaler=scaler,
            desc=f"{cfg.mode} epoch {epoch}/{cfg.epochs}",
        )
        record(epoch, "train", loss, acc, time.perf_counter() - t0)
        evaluate_test(epoch)
        checkpoints.append(_save_checkpoint(out, epoch, model, saver, config, rows))
        _log_epoch(cfg, rows, epoch)
        if metrics_path is not None:
            write_parquet(metrics_frame(rows, cfg.mode), metrics_path)
    frame = metrics_frame(rows, cfg.mode)
    if metrics_path is not None:
        write_parquet(frame, metrics_path)
    return TrainResult(model=model.eval(), checkpoints=checkpoints, metrics=frame, predictions=predictions_frame(test_hits))


def predictions_frame(hits: dict[int, Tensor]) -> pd.DataFrame:
    """Per-epoch, per-test-image correctness as a table (:data:`PREDICTION_COLUMNS`)."""
    epochs = sorted(hits)
    n = len(hits[epochs[0]]) if epochs else 0
    return pd.DataFrame(
        {
            "epoch": np.repeat(np.asarray(epochs, dtype=np.int64), n),
            "index": np.tile(np.arange(n, dtype=np.int64), len(epochs)),
            "correct": np.concatenate([hits[e].numpy() for e in epochs]) if epochs else np.zeros(0, dtype=bool),
        }
    )[list(PREDICTION_COLUMNS)]


def _log_epoch(cfg: TrainConfig, rows: list[EpochMetrics], epoch: int) -> None:
    parts = [
        f"{r.split} loss {r.loss:.4f} acc {r.accuracy:.4f} ({r.seconds:.1f}s)"
        for r in rows
        if r.epoch == epoch
    ]
    tqdm.write(
        f"[{cfg.mode}] epoch {epoch}/{cfg.epochs}: " + ("; ".join(parts) or "no data"), file=sys.stderr
    )


def combine_metrics(paths: list[str | os.PathLike[str]]) -> pd.DataFrame:
    """The per-mode metrics tables as one, one row per (model, epoch, split), models in pipeline order."""
    frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    unknown = sorted(set(frame["model"].astype(str)) - set(MODES))
    if unknown:
        raise ValueError(f"metrics of unknown models {unknown}; expected {MODES}")
    frame["model"] = pd.Categorical(frame["model"].astype(str), categories=list(MODES))
    frame["split"] = pd.Categorical(frame["split"].astype(str), categories=list(SPLITS))
    frame = frame.sort_values(["model", "epoch", "split"], kind="stable").reset_index(drop=True)
    if frame.duplicated(["model", "epoch", "split"]).any():
        raise ValueError("metrics have duplicate (model, epoch, split) rows")
    return frame
