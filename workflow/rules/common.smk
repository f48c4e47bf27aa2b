# Config validation, experiment expansion and input functions shared by every rule file.
#
# All logic lives in the package src/pretrain_knowledge; rules only call its command line
# (`python -m pretrain_knowledge <stage>`). Snakemake does not see Python imports, so each rule
# declares the library modules it runs as inputs (`LIB[...]`): editing a stage's code reruns that
# stage and what depends on it, and nothing else.

import copy
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import min_version, validate

min_version("8.0")


validate(config, schema="../schemas/config.schema.yaml")


# ----------------------------------------------------------------------------------------------
# Where the code is, and how rules call it
# ----------------------------------------------------------------------------------------------

SRC = Path(workflow.basedir) / "src"
PACKAGE = SRC / "pretrain_knowledge"

# The stages run from the source tree next to this Snakefile (not whatever copy is installed),
# so the modules declared as inputs below are exactly the code that runs. Without --sdm conda,
# `python` is the interpreter that runs Snakemake (the project's .venv); with it, the conda
# environment's own python. (shell.prefix formats braces, hence the doubled ones.)
_PREFIX = [
    "set -euo pipefail;",
    f"export PYTHONPATH={shlex.quote(str(SRC))}${{{{PYTHONPATH:+:$PYTHONPATH}}}};",
]
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    _PREFIX.append(
        f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH;"
    )
shell.prefix(" ".join(_PREFIX) + " ")

ENV = "../../envs/pretrain-knowledge.yaml"


