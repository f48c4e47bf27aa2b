"""Stages ``prepare-data``, ``pretrain``, ``probe``, ``finetune`` and ``scratch``.

Inputs and outputs of each stage (what a Snakemake rule declares):

``prepare-data``
    reads a source (``--source``, ``--root``); writes ``--upstream-out`` (optional) and
    ``--downstream-out``: one prepared file per task, each holding its ``train`` and ``test``
    splits (:func:`pretrain_knowledge.data.save_task`), plus an optional ``--summary`` JSON of
    class counts.

``pretrain``
    reads ``--data`` (the upstream prepared file; omit it with ``--weights`` and
    ``--epochs 0`` to start from ImageNet weights); writes ``<out-dir>/epoch-000.pt`` …
    ``epoch-<E>.pt`` and ``--metrics`` (Parquet).

``probe`` / ``finetune``
    read ``--data`` (the downstream prepared file) and ``--init`` (pretrain's last checkpoint,
    ``<pretrain out-dir>/epoch-<E>.pt``); write checkpoints and metrics as above.

``scratch``
    reads ``--data`` (downstream); writes checkpoints and metrics as above.

Checkpoint names are ``epoch-NNN.pt`` (three digits, epoch 0 = before training). A metrics
file has one row per (model, epoch, split) with columns model, epoch, split, loss, accuracy,
seconds; the workflow concatenates the four into ``results/<experiment>/metrics.parquet``.
"""

from __future__ import annotations

import argparse
from typing import Any

from pretrain_knowledge import data as D
from pretrain_knowledge.io import write_json
from pretrain_knowledge.models import available_models
from pretrain_knowledge.training import AUGMENTATIONS, OPTIMIZERS, SCHEDULES, TrainConfig, train

_FMT = argparse.ArgumentDefaultsHelpFormatter


def _cap(text: str) -> int | None:
    return None if text.lower() in ("all", "none", "") else int(text)


def _classes(text: str) -> list[int] | None:
    try:
        return D.parse_classes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"bad class list {text!r}: use e.g. 0-4, 0,2,7 or all") from err


def _add_prepare(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "prepare-data",
        help="select classes and images from a source and write prepared task files",
        description="Read a dataset source, keep the requested classes (labels renumbered 0..K-1 in the "
        "given order), cap training images per class with a seed, resize, and write one prepared file per "
        "task holding its train and test splits. Later stages load only these files.",
        formatter_class=_FMT,
    )
    p.add_argument("--source", required=True, choices=sorted(D.SOURCES), help="dataset source")
    p.add_argument(
        "--root",
        default=None,
        help=f"data folder (fashion_mnist default: {D.FASHION_MNIST_DEFAULT_ROOT}; synthetic: unused)",
    )
    p.add_argument("--download", action="store_true", help="let torchvision download the source when online")
    p.add_argument(
        "--upstream-classes",
        type=_classes,
        default=None,
        help="source classes of the upstream (pre-training) task, e.g. 0-4; omit for ImageNet pretraining",
    )
    p.add_argument(
        "--upstream-train-per-class",
        type=_cap,
        default=None,
        help="cap on upstream training images per class (all)",
    )
    p.add_argument(
        "--upstream-test-per-class",
        type=_cap,
        default=None,
        help="cap on upstream test images per class (all)",
    )
    p.add_argument(
        "--downstream-classes",
        type=_classes,
        required=True,
        help="source classes of the downstream task, e.g. 5-9 or all",
    )
    p.add_argument(
        "--downstream-train-per-class",
        type=_cap,
        default=None,
        help="cap on downstream training images per class (all)",
    )
    p.add_argument(
        "--downstream-test-per-class",
        type=_cap,
        default=None,
        help="cap on downstream test images per class (all)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the per-class draws")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="resize to a square of this side (native size if omitted)",
    )
    p.add_argument(
        "--resize-mode",
        choices=("stretch", "center_crop"),
        default="stretch",
        help="stretch keeps the whole image and every keypoint; center_crop keeps the aspect ratio",
    )
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=None,
        help="convert to this many channels (native if omitted)",
    )
    p.add_argument(
        "--normalization",
        choices=("source", "imagenet"),
        default=None,
        help="mean/std: the source's own, or ImageNet's (default: imagenet for cub200/stanford_cars/imagefolder)",
    )
    g = p.add_argument_group("synthetic source (generated images; for tests and tiny configs)")
    for name, fld in D.SyntheticSpec.__dataclass_fields__.items():
        g.add_argument(
            f"--synthetic-{name.replace('_', '-')}",
            dest=f"synthetic_{name}",
            type=type(fld.default),
            default=fld.default,
            help=f"SyntheticSpec.{name}",
        )
    p.add_argument(
        "--upstream-out", default=None, help="prepared upstream file to write (needs --upstream-classes)"
    )
    p.add_argument("--downstream-out", required=True, help="prepared downstream file to write")
    p.add_argument(
        "--summary", default=None, help="optional JSON with classes and per-class counts of every split"
    )
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    if (args.upstream_out is None) != (args.upstream_classes is None):
        raise SystemExit(
            "prepare-data: --upstream-out and --upstream-classes go together (give both or neither)"
        )
    options = (
        {n: getattr(args, f"synthetic_{n}") for n in D.SyntheticSpec.__dataclass_fields__}
        if args.source == "synthetic"
        else {}
    )
    raw = {s: D.open_source(args.source, s, args.root, download=args.download, **options) for s in D.SPLITS}
    common = dict(
        root=args.root,
        seed=args.seed,
        image_size=args.image_size,
        channels=args.channels,
        resize_mode=args.resize_mode,
        normalization=args.normalization,
        source_options=options,
        raw=raw,
    )
    summary: dict[str, Any] = {}
    jobs = [
        (
            "downstream",
            args.downstream_classes,
            args.downstream_train_per_class,
            args.downstream_test_per_class,
            args.downstream_out,
        )
    ]
    if args.upstream_out:
        jobs.insert(
            0,
            (
                "upstream",
                args.upstream_classes,
                args.upstream_train_per_class,
                args.upstream_test_per_class,
                args.upstream_out,
            ),
        )
    for task_name, classes, train_cap, test_cap, out in jobs:
        task = D.prepare_task(
            args.source, classes, train_per_class=train_cap, test_per_class=test_cap, **common
        )
        D.save_task(task, out)
        summary[task_name] = {**task.info, "class_names": list(task.train.class_names), "path": str(out)}
        print(
            f"{task_name}: {len(task.train)} train / {len(task.test)} test images, "
            f"classes {task.info['classes']} → {out}"
        )
    if args.upstream_out and set(summary["upstream"]["classes"]) & set(summary["downstream"]["classes"]):
        print("warning: upstream and downstream classes overlap")
    if args.summary:
        write_json(summary, args.summary)
    return 0


