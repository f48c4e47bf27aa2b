"""The experiment spec: the workflow's config as typed, frozen dataclasses, and its expansion.

Every setting is defined once, here, with its default, bounds and description; the JSON schema in
``workflow/schemas/config.schema.yaml`` is generated from these classes (``python -m
pretrain_knowledge schema``), the workflow's rules read :func:`load_experiments`, and the stages
parse the JSON settings a rule hands them back into the same classes (:func:`parse`).

A config holds experiment grids (datasets × architectures × seeds, one experiment per
combination, named ``<dataset>-<architecture>-s<seed>``), named datasets and architectures, and the
global sections ``training``, ``selection``, ``extraction`` and ``knowledge``. A dataset or an
architecture may override parts of those sections (``overrides:``; the architecture's win).

:func:`load_experiments` checks everything that can be checked without running a job — unknown keys
(with the nearest valid one), types and bounds at the path where a value was written, and the
cross-field rules (players vs the grid and the solver's limit, patch size vs image size, shards vs
samples, rule and source options, architectures vs image sizes) — so that a config error never
reaches a job after Snakemake has deleted that job's previous outputs.

Text experiments (a text source with a text architecture) are checked the same way: the
modalities must agree, players are words by rule ``words`` on the ``1 × max_words`` grid, and the
image keys do not apply.

This module imports no torch (see :mod:`pretrain_knowledge.catalog`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import yaml

from . import catalog, layout, players
from .typed import ConfigError, build, check_bounds, convert, fields_of, json_schema, merge, setting, suggest, to_plain

T = TypeVar("T")

SourceName = Literal[tuple(catalog.SOURCES)]  # type: ignore[valid-type]
ArchName = Literal[tuple(catalog.ARCHITECTURES)]  # type: ignore[valid-type]
RuleName = Literal[tuple(players.PLAYER_RULES)]  # type: ignore[valid-type]
MethodName = Literal[tuple(catalog.SPARSIFY_METHODS)]  # type: ignore[valid-type]
FormName = Literal[tuple(catalog.SPARSIFY_FORMS)]  # type: ignore[valid-type]
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


# ----------------------------------------------------------------------------------------------
# Data and architectures
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """The classes and caps of one task (upstream or downstream) of a dataset."""

    classes: tuple[int, ...] | str | None = setting(
        None, 'Source class ids: a list, a string such as "0-4" or "0,2,5-7", or null for every class.'
    )
    train_per_class: int | None = setting(
        None, "Cap on training images per class, drawn with the experiment seed; null keeps all.", minimum=1
    )
    test_per_class: int | None = setting(
        None, "Cap on test images per class; null keeps the whole test split of these classes.", minimum=1
    )


@dataclass(frozen=True)
class Overrides:
    """Partial training, selection, extraction or knowledge settings for the experiments of one
    dataset or architecture, merged key by key over the global sections (lists are replaced)."""

    training: dict[str, Any] = setting(factory=dict, doc="Partial `training` settings.")
    selection: dict[str, Any] = setting(factory=dict, doc="Partial `selection` settings.")
    extraction: dict[str, Any] = setting(factory=dict, doc="Partial `extraction` settings.")
    knowledge: dict[str, Any] = setting(factory=dict, doc="Partial `knowledge` settings.")


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: one source split into an upstream (pre-training) and a downstream task."""

    source: SourceName = setting(doc="Registered data source (pretrain_knowledge.catalog.SOURCES).")
    upstream: TaskSpec = setting(
        TaskSpec(), "The pre-training task (unused when the architecture loads `weights`)."
    )
    downstream: TaskSpec = setting(
        TaskSpec(), "The task that is fine-tuned, probed, trained from scratch and explained."
    )
    root: str | None = setting(
        None,
        "Folder with the source's files; null uses the source's default (fashion_mnist: "
        f"{catalog.FASHION_MNIST_DEFAULT_ROOT}, from the Debian package dataset-fashion-mnist).",
    )
    download: bool = setting(False, "Let torchvision download the source into `root` when online.")
    options: dict[str, Any] = setting(
        factory=dict,
        doc="Source-specific options: synthetic (catalog.SyntheticSpec), generated_text "
        "(catalog.GeneratedTextSpec), sst2 (catalog.Sst2Spec); other sources take none.",
    )
    image_size: int | None = setting(
        None, "Resize images to this square side; null keeps the source's size.", minimum=8
    )
    channels: Literal[1, 3] | None = setting(None, "Convert images to this many channels; null keeps the source's.")
    resize_mode: Literal["stretch", "center_crop"] = setting("stretch", "How images are brought to `image_size`.")
    normalization: Literal["source", "imagenet"] | None = setting(
        None, "Per-channel statistics the models see; null picks the source's default."
    )
    overrides: Overrides = setting(Overrides(), "Settings that differ for this dataset's experiments.")


