"""Text classifiers: Hugging Face BERT-base, DistilBERT and a tiny BERT, split into backbone + head.

The same split as the image models (:mod:`pretrain_knowledge.models`): ``features(ids)`` is the
sentence representation the linear probe reads, ``head`` a linear layer over the classes, and the
state-dict keys are ``backbone.*`` / ``head.*`` for every mode. The representation is the one the
architecture's own sequence classifier reads: BERT's pooled [CLS] vector (the dense + tanh layer
that pre-training trained on next-sentence prediction), DistilBERT's [CLS] hidden state (it has no
pooler; Hugging Face's classifier adds a randomly initialised layer on it, which here is the head's
job).

Weights come from a local model folder (``save_pretrained``'s layout: ``config.json``, the weights,
``vocab.txt``) or a hub name that the Hugging Face cache holds; nothing is downloaded unless the
hub is reachable and ``HF_HUB_OFFLINE`` is unset. ``tiny_bert`` (2 layers, 32-d) has no pre-trained
weights: it is pre-trained on the upstream task in the workflow, with a vocabulary built from the
data (:func:`pretrain_knowledge.data.text.build_vocabulary`), so tests run offline in seconds.

Tokenisation (:class:`WordPieceEncoder`): BERT's word-piece tokenizer rebuilt from the vocabulary
alone (the ``tokenizers`` library, configured as ``BertTokenizerFast``: BERT normaliser, BERT
pre-tokenizer, WordPiece, ``[CLS] … [SEP]``), fed the sentence's words pre-split, so every token
knows its word. The vocabulary, casing and the transformers configuration are stored in every
checkpoint's ``config["model"]``: a checkpoint rebuilds its model and tokenizer without the folder.
transformers is imported only when a text model is built, so image runs never load it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .catalog import ARCHITECTURES, TEXT_MAX_TOKENS
from .data.text import SPECIAL_TOKENS, EncodedText, TextSet

TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
"""tiny_bert's transformers configuration (BertConfig otherwise at its defaults)."""


class TextModelError(FileNotFoundError):
    """A model folder or hub name is missing, unreadable or of another architecture."""


# ----------------------------------------------------------------------------------------------
# Tokenisation
# ----------------------------------------------------------------------------------------------


class WordPieceEncoder:
    """Words → token ids and, for every token, the word it came from.

    A sentence longer than ``max_length`` tokens ([CLS] and [SEP] included) is cut after the last
    whole word that fits, so a word is either seen whole or not at all.
    """

    def __init__(self, vocabulary: Sequence[str], *, lowercase: bool = True, max_length: int = TEXT_MAX_TOKENS):
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

        self.vocabulary = tuple(vocabulary)
        self.lowercase = bool(lowercase)
        self.max_length = int(max_length)
        index = {token: i for i, token in enumerate(self.vocabulary)}
        absent = [t for t in SPECIAL_TOKENS if t not in index]
        if absent:
            raise TextModelError(f"the vocabulary lacks the special tokens {absent}; is it a BERT vocabulary?")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (index[t] for t in SPECIAL_TOKENS)
        tokenizer = Tokenizer(models.WordPiece(index, unk_token="[UNK]", max_input_chars_per_word=100))
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=self.lowercase
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self._tokenizer = tokenizer

    def baseline_id(self, name: str) -> int:
        """The token a masked word becomes (``extraction.text_baseline``: mask, unk or pad)."""
        return {"mask": self.mask_id, "unk": self.unk_id, "pad": self.pad_id}[name]

    def word_pieces(self, word: str) -> list[int]:
        """The token ids of one word alone."""
        return list(self._tokenizer.encode([word], is_pretokenized=True, add_special_tokens=False).ids)

    def encode(self, sentences: Sequence[Sequence[str]], labels: Tensor | None = None) -> EncodedText:
        """Token ids (padded with [PAD] to the longest sentence) and each token's word index."""
        encodings = self._tokenizer.encode_batch(
            [list(words) or [""] for words in sentences], is_pretokenized=True, add_special_tokens=False
        )
        rows, owners, seen = [], [], []
        budget = self.max_length - 2
        for words, enc in zip(sentences, encodings, strict=True):
            word_ids = [w for w in enc.word_ids] if words else []
            ids = list(enc.ids) if words else []
            # Cut after the last whole word that fits: drop the word the limit falls into.
            if len(ids) > budget:
                cut = word_ids[budget]
                keep = [t for t in range(len(ids)) if word_ids[t] < cut]
                ids, word_ids = [ids[t] for t in keep], [word_ids[t] for t in keep]
                visible = cut
            else:
                visible = len(words)
            rows.append([self.cls_id, *ids, self.sep_id])
            owners.append([-1, *word_ids, -1])
            # A word the tokenizer maps to no token (e.g. control characters) cannot be masked.
            has_tokens = set(word_ids)
            seen.append(tuple(w if i in has_tokens else "" for i, w in enumerate(words[:visible])))
        length = max(len(r) for r in rows) if rows else 2
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.int64)
        owner = torch.full((len(rows), length), -1, dtype=torch.int64)
        for i, (r, o) in enumerate(zip(rows, owners, strict=True)):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
            owner[i, : len(o)] = torch.tensor(o, dtype=torch.int64)
        if labels is None:
            labels = torch.zeros(len(rows), dtype=torch.int64)
        return EncodedText(ids=ids, word_index=owner, labels=labels.to(torch.int64), words=tuple(seen))

    def encode_set(self, data: TextSet) -> EncodedText:
        return self.encode(data.words, data.labels)


