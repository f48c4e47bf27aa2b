"""Where everything lives: every path, table, figure and model name the rules, stages and tests use.

Paths are relative to the workflow's working directory (the repository root). Each function also
accepts Snakemake wildcards as its arguments (``checkpoint_dir("{experiment}", "finetune")``), so the
rules' output patterns and the stages' own paths come from the same line.

Results of one experiment::

    results/<experiment>/
        data/{upstream,downstream}.pt          prepared tasks
        checkpoints/<mode>/epoch-NNN.pt        one per epoch (epoch 0 = before training)
        checkpoints/<mode>.json                manifest: size and sha256 of every checkpoint
        training/<mode>.parquet, training/<mode>.predictions.parquet, metrics.parquet
        selection/selection.pt, selection/samples.parquet
        games/model=<m>/epoch=<e>/shard-<k>.parquet          v(x_T) of every coalition
        interactions/model=<m>/epoch=<e>/shard-<k>.parquet   AND-OR interactions
        knowledge/<table>.parquet
        figures/<figure>.{png,pdf}
        logs/…, benchmarks/…
"""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = "results"

MODES: tuple[str, ...] = (
    "pretrain", "probe", "finetune", "scratch", "scratch_b", "random_probe", "scratch_converged",
)  # fmt: skip
"""Training modes, in pipeline order (method.md §1, §7); each is one training job per experiment."""
MODELS: tuple[str, ...] = ("pretrain", "finetune", "scratch", "scratch_b", "random_probe", "scratch_converged")
"""Explained models, in table order. ``pretrain`` is the backbone read through its linear probe."""
CONTROLS: tuple[str, ...] = ("scratch_b", "random_probe")
"""Control models (method.md §7): a second scratch run with another seed, and a linear probe on a
randomly initialised, frozen backbone (pre-training with no knowledge)."""
RECIPE: dict[str, str] = {"scratch_b": "scratch", "random_probe": "probe"}
SCRATCH_BASELINE = "scratch_converged"
"""When trained, the scratch model that claims C1 and C2 compare against (a converged one)."""
"""A control is trained with the hyper-parameters of the model it controls."""
CONVERGENCE_MODELS: tuple[str, ...] = ("finetune", "scratch")
"""Models explained at every configured checkpoint (the convergence analysis); others at their last."""
INTERACTION_TYPES: tuple[str, ...] = ("and", "or")
"""Interaction types, in the order of every stacked tensor's type dimension and of table categories."""
KINDS: tuple[str, ...] = ("preserved", "discarded", "new")
"""Parts of the pretrain/finetune knowledge decomposition, in table order."""
SIMILARITIES: tuple[str, ...] = ("weighted_jaccard", "scale_free_jaccard", "salient_iou")
"""Similarity measures of the convergence analysis (method.md §4, §7 C3), in table order."""
TASKS: tuple[str, ...] = ("upstream", "downstream")
SPLITS: tuple[str, ...] = ("train", "test")

KNOWLEDGE_TABLES: tuple[str, ...] = (
    "decomposition",
    "decomposition_summary",
    "members",
    "learnability",
    "learnability_summary",
    "similarity",
    "similarity_summary",
    "measures",
    "faithfulness",
    "faithfulness_summary",
)
"""Tables of the knowledge stage; results/README.md documents their columns."""
EXPERIMENT_FIGURES: tuple[str, ...] = ("knowledge", "similarity", "training", "examples")
"""Figures drawn per experiment."""
GLOBAL_FIGURES: tuple[str, ...] = ("claims", "benefit", "convergence", "learnability", "sensitivity")
"""Figures drawn across all experiments."""
FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf")

_PARTITION = re.compile(r"^(model|epoch)=(.+)$")


def recipe(mode: str) -> str:
    """The mode whose hyper-parameters ``mode`` trains with (itself, or what a control controls)."""
    return RECIPE.get(mode, mode)


def source_mode(model: str) -> str:
    """The training mode whose checkpoints a model's games are played with: the pre-trained
    backbone speaks the downstream classes only through its linear probe (method.md §1)."""
    return "probe" if model == "pretrain" else model


def experiment_name(dataset: str, architecture: str, seed: int | str) -> str:
    return f"{dataset}-{architecture}-s{seed}"


def group_of(experiment: str) -> str:
    """``<dataset>-<architecture>``: the experiments of one group differ only in their seed."""
    return experiment.rsplit("-s", 1)[0]


def experiment_dir(experiment: str) -> str:
    return f"{RESULTS}/{experiment}"


def data_file(experiment: str, task: str) -> str:
    return f"{experiment_dir(experiment)}/data/{task}.pt"