@dataclass(frozen=True)
class ArchitectureSpec:
    """A named architecture, optionally starting from pre-trained weights."""

    model: ArchName = setting(doc="Registered architecture (pretrain_knowledge.catalog.ARCHITECTURES).")
    weights: str | None = setting(
        None,
        'Pre-trained weights instead of upstream training: a path to a torchvision state dict, or '
        '"imagenet" for torchvision\'s download. null trains the backbone on the upstream task.',
    )
    overrides: Overrides = setting(Overrides(), "Settings that differ for this architecture's experiments.")


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModeSpec:
    """Hyper-parameters of one training mode (method.md §1)."""

    epochs: int = setting(5, "Training epochs; a checkpoint is saved before training (epoch 0) and after each.", minimum=0)
    lr: float = setting(0.05, "Peak learning rate.", exclusive_minimum=0)
    batch_size: int = setting(64, "Mini-batch size.", minimum=1)
    optimizer: Literal["sgd", "adam", "adamw"] = setting("sgd", "Optimiser.")
    momentum: float = setting(0.9, "SGD momentum.", minimum=0)
    weight_decay: float = setting(5e-4, "L2 weight decay.", minimum=0)
    schedule: Literal["cosine", "constant"] = setting("cosine", "Per-step learning-rate schedule.")
    warmup_epochs: float = setting(
        0.0, "Linear learning-rate warm-up from 0 over this many epochs, before the schedule.", minimum=0
    )
    label_smoothing: float = setting(0.0, "Label smoothing of the cross-entropy loss.", minimum=0, maximum=1)
    augment: Literal["none", "flip_crop", "crop"] = setting("none", "Augmentation of training images.")
    amp: bool = setting(False, "Mixed precision on CUDA (ignored on the CPU).")
    eval_batch_size: int = setting(500, "Batch size of the per-epoch evaluation.", minimum=1)
    save_optimizer: bool = setting(False, "Also store the optimizer state in every checkpoint.")


@dataclass(frozen=True)
class TrainingSpec:
    """Hyper-parameters per training mode, and where training runs."""

    pretrain: ModeSpec = setting(ModeSpec(), "Upstream training (forced to 0 epochs with `weights`).")
    probe: ModeSpec = setting(ModeSpec(), "Linear probe on the frozen pre-trained backbone.")
    finetune: ModeSpec = setting(ModeSpec(), "Fine-tuning of every layer from the pre-trained backbone.")
    scratch: ModeSpec = setting(ModeSpec(), "The same architecture trained from random initialisation.")
    scratch_converged: dict[str, Any] | None = setting(
        None,
        "A scratch baseline trained to convergence, as scratch's settings with these keys changed (e.g. "
        "{epochs: 150}). Claims C1 and C2 then compare against it, while scratch keeps fine-tuning's "
        "epochs for the convergence analysis. null: scratch itself is the baseline.",
    )
    device: str = setting("auto", "torch device for training; auto picks CUDA when present.")
    keep: Literal["all", "explained"] = setting(
        "all",
        "Checkpoints kept after training: all of them, or only the explained ones and those later stages "
        "read (the others are deleted once the last epoch is written; a paper-size grid keeps ~0.4 TB otherwise).",
    )

    def mode(self, name: str) -> ModeSpec:
        if name == "scratch_converged":
            return build(ModeSpec, merge(to_plain(self.scratch), self.scratch_converged or {}), "training.scratch_converged")
        return getattr(self, name)


# ----------------------------------------------------------------------------------------------
# Selection, extraction, knowledge
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlayersSpec:
    """Which patches of each explained image are the players of its game (method.md §2)."""

    n: int = setting(
        10,
        "Players per image; every image costs 2^n forward passes per checkpoint. The largest n depends on "
        "the sparsification method (catalog.MAX_PLAYERS).",
        minimum=1,
        maximum=max(catalog.MAX_PLAYERS.values()),
    )
    patch_size: int = setting(
        4, "Side of a square patch in pixels; must divide the image size. Text: a word is one unit (always 1).", minimum=1
    )
    rule: RuleName = setting(
        "central",
        "Player rule (pretrain_knowledge.players.PLAYER_RULES). central: drawn from the central region; "
        "bbox: drawn from the patches inside the bounding box (sources with boxes); parts: the patches under "
        "the visible part keypoints, topped up from the bounding box (cub200); words: n content words drawn from "
        "the sentence (text sources, which take no other rule).",
    )
    options: dict[str, Any] = setting(
        factory=dict,
        doc="Options of the rule (central: region; bbox, parts: min_overlap; words: skip_stop_words). Keys of other rules are "
        "ignored, so one dataset can switch rules; a key no rule takes is an error.",
    )


DownstreamMode = Literal[tuple(m for m in layout.MODES if m != "pretrain")]  # type: ignore[valid-type]


@dataclass(frozen=True)
class SelectionSpec:
    """Which test images are explained, and their players (method.md §2, §5)."""

    per_class: int = setting(
        2,
        "Test images per class, drawn with the experiment seed among those that every model of "
        "`correct_under` classifies correctly.",
        minimum=1,
    )
    correct_under: tuple[DownstreamMode, ...] = setting(
        ("probe", "finetune", "scratch"),
        "Final models that must classify an explained image correctly. The lab's rule is the models "
        "whose knowledge is compared ([probe, finetune]); requiring scratch too selects images scratch "
        "already handles, which can bias the learnability ratio upward. [] explains misclassified images "
        "too. Every model's correctness is stored per sample either way (selection/samples.parquet).",
    )
    batch_size: int = setting(512, "Batch size for classifying the test set.", minimum=1)
    players: PlayersSpec = setting(PlayersSpec(), "Players of each sample.")