# ----------------------------------------------------------------------------------------------
# The classifier
# ----------------------------------------------------------------------------------------------


class TextClassifier(nn.Module):
    """``head(features(ids))`` for token ids (B, L) padded with [PAD]; ``config`` rebuilds it.

    The attention mask is ``ids != [PAD]``, so a word masked with the ``pad`` baseline is removed
    from attention while every other token keeps its position.
    """

    def __init__(self, arch: str, backbone: nn.Module, head: nn.Linear, encoder: WordPieceEncoder, hf_config: dict):
        super().__init__()
        self.arch = arch
        self.backbone = backbone
        self.head = head
        self.encoder = encoder
        self.hf_config = hf_config
        self.pooled = getattr(backbone, "pooler", None) is not None

    @property
    def feature_dim(self) -> int:
        return int(self.head.in_features)

    @property
    def num_classes(self) -> int:
        return int(self.head.out_features)

    @property
    def config(self) -> dict[str, Any]:
        """Plain-dict description stored in checkpoints: enough to rebuild model and tokenizer."""
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "hf_config": self.hf_config,
            "vocabulary": list(self.encoder.vocabulary),
            "lowercase": self.encoder.lowercase,
            "max_length": self.encoder.max_length,
        }

    def features(self, ids: Tensor) -> Tensor:
        """Sentence representation (B, feature_dim): BERT's pooled [CLS], DistilBERT's [CLS] state."""
        mask = ids.ne(self.encoder.pad_id).long()
        out = self.backbone(input_ids=ids, attention_mask=mask)
        return out.pooler_output if self.pooled else out.last_hidden_state[:, 0]

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(self.features(ids))


def _family(arch: str) -> str:
    family = ARCHITECTURES[arch].family
    assert family is not None, f"{arch} is not a text architecture"
    return family


def _config_class(family: str) -> type:
    import transformers

    return {"bert": transformers.BertConfig, "distilbert": transformers.DistilBertConfig}[family]


def _backbone(family: str, config: Any) -> nn.Module:
    import transformers

    cls = {"bert": transformers.BertModel, "distilbert": transformers.DistilBertModel}[family]
    return cls(config)


