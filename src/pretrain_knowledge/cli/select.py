"""Stage ``select``: the explained samples and their players (method.md §2, §5)."""

from __future__ import annotations

import argparse

from ..data.text import TextTask, load_any_task
from ..selection import make_selection
from ..selection_text import make_text_selection
from ..spec import SelectSettings
from ..training import load_classifier
from .common import FORMATTER, add_settings, log, set_threads, settings


def build_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Draw k test images (or sentences) per class that the final models of "
        "selection.correct_under classify correctly, and n players per image; write the selection "
        "artefact and table (every model's correctness per sample).",
        formatter_class=FORMATTER,
    )
    p.add_argument("--data", required=True, help="prepared downstream task file (prepare-data)")
    p.add_argument(
        "--model", nargs=2, action="append", metavar=("NAME", "CHECKPOINT"), required=True,
        help="a final model, classified under and, if in selection.correct_under, required correct (repeat per model)",
    )
    add_settings(p, "spec.SelectSettings")
    p.add_argument("--out", required=True, help="selection artefact (.pt)")
    p.add_argument("--table", required=True, help="selection table (.parquet)")
    return p


def run(args: argparse.Namespace) -> int:
    s = settings(SelectSettings, args.settings)
    set_threads(s.threads)
    task = load_any_task(args.data)
    models = {name: load_classifier(path) for name, path in args.model}
    players = s.selection.players
    common = dict(
        per_class=s.selection.per_class,
        seed=s.seed,
        n_players=players.n,
        rule=players.rule,
        rule_options=players.options,
        batch_size=s.selection.batch_size,
        correct_under=s.selection.correct_under,
    )
    if isinstance(task, TextTask):
        selection = make_text_selection(models, task.test, max_words=int(task.info["max_words"]), **common)
    else:
        selection = make_selection(models, task.test, patch_size=players.patch_size, **common)
    selection.write(args.out, args.table)
    grid = selection.players.grid
    log(
        f"selected {selection.n_samples} samples ({s.selection.per_class} per class) with "
        f"{players.n} players each on a {grid.n_rows}×{grid.n_cols} patch grid"
    )
    return 0
