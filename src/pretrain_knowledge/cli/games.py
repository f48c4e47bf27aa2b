"""Stage ``games``: every masked forward pass of one checkpoint on one shard of the selected samples."""

from __future__ import annotations

import argparse
import time

from ..device import resolve_device
from ..extraction import check_finite, play
from ..game_text import play_text
from ..io import write_parquet
from ..selection_text import TextSelection, load_selection
from ..spec import GamesSettings
from ..training import load_classifier
from .common import FORMATTER, add_settings, log, set_threads, settings


def build_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Evaluate all 2^n masked images of each sample of one shard under one checkpoint and "
        "write the games as one Parquet shard (results/README.md).",
        formatter_class=FORMATTER,
    )
    p.add_argument("--checkpoint", required=True, help="model checkpoint (epoch-NNN.pt)")
    p.add_argument("--selection", required=True, help="selection artefact (select stage)")
    p.add_argument("--model", required=True, help="model name, for messages (pretrain, finetune, scratch)")
    p.add_argument("--epoch", type=int, required=True, help="checkpoint epoch, for messages")
    p.add_argument("--shard", type=int, default=0, help="shard index k (0-based)")
    add_settings(p, "spec.GamesSettings")
    p.add_argument("--out", required=True, help="games shard (.parquet)")
    return p


def run(args: argparse.Namespace) -> int:
    s = settings(GamesSettings, args.settings)
    set_threads(s.threads)
    selection = load_selection(args.selection)
    ids = selection.shard_ids(args.shard, s.shards)
    device = resolve_device(s.device)
    model = load_classifier(args.checkpoint, device=device)
    start = time.perf_counter()
    if isinstance(selection, TextSelection):
        games = play_text(model, selection, ids, baseline=s.text_baseline, batch_size=s.batch_size, device=device)
    else:
        games = play(model, selection, ids, baseline=s.baseline, batch_size=s.batch_size, device=device)
    check_finite(games, f"model={args.model} epoch={args.epoch} ({args.checkpoint})")
    write_parquet(games.to_frame(), args.out)
    log(
        f"{args.checkpoint}: {len(ids)} samples × 2^{games.n_players} coalitions in "
        f"{time.perf_counter() - start:.1f}s (forward passes)"
    )
    return 0
