"""Claims: chance levels, scale-free similarity, areas, and verdicts on planted effects."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from pretrain_knowledge import claims, tables
from pretrain_knowledge import knowledge as K
from pretrain_knowledge.interactions import Interactions, SparsifyDiagnostics


def _interactions(i_and: np.ndarray, i_or: np.ndarray) -> Interactions:
    a, o = torch.tensor(i_and, dtype=torch.float64), torch.tensor(i_or, dtype=torch.float64)
    zeros = torch.zeros_like(a)
    nan = torch.full((a.shape[0],), float("nan"), dtype=torch.float64)
    fields = {f: nan for f in SparsifyDiagnostics.__dataclass_fields__ if f not in ("method", "form")}
    return Interactions(v=zeros, I_and=a, I_or=o, gamma=zeros, q=zeros, diagnostics=SparsifyDiagnostics(**fields))


def _random_set(rng: np.random.Generator, n: int, b: int, density: float) -> K.SalientSet:
    values = rng.normal(size=(b, 2, 1 << n)) * (rng.random((b, 2, 1 << n)) < density)
    mask = torch.tensor(values != 0)
    mask[..., 0] = False
    return K.SalientSet(values=torch.tensor(values), mask=mask, tau=torch.zeros(b, dtype=torch.float64))


@pytest.mark.parametrize("match_sign", [True, False])
@pytest.mark.parametrize("strength", [False, True])
def test_chance_overlap_equals_a_monte_carlo_placement(match_sign: bool, strength: bool) -> None:
    rng = np.random.default_rng(0)
    n, b = 5, 3
    a, ref = _random_set(rng, n, b, 0.3), _random_set(rng, n, b, 0.4)
    orders = K.coalition_orders(n).numpy()
    draws, total = 600, np.zeros(b)
    weights = a.values.abs().numpy() if strength else np.ones(a.values.shape)
    for _ in range(draws):
        for s in range(b):
            for t in range(2):
                for order in range(1, n + 1):
                    slots = np.flatnonzero(orders == order)
                    m = int(ref.mask[s, t, slots].sum())
                    chosen = rng.choice(slots, size=m, replace=False)
                    signs = rng.choice((-1.0, 1.0), size=m)
                    hit = a.mask[s, t, chosen].numpy()
                    if match_sign:
                        hit &= np.sign(a.values[s, t, chosen].numpy()) == signs
                    total[s] += weights[s, t, chosen][hit].sum()
    expected = K.chance_overlap(a, ref, match_sign, strength).numpy()
    np.testing.assert_allclose(total / draws, expected, rtol=0.1, atol=0.05)


def test_overlap_counts_and_strengths_match_sets() -> None:
    rng = np.random.default_rng(1)
    a, b = _random_set(rng, 4, 2, 0.5), _random_set(rng, 4, 2, 0.5)
    for s in range(2):
        sa = {(t, c): float(a.values[s, t, c]) for t, c in zip(*np.nonzero(a.mask[s].numpy()))}
        sb = {(t, c): float(b.values[s, t, c]) for t, c in zip(*np.nonzero(b.mask[s].numpy()))}
        shared = [k for k in sa if k in sb and np.sign(sa[k]) == np.sign(sb[k])]
        assert int(K.overlap(a, b)[s]) == len(shared)
        assert float(K.overlap_strength(a, b)[s]) == pytest.approx(sum(abs(sa[k]) for k in shared))


def test_scale_free_jaccard_ignores_the_scale_of_a_game() -> None:
    rng = np.random.default_rng(2)
    i_and, i_or = rng.normal(size=(2, 8)), rng.normal(size=(2, 8))
    a, scaled = _interactions(i_and, i_or), _interactions(3 * i_and, 3 * i_or)
    assert torch.allclose(K.weighted_jaccard(a, scaled, scale_free=True), torch.ones(2, dtype=torch.float64))
    assert (K.weighted_jaccard(a, scaled) < 0.5).all()  # 1/3 of the mass in common


def test_area_is_the_trapezoid_rule_on_epoch_over_last() -> None:
    curve = {0: torch.tensor([0.0, 0.5]), 2: torch.tensor([0.5, 0.5]), 8: torch.tensor([1.0, 1.0])}
    expected = [(0.25 * (0.0 + 0.5) / 2 + 0.75 * (0.5 + 1.0) / 2), (0.25 * 0.5 + 0.75 * 0.75)]
    assert tables._area(curve).tolist() == pytest.approx(expected)


def _measures(rng: np.random.Generator, shift: dict[str, float], n: int = 40) -> pd.DataFrame:
    """A measures table where each claim's real quantity sits ``shift`` above its controls."""
    rows = []
    for claim in claims.CLAIMS:
        base = rng.uniform(0.3, 0.6, size=n)
        rows.append((claim.quantity, base + shift.get(claim.claim, 0.0) + rng.normal(0, 0.02, n)))
        for _, quantity in claim.controls:
            if quantity:
                rows.append((quantity, base + rng.normal(0, 0.02, n)))
    frames = [
        pd.DataFrame({"sample_id": np.arange(n), "quantity": q, "value": v}) for q, v in dict(rows).items()
    ]
    return pd.concat(frames, ignore_index=True)


