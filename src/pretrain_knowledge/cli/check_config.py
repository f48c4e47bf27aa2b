"""Stage ``check-config``: check config files without running anything.

Reads ``config/config.yaml`` and then each given file merged over it, as Snakemake merges
``--configfile`` files, and runs every check the workflow runs when it loads (syntax with file and
line, unknown keys, types, bounds, cross-field rules). Prints the experiments it would run.
"""

from __future__ import annotations

import argparse

from ..spec import expand, load_config, read_yaml
from ..typed import ConfigError, merge
from .common import FORMATTER, log

DEFAULT = "config/config.yaml"


def build_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=FORMATTER)
    p.add_argument("files", nargs="*", help="config files merged over the default, in order")
    p.add_argument("--default", default=DEFAULT, help="the workflow's default config")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        config = read_yaml(args.default)
        for path in args.files:
            config = merge(config, read_yaml(path))
        experiments = expand(load_config(config))
    except ConfigError as err:
        log(str(err))
        return 1
    for name, e in experiments.items():
        log(f"{name}: {e.n_samples or '?'} samples, n={e.selection.players.n}, finetune epochs {e.explained_epochs('finetune')}")
    return 0
