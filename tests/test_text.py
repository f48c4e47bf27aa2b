"""The text domain: sources, tokenisation, the words rule, the text game, the models and every stage.

References are independent of the code under test: the text game is checked against a brute-force
masking that rebuilds every masked sentence by hand from each word's own word pieces and runs it
alone through the model; the word ↔ token map against tokenizing each word by itself; the rule
against the stop-word list. Everything runs offline on a tiny BERT with random weights and a
vocabulary built from the generated corpus (HF_HUB_OFFLINE is set).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, copy_repo, planned_jobs, snakemake
from pretrain_knowledge import catalog, layout, players as P
from pretrain_knowledge.data import available_sources
from pretrain_knowledge.data.prepare import prepare_text_task
from pretrain_knowledge.data.sources import open_source
from pretrain_knowledge.data.text import (
    KEYWORDS,
    SPLIT_WORDS,
    TextTask,
    generate_text,
    generated_class_keywords,
    generated_vocabulary,
    load_any_task,
    save_text_task,
)
from pretrain_knowledge.game import Players, PatchGrid
from pretrain_knowledge.models import available_models, build_model, model_from_config
from pretrain_knowledge.spec import load_experiments
from pretrain_knowledge.typed import ConfigError, merge

TEXT_CONFIG = "config/test-text.yaml"
EXPERIMENT = "gtext-tiny_bert-s0"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def encoder():
    from pretrain_knowledge.models_text import WordPieceEncoder

    return WordPieceEncoder(generated_vocabulary())


@pytest.fixture(scope="module")
def tiny_model():
    from pretrain_knowledge.models_text import build_text_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_text_model("tiny_bert", 3, vocabulary=generated_vocabulary())
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Registry, sources, tokenisation
# ----------------------------------------------------------------------------------------------


def test_text_sources_and_models_are_registered() -> None:
    assert {"sst2", "generated_text"} <= set(available_sources())
    assert {"bert_base", "distilbert", "tiny_bert"} <= set(available_models())
    assert {catalog.SOURCES[s].modality for s in ("sst2", "generated_text")} == {"text"}
    assert catalog.SOURCES["cifar10"].modality == "image"


def test_generated_text_is_seeded_and_each_class_carries_its_keywords() -> None:
    spec = catalog.GeneratedTextSpec(num_classes=6, train_per_class=30, test_per_class=5)
    words, labels = generate_text(spec, "train")
    again, _ = generate_text(catalog.GeneratedTextSpec(num_classes=6, train_per_class=30, test_per_class=5), "train")
    other, _ = generate_text(catalog.GeneratedTextSpec(num_classes=6, train_per_class=30, test_per_class=5, seed=1), "train")
    assert words == again and words != other
    assert np.bincount(labels).tolist() == [30] * 6
    keywords = generated_class_keywords(spec)
    assert len(set(keywords)) == 6
    for sentence, label in zip(words, labels, strict=True):
        own = {KEYWORDS[k] for k in keywords[label]}
        assert len(own & set(sentence)) >= 2
        assert spec.min_words <= len(sentence) <= spec.max_words
    # Classes share keywords: what is learned on some transfers to others.
    assert len({k for ks in keywords for k in ks}) < sum(len(ks) for ks in keywords)


def test_sst2_reads_glue_tsv_and_cuts_long_sentences(tmp_path) -> None:
    (tmp_path / "train.tsv").write_text(
        "sentence\tlabel\nhide new secretions from the parental units \t0\n"
        "contains no wit , only labored gags \t0\nthe greatest musicians \t1\n"
        "it 's a \"charming\" and often affecting journey . \t1\n"
    )
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nit 's a charming and often affecting journey . \t1\nunflinchingly bleak \t0\n")
    raw = open_source("sst2", "train", tmp_path, max_words=5)
    assert raw.labels.tolist() == [0, 0, 1, 1] and raw.class_names == ("negative", "positive")
    assert raw.words[0] == ("hide", "new", "secretions", "from", "the")  # cut after 5 words
    assert raw.words[3][3] == '"charming"'  # quotes are text, not CSV quoting
    task = prepare_text_task("sst2", None, root=tmp_path, source_options={"max_words": 5})
    assert len(task.train) == 4 and len(task.test) == 2 and task.info["max_words"] == 5
    save_text_task(task, tmp_path / "task.pt")
    loaded = load_any_task(tmp_path / "task.pt")
    assert isinstance(loaded, TextTask) and loaded.train.words == task.train.words
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.tsv").write_text("text\tlabel\nx\t1\n")
    with pytest.raises(FileNotFoundError, match="sentence<TAB>label"):
        open_source("sst2", "train", tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        open_source("sst2", "test", tmp_path / "bad")


def test_multi_token_words_map_to_one_word(encoder) -> None:
    words = ("the", "cinematography", "was", "masterful", ",", "dull")
    pieces = [encoder.word_pieces(w) for w in words]
    assert all(len(pieces[i]) > 1 for i in (1, 3)) and all(len(pieces[i]) == 1 for i in (0, 2, 4, 5))
    assert set(SPLIT_WORDS) & {"cinematography", "masterful"}
    enc = encoder.encode([words, words[:2]])
    row = enc.ids[0].tolist()
    expected = [encoder.cls_id, *[t for p in pieces for t in p], encoder.sep_id]
    assert row == expected
    owners = [-1, *[i for i, p in enumerate(pieces) for _ in p], -1]
    assert enc.word_index[0].tolist() == owners
    assert enc.ids[1, len(pieces[0]) + len(pieces[1]) + 2 :].eq(encoder.pad_id).all()  # padded
    assert enc.words[0] == words


def test_a_sentence_too_long_is_cut_after_the_last_whole_word() -> None:
    from pretrain_knowledge.models_text import WordPieceEncoder

    short = WordPieceEncoder(generated_vocabulary(), max_length=4)  # room for 2 tokens
    assert len(short.word_pieces("cinematography")) == 2
    enc = short.encode([("the", "cinematography", "was")])  # only its first piece would fit
    assert enc.words[0] == ("the",)
    assert enc.ids[0].tolist() == [short.cls_id, *short.word_pieces("the"), short.sep_id]


# ----------------------------------------------------------------------------------------------
# The words rule
# ----------------------------------------------------------------------------------------------


def _contexts(sentences):
    return [P.SampleContext(sample_id=k, dataset_index=10 + k, label=0, words=s) for k, s in enumerate(sentences)]


def test_words_rule_is_seeded_and_draws_content_words_only() -> None:
    sentences, _ = generate_text(catalog.GeneratedTextSpec(num_classes=3, train_per_class=20), "train")
    grid = PatchGrid(1, 16, 1)
    picks = P.choose_player_ids(grid, 4, _contexts(sentences), seed=3, rule="words")
    assert picks == P.choose_player_ids(grid, 4, _contexts(sentences), seed=3, rule="words")
    assert picks != P.choose_player_ids(grid, 4, _contexts(sentences), seed=4, rule="words")
    for sentence, ids in zip(sentences, picks, strict=True):
        assert len(set(ids)) == 4 and ids == sorted(ids)
        for i in ids:
            word = sentence[i]
            assert word.lower() not in P.STOP_WORDS and any(c.isalnum() for c in word) and len(word) > 1
    # Every content word is drawn sometimes: the rule spreads over the whole sentence.
    drawn = {(k, i) for k, ids in enumerate(picks) for i in ids}
    eligible = {(k, i) for k, s in enumerate(sentences) for i, w in enumerate(s) if P.is_content_word(w)}
    assert drawn <= eligible and len(drawn) > 0.3 * len(eligible)
    with pytest.raises(ValueError, match="content words"):
        P.choose_player_ids(grid, 3, _contexts([("the", "film", ",", "a", "dull")]), seed=0, rule="words")


def test_spec_pairs_text_sources_with_text_models_and_the_words_rule() -> None:
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    text = merge(base, yaml.safe_load((REPO / TEXT_CONFIG).read_text()))
    experiment = load_experiments(text)[EXPERIMENT]
    assert experiment.selection.players.patch_size == 1 and experiment.max_words == 16
    assert experiment.games_settings()["text_baseline"] == "mask"
    # Text experiments train the controls and the converged baseline like image ones.
    assert experiment.modes == layout.MODES and experiment.models == layout.MODELS
    assert experiment.train_settings("scratch_b")["seed"] == experiment.seed + experiment.controls.seed_offset
    assert experiment.train_settings("random_probe")["text_model"] == experiment.weights
    assert experiment.train_settings("scratch_converged")["epochs"] == 10
    assert "text_baseline" not in load_experiments(base)["fmnist-small_cnn-s0"].games_settings()
    cases = [
        ({"architectures": {"tiny_bert": {"model": "small_cnn"}}}, "pair sources and architectures"),
        ({"selection": {"players": {"rule": "central"}}}, "use rule 'words'"),
        ({"architectures": {"tiny_bert": {"weights": "bert-base-uncased"}}}, "no pre-trained weights"),
        ({"training": {"finetune": {"augment": "flip_crop"}}}, "no augmentation"),
        ({"training": {"scratch_converged": {"augment": "crop"}}}, "no augmentation"),
        ({"selection": {"players": {"n": 9}}, "datasets": {"gtext": {"options": {"max_words": 8}}}}, "max_words"),
        ({"datasets": {"gtext": {"image_size": 32}}}, "has no images"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_experiments(merge(text, change))
    with pytest.raises(ConfigError, match="rule 'words' is for text"):
        load_experiments(merge(base, {"selection": {"players": {"rule": "words"}}}))


# ----------------------------------------------------------------------------------------------
# The text game against brute force
# ----------------------------------------------------------------------------------------------


def _brute_force(model, words, player_words, label, coalition, baseline_id) -> float:
    """v of one masked sentence built by hand, word by word, and run alone (no padding)."""
    enc = model.encoder
    tokens = [enc.cls_id]
    for j, word in enumerate(words):
        pieces = enc.word_pieces(word)
        if j in player_words and not coalition >> player_words.index(j) & 1:
            pieces = [baseline_id] * len(pieces)
        tokens += pieces
    tokens.append(enc.sep_id)
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).double()[0]
    log_p = torch.log_softmax(logits, 0)[label]
    return float(log_p - torch.log1p(-log_p.exp()))


@pytest.mark.parametrize("baseline", ["mask", "pad"])
def test_text_game_equals_brute_force_masking(tiny_model, baseline) -> None:
    from pretrain_knowledge.game_text import evaluate_text_games

    # Two multi-token players in sentence 0; sentence 1 is shorter, so the batch is padded.
    sentences = [
        ("the", "cinematography", "was", "masterful", "and", "witty", "."),
        ("a", "dull", "film", "indeed"),
    ]
    players = Players(PatchGrid(1, 16, 1), torch.tensor([[1, 3, 5, 6], [0, 1, 2, 3]]))
    enc = tiny_model.encoder.encode(sentences)
    labels = torch.tensor([2, 0])
    base = tiny_model.encoder.baseline_id(baseline)
    v = evaluate_text_games(tiny_model, enc.ids, enc.word_index, labels, players, base, batch_size=7)
    assert v.shape == (2, 16) and v.dtype == torch.float64
    for b, words in enumerate(sentences):
        player_words = players.patch_ids[b].tolist()
        expected = [_brute_force(tiny_model, words, player_words, int(labels[b]), t, base) for t in range(16)]
        np.testing.assert_allclose(v[b].numpy(), expected, rtol=1e-5, atol=1e-5)
    # The full coalition is the unmasked sentence; masking changes v.
    assert not torch.allclose(v[:, 0], v[:, -1])


def test_masking_replaces_every_piece_of_a_player_word_and_nothing_else(tiny_model) -> None:
    from pretrain_knowledge.game_text import mask_tokens

    words = ("the", "cinematography", "was", "masterful")
    enc = tiny_model.encoder.encode([words])
    players = Players(PatchGrid(1, 16, 1), torch.tensor([[1, 3]]))
    mask = tiny_model.encoder.mask_id
    out = mask_tokens(enc.ids, enc.word_index, players, torch.zeros(4, dtype=torch.int64), torch.arange(4), mask)
    for coalition in range(4):
        for t, owner in enumerate(enc.word_index[0].tolist()):
            masked = owner in (1, 3) and not coalition >> [1, 3].index(owner) & 1
            assert (out[coalition, t] == mask) == masked, (coalition, t)


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


def test_text_models_split_features_and_head_and_rebuild_from_their_config(tiny_model) -> None:
    enc = tiny_model.encoder.encode([("a", "witty", "film"), ("dull",)])
    with torch.no_grad():
        feats = tiny_model.features(enc.ids)
        assert feats.shape == (2, 32) and torch.equal(tiny_model(enc.ids), tiny_model.head(feats))
    rebuilt = model_from_config(tiny_model.config)
    rebuilt.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(enc.ids), tiny_model(enc.ids))
    assert set(tiny_model.state_dict()) == set(rebuilt.state_dict())
    assert {k.split(".")[0] for k in tiny_model.state_dict()} == {"backbone", "head"}


def test_a_local_model_folder_loads_as_pretrained_weights(tmp_path) -> None:
    from pretrain_knowledge.models_text import TextModelError, build_text_model, save_model_folder

    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    vocab = generated_vocabulary()
    folder = save_model_folder(tmp_path / "bert", "bert_base", vocab, seed=1, **small)
    a = build_model("bert_base", 2, weights=str(folder))
    b = build_text_model("bert_base", 5, weights=str(folder))
    key = "backbone.embeddings.word_embeddings.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])  # the folder's weights, not random ones
    assert a.encoder.vocabulary == vocab and a.num_classes == 2 and b.num_classes == 5
    scratch = build_text_model("bert_base", 2, text_model=str(folder))
    assert not torch.equal(scratch.state_dict()[key], a.state_dict()[key])  # same shape, fresh weights
    assert scratch.encoder.vocabulary == vocab
    with pytest.raises(TextModelError, match="needs a 'distilbert' model"):
        build_text_model("distilbert", 2, weights=str(folder))
    with pytest.raises(TextModelError, match="cannot load"):
        build_text_model("bert_base", 2, weights=str(tmp_path / "nowhere"))


# ----------------------------------------------------------------------------------------------
# Every stage on the tiny BERT, in process
# ----------------------------------------------------------------------------------------------


def test_every_stage_runs_on_the_tiny_bert(tmp_path) -> None:
    from pretrain_knowledge.game_text import play_text
    from pretrain_knowledge.plots import text_examples_figure
    from pretrain_knowledge.results import Games
    from pretrain_knowledge.selection_text import TextSelection, load_selection, make_text_selection
    from pretrain_knowledge.sparsification import explain
    from pretrain_knowledge.spec import SparsifySpec
    from pretrain_knowledge.training import TrainConfig, load_classifier, train

    options = {"num_classes": 4, "train_per_class": 40, "test_per_class": 10}
    up = prepare_text_task("generated_text", [0, 1], source_options=options)
    down = prepare_text_task("generated_text", [2, 3], source_options=options)
    common = dict(arch="tiny_bert", optimizer="adamw", lr=0.005, weight_decay=0.0, batch_size=8, epochs=2, threads=1)
    train(TrainConfig(mode="pretrain", **common), up.train, up.test, tmp_path / "pretrain", data_info=up.info)
    init = str(tmp_path / "pretrain" / "epoch-002.pt")
    finals = {}
    for mode in ("probe", "finetune", "scratch", "random_probe"):
        result = train(
            TrainConfig(mode=mode, init=init if mode in ("probe", "finetune") else None, **common),
            down.train, down.test, tmp_path / mode, data_info=down.info,
        )
        assert result.metrics["epoch"].max() == 2
        assert result.predictions.groupby("epoch").size().eq(len(down.test)).all()
        finals[mode] = load_classifier(tmp_path / mode / "epoch-002.pt")
    assert finals["probe"].encoder.vocabulary == finals["scratch"].encoder.vocabulary
    # random_probe: a random backbone (not the pre-trained one), frozen; only its head trains.
    start = load_classifier(tmp_path / "random_probe" / "epoch-000.pt")
    pretrained = load_classifier(init)
    for name, value in finals["random_probe"].backbone.state_dict().items():
        assert torch.equal(value, start.backbone.state_dict()[name]), name
    assert any(
        not torch.equal(v, pretrained.backbone.state_dict()[k]) for k, v in start.backbone.state_dict().items()
    )
    assert not torch.equal(finals["random_probe"].head.weight, start.head.weight)
    # Two epochs need not make the models right, which the selection demands; an oracle with the
    # same tokenizer stands in for them there (the games below use the trained model).
    encoded = finals["finetune"].encoder.encode_set(down.test)
    truth = {tuple(row.tolist()): int(y) for row, y in zip(encoded.ids, encoded.labels, strict=True)}

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = finals["finetune"].encoder
            self.bias = torch.nn.Parameter(torch.zeros(()))

        def forward(self, ids):
            return torch.nn.functional.one_hot(torch.tensor([truth[tuple(r.tolist())] for r in ids]), 2).float()

    oracle = {m: Oracle() for m in finals}
    selection = make_text_selection(
        oracle, down.test, per_class=1, seed=0, n_players=3, max_words=16, correct_under=["probe", "finetune"]
    )
    assert selection.correct_under == ("probe", "finetune") and set(selection.correct) == set(finals)
    with pytest.raises(ValueError, match="correct_under"):
        make_text_selection(oracle, down.test, per_class=1, seed=0, n_players=3, max_words=16, correct_under=["x"])
    selection.write(tmp_path / "selection.pt", tmp_path / "samples.parquet")
    loaded = load_selection(tmp_path / "selection.pt")
    assert isinstance(loaded, TextSelection) and loaded.words == selection.words
    table = pd.read_parquet(tmp_path / "samples.parquet")
    assert table["patch_size"].eq(1).all() and table["player_rows"].map(set).eq({0}).all()
    assert all(table[f"correct_{m}"].all() for m in finals)  # the oracle is always right
    assert loaded.correct_under == ("probe", "finetune")
    games = play_text(finals["finetune"], loaded, loaded.sample_ids, batch_size=5, progress=False)
    assert (games.grid.height, games.grid.width, games.grid.patch_size) == (1, 16, 1)
    assert Games.from_frame(games.to_frame()).v.equal(games.v)
    result = explain(games, SparsifySpec(), progress=False)
    assert float(result.interactions.diagnostics.matching_error.max()) < 1e-6
    # v(N) is the unmasked sentence's log-odds.
    with torch.no_grad():
        logits = finals["finetune"](loaded.token_ids).double()
    log_p = torch.log_softmax(logits, 1).gather(1, loaded.labels[:, None])[:, 0]
    np.testing.assert_allclose(games.v[:, -1], (log_p - torch.log1p(-log_p.exp())).numpy(), atol=1e-5)
    members = pd.DataFrame(
        {"sample_id": [0], "kind": ["preserved"], "type": ["and"], "coalition": [3], "order": [2], "sign": [1], "strength": [0.5]}
    )
    assert text_examples_figure(loaded, members, n_examples=2).axes


@pytest.mark.slow
def test_pretraining_on_generated_text_helps_downstream(tmp_path) -> None:
    """The generated source's transfer property: after the same few epochs, fine-tuning the
    upstream-trained tiny BERT beats the same model trained from scratch by a wide margin."""
    from pretrain_knowledge.training import TrainConfig, train

    options = {"num_classes": 10, "train_per_class": 300, "test_per_class": 40}
    up = prepare_text_task("generated_text", [0, 1, 2, 3, 4], source_options=options)
    down = prepare_text_task("generated_text", [5, 6, 7, 8, 9], train_per_class=40, source_options=options)
    common = dict(arch="tiny_bert", optimizer="adamw", lr=0.005, weight_decay=0.0, batch_size=16, threads=1)
    train(TrainConfig(mode="pretrain", epochs=5, **common), up.train, up.test, tmp_path / "p", data_info=up.info)
    accuracy = {}
    for mode in ("finetune", "scratch"):
        init = str(tmp_path / "p" / "epoch-005.pt") if mode == "finetune" else None
        result = train(TrainConfig(mode=mode, epochs=2, init=init, **common), down.train, down.test, tmp_path / mode, data_info=down.info)
        accuracy[mode] = float(result.metrics.query("split == 'test' and epoch == 2")["accuracy"].iloc[0])
    assert accuracy["finetune"] > accuracy["scratch"] + 0.2, accuracy


# ----------------------------------------------------------------------------------------------
# The whole DAG and the paper config
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_paper_text_config_plans_the_grid(tmp_path) -> None:
    workdir = copy_repo(tmp_path / "repo")
    jobs = planned_jobs(workdir, "--configfile", "config/paper-text.yaml")
    assert jobs["pretrain"] == jobs["finetune"] == jobs["scratch"] == jobs["select"] == 2
    assert jobs["scratch_b"] == jobs["random_probe"] == jobs["scratch_converged"] == 2
    assert jobs["claims"] == 1 and jobs["sensitivity"] == 2
    assert jobs["prepare_data"] == 2  # downstream only: pre-training is loading MLM weights
    assert jobs["games"] == jobs["sparsify"] and jobs["games"] > 2


@pytest.mark.slow
def test_whole_dag_on_generated_text(tmp_path) -> None:
    workdir = copy_repo(tmp_path / "repo")
    proc = snakemake(workdir, "--cores", "2", "--configfile", TEXT_CONFIG, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    results = workdir / "results" / EXPERIMENT
    shards = pd.read_parquet(results / "interactions")
    assert set(shards["model"].astype(str)) == set(layout.MODELS)
    assert shards[["image_height", "image_width", "patch_size"]].drop_duplicates().values.tolist() == [[1, 16, 1]]
    assert shards["matching_error"].max() < 1e-6
    samples = pd.read_parquet(results / "selection" / "samples.parquet")
    assert len(samples) == 10 and samples.groupby("label").size().eq(2).all()
    assert {f"correct_{m}" for m in layout.MODES if m != "pretrain"} <= set(samples.columns)
    for ids, sentence in zip(samples["patch_ids"], samples["sentence"], strict=True):
        words = sentence.split()
        assert all(P.is_content_word(words[i]) for i in ids)
    for table in ("decomposition_summary", "learnability_summary", "similarity_summary"):
        assert len(pd.read_parquet(results / "knowledge" / f"{table}.parquet")) > 0
    from PIL import Image

    with Image.open(results / "figures" / "examples.png") as image:
        assert np.asarray(image.convert("L")).std() > 5
    claims = pd.read_parquet(workdir / layout.claims_table())
    assert set(claims["scope"]) == {EXPERIMENT}
    assert {"random_probe preserved share", "scratch_b shares Ω_scratch (ceiling)"} <= set(claims["control"])
    assert "scratch_converged" in (workdir / layout.claims_report()).read_text()
    assert planned_jobs(workdir, "--configfile", TEXT_CONFIG) == {}
