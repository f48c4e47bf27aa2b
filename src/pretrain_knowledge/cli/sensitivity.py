"""Stage ``sensitivity``: the headline measures of every sensitivity variant of one experiment."""

from __future__ import annotations

import argparse
import json

import pandas as pd

from ..io import write_parquet
from ..sensitivity import headline_table
from ..tables import with_experiment
from .common import FORMATTER, log


def build_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Read the claim measures of the default and of every variant; write their headline "
        "measures with 95 % intervals (knowledge/sensitivity.parquet).",
        formatter_class=FORMATTER,
    )
    p.add_argument("--inputs", required=True, help='JSON: {"default": measures path, "<factor>=<value>": path, …}')
    p.add_argument("--experiment", required=True, help="experiment name stored in the table")
    p.add_argument("--out", required=True, help="sensitivity table (.parquet)")
    return p


def run(args: argparse.Namespace) -> int:
    measures = {variant: pd.read_parquet(path) for variant, path in json.loads(args.inputs).items()}
    table = headline_table(measures)
    write_parquet(with_experiment(table, args.experiment), args.out)
    wide = table.pivot(index="variant", columns="quantity", values="estimate")
    log(f"{args.experiment}: headline measures per variant\n{wide.round(3).to_string()}")
    return 0
