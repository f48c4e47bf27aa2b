"""Player and sample selection: seeding, the central rule, error messages, hive paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def _contexts(n_images: int) -> list:
    from pretrain_knowledge.players import SampleContext

    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    return [SampleContext(sample_id=k, dataset_index=100 + 7 * k, label=0, image=image) for k in range(n_images)]


def test_players_are_seeded_per_image_not_per_position() -> None:
    from pretrain_knowledge.players import PatchGrid, central_region
    from pretrain_knowledge.selection import choose_players

    grid = PatchGrid(28, 28, 4)
    contexts = _contexts(6)
    first = choose_players(grid, 10, contexts, seed=3).patch_ids
    again = choose_players(grid, 10, list(reversed(contexts)), seed=3).patch_ids
    assert torch.equal(first, again.flip(0))  # same image → same players, whatever the order
    assert not torch.equal(first, choose_players(grid, 10, contexts, seed=4).patch_ids)
    central = set(central_region(grid, 0.6))
    assert len(central) == 25 and all(set(row.tolist()) <= central for row in first)
    assert all(row.tolist() == sorted(set(row.tolist())) for row in first)


def test_player_rule_errors_name_the_config_key() -> None:
    from pretrain_knowledge.players import PatchGrid
    from pretrain_knowledge.selection import choose_players

    grid = PatchGrid(28, 28, 4)
    with pytest.raises(ValueError, match="selection.players.region"):
        choose_players(grid, 10, _contexts(1), seed=0, options={"region": 0.3})
    with pytest.raises(ValueError, match="selection.players.rule"):
        choose_players(grid, 10, _contexts(1), seed=0, rule="corners")


def test_samples_are_drawn_per_class_among_the_correct_ones() -> None:
    from pretrain_knowledge.selection import choose_samples

    labels = torch.arange(3).repeat_interleave(10)
    eligible = torch.ones(30, dtype=torch.bool)
    eligible[10:17] = False  # class 1 keeps 3 eligible images
    chosen = choose_samples(labels, eligible, 3, seed=0, classes=[0, 1, 2])
    assert labels[chosen].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert set(chosen[3:6].tolist()) == {17, 18, 19}
    assert torch.equal(chosen, choose_samples(labels, eligible, 3, seed=0, classes=[0, 1, 2]))
    with pytest.raises(ValueError, match="selection.per_class=4"):
        choose_samples(labels, eligible, 4, seed=0, classes=[0, 1, 2])


def test_hive_paths_round_trip(tmp_path: Path) -> None:
    from pretrain_knowledge.layout import partition_keys, shard

    path = Path(shard(tmp_path / "interactions", "finetune", 12, 3))
    assert path.relative_to(tmp_path).as_posix() == "interactions/model=finetune/epoch=12/shard-3.parquet"
    assert partition_keys(path) == {"model": "finetune", "epoch": "12"}
    with pytest.raises(ValueError, match="hive"):
        partition_keys(tmp_path / "shard-0.parquet")
