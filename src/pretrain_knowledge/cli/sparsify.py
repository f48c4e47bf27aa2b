"""Stage ``sparsify``: the sparse AND-OR interactions of stored games shards (method.md §3).

One shard to one file (``--out``, the workflow's main step), or many shards into a folder in the
same hive layout (``--out-dir``, a sensitivity variant: one job, one start-up, for all shards).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from ..device import resolve_device
from ..io import write_parquet
from ..layout import partition_keys, shard
from ..results import Games
from ..sparsification import check_matching, explain
from ..spec import SparsifySettings
from .common import FORMATTER, add_settings, log, set_threads, settings


def build_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Read games shards, sparsify their AND-OR interactions and write interaction shards "
        "(results/README.md). No model is needed.",
        formatter_class=FORMATTER,
    )
    p.add_argument("games", nargs="+", help="games shards (.parquet, hive paths model=…/epoch=…)")
    add_settings(p, "spec.SparsifySettings")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="interaction shard (.parquet), for a single games shard")
    out.add_argument("--out-dir", help="folder that gets one interaction shard per games shard, same hive keys")
    return p


def _target(path: str, args: argparse.Namespace) -> str:
    if args.out:
        return args.out
    keys = partition_keys(path)
    return shard(args.out_dir, keys["model"], keys["epoch"], Path(path).stem.removeprefix("shard-"))


def run(args: argparse.Namespace) -> int:
    if args.out and len(args.games) > 1:
        raise SystemExit("sparsify: --out takes one games shard; use --out-dir for several")
    s = settings(SparsifySettings, args.settings)
    set_threads(s.threads)
    device = resolve_device(s.device)
    for path in args.games:
        games = Games.from_frame(pd.read_parquet(path))
        start = time.perf_counter()
        result = explain(games, s.sparsify, device=device)
        check_matching(result, s.matching_tolerance)
        write_parquet(result.to_frame(), _target(path, args))
        diag = result.interactions.diagnostics
        log(
            f"{path}: {result.batch_size} games, n={result.n_players}, "
            f"{time.perf_counter() - start:.1f}s (sparsify); L1 even {diag.l1_even.mean():.3f} → final "
            f"{diag.l1_final.mean():.3f} ({diag.method}); max matching error {diag.matching_error.max():.2e}"
        )
    return 0
