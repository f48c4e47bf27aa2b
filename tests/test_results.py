"""GameBatchResult ↔ long DataFrame ↔ Parquet: bit-exact round trips and hive datasets.

Coalitions are bitmasks: bit i set iff player i ∈ S (player 0 least significant).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import pretrain_knowledge.results as R
from pretrain_knowledge.interactions import Interactions, SparsifyDiagnostics, sparsify
from pretrain_knowledge.io import write_parquet
from pretrain_knowledge.game import PatchGrid
from pretrain_knowledge.results import COLUMNS, GameBatchResult


def make_result(
    seed: int, b: int = 3, n: int = 4, dtype: torch.dtype = torch.float64, ids=None
) -> GameBatchResult:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b, 1 << n, generator=g, dtype=torch.float64).to(dtype)
    base = sparsify(v)
    gamma = torch.randn(b, 1 << n, generator=g, dtype=torch.float64).to(dtype)
    q = 1e-3 * torch.randn(b, 1 << n, generator=g, dtype=torch.float64).to(dtype)
    i_and, i_or = base.I_and.clone(), base.I_or.clone()
    # Values that a lossy path would mangle: signed zero, a subnormal, a huge number and 0.1 + 0.2.
    info = torch.finfo(dtype)
    i_and[0, 1], i_and[0, 2], i_or[-1, 3] = -0.0, info.smallest_normal / 4, info.max / 3
    i_or[0, -1] = 0.1 + 0.2
    diag = SparsifyDiagnostics(
        l1_even=torch.rand(b, generator=g, dtype=torch.float64),
        l1_final=torch.rand(b, generator=g, dtype=torch.float64),
        q_bound=torch.rand(b, generator=g, dtype=torch.float64),
        matching_error=torch.tensor([float("nan")] + [1e-17] * (b - 1), dtype=torch.float64),
        method="lp",
    )
    inter = Interactions(v, i_and, i_or, gamma, q, diag)
    ids = torch.tensor(ids if ids is not None else [100 + 7 * i for i in range(b)][::-1])
    return GameBatchResult(
        sample_ids=ids,
        labels=torch.randint(0, 10, (b,), generator=g),
        players=torch.stack([torch.randperm(49, generator=g)[:n] for _ in range(b)]),
        grid=PatchGrid(height=28, width=28, patch_size=4),
        interactions=inter,
    )


def bits(x: torch.Tensor) -> torch.Tensor:
    """float64 bit patterns, so -0.0 ≠ 0.0 and NaN == NaN."""
    return x.detach().to(torch.float64).contiguous().view(torch.int64)


def assert_same(a: GameBatchResult, b: GameBatchResult) -> None:
    for name in ("sample_ids", "labels", "players"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert getattr(b, name).dtype == torch.int64
    assert a.grid == b.grid
    for name in ("v", "I_and", "I_or", "gamma", "q"):
        got = getattr(b.interactions, name)
        assert got.dtype == torch.float64
        assert torch.equal(bits(getattr(a.interactions, name)), bits(got)), name
    da, db = a.interactions.diagnostics, b.interactions.diagnostics
    assert da.method == db.method
    for name in ("l1_even", "l1_final", "q_bound", "matching_error"):
        assert torch.equal(bits(getattr(da, name)), bits(getattr(db, name))), name


def test_frame_rows_match_a_brute_force_listing() -> None:
    res = make_result(0)
    frame = res.to_frame()
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 3 * 2 * 16
    inter = res.interactions
    rows = {(r.sample_id, r.type, r.coalition): r for r in frame.itertuples(index=False)}
    assert len(rows) == len(frame)
    for b in range(3):
        sid = int(res.sample_ids[b])
        for t, tensor in (("and", inter.I_and), ("or", inter.I_or)):
            for s in range(16):
                row = rows[(sid, t, s)]
                assert row.order == bin(s).count("1")
                assert row.value == float(tensor[b, s])
                assert (row.v, row.gamma, row.q) == (
                    float(inter.v[b, s]),
                    float(inter.gamma[b, s]),
                    float(inter.q[b, s]),
                )
                assert row.label == int(res.labels[b])
                assert list(row.players) == res.players[b].tolist()
                assert row.method == "lp"
                assert (row.image_height, row.image_width, row.patch_size) == (28, 28, 4)


def test_frame_dtypes_are_explicit() -> None:
    frame = make_result(1).to_frame()
    dtypes = frame.dtypes.astype(str).to_dict()
    assert dtypes == {
        "sample_id": "int64",
        "type": "category",
        "coalition": "int64",
        "order": "int16",
        "value": "float64",
        "v": "float64",
        "gamma": "float64",
        "q": "float64",
        "label": "int64",
        "l1_even": "float64",
        "l1_final": "float64",
        "q_bound": "float64",
        "matching_error": "float64",
        "method": "string",
        "players": "object",
        "image_height": "int32",
        "image_width": "int32",
        "patch_size": "int32",
    }
    assert list(frame["type"].cat.categories) == ["and", "or"]


def test_module_docstring_documents_every_column() -> None:
    for column in COLUMNS:
        assert f"``{column}``" in R.__doc__, column


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parquet_round_trip_is_bit_exact(tmp_path: Path, dtype: torch.dtype) -> None:
    res = make_result(2, b=4, n=5, dtype=dtype)
    path = tmp_path / "shard-0.parquet"
    write_parquet(res.to_frame(), path)
    schema = pq.read_schema(path)
    assert schema.field("players").type == pa.list_(pa.int64())
    assert schema.field("value").type == pa.float64()
    back = pd.read_parquet(path)
    assert back.dtypes.astype(str).to_dict() == res.to_frame().dtypes.astype(str).to_dict()
    assert_same(res, GameBatchResult.from_frame(back))


def test_row_order_does_not_matter() -> None:
    res = make_result(3)
    shuffled = res.to_frame().sample(frac=1.0, random_state=0)
    back = GameBatchResult.from_frame(shuffled)
    order = [back.sample_ids.tolist().index(i) for i in res.sample_ids.tolist()]
    reordered = GameBatchResult(
        sample_ids=back.sample_ids[order],
        labels=back.labels[order],
        players=back.players[order],
        grid=back.grid,
        interactions=Interactions(
            *(getattr(back.interactions, k)[order] for k in ("v", "I_and", "I_or", "gamma", "q")),
            diagnostics=SparsifyDiagnostics(
                *(
                    getattr(back.interactions.diagnostics, k)[order]
                    for k in ("l1_even", "l1_final", "q_bound", "matching_error")
                ),
                method=back.interactions.diagnostics.method,
            ),
        ),
    )
    assert_same(res, reordered)


def test_hive_dataset_reads_as_one_table(tmp_path: Path) -> None:
    parts = {
        ("pretrain", 0): make_result(4, b=2, n=4, ids=[1, 2]),
        ("finetune", 3): make_result(5, b=3, n=4, ids=[1, 2, 3]),
        ("scratch", 12): make_result(6, b=2, n=3, ids=[1, 2]),
    }
    for (model, epoch), res in parts.items():
        write_parquet(
            res.to_frame(), tmp_path / f"model={model}" / f"epoch={epoch}" / "shard-0.parquet"
        )
    table = pd.read_parquet(tmp_path)
    assert len(table) == 2 * 32 + 3 * 32 + 2 * 16
    assert {"model", "epoch"} <= set(table.columns)
    for column in ("sample_id", "coalition", "order", "value", "label", "image_height"):
        assert table[column].dtype == res.to_frame()[column].dtype, column
    assert list(table["type"].cat.categories) == ["and", "or"]
    for (model, epoch), res in parts.items():
        one = table[(table["model"] == model) & (table["epoch"].astype(int) == epoch)]
        assert_same(res, GameBatchResult.from_frame(one.reset_index(drop=True)))
    with pytest.raises(ValueError, match="one model and"):
        GameBatchResult.from_frame(table[table["model"] != "scratch"])


def test_bad_input_is_refused_with_a_reason() -> None:
    res = make_result(7)
    frame = res.to_frame()
    with pytest.raises(ValueError, match="lacks the result columns"):
        GameBatchResult.from_frame(frame.drop(columns=["q"]))
    with pytest.raises(ValueError, match="no rows"):
        GameBatchResult.from_frame(frame.iloc[:0])
    with pytest.raises(ValueError, match="one row per"):
        GameBatchResult.from_frame(frame.iloc[1:])
    broken = frame.copy()
    broken.loc[0, "label"] = 99
    with pytest.raises(ValueError, match="'label' must be constant"):
        GameBatchResult.from_frame(broken)
    broken = frame.copy()
    broken.loc[broken.index[-1], "v"] += 1.0
    with pytest.raises(ValueError, match="'v' must be equal"):
        GameBatchResult.from_frame(broken)
    with pytest.raises(ValueError, match="players"):
        GameBatchResult(res.sample_ids, res.labels, res.players[:, :2], res.grid, res.interactions)
    with pytest.raises(ValueError, match="unique"):
        GameBatchResult(
            torch.tensor([1, 1, 2]), res.labels, res.players, res.grid, res.interactions
        )
    with pytest.raises(ValueError, match="positive"):
        PatchGrid(28, 28, 0)
    with pytest.raises(ValueError, match="divisible"):
        PatchGrid(28, 28, 5)


def test_games_round_trip_bit_exact_in_any_row_order(tmp_path: Path) -> None:
    result = make_result(3, b=4, n=3)
    games = R.Games(result.sample_ids, result.labels, result.players, result.grid, result.interactions.v.double())
    frame = games.to_frame()
    assert list(frame.columns) == list(R.GAME_COLUMNS) and len(frame) == 4 * 8
    row = frame.iloc[8 * 2 + 5]  # third sample, coalition 0b101
    assert row["sample_id"] == int(games.sample_ids[2]) and row["coalition"] == 5 and row["order"] == 2
    assert row["v"] == float(games.v[2, 5]) and list(row["players"]) == games.players[2].tolist()
    write_parquet(frame.sample(frac=1, random_state=0), tmp_path / "g.parquet")
    back = R.Games.from_frame(pd.read_parquet(tmp_path / "g.parquet"))
    order = [back.sample_ids.tolist().index(i) for i in games.sample_ids.tolist()]
    assert torch.equal(bits(back.v[order]), bits(games.v)) and torch.equal(back.players[order], games.players)
    assert back.grid == games.grid
    with pytest.raises(ValueError, match=r"one row per \(sample_id, coalition\)"):
        R.Games.from_frame(pd.concat([frame, frame.iloc[:1]]))


def test_to_shapiq_equals_shapiqs_own_moebius_transform() -> None:
    """AND interactions with no noise (qthres = 0) of an AND-only decomposition are the Möbius
    transform of the game; shapiq's ExactComputer computes that independently."""
    from shapiq import ExactComputer

    n = 5
    rng = np.random.default_rng(0)
    v = torch.tensor(rng.normal(size=(1, 1 << n)))
    result = GameBatchResult(
        sample_ids=torch.tensor([7]), labels=torch.tensor([0]), players=torch.arange(n)[None],
        grid=PatchGrid(8, 8, 2), interactions=sparsify(v, qthres=0.0, method="reference", niter=1),
    )  # fmt: skip
    mine = R.to_shapiq(result.to_frame())
    masks = np.array([[c >> i & 1 for i in range(n)] for c in range(1 << n)], dtype=bool)

    def game(coalitions: np.ndarray) -> np.ndarray:
        index = (coalitions.astype(np.int64) * (1 << np.arange(n))).sum(axis=1)
        return v[0].numpy()[index]

    reference = ExactComputer(game, n_players=n)("Moebius")
    for coalition, mask in enumerate(masks):
        key = tuple(np.flatnonzero(mask))
        and_part = float(result.interactions.I_and[0, coalition])
        assert mine[key] == pytest.approx(and_part)
        if len(key) >= 2:  # order ≤ 1 OR terms are merged into AND; higher ones are 0 here
            assert mine[key] == pytest.approx(reference[key], abs=1e-9) or abs(float(result.interactions.I_or[0, coalition])) > 0
    with pytest.raises(ValueError, match="pass sample_id"):
        R.to_shapiq(pd.concat([result.to_frame(), make_result(1, b=1, n=n).to_frame()]))