def _from_source(arch: str, source: str, load_weights: bool) -> tuple[nn.Module, dict, WordPieceEncoder]:
    """Configuration, tokenizer and (with ``load_weights``) weights from a model folder or hub name."""
    import transformers

    family = _family(arch)
    where = f"model folder {source}" if Path(source).is_dir() else f"hub model {source!r}"
    try:
        config = transformers.AutoConfig.from_pretrained(source)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise TextModelError(
            f"cannot load the {where} for {arch}: {err}. Give a local folder written by save_pretrained "
            f"(config.json, weights, vocab.txt; README 'Text'), or, online, the hub name "
            f"{ARCHITECTURES[arch].hub!r}."
        ) from err
    if config.model_type != family:
        raise TextModelError(f"the {where} is a {config.model_type!r} model, but {arch} needs a {family!r} model")
    vocab = tokenizer.get_vocab()
    vocabulary = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    encoder = WordPieceEncoder(vocabulary, lowercase=bool(getattr(tokenizer, "do_lower_case", True)))
    if load_weights:
        cls = {"bert": transformers.BertModel, "distilbert": transformers.DistilBertModel}[family]
        backbone = cls.from_pretrained(source, config=config)
    else:
        backbone = _backbone(family, config)
    return backbone, _plain_config(config), encoder


def _plain_config(config: Any) -> dict:
    """The transformers configuration as plain JSON types (checkpoints load with weights_only)."""
    import json

    return json.loads(config.to_json_string(use_diff=False))


def build_text_model(
    arch: str,
    num_classes: int,
    *,
    weights: str | os.PathLike[str] | None = None,
    text_model: str | os.PathLike[str] | None = None,
    vocabulary: Sequence[str] | None = None,
) -> TextClassifier:
    """A fresh :class:`TextClassifier` with a new head (random init from the global torch RNG).

    ``weights``: a model folder or hub name whose pre-trained weights are loaded. Otherwise the
    weights are random, with the configuration and tokenizer of ``text_model`` (a folder or hub
    name) when given, else the architecture's default configuration over ``vocabulary`` (tiny_bert,
    or BERT trained from scratch on a corpus' own vocabulary).
    """
    family = _family(arch)
    source = weights or text_model
    if source is not None:
        backbone, hf_config, encoder = _from_source(arch, str(source), load_weights=weights is not None)
    else:
        if vocabulary is None:
            raise TextModelError(
                f"{arch} without a model folder needs a vocabulary (the prepared task's info['vocabulary'])"
            )
        encoder = WordPieceEncoder(vocabulary)
        extra = dict(TINY_BERT) if arch == "tiny_bert" else {}
        config = _config_class(family)(vocab_size=len(encoder.vocabulary), **extra)
        hf_config = _plain_config(config)
        backbone = _backbone(family, config)
    width = int(hf_config.get("hidden_size") or hf_config.get("dim"))
    head = nn.Linear(width, num_classes)
    return TextClassifier(arch, backbone, head, encoder, hf_config)


def text_model_from_config(config: dict[str, Any]) -> TextClassifier:
    """Rebuild the (untrained) module a checkpoint's ``config['model']`` describes."""
    arch = config["arch"]
    family = _family(arch)
    hf = dict(config["hf_config"])
    hf.pop("transformers_version", None)
    model_config = _config_class(family).from_dict(hf)
    encoder = WordPieceEncoder(
        config["vocabulary"], lowercase=bool(config["lowercase"]), max_length=int(config["max_length"])
    )
    backbone = _backbone(family, model_config)
    head = nn.Linear(int(hf.get("hidden_size") or hf.get("dim")), int(config["num_classes"]))
    return TextClassifier(arch, backbone, head, encoder, dict(config["hf_config"]))


def save_model_folder(
    folder: str | os.PathLike[str], arch: str, vocabulary: Sequence[str], *, seed: int = 0, **config: Any
) -> Path:
    """Write a local model folder (``save_pretrained`` layout, vocab.txt) with random weights.

    What a user's ``bert-base-uncased`` folder looks like, for tests and offline smoke runs: the
    workflow then loads it as pre-trained weights (``architectures.<name>.weights: <folder>``).
    """
    import transformers

    family = _family(arch)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    settings = {**(TINY_BERT if arch == "tiny_bert" else {}), **config}
    model_config = _config_class(family)(vocab_size=len(vocabulary), **settings)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        backbone = _backbone(family, model_config)
    backbone.save_pretrained(folder)
    (folder / "vocab.txt").write_text("".join(f"{t}\n" for t in vocabulary))
    cls = {"bert": transformers.BertTokenizerFast, "distilbert": transformers.DistilBertTokenizerFast}[family]
    cls(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return folder