@dataclass(frozen=True)
class SparsifySpec:
    """How the AND-OR interactions are chosen among all exact decompositions (method.md §3)."""

    qthres: float = setting(0.04, "Bound on |q_T| as a share of |v(N) − v(∅)|.", minimum=0, maximum=1)
    method: MethodName = setting(
        "lp",
        "lp: the exact least-norm optimum (unique and label-free; n <= 16; both forms); lp-dense: the "
        "exact optimum by a batched dense interior point (a point near the centre of the optimal face, "
        "which depends on the solver's path; n <= 13); reference: the SGD recipe of earlier work, for "
        "reproducing its numbers (method.md sections 3 and 8).",
    )
    form: FormName = setting(
        "and-or",
        "and-or: AND and OR interactions (method.md §3); and: the paper's Eq. (2), AND (Harsanyi) "
        "interactions of v + q only.",
    )
    options: dict[str, Any] = setting(
        factory=dict, doc="Keyword options of the method (catalog.SPARSIFY_OPTIONS): tol, max_iter, chunk_size / lr, niter."
    )


@dataclass(frozen=True)
class ExtractionSpec:
    """Games and AND-OR interactions (method.md §2, §3)."""

    checkpoints: tuple[int, ...] = setting(
        (0, 1, 2, 4, -1),
        "Epochs of finetune and scratch whose interactions are extracted; negative values count from the "
        "end (-1 = the last epoch, which is always added). The pre-trained model is explained once, "
        "through the probe's last checkpoint.",
    )
    shards: int = setting(1, "Jobs per checkpoint; the selected samples are split into this many contiguous shards.", minimum=1)
    batch_size: int = setting(1024, "Masked images per forward pass.", minimum=1)
    baseline: float = setting(0.0, "Value of masked players in normalised input space (0 = the dataset mean).")
    text_baseline: Literal["mask", "unk", "pad"] = setting(
        "mask",
        "Text: what a masked word becomes. mask: every token of the word is replaced by [MASK] (its "
        "embedding, of the same checkpoint); unk: by [UNK]; pad: by [PAD], which the attention mask then "
        "removes (positions of the other words are kept). README, 'Text'.",
    )
    device: str = setting("auto", "torch device for the games; auto picks CUDA when present.")
    matching_tolerance: float = setting(
        1e-6,
        "Largest universal-matching error allowed, relative to max(1, max|v|) of a sample; a shard that "
        "fails it is not written.",
        exclusive_minimum=0,
    )
    max_gap: float = setting(
        1e-4,
        "Largest certified relative gap to the optimum of the sparsity objective (diagnostics.gap) allowed "
        "per game; a shard that fails it is not written. Methods without a bound (reference) are not checked.",
        exclusive_minimum=0,
    )
    sparsify: SparsifySpec = setting(SparsifySpec(), "The sparsification objective and its solver.")


@dataclass(frozen=True)
class KnowledgeSpec:
    """Salient interactions and their decomposition (method.md §4)."""

    salience: float = setting(0.05, "τ as a share of the largest |I| (over both types, S ≠ ∅).", minimum=0, maximum=1)
    tau_scope: Literal["sample", "model"] = setting(
        "sample", "Take that largest |I| per sample, or over all samples of a model checkpoint."
    )
    match_sign: bool = setting(True, "Preserved knowledge needs the same sign in both models.")


@dataclass(frozen=True)
class SensitivitySpec:
    """How much the knowledge depends on each analysis choice (method.md §8): one factor at a time
    around the experiment's own settings, every variant re-solved from the stored games."""

    qthres: tuple[float, ...] = setting((0.02, 0.04, 0.08), "Values of extraction.sparsify.qthres.")
    form: tuple[FormName, ...] = setting(("and-or", "and"), "Values of extraction.sparsify.form.")
    method: tuple[MethodName, ...] = setting(
        ("lp", "lp-dense", "reference"), "Values of extraction.sparsify.method."
    )
    salience: tuple[float, ...] = setting((0.02, 0.05, 0.10), "Values of knowledge.salience.")


@dataclass(frozen=True)
class FiguresSpec:
    """Figure options."""

    examples: int = setting(5, "Samples drawn in the example figure (one per class first).", minimum=1)
    dpi: int = setting(150, "Resolution of the PNG figures.", minimum=50)


@dataclass(frozen=True)
class ControlsSpec:
    """The control models of method.md §7, trained and explained like the others."""

    scratch_b: bool = setting(
        True,
        "A second from-scratch run with another seed: the ceiling of 'learnable from scratch' and the "
        "noise floor of the convergence curves.",
    )
    random_probe: bool = setting(
        True, "A linear probe on a randomly initialised, frozen backbone: pre-training with no knowledge."
    )
    seed_offset: int = setting(1000, "scratch_b's seed is the experiment seed plus this.", minimum=1)


@dataclass(frozen=True)
class ThreadsSpec:
    """torch CPU threads per computing stage. Results on the CPU depend on the thread count (the
    order of float reductions), so it is part of the config, not of --cores or the executor; the
    rules ask the scheduler for the same number."""

    training: int = setting(2, "Threads of every training job (pretrain, probe, finetune, scratch).", minimum=1)
    selection: int = setting(2, "Threads of the select job (classifying the test set).", minimum=1)
    extraction: int = setting(
        1,
        "Threads of every games and sparsify job. One: on a laptop two single-threaded jobs side by side "
        "measured 1.4× the throughput of one job on two threads.",
        minimum=1,
    )