def test_verdicts_follow_planted_effects_and_the_paper_direction() -> None:
    rng = np.random.default_rng(3)
    shift = {"C0": 0.1, "C1": 0.1, "C2": 0.1, "C3": 0.0}  # C2 above its controls: against the paper
    measures = {f"d-a-s{s}": _measures(rng, shift) for s in range(3)}
    table = claims.claims_table(measures, {name: "d-a" for name in measures})
    assert list(table.columns) == list(claims.COLUMNS)
    pooled = table[table["scope"] == "pooled"]
    verdict = {(r.claim, r.control): r.verdict for r in pooled.itertuples()}
    assert verdict[("C0", "scratch")] == "supported"
    assert verdict[("C1", "chance")] == "supported"
    assert verdict[("C2", "scratch learns K_new")] == "contradicted"
    assert verdict[("C3", "scratch")] == "inconclusive"
    assert set(pooled["n_seeds"]) == {3}
    single = table[table["scope"] == "d-a-s0"]
    assert set(single["n_seeds"]) == {1} and (single["n_samples"] == 40).all()
    tested = pooled["p_value"].notna()
    assert (pooled.loc[tested, "p_holm"] >= pooled.loc[tested, "p_value"]).all()
    text = claims.claims_markdown(table)
    assert text.index("## pooled (3 seeds)") < text.index("## d-a-s0 (1 seed)")
    assert "**contradicted**" in text and "**supported**" in text


def test_a_missing_control_is_said_not_guessed() -> None:
    rng = np.random.default_rng(4)
    measures = _measures(rng, {})
    measures = measures[~measures["quantity"].str.startswith("random_probe")]
    table = claims.claims_table({"x": measures}, {"x": "g"})
    rows = table[(table["control"] == "random_probe learnability") & (table["scope"] == "x")]
    assert rows["verdict"].tolist() == ["missing control"] and math.isnan(rows["diff"].iloc[0])


def test_accuracy_measures_and_epochs_to_reach() -> None:
    predictions = pd.DataFrame({"epoch": [0, 0, 1, 1, 2, 2], "index": [0, 1] * 3, "correct": [0, 0, 1, 0, 1, 1]})
    table = claims.accuracy_measures({"finetune": predictions.astype({"correct": bool})})
    assert table["quantity"].tolist() == ["accuracy_finetune"] * 2 and table["value"].tolist() == [1.0, 0.5]
    metrics = pd.DataFrame(
        {"model": ["scratch"] * 3, "split": ["test"] * 3, "epoch": [0, 1, 2], "accuracy": [0.1, 0.7, 0.9]}
    )
    assert claims.epochs_to_reach(metrics, "scratch", 0.7) == 1.0
    assert math.isnan(claims.epochs_to_reach(metrics, "scratch", 0.95))


def test_a_scratch_baseline_near_chance_is_flagged_not_judged() -> None:
    assert claims.near_chance(0.012, 100) == "not evaluable: scratch near chance (0.012, chance 0.010)"
    assert claims.near_chance(0.5, 10) is None and claims.near_chance(0.0, 0) is None
    rng = np.random.default_rng(5)
    measures = {"x": _measures(rng, {"C2": -0.2})}
    flagged = claims.claims_table(measures, {"x": "g"}, flags={"x": "not evaluable: scratch near chance"})
    c2 = flagged[flagged["claim"] == "C2"]
    assert set(c2["verdict"]) == {"not evaluable: scratch near chance"} and c2["diff"].notna().any()
    c1 = flagged[(flagged["claim"] == "C1") & (flagged["control"] == "chance")]
    assert "not evaluable" not in set(c1["verdict"])


def test_accuracy_summary_reads_the_last_test_epoch() -> None:
    rows = [(m, e, s, a) for m, acc in {"probe": [0.2, 0.6], "finetune": [0.2, 0.9], "scratch": [0.1, 0.7]}.items()
            for e, a in enumerate(acc) for s in ("train", "test")]  # fmt: skip
    metrics = pd.DataFrame(rows, columns=["model", "epoch", "split", "accuracy"])
    summary = claims.accuracy_summary(metrics, 4)
    assert summary["chance"] == 0.25 and summary["final_finetune"] == 0.9 and summary["final_scratch"] == 0.7
    assert summary["reach_finetune"] == 1.0 and summary["reach_scratch"] == 1.0
