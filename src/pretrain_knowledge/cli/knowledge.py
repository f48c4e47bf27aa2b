"""Stage ``knowledge``: the knowledge tables of one experiment from its interaction shards (method.md §4)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io import write_parquet
from ..layout import KNOWLEDGE_TABLES
from ..results import read_interactions
from ..spec import KnowledgeSpec
from ..tables import knowledge_tables, with_experiment
from .common import FORMATTER, add_settings, log, settings


def build_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Read the interaction shards of one experiment and write the knowledge tables of "
        "method.md §4 (per sample and aggregated).",
        formatter_class=FORMATTER,
    )
    p.add_argument("shards", nargs="+", help="interaction shards (hive paths model=…/epoch=…), or folders of them")
    p.add_argument("--experiment", required=True, help="experiment name stored in every table")
    add_settings(p, "spec.KnowledgeSpec")
    p.add_argument(
        "--out", action="append", default=[], metavar="NAME=PATH",
        help=f"output table NAME=PATH for names of {list(KNOWLEDGE_TABLES)}; only the named ones are written",
    )
    return p


def outputs(pairs: list[str]) -> dict[str, Path]:
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or name not in KNOWLEDGE_TABLES:
            raise SystemExit(f"--out takes NAME=PATH with NAME one of {list(KNOWLEDGE_TABLES)}, got {pair!r}")
        out[name] = Path(path)
    if not out:
        raise SystemExit(f"--out names no table; give NAME=PATH for some of {list(KNOWLEDGE_TABLES)}")
    return out


def run(args: argparse.Namespace) -> int:
    paths = outputs(args.out)
    shards = [f for path in args.shards for f in (sorted(Path(path).rglob("*.parquet")) if Path(path).is_dir() else [path])]
    tables = knowledge_tables(read_interactions(shards), settings(KnowledgeSpec, args.settings))
    for name, path in paths.items():
        write_parquet(with_experiment(tables[name], args.experiment), path)
    summary = tables["decomposition_summary"]
    totals = summary[summary["type"] == "all"].set_index("kind")["count_mean"]
    ratio = tables["learnability_summary"]["ratio_mean"].iloc[0]
    log(
        f"{args.experiment}: mean counts per sample "
        + ", ".join(f"{k} {totals.get(k, float('nan')):.1f}" for k in totals.index)
        + f"; learnability ratio {ratio:.3f}"
    )
    return 0