@dataclass(frozen=True)
class ExperimentGrid:
    """One grid of experiments: every dataset × architecture × seed."""

    datasets: tuple[str, ...] = setting(doc="Names of entries of `datasets`.")
    architectures: tuple[str, ...] = setting(doc="Names of entries of `architectures`.")
    seeds: tuple[int, ...] = setting(
        (0,), "Seeds; each seeds data caps, initialisation, training order and player draws."
    )


@dataclass(frozen=True)
class Config:
    """pretrain-knowledge workflow configuration (config/README.md describes every section)."""

    experiments: tuple[ExperimentGrid, ...] = setting(doc="Experiment grids; each expands to datasets × architectures × seeds.")
    datasets: dict[str, DatasetSpec] = setting(doc="Named datasets; each defines an upstream and a downstream task.")
    architectures: dict[str, ArchitectureSpec] = setting(doc="Named architectures.")
    training: TrainingSpec = setting(doc="Hyper-parameters per training mode (method.md §1).")
    threads: ThreadsSpec = setting(ThreadsSpec(), "torch CPU threads per computing stage.")
    controls: ControlsSpec = setting(ControlsSpec(), "Control models (method.md §7).")
    selection: SelectionSpec = setting(SelectionSpec(), "Which test images are explained, and their players.")
    extraction: ExtractionSpec = setting(ExtractionSpec(), "Games and AND-OR interactions.")
    knowledge: KnowledgeSpec = setting(KnowledgeSpec(), "Salient interactions and their decomposition.")
    sensitivity: SensitivitySpec = setting(
        SensitivitySpec(), "Variants of the analysis choices; [] under a factor leaves it out."
    )
    figures: FiguresSpec = setting(FiguresSpec(), "Figure options.")


SECTIONS: dict[str, type] = {
    "training": TrainingSpec,
    "selection": SelectionSpec,
    "extraction": ExtractionSpec,
    "knowledge": KnowledgeSpec,
}
"""The sections a dataset or architecture may override, and their classes."""


