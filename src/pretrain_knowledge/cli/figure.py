"""Stage ``figure``: one of the figures of method.md §6, as PNG and PDF."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from .. import plots
from ..layout import EXPERIMENT_FIGURES, GLOBAL_FIGURES
from ..spec import FiguresSpec
from .common import FORMATTER, add_settings, settings


def build_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Draw a figure from the workflow's tables. Inputs by name: knowledge: decomposition=; "
        "similarity: similarity=; training: metrics=; examples: selection= members=; claims: claims=; "
        "learnability: learnability=; convergence: similarity= measures=; benefit: metrics= "
        "(repeat each, one per experiment).",
        formatter_class=FORMATTER,
    )
    p.add_argument("name", choices=EXPERIMENT_FIGURES + GLOBAL_FIGURES)
    p.add_argument("--input", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--title", default="", help="title line (e.g. the experiment)")
    add_settings(p, "spec.FiguresSpec", required=False)
    p.add_argument("--png", required=True)
    p.add_argument("--pdf", required=True)
    return p


def _all(pairs: list[tuple[str, str]], name: str, experiment_from_path: bool = False) -> pd.DataFrame:
    """Every input of one name, concatenated (one table per experiment)."""
    frames = []
    for key, path in pairs:
        if key == name:
            frame = pd.read_parquet(path)
            if experiment_from_path:
                frame = frame.assign(experiment=Path(path).parent.name)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def run(args: argparse.Namespace) -> int:
    s = settings(FiguresSpec, args.settings or "{}")
    pairs = [p.partition("=")[::2] for p in args.input]
    inputs = dict(pairs)
    if args.name == "knowledge":
        fig = plots.knowledge_figure(pd.read_parquet(inputs["decomposition"]), args.title)
    elif args.name == "similarity":
        fig = plots.similarity_figure(pd.read_parquet(inputs["similarity"]), args.title)
    elif args.name == "training":
        fig = plots.training_figure(pd.read_parquet(inputs["metrics"]), args.title)
    elif args.name == "examples":
        from ..selection_text import TextSelection, load_selection  # torch: only this figure needs it

        selection = load_selection(inputs["selection"])
        draw = plots.text_examples_figure if isinstance(selection, TextSelection) else plots.examples_figure
        fig = draw(selection, pd.read_parquet(inputs["members"]), n_examples=s.examples, title=args.title)  # type: ignore[arg-type]
    elif args.name == "claims":
        fig = plots.claims_figure(pd.read_parquet(inputs["claims"]))
    elif args.name == "convergence":
        fig = plots.convergence_figure(_all(pairs, "similarity"), _all(pairs, "measures"))
    elif args.name == "sensitivity":
        fig = plots.sensitivity_figure(_all(pairs, "sensitivity"))
    elif args.name == "benefit":
        fig = plots.benefit_figure(_all(pairs, "metrics", experiment_from_path=True))
    else:
        paths = [path for name, path in pairs if name == "learnability"]
        fig = plots.learnability_figure(plots.concat_tables(paths))
    plots.save(fig, args.png, args.pdf, dpi=s.dpi)
    return 0
