"""Stage ``claims``: every claim against its controls, per experiment and pooled (method.md §7)."""

from __future__ import annotations

import argparse
import json

import pandas as pd

from ..claims import accuracy_measures, accuracy_summary, claims_markdown, claims_table, near_chance
from ..io import atomic_path, write_parquet
from ..sensitivity import robustness
from .common import FORMATTER, log


def build_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Read every experiment's claim measures, test predictions and metrics; write the claims "
        "table (Parquet) and report (Markdown).",
        formatter_class=FORMATTER,
    )
    p.add_argument(
        "--inputs", required=True,
        help='JSON: {experiment: {"group": "<dataset>-<architecture>", "classes": K, "measures": path, "metrics": path, '
        '"predictions": {"finetune": path, "scratch": path}, "variants": {"<factor>=<value>": measures path}}}',
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and permutation draws")
    p.add_argument("--table", required=True, help="claims table (.parquet)")
    p.add_argument("--report", required=True, help="claims report (.md)")
    return p


def run(args: argparse.Namespace) -> int:
    inputs = json.loads(args.inputs)
    measures, accuracy, reach, flags = {}, {}, [], {}
    for name, paths in inputs.items():
        predictions = {model: pd.read_parquet(path) for model, path in paths["predictions"].items()}
        accuracy[name] = accuracy_measures(predictions)
        measures[name] = pd.concat([pd.read_parquet(paths["measures"]), accuracy[name]], ignore_index=True)
        summary = accuracy_summary(pd.read_parquet(paths["metrics"]), int(paths["classes"] or 0))
        reach.append({"experiment": name, **summary})
        baseline = summary.get("final_scratch_converged", summary["final_scratch"])
        reason = near_chance(baseline, int(paths["classes"] or 0))
        if reason:
            flags[name] = reason
            log(f"{name}: {reason}")
    groups = {name: paths["group"] for name, paths in inputs.items()}
    table = claims_table(measures, groups, seed=args.seed, flags=flags)
    names = sorted({v for paths in inputs.values() for v in paths.get("variants", {})})
    variants = {}
    for variant in names:
        swapped = {
            name: pd.concat([pd.read_parquet(paths["variants"][variant]), accuracy[name]], ignore_index=True)
            for name, paths in inputs.items()
        }
        variants[variant] = claims_table(swapped, groups, seed=args.seed, flags=flags)
    table, verdicts = robustness(table, variants)
    write_parquet(table, args.table)
    with atomic_path(args.report) as tmp:
        tmp.write_text(claims_markdown(table, pd.DataFrame(reach), verdicts if names else None))
    counts = table[table["scope"].str.startswith("pooled")]["verdict"].value_counts().to_dict()
    log(f"{len(table)} claim rows over {len(inputs)} experiments; pooled verdicts: {counts}")
    return 0
