"""Command-line stages. Each module in this package registers its own sub-commands.

Rules in ``workflow/rules`` only call these stages; all logic lives in the library modules.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

# Modules that define ``register(subparsers) -> None``; each sub-command sets ``func`` via
# ``parser.set_defaults(func=...)`` taking the parsed namespace and returning an exit code.
_STAGE_MODULES = (
    "pretrain_knowledge.cli.train",
    "pretrain_knowledge.cli.analysis",
    "pretrain_knowledge.cli.fixtures",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pretrain_knowledge",
        description="Stages of the pretrain-knowledge workflow (see README.md).",
    )
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    for name in _STAGE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