def _add_training(subparsers: Any, mode: str, help_text: str, description: str) -> None:
    p = subparsers.add_parser(mode, help=help_text, description=description, formatter_class=_FMT)
    needs_data = mode != "pretrain"
    p.add_argument(
        "--data",
        required=needs_data,
        default=None,
        help="prepared task file from prepare-data ("
        + ("upstream" if mode == "pretrain" else "downstream")
        + " task)",
    )
    if mode in ("pretrain", "scratch"):
        p.add_argument("--arch", default="small_cnn", choices=available_models(), help="architecture")
    if mode == "pretrain":
        p.add_argument(
            "--weights",
            default=None,
            help="ImageNet weights: a torchvision state-dict file, or 'imagenet' (torchvision download)",
        )
    if mode in ("probe", "finetune"):
        p.add_argument(
            "--init", required=True, help="pretrain checkpoint to start from, e.g. .../pretrain/epoch-003.pt"
        )
    p.add_argument("--epochs", type=int, default=5, help="training epochs (checkpoints 0..epochs)")
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate")
    p.add_argument("--batch-size", type=int, default=64, help="training mini-batch size")
    p.add_argument("--eval-batch-size", type=int, default=500, help="evaluation batch size")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="optimizer")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="per-step learning-rate schedule")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing")
    p.add_argument("--augment", choices=AUGMENTATIONS, default="none", help="training augmentation")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, batch order and augmentation")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA (ignored on the CPU)")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (torch's default if omitted)"
    )
    p.add_argument(
        "--save-optimizer", action="store_true", help="also store the optimizer state in checkpoints"
    )
    p.add_argument("--out-dir", required=True, help="folder for epoch-000.pt ... epoch-<epochs>.pt")
    p.add_argument(
        "--metrics", required=True, help="Parquet file: model, epoch, split, loss, accuracy, seconds"
    )
    p.set_defaults(func=run_training, mode=mode)


def run_training(args: argparse.Namespace) -> int:
    cfg = TrainConfig(
        mode=args.mode,
        arch=getattr(args, "arch", "small_cnn"),
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        label_smoothing=args.label_smoothing,
        augment=args.augment,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        threads=args.threads,
        eval_batch_size=args.eval_batch_size,
        weights=getattr(args, "weights", None),
        init=getattr(args, "init", None),
        save_optimizer=args.save_optimizer,
    )
    if args.data is None:
        train(cfg, None, None, args.out_dir, args.metrics)
        return 0
    task = D.load_task(args.data)
    train(cfg, task.train, task.test, args.out_dir, args.metrics, data_info=task.info)
    return 0


def register(subparsers: Any) -> None:
    _add_prepare(subparsers)
    _add_training(
        subparsers,
        "pretrain",
        "train the backbone on the upstream task (or save ImageNet weights)",
        "Train a model on the upstream task, or with --weights and --epochs 0 just store ImageNet weights "
        "as epoch 0. Writes a checkpoint before training and after every epoch.",
    )
    _add_training(
        subparsers,
        "probe",
        "linear probe: frozen pretrained backbone + new linear head",
        "Load the pretrained backbone, freeze it and keep it in eval mode, and train a new linear head on "
        "the downstream task. Its outputs are the pretrained model's downstream knowledge (v_pretrain).",
    )
    _add_training(
        subparsers,
        "finetune",
        "fine-tune: pretrained backbone + new head, all layers trained",
        "Load the pretrained backbone, give it a new randomly initialised head over the downstream classes, "
        "and train every layer. Checkpoints every epoch feed the convergence analysis.",
    )
    _add_training(
        subparsers,
        "scratch",
        "train the same architecture from random initialisation",
        "Train the architecture from scratch on the downstream task, with the same schedule as fine-tuning.",
    )