# ----------------------------------------------------------------------------------------------
# One experiment
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Experiment:
    """One dataset × architecture × seed with its sections after overrides: what every stage reads."""

    name: str
    seed: int
    threads: ThreadsSpec
    controls: ControlsSpec
    sensitivity: SensitivitySpec
    dataset_name: str
    dataset: DatasetSpec
    architecture_name: str
    architecture: ArchitectureSpec
    training: TrainingSpec
    selection: SelectionSpec
    extraction: ExtractionSpec
    knowledge: KnowledgeSpec

    @property
    def weights(self) -> str | None:
        return self.architecture.weights

    @property
    def modes(self) -> tuple[str, ...]:
        """The training modes of this experiment: the four of method.md §1, the enabled controls and,
        when configured, the converged scratch baseline."""
        enabled = {"scratch_converged": self.training.scratch_converged is not None}
        enabled.update({c: getattr(self.controls, c) for c in layout.CONTROLS})
        return tuple(m for m in layout.MODES if enabled.get(m, True))

    @property
    def models(self) -> tuple[str, ...]:
        """The explained models of this experiment, in table order."""
        return tuple(m for m in layout.MODELS if layout.source_mode(m) in self.modes)

    def epochs(self, mode: str) -> int:
        """Training epochs of a mode (checkpoints 0 … epochs); pretrain only stores given weights."""
        if mode == "pretrain" and self.weights:
            return 0
        return self.training.mode(layout.recipe(mode)).epochs

    def explained_epochs(self, model: str) -> list[int]:
        """Checkpoints whose interactions are extracted, ascending; the last epoch is always in.

        Only fine-tuning and scratch are explained along their training (the convergence
        analysis); every other model at its last checkpoint.
        """
        if model not in layout.CONVERGENCE_MODELS:
            return [self.epochs(layout.source_mode(model))]
        last = self.epochs(model)
        out = {last}
        for epoch in self.extraction.checkpoints:
            out.add(last + 1 + epoch if epoch < 0 else epoch)
        return sorted(out)

    @property
    def modality(self) -> str:
        """``image`` or ``text``: the source's (the architecture's is checked to agree)."""
        return catalog.SOURCES[self.dataset.source].modality

    @property
    def max_words(self) -> int:
        """Text: the width W of the 1 × W word grid (the source's max_words)."""
        words = catalog.source_facts(self.dataset.source, self.dataset.options).max_words
        assert words is not None, "text sources define max_words"
        return words

    @property
    def image_size(self) -> int:
        facts = catalog.source_facts(self.dataset.source, self.dataset.options)
        size = self.dataset.image_size or facts.image_size
        assert size is not None, "checked by load_experiments"
        return size

    @property
    def n_samples(self) -> int | None:
        """Samples explained: per_class × downstream classes (None when the source decides the classes)."""
        classes = downstream_classes(self.dataset)
        return None if classes is None else self.selection.per_class * classes

    # Settings each stage reads (the JSON its rule hands it; see the *Settings classes).

    def prepare_settings(self, task: str) -> dict[str, Any]:
        cleared = {t: TaskSpec() for t in layout.TASKS if t != task}
        dataset = replace(self.dataset, overrides=Overrides(), **cleared)
        return to_plain(PrepareSettings(dataset=dataset, task=task, seed=self.seed))  # type: ignore[arg-type]

    def train_settings(self, mode: str) -> dict[str, Any]:
        """The mode's hyper-parameters plus what the experiment adds (training.TrainConfig's fields)."""
        hyper = replace(self.training.mode(layout.recipe(mode)), epochs=self.epochs(mode))
        out = {
            **to_plain(hyper),
            "arch": self.architecture.model,
            "seed": self.seed + (self.controls.seed_offset if mode == "scratch_b" else 0),
            "device": self.training.device,
            "threads": self.threads.training,
            "weights": self.weights if mode == "pretrain" else None,
            "keep": None if self.training.keep == "all" else self.kept_epochs(mode),
        }
        if self.modality == "text":
            # Every text mode builds the same tokenizer and, from scratch, the same configuration:
            # both come from the pre-trained model's folder (weights load in pretrain only).
            out["text_model"] = self.weights
        return out

    def kept_epochs(self, mode: str) -> list[int]:
        """The checkpoints of a mode that later stages read: its explained ones and its last."""
        models = [m for m in self.models if layout.source_mode(m) == mode]
        epochs = {e for m in models for e in self.explained_epochs(m)} | {self.epochs(mode)}
        return sorted(epochs)

    def select_settings(self) -> dict[str, Any]:
        return to_plain(SelectSettings(selection=self.selection, seed=self.seed, threads=self.threads.selection))

    def games_settings(self) -> dict[str, Any]:
        x = self.extraction
        out = to_plain(
            GamesSettings(x.batch_size, x.baseline, x.device, x.shards, self.threads.extraction, x.text_baseline)
        )
        if self.modality != "text":
            del out["text_baseline"]  # an image game has no words: the key would only rerun its jobs
        return out

    def sparsify_settings(self) -> dict[str, Any]:
        x = self.extraction
        return to_plain(SparsifySettings(x.sparsify, x.matching_tolerance, x.max_gap, x.device, self.threads.extraction))

    def knowledge_settings(self, variant: str | None = None) -> dict[str, Any]:
        return to_plain(self.variants()[variant][1] if variant else self.knowledge)

    def variants(self) -> dict[str, tuple[SparsifySpec, KnowledgeSpec]]:
        """Sensitivity variants: name (``<factor>=<value>``) → the sparsification and knowledge
        settings it uses; one factor differs from the experiment's own settings in each."""
        own_sparsify, own_knowledge = self.extraction.sparsify, self.knowledge
        out = {}
        for factor in ("qthres", "form", "method"):
            for value in getattr(self.sensitivity, factor):
                if value != getattr(own_sparsify, factor):
                    changed = replace(own_sparsify, **{factor: value})
                    if factor == "method":  # the other method's options do not apply
                        changed = replace(changed, options={})
                    if changed.form not in catalog.SPARSIFY_FORMS_OF[changed.method]:
                        # e.g. form=and in an lp-dense run: solved exactly by lp, the solver that has it
                        solver = next(m for m in catalog.SPARSIFY_METHODS if changed.form in catalog.SPARSIFY_FORMS_OF[m])
                        changed = replace(changed, method=solver, options={})
                    out[f"{factor}={value}"] = (changed, own_knowledge)
        for value in self.sensitivity.salience:
            if value != own_knowledge.salience:
                out[f"salience={value}"] = (own_sparsify, replace(own_knowledge, salience=value))
        return out

    def resolves(self, variant: str) -> bool:
        """Whether a variant needs its own interactions (it changes the sparsification)."""
        return self.variants()[variant][0] != self.extraction.sparsify

    def variant_sparsify_settings(self, variant: str) -> dict[str, Any]:
        x = self.extraction
        sparsify = self.variants()[variant][0]
        return to_plain(SparsifySettings(sparsify, x.matching_tolerance, x.max_gap, x.device, self.threads.extraction))


@dataclass(frozen=True)
class PrepareSettings:
    """What the prepare stage reads: one task of a dataset (the other task and the overrides
    cleared, so a change to them never reruns this job) and the seed of the per-class draws."""

    dataset: DatasetSpec
    task: Literal["upstream", "downstream"]
    seed: int


@dataclass(frozen=True)
class SelectSettings:
    """What the select stage reads."""

    selection: SelectionSpec
    seed: int
    threads: int


@dataclass(frozen=True)
class GamesSettings:
    """What the games stage reads: nothing about sparsification, so changing it reruns no game."""

    batch_size: int
    baseline: float
    device: str
    shards: int
    threads: int
    text_baseline: Literal["mask", "unk", "pad"] = "mask"
    """Text experiments only; image experiments leave it out of their settings."""


@dataclass(frozen=True)
class SparsifySettings:
    """What the sparsify stage reads."""

    sparsify: SparsifySpec
    matching_tolerance: float
    max_gap: float
    device: str
    threads: int


def downstream_classes(dataset: DatasetSpec) -> int | None:
    """Number of downstream classes, when the config or the source fixes it."""
    classes = dataset.downstream.classes
    if classes is None:
        return catalog.source_facts(dataset.source, dataset.options).num_classes
    if isinstance(classes, str):
        parsed = parse_classes(classes)
        if parsed is None:
            return catalog.source_facts(dataset.source, dataset.options).num_classes
        return len(parsed)
    return len(classes)


