"""What every stage module shares: logging to the rule's log, and reading its JSON settings."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TypeVar

from ..spec import parse
from ..typed import ConfigError

T = TypeVar("T")
FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def log(message: str) -> None:
    """One line on stderr, which the rule sends to its log file."""
    print(message, file=sys.stderr, flush=True)


def settings(cls: type[T], text: str) -> T:
    """The stage's ``--settings`` JSON as the typed settings class, or a clear exit."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--settings is not valid JSON ({err}): {text!r}") from None
    try:
        return parse(cls, raw)
    except ConfigError as err:
        raise SystemExit(f"--settings: {err}") from None


def set_threads(n: int | None) -> None:
    """torch's CPU threads: results on the CPU depend on them, so the config fixes them."""
    if n:
        import torch

        torch.set_num_threads(n)


def add_settings(parser: argparse.ArgumentParser, what: str, required: bool = True) -> None:
    parser.add_argument("--settings", required=required, default=None, help=f"JSON settings: {what}")


def json_arg(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
