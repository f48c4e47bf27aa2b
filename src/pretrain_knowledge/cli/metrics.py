"""Stage ``metrics``: the per-mode training metrics as one table (one row per model, epoch, split)."""

from __future__ import annotations

import argparse

from ..io import write_parquet
from ..training import combine_metrics
from .common import FORMATTER


def build_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Concatenate the metrics Parquet files of the training modes into one table.",
        formatter_class=FORMATTER,
    )
    p.add_argument("inputs", nargs="+", help="per-mode metrics Parquet files")
    p.add_argument("--out", required=True, help="combined metrics Parquet file")
    return p


def run(args: argparse.Namespace) -> int:
    write_parquet(combine_metrics(args.inputs), args.out)
    return 0