def parse_classes(spec: str | tuple[int, ...] | list[int] | None) -> list[int] | None:
    """``"0-4"``, ``"0,2,5-7"``, a list of ints, or ``"all"``/None (every class)."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        return [int(c) for c in spec]
    text = spec.strip()
    if text.lower() in ("", "all"):
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


# ----------------------------------------------------------------------------------------------
# Loading and checking
# ----------------------------------------------------------------------------------------------


def check_partial(cls: type, raw: Any, path: str) -> None:
    """Check an override against a section's class: keys, types and bounds, nothing required."""
    if not isinstance(raw, Mapping):
        build(cls, raw, path)  # raises the type error
        return
    fields = fields_of(cls)
    for key, value in raw.items():
        here = f"{path}.{key}"
        if key not in fields:
            raise ConfigError(
                f"config: {here}: unknown key.{suggest(str(key), list(fields))} "
                f"Valid keys here: {', '.join(fields)}."
            )
        field, annotation = fields[key]
        if dataclasses.is_dataclass(annotation) and isinstance(value, Mapping):
            check_partial(annotation, value, here)
        else:
            check_bounds(convert(value, annotation, here), field.metadata.get("bounds", {}), here)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as a mapping; a syntax error names the file, line and column.

    Snakemake's own message for a broken config file names neither; the Snakefile runs this on
    the default config first, and ``python -m pretrain_knowledge check-config FILE`` on any file.
    """
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"config file {path}: cannot read it ({err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(f"config file {path}, {where}: not valid YAML ({err.problem or err.context})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def load_config(raw: Mapping[str, Any]) -> Config:
    """The whole config, typed and checked field by field (not yet expanded into experiments)."""
    return build(Config, dict(raw))


def _section(config: Config, name: str, overrides: list[tuple[str, Mapping[str, Any]]]) -> Any:
    """A global section with the dataset's then the architecture's overrides merged over it."""
    cls = SECTIONS[name]
    merged = to_plain(getattr(config, name))
    for path, override in overrides:
        check_partial(cls, override, path)
        merged = merge(merged, override)
    where = " and ".join(p for p, _ in overrides) or name
    return build(cls, merged, where if overrides else name)


def _lookup(table: Mapping[str, Any], kind: str, name: str, path: str) -> Any:
    if name not in table:
        raise ConfigError(
            f"config: {path}: {kind} {name!r} is not defined under `{kind}:`.{suggest(name, list(table))} "
            f"Defined: {sorted(table)}."
        )
    return table[name]


def _experiment(config: Config, dataset: str, architecture: str, seed: int, path: str) -> Experiment:
    data = _lookup(config.datasets, "datasets", dataset, f"{path}.datasets")
    arch = _lookup(config.architectures, "architectures", architecture, f"{path}.architectures")
    sections = {}
    for name in SECTIONS:
        overrides = [
            (f"datasets.{dataset}.overrides.{name}", getattr(data.overrides, name)),
            (f"architectures.{architecture}.overrides.{name}", getattr(arch.overrides, name)),
        ]
        sections[name] = _section(config, name, [(p, o) for p, o in overrides if o])
    experiment = Experiment(
        name=layout.experiment_name(dataset, architecture, seed),
        seed=seed,
        threads=config.threads,
        controls=config.controls,
        sensitivity=config.sensitivity,
        dataset_name=dataset,
        dataset=data,
        architecture_name=architecture,
        architecture=arch,
        **sections,
    )
    return resolve(experiment)


def resolve(experiment: Experiment) -> Experiment:
    """The experiment with rule and source options resolved: defaults filled in (so a changed default
    changes the settings a stage records), other rules' keys dropped."""
    p = experiment.selection.players
    options = players.rule_options(p.rule, p.options, where="selection.players.options")
    # A word is one unit of the 1 × W grid, whatever patch size the image defaults set.
    patch = 1 if catalog.SOURCES[experiment.dataset.source].modality == "text" else p.patch_size
    selection = replace(experiment.selection, players=replace(p, options=options, patch_size=patch))
    dataset = experiment.dataset
    option_cls = catalog.SOURCE_OPTIONS.get(dataset.source)
    if option_cls is not None:
        where = f"datasets.{experiment.dataset_name}.options"
        dataset = replace(dataset, options=to_plain(build(option_cls, dataset.options, where)))
    return replace(experiment, selection=selection, dataset=dataset)


def load_experiments(raw: Mapping[str, Any]) -> dict[str, Experiment]:
    """Every experiment of a config, expanded, merged and checked."""
    return expand(load_config(raw))


def expand(config: Config) -> dict[str, Experiment]:
    """The experiments of a loaded config, with overrides merged and every cross-field rule checked."""
    _check_names(config)
    for name, data in config.datasets.items():
        _check_dataset(name, data)
    out: dict[str, Experiment] = {}
    for i, grid in enumerate(config.experiments):
        for dataset in grid.datasets:
            for architecture in grid.architectures:
                for seed in grid.seeds:
                    if seed < 0:
                        raise ConfigError(f"config: experiments[{i}].seeds: seeds must be ≥ 0, got {seed}")
                    experiment = _experiment(config, dataset, architecture, seed, f"experiments[{i}]")
                    check_experiment(experiment)
                    out[experiment.name] = experiment
    return out


