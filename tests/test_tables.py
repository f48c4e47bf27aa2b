"""The knowledge stage's tables, against the independent recomputation of method.md §4."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import knowledge_reference as reference
from pretrain_knowledge.interactions import sparsify, zeta_transform
from pretrain_knowledge.layout import KNOWLEDGE_TABLES
from pretrain_knowledge.players import PatchGrid
from pretrain_knowledge.results import MODEL_DTYPE, GameBatchResult
from pretrain_knowledge.spec import KnowledgeSpec
from pretrain_knowledge.tables import describe, knowledge_tables

N, SAMPLES = 5, 6
EPOCHS = {"pretrain": [3], "finetune": [0, 1, 3], "scratch": [0, 2, 3], "scratch_b": [3], "random_probe": [3]}


def _games(rng: np.random.Generator, base: np.ndarray, keep: float) -> torch.Tensor:
    """Sparse AND games sharing a part ``keep`` of ``base``'s terms, plus their own terms."""
    own = rng.normal(size=base.shape) * (rng.random(base.shape) < 0.2)
    mask = rng.random(base.shape) < keep
    return zeta_transform(torch.from_numpy(np.where(mask, base, 0.0) + own))


@pytest.fixture(scope="module")
def interactions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(SAMPLES, 1 << N)) * (rng.random((SAMPLES, 1 << N)) < 0.4)
    frames = []
    for model, epochs in EPOCHS.items():
        for epoch in epochs:
            keep = 0.9 if model in ("pretrain", "finetune") else 0.3
            result = GameBatchResult(
                sample_ids=torch.arange(SAMPLES) + 100,
                labels=torch.zeros(SAMPLES, dtype=torch.int64),
                players=torch.arange(N).repeat(SAMPLES, 1),
                grid=PatchGrid(8, 8, 2),
                interactions=sparsify(_games(rng, base, keep * (epoch + 1) / 4), qthres=0.02),
            )
            frame = result.to_frame()
            frame.insert(0, "epoch", epoch)
            frame.insert(0, "model", pd.Categorical([model] * len(frame), dtype=MODEL_DTYPE))
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def plain(interactions: pd.DataFrame) -> pd.DataFrame:
    return interactions.assign(model=interactions["model"].astype(str), type=interactions["type"].astype(str))


@pytest.mark.parametrize("salience", [0.05, 0.2])
def test_tables_equal_the_independent_recomputation(interactions: pd.DataFrame, plain: pd.DataFrame, salience: float) -> None:
    tables = knowledge_tables(interactions, KnowledgeSpec(salience=salience))
    assert tuple(tables) == KNOWLEDGE_TABLES
    assert reference.check_decomposition(tables["decomposition"], plain, salience) > 0
    reference.check_decomposition_summary(tables["decomposition_summary"], plain, salience)
    reference.check_learnability(tables["learnability"], tables["learnability_summary"], plain, salience)
    reference.check_similarity(tables["similarity"], plain, salience)
    assert reference.check_measures(tables["measures"], plain, salience) > 20


def test_describe_gives_mean_sd_and_sem_per_group() -> None:
    frame = pd.DataFrame({"g": ["a", "a", "a", "b", "b"], "x": [1.0, 2.0, 6.0, 4.0, 4.0]})
    out = describe(frame, ["g"], ["x"]).set_index("g")
    assert out.loc["a", "n_samples"] == 3 and out.loc["a", "x_mean"] == 3.0
    assert out.loc["a", "x_std"] == pytest.approx(np.std([1, 2, 6], ddof=1))
    assert out.loc["a", "x_sem"] == pytest.approx(np.std([1, 2, 6], ddof=1) / np.sqrt(3))
    assert out.loc["b", "x_std"] == 0.0


def test_summary_per_order_rows_sum_to_the_totals(interactions: pd.DataFrame) -> None:
    summary = knowledge_tables(interactions)["decomposition_summary"]
    kinds = summary["kind"].astype(str)
    for kind in ("preserved", "discarded", "new"):
        rows = summary[(kinds == kind) & summary["order"].notna()]
        total = summary[(kinds == kind) & (summary["type"].astype(str) == "all")]
        assert rows["count_mean"].sum() == pytest.approx(float(total["count_mean"].iloc[0]))


def test_a_missing_model_is_named(interactions: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"no interactions of models \['scratch'\]"):
        knowledge_tables(interactions[interactions["model"] != "scratch"])


def test_faithfulness_of_a_planted_game() -> None:
    """v = 3 + 2·[0 ∈ T] + 1·[{1,2} ⊆ T]: all terms salient → exact; only the strongest → the
    reconstruction misses the pair term, an error of 1 on the coalitions that hold {1, 2}."""
    from pretrain_knowledge.knowledge import salient_sets
    from pretrain_knowledge.tables import faithfulness

    a = torch.zeros(1, 8, dtype=torch.float64)
    a[0, 0], a[0, 0b001], a[0, 0b110] = 3.0, 2.0, 1.0
    inter = sparsify(zeta_transform(a), qthres=0.0)
    whole = faithfulness(inter, salient_sets(inter, ratio=0.1))
    assert float(whole["salient_max_error"][0]) == pytest.approx(0.0, abs=1e-8)
    assert float(whole["salient_r2"][0]) == pytest.approx(1.0)
    assert float(whole["v_span"][0]) == pytest.approx(3.0) and float(whole["n_salient_and"][0]) == 2
    strongest = faithfulness(inter, salient_sets(inter, ratio=0.6))
    assert float(strongest["salient_max_error"][0]) == pytest.approx(1.0 / 3.0, abs=1e-8)
    v = zeta_transform(a)[0]
    expected_r2 = 1 - 2 * 1.0 / float(((v - v.mean()) ** 2).sum())  # two coalitions hold {1, 2}
    assert float(strongest["salient_r2"][0]) == pytest.approx(expected_r2)
    assert float(whole["q_at_bound"][0]) == 0.0