def _modules(*names):
    """Paths of the library modules a stage runs (a package name stands for all its modules).

    Modules that do not exist (yet) are left out, so an optional module never breaks the DAG.
    The package's plumbing (__init__, __main__, the command dispatcher and the atomic writers of
    io.py) is deliberately not declared: it does not change results, and declaring it would
    rerun every stage after any edit there (force a rerun with -R <rule> if it ever matters).
    """
    paths = []
    for name in names:
        path = PACKAGE / name
        found = (
            sorted(path.glob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        )
        paths.extend(os.path.relpath(p) for p in found if p.is_file())
    return paths


LIB = {
    "data": _modules("data", "cli/train"),
    "train": _modules("data", "models", "training", "cli/train"),
    "select": _modules(
        "data",
        "models",
        "training",
        "game",
        "selection",
        "players",
        "cli/analysis",
    ),
    "extract": _modules(
        "models",
        "training",
        "game",
        "interactions",
        "results",
        "knowledge",
        "selection",
        "extraction",
        "cli/analysis",
    ),
    "knowledge": _modules(
        "interactions", "results", "knowledge", "extraction", "cli/analysis"
    ),
    "figures": _modules("selection", "knowledge", "plots", "cli/analysis"),
    "metrics": _modules("cli/analysis"),
}


def as_json(value):
    """Settings travel to the command line as one JSON argument (and are params, so a change reruns)."""
    return json.dumps(value, sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Experiments: datasets × architectures × seeds
# ----------------------------------------------------------------------------------------------

SECTIONS = ("training", "selection", "extraction", "knowledge")
MODES = ("pretrain", "probe", "finetune", "scratch")
EXPLAINED = ("pretrain", "finetune", "scratch")


def _merge(base, override):
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _lookup(kind, name):
    if name not in config[kind]:
        raise ValueError(
            f"config: experiments refer to {kind} {name!r}, which is not defined under "
            f"`{kind}:` (defined: {sorted(config[kind])})"
        )
    return config[kind][name]


def _experiment(dataset, architecture, seed):
    data, arch = _lookup("datasets", dataset), _lookup("architectures", architecture)
    settings = {section: config[section] for section in SECTIONS}
    for source in (data, arch):
        settings = _merge(settings, source.get("overrides", {}))
    # Overrides are checked against the same schema as the global sections.
    merged = {**copy.deepcopy(config), **copy.deepcopy(settings)}
    validate(merged, schema="../schemas/config.schema.yaml")
    return {
        "dataset_name": dataset,
        "dataset": data,
        "architecture_name": architecture,
        "architecture": arch,
        "seed": seed,
        **{section: merged[section] for section in SECTIONS},
    }


def _expand_experiments():
    out = {}
    for grid in config["experiments"]:
        for dataset in grid["datasets"]:
            for architecture in grid["architectures"]:
                for seed in grid["seeds"]:
                    name = f"{dataset}-{architecture}-s{seed}"
                    out[name] = _experiment(dataset, architecture, seed)
    return out


EXPERIMENTS = _expand_experiments()


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    task="upstream|downstream",
    mode="|".join(MODES),
    model="|".join(EXPLAINED),
    epoch=r"\d+",
    shard=r"\d+",


def exp(wildcards):
    return EXPERIMENTS[wildcards.experiment]


def epochs(experiment, mode):
    """Number of training epochs of a mode; checkpoints are epochs 0 … epochs.

    With ImageNet weights the pretrain stage only stores them, as epoch 0.
    """
    if mode == "pretrain" and pretrained_weights(experiment):
        return 0
    return int(EXPERIMENTS[experiment]["training"][mode]["epochs"])


def explained_epochs(experiment, model):
    """Checkpoints whose interactions are extracted, ascending; the last epoch is always in."""
    if model == "pretrain":
        return [epochs(experiment, "probe")]
    last = epochs(experiment, model)
    wanted = EXPERIMENTS[experiment]["extraction"]["checkpoints"]
    out = set()
    for epoch in wanted:
        resolved = last + 1 + epoch if epoch < 0 else epoch
        if not 0 <= resolved <= last:
            raise ValueError(
                f"config: extraction.checkpoints contains {epoch}, but {model} of experiment "
                f"{experiment} has checkpoints 0 … {last} (training.{model}.epochs={last})"
            )
        out.add(resolved)
    out.add(last)
    return sorted(out)


def checkpoint_dir(experiment, mode):
    return f"results/{experiment}/checkpoints/{mode}"


def checkpoint_file(experiment, mode, epoch):
    return f"{checkpoint_dir(experiment, mode)}/epoch-{int(epoch):03d}.pt"


def source_mode(model):
    """The pre-trained model is read through its linear probe (method.md §1)."""
    return "probe" if model == "pretrain" else model


# ----------------------------------------------------------------------------------------------
# Input functions and target lists
# ----------------------------------------------------------------------------------------------


def shards_of(experiment):
    n = EXPERIMENTS[experiment]["extraction"]["shards"]
    return [
        f"results/{experiment}/interactions/model={model}/epoch={epoch}/shard-{shard}.parquet"
        for model in EXPLAINED
        for epoch in explained_epochs(experiment, model)
        for shard in range(n)
    ]


def interaction_shards(wildcards):
    return shards_of(wildcards.experiment)


KNOWLEDGE_TABLES = (
    "decomposition",
    "decomposition_summary",
    "members",
    "learnability",
    "learnability_summary",
    "similarity",
    "similarity_summary",
)
FIGURES = ("knowledge", "similarity", "training", "examples")


def all_targets():
    targets = []
    for name in EXPERIMENTS:
        targets.append(f"results/{name}/metrics.parquet")
        targets += [f"results/{name}/knowledge/{t}.parquet" for t in KNOWLEDGE_TABLES]
        targets += [
            f"results/{name}/figures/{f}.{ext}"
            for f in FIGURES
            for ext in ("png", "pdf")
        ]
    targets += [f"results/figures/learnability.{ext}" for ext in ("png", "pdf")]
    return targets


# ----------------------------------------------------------------------------------------------
# Command-line arguments of the stages (each is a param: changing it reruns the job)
# ----------------------------------------------------------------------------------------------


def _flag(name, value):
    flag = f"--{name.replace('_', '-')}"
    if isinstance(value, bool):
        return [flag] if value else []
    if value is None:
        return []
    return [flag, str(value)]


def _join(args):
    return " ".join(shlex.quote(a) for a in args)


def data_args(experiment, task):
    """prepare-data arguments of one task.

    Each task is prepared by its own job, so a change to the downstream data never retrains the
    upstream model: the task goes through prepare-data's (required) downstream slot.
    """
    e = EXPERIMENTS[experiment]
    d = e["dataset"]
    spec = d[task]
    args = ["--source", d["source"]]
    args += _flag("root", d["root"]) + _flag("download", d["download"])
    classes = spec["classes"]
    classes = (
        ",".join(str(c) for c in classes) if isinstance(classes, list) else classes
    )
    args += ["--downstream-classes", classes or "all"]
    args += _flag("downstream_train_per_class", spec["train_per_class"])
    args += _flag("downstream_test_per_class", spec["test_per_class"])
    args += ["--seed", str(e["seed"])]
    for key in ("image_size", "channels", "resize_mode", "normalization"):
        args += _flag(key, d[key])
    for key, value in sorted(d["options"].items()):
        args += _flag(f"synthetic_{key}", value)
    return _join(args)


def pretrained_weights(experiment):
    return EXPERIMENTS[experiment]["architecture"]["weights"]


def train_args(experiment, mode):
    """Training arguments of one mode: its hyper-parameters, the seed and the architecture."""
    e = EXPERIMENTS[experiment]
    settings = dict(e["training"][mode])
    args = ["--seed", str(e["seed"]), "--device", e["training"]["device"]]
    if mode in ("pretrain", "scratch"):
        args += ["--arch", e["architecture"]["model"]]
    if mode == "pretrain" and pretrained_weights(experiment):
        args += ["--weights", pretrained_weights(experiment)]
        settings["epochs"] = 0
    for key, value in sorted(settings.items()):
        args += _flag(key, value)
    return _join(args)


def pretrain_data(wildcards):
    if pretrained_weights(wildcards.experiment):
        return []
    return f"results/{wildcards.experiment}/data/upstream.pt"


def pretrain_final(wildcards):
    e = wildcards.experiment
    return checkpoint_file(e, "pretrain", epochs(e, "pretrain"))