def _check_names(config: Config) -> None:
    for kind in ("datasets", "architectures"):
        for name in getattr(config, kind):
            if not _NAME.match(name):
                raise ConfigError(
                    f"config: {kind}.{name}: names may hold only letters, digits and underscores "
                    "(they become part of result paths)"
                )
    if not config.experiments:
        raise ConfigError("config: experiments: at least one experiment grid is needed")


def _check_dataset(name: str, data: DatasetSpec) -> None:
    path = f"datasets.{name}"
    option_cls = catalog.SOURCE_OPTIONS.get(data.source)
    if option_cls is None and data.options:
        raise ConfigError(f"config: {path}.options: source {data.source!r} takes no options, got {sorted(data.options)}")
    if option_cls is not None:
        build(option_cls, data.options, f"{path}.options")
    facts = catalog.source_facts(data.source, data.options)
    if facts.needs_root and not data.root:
        raise ConfigError(f"config: {path}.root: source {data.source!r} needs the folder holding its files")
    if data.download and not facts.downloadable:
        raise ConfigError(
            f"config: {path}.download: source {data.source!r} cannot be downloaded automatically; set "
            "download: false and put its files under root (README, 'Data and weights')"
        )
    if facts.modality == "text":
        for key in ("image_size", "channels", "normalization"):
            if getattr(data, key) is not None:
                raise ConfigError(f"config: {path}.{key}: text source {data.source!r} has no images; remove {key}")
    elif (data.image_size or facts.image_size) is None:
        raise ConfigError(
            f"config: {path}.image_size: source {data.source!r} has images of different sizes; "
            "set image_size (e.g. 224)"
        )
    for task in ("upstream", "downstream"):
        classes = getattr(data, task).classes
        try:
            parsed = parse_classes(classes)
        except ValueError:
            raise ConfigError(f"config: {path}.{task}.classes: cannot read {classes!r}; use e.g. [0, 1], \"0-4\" or null") from None
        if parsed is not None and facts.num_classes is not None:
            bad = [c for c in parsed if not 0 <= c < facts.num_classes]
            if bad:
                raise ConfigError(
                    f"config: {path}.{task}.classes: {bad} are not classes of {data.source} "
                    f"(0 … {facts.num_classes - 1})"
                )
        if parsed is not None and len(set(parsed)) != len(parsed):
            raise ConfigError(f"config: {path}.{task}.classes: duplicate classes in {classes!r}")


def check_experiment(e: Experiment) -> None:
    """The cross-field rules of one experiment; each error names the key to change."""
    data, arch = e.dataset, e.architecture
    facts = catalog.source_facts(data.source, data.options)
    dpath, apath = f"datasets.{e.dataset_name}", f"architectures.{e.architecture_name}"
    info = catalog.ARCHITECTURES[arch.model]
    if info.modality != facts.modality:
        raise ConfigError(
            f"config: {apath}.model: {arch.model} reads {info.modality}s but dataset {e.dataset_name} "
            f"({data.source}) holds {facts.modality}s (experiment {e.name}); pair sources and architectures "
            "of the same modality"
        )
    if facts.modality == "text":
        _check_text(e, apath)
        size = 0
    else:
        size = _check_image(e, dpath, apath)
    _check_rest(e, size)


def _check_text(e: Experiment, apath: str) -> None:
    info = catalog.ARCHITECTURES[e.architecture.model]
    if e.weights is not None and info.hub is None:
        raise ConfigError(
            f"config: {apath}.weights: {info.name} has no pre-trained weights; set weights: null (it is "
            "pre-trained on the upstream task in the workflow)"
        )


def _check_image(e: Experiment, dpath: str, apath: str) -> int:
    data, arch = e.dataset, e.architecture
    facts = catalog.source_facts(data.source, data.options)
    size = e.image_size
    channels = data.channels or facts.channels
    problem = catalog.check_image_size(arch.model, size)
    if problem:
        raise ConfigError(f"config: {dpath}.image_size: {problem} (experiment {e.name}, {apath}.model)")
    if arch.weights is not None:
        info = catalog.ARCHITECTURES[arch.model]
        if not info.weights_file:
            raise ConfigError(f"config: {apath}.weights: {arch.model} has no ImageNet weights; set weights: null")
        if arch.weights == "imagenet" and info.imagenet is None:
            raise ConfigError(
                f"config: {apath}.weights: torchvision has no {arch.model} weights to download; give the path of "
                f"a state-dict file instead (README, 'Data and weights')"
            )
        if channels != 3:
            raise ConfigError(
                f"config: {dpath}.channels: ImageNet weights ({apath}.weights) need 3-channel images; set channels: 3"
            )
    return size