def checkpoint_dir(experiment: str, mode: str) -> str:
    return f"{experiment_dir(experiment)}/checkpoints/{mode}"


def checkpoint_name(epoch: int) -> str:
    """``epoch-NNN.pt``: three digits, so files sort in epoch order."""
    return f"epoch-{int(epoch):03d}.pt"


def checkpoint_file(experiment: str, mode: str, epoch: int) -> str:
    return f"{checkpoint_dir(experiment, mode)}/{checkpoint_name(epoch)}"


def checkpoint_manifest(experiment: str, mode: str) -> str:
    """Beside the checkpoint folder: Snakemake cannot look inside a directory output, so the
    manifest lists every checkpoint with its size and checksum for the integrity checks."""
    return f"{checkpoint_dir(experiment, mode)}.json"


def training_metrics(experiment: str, mode: str) -> str:
    return f"{experiment_dir(experiment)}/training/{mode}.parquet"


def predictions(experiment: str, mode: str) -> str:
    """Per test image and epoch, whether the mode's model classified it correctly (claim C0)."""
    return f"{experiment_dir(experiment)}/training/{mode}.predictions.parquet"


def metrics(experiment: str) -> str:
    return f"{experiment_dir(experiment)}/metrics.parquet"


def selection(experiment: str) -> str:
    return f"{experiment_dir(experiment)}/selection/selection.pt"


def samples(experiment: str) -> str:
    return f"{experiment_dir(experiment)}/selection/samples.parquet"


def games_root(experiment: str) -> str:
    return f"{experiment_dir(experiment)}/games"


def interactions_root(experiment: str) -> str:
    return f"{experiment_dir(experiment)}/interactions"


def shard(root: str | Path, model: str, epoch: int | str, shard: int | str) -> str:
    """Hive path of one shard: ``<root>/model=<model>/epoch=<epoch>/shard-<k>.parquet``."""
    return f"{root}/model={model}/epoch={epoch}/shard-{shard}.parquet"


def games_shard(experiment: str, model: str, epoch: int | str, k: int | str) -> str:
    return shard(games_root(experiment), model, epoch, k)


def interactions_shard(experiment: str, model: str, epoch: int | str, k: int | str) -> str:
    return shard(interactions_root(experiment), model, epoch, k)


def partition_keys(path: str | Path) -> dict[str, str]:
    """``{"model": ..., "epoch": ...}`` of a hive shard path."""
    keys = {}
    for part in Path(path).parts:
        match = _PARTITION.match(part)
        if match:
            keys[match.group(1)] = match.group(2)
    if set(keys) != {"model", "epoch"}:
        raise ValueError(f"{path} is not a hive shard path .../model=<model>/epoch=<epoch>/shard-<k>.parquet")
    return keys


def variant_dir(experiment: str, variant: str) -> str:
    """One sensitivity variant's own results: ``results/<experiment>/sensitivity/<variant>/``."""
    return f"{experiment_dir(experiment)}/sensitivity/{variant}"


def variant_interactions(experiment: str, variant: str) -> str:
    """Interactions re-solved under a variant, in the hive layout of the default ones."""
    return f"{variant_dir(experiment, variant)}/interactions"



def variant_measures(experiment: str, variant: str) -> str:
    return f"{variant_dir(experiment, variant)}/measures.parquet"


def sensitivity_table(experiment: str) -> str:
    """The headline measures of every variant of one experiment."""
    return f"{experiment_dir(experiment)}/knowledge/sensitivity.parquet"


def knowledge_table(experiment: str, table: str) -> str:
    return f"{experiment_dir(experiment)}/knowledge/{table}.parquet"


def claims_table() -> str:
    """Every claim against its controls, per experiment and pooled over seeds (all experiments)."""
    return f"{RESULTS}/claims.parquet"


def claims_report() -> str:
    return f"{RESULTS}/claims.md"


def figure(experiment: str | None, name: str, fmt: str) -> str:
    """A figure of one experiment, or of all experiments when ``experiment`` is None."""
    folder = f"{RESULTS}/figures" if experiment is None else f"{experiment_dir(experiment)}/figures"
    return f"{folder}/{name}.{fmt}"


def log(experiment: str | None, *parts: str) -> str:
    """``results/<experiment>/logs/<parts…>.log`` (``results/logs/…`` for cross-experiment rules)."""
    folder = f"{RESULTS}/logs" if experiment is None else f"{experiment_dir(experiment)}/logs"
    return f"{folder}/{'/'.join(parts)}.log"


def benchmark(experiment: str, *parts: str) -> str:
    return f"{experiment_dir(experiment)}/benchmarks/{'/'.join(parts)}.tsv"
