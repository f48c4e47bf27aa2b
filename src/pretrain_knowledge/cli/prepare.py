"""Stage ``prepare-data``: one source's classes and images → prepared task files.

The workflow hands one task as ``--settings`` (:class:`pretrain_knowledge.spec.PrepareSettings`)
and gets one file (``--out``); by hand, the flags below prepare an upstream and a downstream task
from one source in one call.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..catalog import SOURCES, SyntheticSpec
from ..data.images import save_task
from ..data.prepare import prepare_task, prepare_text_task
from ..data.text import save_text_task
from ..data.sources import open_source
from ..io import write_json
from ..layout import SPLITS
from ..spec import PrepareSettings, parse_classes
from ..typed import fields_of
from .common import FORMATTER, add_settings, log, settings


def _cap(text: str) -> int | None:
    return None if text.lower() in ("all", "none", "") else int(text)


def _classes(text: str) -> list[int] | None:
    try:
        return parse_classes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"bad class list {text!r}: use e.g. 0-4, 0,2,7 or all") from err


def build_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Read a dataset source, keep the requested classes (labels renumbered 0..K-1 in the "
        "given order), cap training images per class with a seed, resize, and write one prepared file per "
        "task holding its train and test splits. Later stages load only these files.",
        formatter_class=FORMATTER,
    )
    add_settings(p, "one task of a dataset (spec.PrepareSettings; the workflow's way)", required=False)
    p.add_argument("--out", default=None, help="prepared file to write (with --settings)")
    p.add_argument("--source", choices=sorted(SOURCES), help="dataset source")
    p.add_argument("--root", default=None, help="data folder (the source's default when omitted)")
    p.add_argument("--download", action="store_true", help="let torchvision download the source when online")
    p.add_argument("--upstream-classes", type=_classes, default=None, help="source classes of the upstream task, e.g. 0-4")
    p.add_argument("--upstream-train-per-class", type=_cap, default=None, help="cap on upstream training images per class")
    p.add_argument("--upstream-test-per-class", type=_cap, default=None, help="cap on upstream test images per class")
    p.add_argument("--downstream-classes", type=_classes, default=None, help="source classes of the downstream task, e.g. 5-9 or all")
    p.add_argument("--downstream-train-per-class", type=_cap, default=None, help="cap on downstream training images per class")
    p.add_argument("--downstream-test-per-class", type=_cap, default=None, help="cap on downstream test images per class")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-class draws")
    p.add_argument("--image-size", type=int, default=None, help="resize to a square of this side")
    p.add_argument("--resize-mode", choices=("stretch", "center_crop"), default="stretch", help="how images are resized")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None, help="convert to this many channels")
    p.add_argument("--normalization", choices=("source", "imagenet"), default=None, help="mean/std the models see")
    g = p.add_argument_group("synthetic source (generated images; for tests and tiny configs)")
    for name, (field, annotation) in fields_of(SyntheticSpec).items():
        g.add_argument(
            f"--synthetic-{name.replace('_', '-')}", dest=f"synthetic_{name}", type=annotation,
            default=field.default, help=field.metadata.get("doc", ""),
        )
    p.add_argument("--upstream-out", default=None, help="prepared upstream file to write")
    p.add_argument("--downstream-out", default=None, help="prepared downstream file to write")
    p.add_argument("--summary", default=None, help="optional JSON with classes and per-class counts")
    return p


_TEXT_KEYS = ("root", "download", "train_per_class", "test_per_class", "seed", "source_options", "raw")


def _prepare(source: str, classes: Any, out: str, **kwargs: Any) -> dict[str, Any]:
    if SOURCES[source].modality == "text":
        task = prepare_text_task(source, classes, **{k: v for k, v in kwargs.items() if k in _TEXT_KEYS})
        save_text_task(task, out)
        what = "sentences"
    else:
        task = prepare_task(source, classes, **kwargs)  # type: ignore[assignment]
        save_task(task, out)  # type: ignore[arg-type]
        what = "images"
    log(f"{len(task.train)} train / {len(task.test)} test {what}, classes {task.info['classes']} → {out}")
    info = {k: v for k, v in task.info.items() if k != "vocabulary"}
    return {**info, "class_names": list(task.train.class_names), "path": str(out)}


def _run_settings(args: argparse.Namespace) -> int:
    if not args.out:
        raise SystemExit("prepare-data: --settings needs --out")
    s = settings(PrepareSettings, args.settings)
    d, task = s.dataset, getattr(s.dataset, s.task)
    _prepare(
        d.source, parse_classes(task.classes), args.out, root=d.root, download=d.download,
        train_per_class=task.train_per_class, test_per_class=task.test_per_class, seed=s.seed,
        image_size=d.image_size, channels=d.channels, resize_mode=d.resize_mode,
        normalization=d.normalization, source_options=dict(d.options),
    )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.settings is not None:
        return _run_settings(args)
    if not args.source or not args.downstream_out:
        raise SystemExit("prepare-data: give --source and --downstream-out (or --settings and --out)")
    if (args.upstream_out is None) != (args.upstream_classes is None):
        raise SystemExit("prepare-data: --upstream-out and --upstream-classes go together (give both or neither)")
    options = {n: getattr(args, f"synthetic_{n}") for n in fields_of(SyntheticSpec)} if args.source == "synthetic" else {}
    raw = {s: open_source(args.source, s, args.root, download=args.download, **options) for s in SPLITS}
    common = dict(
        root=args.root, seed=args.seed, image_size=args.image_size, channels=args.channels,
        resize_mode=args.resize_mode, normalization=args.normalization, source_options=options, raw=raw,
    )
    tasks = [("downstream", args.downstream_classes, args.downstream_train_per_class, args.downstream_test_per_class, args.downstream_out)]
    if args.upstream_out:
        tasks.insert(0, ("upstream", args.upstream_classes, args.upstream_train_per_class, args.upstream_test_per_class, args.upstream_out))
    summary = {
        name: _prepare(args.source, classes, out, train_per_class=train, test_per_class=test, **common)
        for name, classes, train, test, out in tasks
    }
    if args.upstream_out and set(summary["upstream"]["classes"]) & set(summary["downstream"]["classes"]):
        log("warning: upstream and downstream classes overlap")
    if args.summary:
        write_json(summary, args.summary)
    return 0