def _check_rest(e: Experiment, size: int) -> None:
    data, facts = e.dataset, catalog.source_facts(e.dataset.source, e.dataset.options)
    dpath = f"datasets.{e.dataset_name}"
    if facts.modality == "text":
        for mode in e.modes:
            if e.training.mode(layout.recipe(mode)).augment != "none":
                raise ConfigError(
                    f"config: training.{layout.recipe(mode)}.augment: text has no augmentation; set augment: none "
                    f"(experiment {e.name})"
                )
    for mode in ("probe", "finetune", "scratch"):
        if e.training.mode(mode).epochs < 1:
            raise ConfigError(f"config: training.{mode}.epochs: {mode} needs at least 1 epoch (experiment {e.name})")
    for model in ("finetune", "scratch"):
        last = e.epochs(model)
        for epoch in e.extraction.checkpoints:
            resolved = last + 1 + epoch if epoch < 0 else epoch
            if not 0 <= resolved <= last:
                raise ConfigError(
                    f"config: extraction.checkpoints: {epoch} is outside {model}'s checkpoints 0 … {last} "
                    f"(training.{model}.epochs={last}, experiment {e.name})"
                )
    if e.training.scratch_converged is not None:
        check_partial(ModeSpec, e.training.scratch_converged, "training.scratch_converged")
        e.training.mode("scratch_converged")
    absent = [m for m in e.selection.correct_under if m not in e.modes]
    if absent:
        raise ConfigError(
            f"config: selection.correct_under: {absent} are disabled under `controls:` in experiment {e.name}; "
            "enable them or drop them from correct_under"
        )
    _check_players(e, size)
    _check_sparsify(e)
    n_samples = e.n_samples
    if n_samples is not None and e.extraction.shards > n_samples:
        raise ConfigError(
            f"config: extraction.shards: {e.extraction.shards} shards for the {n_samples} samples of {e.name} "
            f"(selection.per_class={e.selection.per_class} × {n_samples // e.selection.per_class} classes); "
            "lower extraction.shards or raise selection.per_class"
        )
    cap = data.downstream.test_per_class
    if cap is not None and cap < e.selection.per_class:
        raise ConfigError(
            f"config: selection.per_class: {e.selection.per_class} samples per class cannot be drawn from "
            f"{dpath}.downstream.test_per_class={cap} test images per class"
        )


def _check_players(e: Experiment, size: int) -> None:
    p = e.selection.players
    facts = catalog.source_facts(e.dataset.source, e.dataset.options)
    if facts.modality == "text":
        _check_word_players(e)
        return
    if size % p.patch_size:
        raise ConfigError(
            f"config: selection.players.patch_size: {p.patch_size} does not divide the {size}-px images of "
            f"{e.name}; choose a divisor of {size}"
        )
    grid = players.PatchGrid(size, size, p.patch_size)
    if p.n > grid.n_patches:
        raise ConfigError(
            f"config: selection.players.n: {p.n} players but the {grid.n_rows}×{grid.n_cols} patch grid of "
            f"{e.name} has {grid.n_patches} patches; lower n or selection.players.patch_size"
        )
    limit = catalog.MAX_PLAYERS[e.extraction.sparsify.method]
    if p.n > limit:
        raise ConfigError(
            f"config: selection.players.n: {p.n} players exceed the {limit} that sparsification method "
            f"{e.extraction.sparsify.method!r} supports; lower n, or use a method that supports more "
            f"(catalog.MAX_PLAYERS: {catalog.MAX_PLAYERS})"
        )
    problem = players.check_rule(p.rule, grid, p.n, p.options, boxes=facts.boxes, parts=facts.parts)
    if problem:
        raise ConfigError(f"config: selection.players: {problem} (experiment {e.name})")


def _check_word_players(e: Experiment) -> None:
    """Text: players are n words of the 1 × max_words grid, by rule ``words``."""
    p = e.selection.players
    grid = players.PatchGrid(1, e.max_words, 1)
    limit = catalog.MAX_PLAYERS[e.extraction.sparsify.method]
    if p.n > limit:
        raise ConfigError(
            f"config: selection.players.n: {p.n} players exceed the {limit} that sparsification method "
            f"{e.extraction.sparsify.method!r} supports; lower n"
        )
    problem = players.check_rule(p.rule, grid, p.n, p.options, boxes=False, parts=False, words=True)
    if problem:
        raise ConfigError(f"config: selection.players: {problem} (experiment {e.name})")


def _check_sparsify(e: Experiment) -> None:
    s = e.extraction.sparsify
    if s.form not in catalog.SPARSIFY_FORMS_OF[s.method]:
        able = [m for m in catalog.SPARSIFY_METHODS if s.form in catalog.SPARSIFY_FORMS_OF[m]]
        raise ConfigError(
            f"config: extraction.sparsify.form: {s.form!r} is not solved by method {s.method!r}; set "
            f"extraction.sparsify.method to one of {able}"
        )
    allowed = catalog.SPARSIFY_OPTIONS[s.method]
    for key in s.options:
        if key not in allowed:
            raise ConfigError(
                f"config: extraction.sparsify.options.{key}: method {s.method!r} takes no option {key!r}."
                f"{suggest(key, list(allowed))} Valid: {', '.join(allowed)}."
            )
    n = e.selection.players.n
    for variant, (sparsify, _) in e.variants().items():
        if n > catalog.MAX_PLAYERS[sparsify.method]:
            raise ConfigError(
                f"config: sensitivity.method: variant {variant} cannot solve n={n} players (method "
                f"{sparsify.method!r} supports {catalog.MAX_PLAYERS[sparsify.method]}); drop it from sensitivity.method"
            )


# ----------------------------------------------------------------------------------------------
# Stage settings: the JSON a rule hands to a stage
# ----------------------------------------------------------------------------------------------


def parse(cls: type[T], raw: Any, path: str = "") -> T:
    """Settings of a stage (a dict, or JSON/YAML text) as the typed section ``cls``."""
    return build(cls, raw, path)


def schema() -> dict[str, Any]:
    """The JSON schema of the config, generated from :class:`Config`."""
    return json_schema(Config, "pretrain-knowledge workflow configuration")
