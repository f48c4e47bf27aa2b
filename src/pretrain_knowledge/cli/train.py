"""Stages ``pretrain``, ``probe``, ``finetune`` and ``scratch``: one training run each (method.md §1).

The workflow hands the run's settings as ``--settings`` (the fields of
:class:`pretrain_knowledge.training.TrainConfig` but ``mode`` and ``init``); by hand, every field is
also a flag, and flags win over ``--settings``. Defaults are :class:`pretrain_knowledge.spec.ModeSpec`'s.

Outputs: ``--out-dir`` gets ``epoch-000.pt`` (before training) … ``epoch-<epochs>.pt``, ``--metrics``
one Parquet row per (model, epoch, split), and ``--manifest`` the size and SHA-256 of every
checkpoint (:mod:`pretrain_knowledge.integrity`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing

from ..data.text import load_any_task
from ..training import TrainConfig, train
from ..typed import ConfigError, build, fields_of
from .common import FORMATTER, log, set_threads

DESCRIPTIONS = {
    "pretrain": "Train a model on the upstream task, or with --weights and --epochs 0 just store ImageNet "
    "weights as epoch 0. Writes a checkpoint before training and after every epoch.",
    "probe": "Load the pretrained backbone, freeze it and keep it in eval mode, and train a new linear head "
    "on the downstream task. Its outputs are the pretrained model's downstream knowledge (v_pretrain).",
    "finetune": "Load the pretrained backbone, give it a new randomly initialised head over the downstream "
    "classes, and train every layer. Checkpoints every epoch feed the convergence analysis.",
    "scratch": "Train the architecture from scratch on the downstream task, with the same schedule as "
    "fine-tuning.",
    "scratch_b": "The scratch control: the same recipe as scratch with another seed (method.md §7).",
    "random_probe": "The probe control: a linear head on a randomly initialised, frozen backbone of the same "
    "architecture, trained like the probe (method.md §7).",
    "scratch_converged": "Scratch trained to convergence (training.scratch_converged): the model claims C1 "
    "and C2 compare against.",
}
_NOT_FLAGS = ("mode", "init", "keep")


def _flag_type(annotation: object) -> typing.Any:
    """The argparse type of a TrainConfig field: its base type (choices are checked by build)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        return str
    if annotation is bool:
        return lambda text: text.lower() in ("1", "true", "yes")
    return annotation


def build_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=DESCRIPTIONS[stage], formatter_class=FORMATTER)
    p.set_defaults(mode=stage)
    p.add_argument("--settings", default="{}", help="JSON with TrainConfig fields (the workflow's way)")
    task = "upstream" if stage == "pretrain" else "downstream"
    p.add_argument("--data", default=None, required=stage != "pretrain", help=f"prepared {task} task file")
    if stage in ("probe", "finetune"):
        p.add_argument("--init", required=True, help="pretrain checkpoint to start from, e.g. .../pretrain/epoch-003.pt")
    for name, (field, annotation) in fields_of(TrainConfig).items():
        if name in _NOT_FLAGS:
            continue
        default = None if field.default is dataclasses.MISSING else field.default
        p.add_argument(
            f"--{name.replace('_', '-')}", dest=name, type=_flag_type(annotation), default=None,
            help=f"{field.metadata.get('doc', '')} (default: {default})",
        )
    p.add_argument("--out-dir", required=True, help="folder for epoch-000.pt ... epoch-<epochs>.pt")
    p.add_argument("--metrics", required=True, help="Parquet file: model, epoch, split, loss, accuracy, seconds")
    p.add_argument("--manifest", default=None, help="JSON manifest of the checkpoints (size, SHA-256)")
    p.add_argument("--predictions", default=None, help="Parquet file: per epoch and test image, whether it was correct")
    return p


def config_of(args: argparse.Namespace) -> TrainConfig:
    """--settings, then the flags given, as a checked TrainConfig."""
    raw = json.loads(args.settings)
    for name in fields_of(TrainConfig):
        value = getattr(args, name, None)
        if name not in _NOT_FLAGS and value is not None:
            raw[name] = value
    raw.update(mode=args.mode, init=getattr(args, "init", None))
    try:
        return build(TrainConfig, raw, "settings")
    except ConfigError as err:
        raise SystemExit(str(err)) from None


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    set_threads(cfg.threads)
    if args.data is None:
        result = train(cfg, None, None, args.out_dir, args.metrics, manifest_path=args.manifest, predictions_path=args.predictions)
    else:
        task = load_any_task(args.data)
        result = train(
            cfg, task.train, task.test, args.out_dir, args.metrics, data_info=task.info,
            manifest_path=args.manifest, predictions_path=args.predictions,
        )
    log(f"[{cfg.mode}] {len(result.checkpoints)} checkpoints in {args.out_dir}")
    return 0
