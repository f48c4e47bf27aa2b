"""What exists, and its static limits: data sources, architectures and sparsification methods.

Every source and architecture has a ``modality``: ``image`` (a picture cut into square patches) or
``text`` (a sentence whose players are words). A config may only pair a source and an architecture
of the same modality, and a source's modality decides which player rules fit it
(:mod:`pretrain_knowledge.players`).

Why a separate, torch-free module: the workflow checks a whole config against these facts when it
is loaded, before any job runs (a bad patch size must not delete yesterday's selection first), and
Snakemake loads the workflow on every call and in every cluster job, where importing torch would
cost seconds. The implementations (``data``, ``models``, ``interactions``) register their code
under these names and import their limits from here, so each fact is written once; a test checks
that every name here has an implementation and vice versa.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .typed import setting


@dataclass(frozen=True)
class SourceInfo:
    """Static facts of a data source, enough to check a config without opening the files."""

    name: str
    description: str
    image_size: int | None
    """Native square side in pixels; None when images differ in size (set ``image_size``)."""
    channels: int | None
    num_classes: int | None
    """Classes of the source; None when the folder decides (imagefolder)."""
    boxes: bool
    """Has bounding boxes (player rule ``bbox``)."""
    parts: bool
    """Has part keypoints (player rule ``parts``)."""
    normalization: str
    """Default per-channel statistics: ``source`` (its own) or ``imagenet``."""
    needs_root: bool
    downloadable: bool
    """torchvision can fetch it into ``root`` when online."""
    default_root: str | None = None
    modality: str = "image"
    """``image`` or ``text`` (see the module doc)."""
    max_words: int | None = None
    """Text: words kept per sentence, the width of the 1 × W word grid; None for images."""


FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
"""Where the Debian package ``dataset-fashion-mnist`` installs its idx files."""


@dataclass(frozen=True)
class SyntheticSpec:
    """Options of the ``synthetic`` source: generated stroke-motif images (data.synthetic).

    Each class is a fixed layout of ``motifs_per_class`` motifs from a shared bank of eight on a
    3 × 3 grid, so features learned on some classes transfer to others.
    """

    num_classes: int = setting(10, "Classes generated.", minimum=2)
    train_per_class: int = setting(200, "Training images per class.", minimum=1)
    test_per_class: int = setting(100, "Test images per class.", minimum=1)
    image_size: int = setting(28, "Side of the square images in pixels.", minimum=12)
    channels: int = setting(1, "Channels (1 or 3).", minimum=1, maximum=3)
    seed: int = setting(0, "Seed of the samples (jitter, contrast, noise).", minimum=0)
    structure_seed: int = setting(0, "Seed of the class layouts and motif colours.", minimum=0)
    noise: float = setting(0.25, "Standard deviation of the pixel noise (images in [0, 1]).", minimum=0)
    motifs_per_class: int = setting(3, "Motifs that make up a class.", minimum=1, maximum=9)


@dataclass(frozen=True)
class GeneratedTextSpec:
    """Options of the ``generated_text`` source: seeded sentences for tests and offline runs (data.text).

    Each class is a fixed set of ``keywords_per_class`` keywords from one shared bank, scattered
    among filler words; classes share keywords, so what a model learns about them on some classes
    transfers to others (as ``synthetic`` shares stroke motifs).
    """

    num_classes: int = setting(10, "Classes generated.", minimum=2)
    train_per_class: int = setting(200, "Training sentences per class.", minimum=1)
    test_per_class: int = setting(50, "Test sentences per class.", minimum=1)
    min_words: int = setting(8, "Fewest words of a sentence.", minimum=4)
    max_words: int = setting(16, "Most words of a sentence; also the width of the word grid.", minimum=4, maximum=64)
    keywords_per_class: int = setting(3, "Keywords that make up a class (from a shared bank of 12).", minimum=1, maximum=6)
    keep: float = setting(
        0.85, "Probability that each keyword of the class appears (at least two always do).", exclusive_minimum=0, maximum=1
    )
    seed: int = setting(0, "Seed of the sentences (filler words, order, dropped keywords, distractors).", minimum=0)
    structure_seed: int = setting(0, "Seed of the class keyword sets.", minimum=0)


@dataclass(frozen=True)
class Sst2Spec:
    """Options of the ``sst2`` source (GLUE SST-2's ``train.tsv`` / ``dev.tsv``)."""

    max_words: int = setting(
        50,
        "Sentences are cut after this many words (whitespace tokens of the GLUE files); also the width "
        "of the word grid. 50 keeps all but a handful of SST-2's sentences whole.",
        minimum=4,
        maximum=256,
    )


SOURCES: dict[str, SourceInfo] = {
    s.name: s
    for s in (
        SourceInfo(
            "fashion_mnist", "Fashion-MNIST idx files (Debian package dataset-fashion-mnist)",
            28, 1, 10, False, False, "source", False, True, FASHION_MNIST_DEFAULT_ROOT,
        ),
        SourceInfo("mnist", "MNIST idx files", 28, 1, 10, False, False, "source", True, True),
        SourceInfo(
            "cifar10", "CIFAR-10 python batches (cifar-10-batches-py/)",
            32, 3, 10, False, False, "source", True, True,
        ),
        SourceInfo(
            "cub200", "CUB-200-2011 in its official layout, with boxes and 15 part keypoints",
            None, 3, 200, True, True, "imagenet", True, False,
        ),
        SourceInfo(
            "stanford_cars", "Stanford Cars (devkit .mat annotations, with boxes)",
            None, 3, 196, True, False, "imagenet", True, False,
        ),
        SourceInfo(
            "imagefolder", "any <root>/{train,test}/<class>/<image> tree",
            None, 3, None, False, False, "imagenet", True, False,
        ),
        SourceInfo(
            "synthetic", "generated stroke-motif images (options: SyntheticSpec)",
            None, None, None, True, True, "source", False, False,
        ),
        SourceInfo(
            "sst2", "GLUE SST-2 sentiment: <root>/train.tsv and dev.tsv (sentence, label); dev is the test split",
            None, None, 2, False, False, "source", True, True, modality="text", max_words=Sst2Spec().max_words,
        ),
        SourceInfo(
            "generated_text", "generated keyword sentences (options: GeneratedTextSpec)",
            None, None, None, False, False, "source", False, False, modality="text",
        ),
    )
}
"""Every data source, by the name a config uses (``datasets.<name>.source``)."""

SOURCE_OPTIONS: dict[str, type] = {"synthetic": SyntheticSpec, "sst2": Sst2Spec, "generated_text": GeneratedTextSpec}
"""Sources that take ``options``, and the dataclass that defines them."""


def source_facts(source: str, options: dict) -> SourceInfo:
    """A source's facts with the ones its options decide (synthetic: size, channels, classes; text:
    classes and words per sentence)."""
    info = SOURCES[source]
    if source == "generated_text":
        text = GeneratedTextSpec(**options)
        return dataclasses.replace(info, num_classes=text.num_classes, max_words=text.max_words)
    if source == "sst2":
        return dataclasses.replace(info, max_words=Sst2Spec(**options).max_words)
    if source == "synthetic":
        spec = SyntheticSpec(**options)
        return SourceInfo(
            info.name, info.description, spec.image_size, spec.channels, spec.num_classes,
            info.boxes, info.parts, info.normalization, info.needs_root, info.downloadable,
        )
    return info


@dataclass(frozen=True)
class ArchitectureInfo:
    """Static facts of an architecture: the input sizes it accepts and where its weights come from."""

    name: str
    description: str
    default_image_size: int
    min_image_size: int
    size_multiple: int
    """The input side must be a multiple of this (16 for ViT patches)."""
    imagenet: str | None
    """torchvision weights enum member used for ``weights: imagenet``; None: no download."""
    weights_file: bool = True
    """Whether ImageNet weights load from a local state-dict file (``weights: <path>``); text
    architectures take a Hugging Face folder or name instead (``hub``)."""
    modality: str = "image"
    hub: str | None = None
    """Text: the Hugging Face name of its pre-trained (MLM) weights; None: no pre-trained weights."""
    family: str | None = None
    """Text: the transformers ``model_type`` its weights must have (``bert``, ``distilbert``)."""


TEXT_MAX_TOKENS = 128
"""Text models read at most this many tokens ([CLS] and [SEP] included); a sentence is cut after the
last whole word that fits (data.text)."""


ARCHITECTURES: dict[str, ArchitectureInfo] = {
    a.name: a
    for a in (
        ArchitectureInfo("small_cnn", "4 conv stages + global average pooling (128-d)", 28, 8, 1, None, False),
        ArchitectureInfo("resnet18", "torchvision ResNet-18; 512-d pooled features", 224, 32, 1, "IMAGENET1K_V1"),
        ArchitectureInfo("resnet50", "torchvision ResNet-50; 2048-d pooled features", 224, 32, 1, "IMAGENET1K_V1"),
        ArchitectureInfo("vgg16", "torchvision VGG-16; 4096-d second FC layer", 224, 32, 1, "IMAGENET1K_V1"),
        ArchitectureInfo("vit_b_16", "torchvision ViT-B/16; 768-d class token", 224, 16, 16, "IMAGENET1K_V1"),
        # torchvision has no ViT-S; its weights come from a file, in timm's layout or torchvision's.
        ArchitectureInfo("vit_s_16", "ViT-S/16 (12 layers, 6 heads, 384-d); 384-d class token", 224, 16, 16, None),
        ArchitectureInfo(
            "bert_base", "Hugging Face BERT-base (12 layers, 768-d); features: the pooled [CLS] vector",
            0, 0, 1, None, weights_file=False, modality="text", hub="bert-base-uncased", family="bert",
        ),
        ArchitectureInfo(
            "distilbert", "Hugging Face DistilBERT (6 layers, 768-d); features: the [CLS] hidden state",
            0, 0, 1, None, weights_file=False, modality="text", hub="distilbert-base-uncased", family="distilbert",
        ),
        ArchitectureInfo(
            "tiny_bert", "a 2-layer, 32-d BERT with random weights and a vocabulary built from the data (tests)",
            0, 0, 1, None, weights_file=False, modality="text", family="bert",
        ),
    )
}
"""Every architecture, by the name a config uses (``architectures.<name>.model``)."""


def check_image_size(arch: str, size: int) -> str | None:
    """Why ``arch`` cannot take ``size``-pixel inputs, or None when it can."""
    info = ARCHITECTURES[arch]
    if size < info.min_image_size:
        return f"{arch} needs images of at least {info.min_image_size} px, got {size}"
    if size % info.size_multiple:
        return f"{arch} needs an image side divisible by {info.size_multiple}, got {size}"
    return None


SPARSIFY_METHODS: tuple[str, ...] = ("lp", "reference", "lp-dense")
"""lp: the exact least-norm optimum of the sparsity objective (method.md §8); reference: the lab
code's SGD recipe; lp-dense: the previous exact solver (a central point; kept as a reference)."""
SPARSIFY_FORMS: tuple[str, ...] = ("and-or", "and")
"""and-or: AND and OR interactions (method.md §3); and: the paper's Eq. (2), AND only."""
SPARSIFY_OPTIONS: dict[str, tuple[str, ...]] = {
    "lp": ("tol", "max_iter", "max_rounds"),
    "reference": ("lr", "niter"),
    "lp-dense": ("tol", "max_iter", "chunk_size"),
}
"""Keyword options each method accepts (``extraction.sparsify.options``)."""
SPARSIFY_FORMS_OF: dict[str, tuple[str, ...]] = {
    "lp": SPARSIFY_FORMS,
    "reference": SPARSIFY_FORMS,
    "lp-dense": ("and-or",),
}
"""The forms each method solves."""
MAX_PLAYERS: dict[str, int] = {"lp": 16, "reference": 20, "lp-dense": 13}
"""Largest n each method supports: lp keeps O(2^n) vectors and one |R| × |R| matrix per game (R:
its working set of coalitions), lp-dense a 2^n × 2^n matrix per game, reference O(2^n) vectors."""
