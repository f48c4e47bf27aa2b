# Input functions over the typed experiment spec (pretrain_knowledge.spec) and the results
# layout (pretrain_knowledge.layout). Rules only call the package's stages
# (`python -m pretrain_knowledge <stage>`); every setting a stage reads reaches it as one JSON
# parameter, and the digest of the code it runs is a parameter too (pretrain_knowledge.provenance),
# so a change reruns exactly the jobs it affects.

import json
import os
import sys
from pathlib import Path

SRC = Path(workflow.basedir) / "src"
sys.path.insert(0, str(SRC))

from pretrain_knowledge import layout as L
from pretrain_knowledge import spec
from pretrain_knowledge.integrity import check_checkpoints
from pretrain_knowledge.provenance import code_digest


envvars:
    "PATH",


# Jobs run this source tree with the interpreter that runs Snakemake; under --sdm conda the
# job's activated environment puts its own python first on PATH.
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
)
os.environ["PATH"] = os.pathsep.join(
    (str(Path(sys.executable).parent), os.environ["PATH"])
)

CONFIG = spec.load_config(config)
EXPERIMENTS = spec.expand(CONFIG)
check_checkpoints(EXPERIMENTS)
ENV = "../../envs/pretrain-knowledge.yaml"


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    task="|".join(L.TASKS),
    model="|".join(L.MODELS),
    epoch=r"\d+",
    shard=r"\d+",
    variant=r"[a-z_]+=[^/]+",


def exp(wildcards):
    return EXPERIMENTS[wildcards.experiment]


def as_json(settings):
    return json.dumps(settings, sort_keys=True)


def code(stage):
    """Digest of the code a stage runs: a param, so a code change reruns that stage."""
    return code_digest(stage)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def training_data(mode):
    def inputs(wildcards):
        e = exp(wildcards)
        if mode == "pretrain":
            return [] if e.weights else [L.data_file(e.name, "upstream")]
        return [L.data_file(e.name, "downstream")]

    return inputs


def training_init(mode):
    def inputs(wildcards):
        if mode not in ("probe", "finetune"):
            return []
        return [L.checkpoint_manifest(wildcards.experiment, "pretrain")]

    return inputs


def final_checkpoint(experiment, mode):
    e = EXPERIMENTS[experiment]
    return L.checkpoint_file(experiment, mode, e.epochs(mode))


def downstream_modes(experiment):
    return [m for m in EXPERIMENTS[experiment].modes if m != "pretrain"]


def final_manifests(wildcards):
    return [
        L.checkpoint_manifest(wildcards.experiment, m)
        for m in downstream_modes(wildcards.experiment)
    ]


def final_models(wildcards):
    return " ".join(
        f"--model {m} {final_checkpoint(wildcards.experiment, m)}"
        for m in downstream_modes(wildcards.experiment)
    )


def mode_metrics(wildcards):
    return [L.training_metrics(wildcards.experiment, m) for m in exp(wildcards).modes]


def shards_of(e, path):
    """Every (model, explained epoch, shard) of an experiment, as paths made by ``path``."""
    return [
        path(e.name, model, epoch, k)
        for model in e.models
        for epoch in e.explained_epochs(model)
        for k in range(e.extraction.shards)
    ]


def interaction_shards(wildcards):
    return shards_of(exp(wildcards), L.interactions_shard)


def variant_shards(wildcards):
    """A variant's own interactions when it changes the sparsification, else the default ones."""
    e = exp(wildcards)
    if not e.resolves(wildcards.variant):
        return shards_of(e, L.interactions_shard)
    return [L.variant_interactions(e.name, wildcards.variant)]


def sensitivity_inputs(wildcards):
    e = exp(wildcards)
    return {
        "default": L.knowledge_table(e.name, "measures"),
        **{v: L.variant_measures(e.name, v) for v in e.variants()},
    }


def all_targets():
    """Every output of every job, intermediate ones included: a deleted file is restored by a
    plain rerun, and everything built from it is rebuilt."""
    targets = []
    for name, e in EXPERIMENTS.items():
        targets += [
            L.data_file(name, task)
            for task in L.TASKS
            if task == "downstream" or not e.weights
        ]
        for mode in e.modes:
            targets += [
                L.checkpoint_dir(name, mode),
                L.checkpoint_manifest(name, mode),
                L.training_metrics(name, mode),
                L.predictions(name, mode),
            ]
        targets += [L.metrics(name), L.selection(name), L.samples(name)]
        targets += shards_of(e, L.games_shard) + shards_of(e, L.interactions_shard)
        targets += [L.knowledge_table(name, t) for t in L.KNOWLEDGE_TABLES]
        for variant in e.variants():
            targets.append(L.variant_measures(name, variant))
            if e.resolves(variant):
                targets.append(L.variant_interactions(name, variant))
        targets.append(L.sensitivity_table(name))
        targets += [
            L.figure(name, f, fmt)
            for f in L.EXPERIMENT_FIGURES
            for fmt in L.FIGURE_FORMATS
        ]
    targets += [
        L.figure(None, f, fmt) for f in L.GLOBAL_FIGURES for fmt in L.FIGURE_FORMATS
    ]
    return targets


def figure_args(wildcards, input):
    """``--input NAME=PATH`` for every named input of a figure rule (each path of a list)."""
    args = []
    for name, paths in input.items():
        for path in [paths] if isinstance(paths, str) else paths:
            args.append(f"--input {name}={path}")
    return " ".join(args)


def claims_inputs():
    """What the claims stage reads, per experiment (its dataset × architecture decides the pool)."""
    return {
        name: {
            "group": f"{e.dataset_name}-{e.architecture_name}",
            "classes": spec.downstream_classes(e.dataset),
            "measures": L.knowledge_table(name, "measures"),
            "metrics": L.metrics(name),
            "predictions": {m: L.predictions(name, m) for m in ("finetune", "scratch")},
            "variants": {v: L.variant_measures(name, v) for v in e.variants()},
        }
        for name, e in EXPERIMENTS.items()
    }
