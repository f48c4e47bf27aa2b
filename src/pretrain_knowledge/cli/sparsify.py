"""Stage ``sparsify``: the sparse AND-OR interactions of one stored games shard (method.md §3)."""

from __future__ import annotations

import argparse
import time

import pandas as pd

from ..device import resolve_device
from ..io import write_parquet
from ..results import Games
from ..sparsification import check_matching, explain
from ..spec import SparsifySettings
from .common import FORMATTER, add_settings, log, set_threads, settings


def build_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Read one games shard, sparsify its AND-OR interactions and write one interaction "
        "shard (results/README.md). No model is needed.",
        formatter_class=FORMATTER,
    )
    p.add_argument("games", help="games shard (.parquet)")
    add_settings(p, "spec.SparsifySettings")
    p.add_argument("--out", required=True, help="interaction shard (.parquet)")
    return p


def run(args: argparse.Namespace) -> int:
    s = settings(SparsifySettings, args.settings)
    set_threads(s.threads)
    games = Games.from_frame(pd.read_parquet(args.games))
    start = time.perf_counter()
    result = explain(games, s.sparsify, device=resolve_device(s.device))
    check_matching(result, s.matching_tolerance)
    write_parquet(result.to_frame(), args.out)
    diag = result.interactions.diagnostics
    log(
        f"{args.games}: {result.batch_size} games, n={result.n_players}, "
        f"{time.perf_counter() - start:.1f}s (sparsify); L1 even {diag.l1_even.mean():.3f} → final "
        f"{diag.l1_final.mean():.3f} ({diag.method}); max matching error {diag.matching_error.max():.2e}"
    )
    return 0
