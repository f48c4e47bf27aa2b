"""The command line the workflow's rules call: ``python -m pretrain_knowledge <stage> ...``.

Each stage lives in its own module here, which imports exactly the library code the stage runs;
its import closure is the code whose digest the stage's rule records (``provenance``). Only the
invoked stage's module is imported, so ``--help`` and the cheap stages stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

STAGES: dict[str, tuple[str, str]] = {
    "prepare-data": ("prepare", "select classes and images from a source and write prepared task files"),
    "pretrain": ("train", "train the backbone on the upstream task (or store ImageNet weights)"),
    "probe": ("train", "linear probe: frozen pretrained backbone + new linear head"),
    "finetune": ("train", "fine-tune: pretrained backbone + new head, all layers trained"),
    "scratch": ("train", "train the same architecture from random initialisation"),
    "scratch_b": ("train", "control: scratch with another seed"),
    "random_probe": ("train", "control: linear probe on a random, frozen backbone"),
    "scratch_converged": ("train", "scratch trained to convergence: the baseline of claims C1 and C2"),
    "metrics": ("metrics", "combine per-mode training metrics into one table"),
    "select": ("select", "choose the explained samples and their players"),
    "games": ("games", "play the games of one checkpoint on one shard of samples"),
    "sparsify": ("sparsify", "the sparse AND-OR interactions of one games shard"),
    "knowledge": ("knowledge", "preserved/discarded/new knowledge, learnability and convergence tables"),
    "sensitivity": ("sensitivity", "headline measures of every sensitivity variant of one experiment"),
    "claims": ("claims", "every claim against its controls, per experiment and pooled (method.md §7)"),
    "figure": ("figure", "draw one of the figures of method.md §6 (PNG and PDF)"),
    "make-fixtures": ("fixtures", "write tiny fake dataset trees and random ImageNet-shaped weights"),
    "schema": ("schema", "print the config's JSON schema (generated from pretrain_knowledge.spec)"),
    "check-config": ("check_config", "check config files (syntax with file and line, keys, values) without running"),
}
"""Stage name → (module in this package, one-line help)."""


def _overview() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pretrain_knowledge",
        description="Stages of the pretrain-knowledge workflow (see README.md).",
    )
    sub = parser.add_subparsers(dest="stage", metavar="<stage>")
    for name, (_, text) in STAGES.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in STAGES:
        _overview().parse_args(args or ["--help"])
        return 2
    module = importlib.import_module(f"{__name__}.{STAGES[args[0]][0]}")
    parser = module.build_parser(args[0])
    parser.prog = f"python -m pretrain_knowledge {args[0]}"
    namespace = parser.parse_args(args[1:])
    return int(module.run(namespace) or 0)
