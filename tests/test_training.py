"""The four training modes on generated data: learning, checkpoints, determinism, freezing."""

from __future__ import annotations

from pathlib import Path

import math

import pandas as pd
import pytest
import torch

from pretrain_knowledge.data.images import TaskData, load_task
from pretrain_knowledge.data.prepare import prepare_task
from pretrain_knowledge.data.sources import open_source
from pretrain_knowledge.layout import SPLITS
from pretrain_knowledge.cli import main as cli_main
from pretrain_knowledge.training import (
    METRIC_COLUMNS,
    CheckpointError,
    TrainConfig,
    TrainResult,
    checkpoint_path,
    evaluate,
    load_checkpoint,
    load_classifier,
    train,
)

SYNTH = dict(num_classes=10, train_per_class=60, test_per_class=30, image_size=16)
FAST = dict(epochs=2, lr=0.05, batch_size=32, threads=1, eval_batch_size=200)


@pytest.fixture(scope="module")
def tasks() -> dict[str, TaskData]:
    raw = {s: open_source("synthetic", s, **SYNTH) for s in SPLITS}
    return {
        "upstream": prepare_task("synthetic", range(0, 5), raw=raw, source_options=SYNTH),
        "downstream": prepare_task(
            "synthetic", range(5, 10), train_per_class=40, raw=raw, source_options=SYNTH
        ),
    }


@pytest.fixture(scope="module")
def runs(tasks, tmp_path_factory) -> dict[str, TrainResult]:
    root = tmp_path_factory.mktemp("runs")
    up, down = tasks["upstream"], tasks["downstream"]
    out: dict[str, TrainResult] = {}
    out["pretrain"] = train(
        TrainConfig(mode="pretrain", **FAST), up.train, up.test, root / "pretrain", root / "pretrain.parquet"
    )
    init = str(checkpoint_path(root / "pretrain", FAST["epochs"]))
    for mode in ("probe", "finetune"):
        # A linear head on frozen features wants a larger step, as in the default config.
        cfg = TrainConfig(mode=mode, init=init, **{**FAST, "lr": 0.2 if mode == "probe" else FAST["lr"]})
        out[mode] = train(cfg, down.train, down.test, root / mode, root / f"{mode}.parquet")
    out["scratch"] = train(
        TrainConfig(mode="scratch", **FAST), down.train, down.test, root / "scratch", root / "scratch.parquet"
    )
    return out


def _acc(result: TrainResult, epoch: int, split: str = "test") -> float:
    m = result.metrics
    return float(m[(m.epoch == epoch) & (m.split == split)].accuracy.iloc[0])


def _loss(result: TrainResult, epoch: int, split: str) -> float:
    m = result.metrics
    return float(m[(m.epoch == epoch) & (m.split == split)].loss.iloc[0])


@pytest.mark.parametrize("mode", ["pretrain", "probe", "finetune", "scratch"])
def test_each_mode_learns(runs, mode):
    r = runs[mode]
    last = FAST["epochs"]
    assert _loss(r, last, "train") < 0.8 * _loss(r, 0, "train")
    assert _loss(r, last, "test") < 0.8 * _loss(r, 0, "test")
    assert _acc(r, last) > 0.5  # five classes: chance is 0.2


def test_metrics_table_schema(runs, tmp_path):
    for mode, r in runs.items():
        frame = pd.read_parquet(r.checkpoints[0].parent.parent / f"{mode}.parquet")
        assert tuple(frame.columns) == METRIC_COLUMNS
        assert len(frame) == 2 * (FAST["epochs"] + 1)
        assert set(frame.model) == {mode} and set(frame.split) == {"train", "test"}
        assert sorted(frame.epoch.unique()) == list(range(FAST["epochs"] + 1))
        assert str(frame.epoch.dtype) == "int64" and str(frame.loss.dtype) == "float64"
        assert frame.accuracy.between(0, 1).all() and (frame.seconds >= 0).all()
        pd.testing.assert_frame_equal(frame, r.metrics)


def test_checkpoints_every_epoch_reload_with_identical_logits(runs, tasks):
    x = tasks["downstream"].test.normalized(slice(0, 50))
    for mode in ("probe", "finetune", "scratch"):
        r = runs[mode]
        assert [p.name for p in r.checkpoints] == [f"epoch-{e:03d}.pt" for e in range(FAST["epochs"] + 1)]
        for p in r.checkpoints:
            raw = torch.load(p, weights_only=True)  # plain containers only
            assert raw["epoch"] == int(p.stem.split("-")[1]) and raw["config"]["train"]["mode"] == mode
        with torch.no_grad():
            expected = r.model.eval()(x)
            got = load_classifier(r.checkpoints[-1])(x)
        assert torch.equal(expected, got)
        assert got.shape == (50, 5)
        # Reloaded accuracy equals the recorded final test accuracy.
        _, acc = evaluate(load_classifier(r.checkpoints[-1]), tasks["downstream"].test)
        assert acc == pytest.approx(_acc(r, FAST["epochs"]), abs=1e-12)


def test_probe_leaves_backbone_bit_for_bit_unchanged(runs):
    pre = load_checkpoint(runs["pretrain"].checkpoints[-1]).model_state
    probe = load_checkpoint(runs["probe"].checkpoints[-1]).model_state
    backbone = [k for k in pre if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)  # BatchNorm buffers are part of the check
    for k in backbone:
        assert torch.equal(pre[k], probe[k]), k
    first = load_checkpoint(runs["probe"].checkpoints[0]).model_state
    assert not torch.equal(first["head.weight"], probe["head.weight"])


def test_finetune_starts_from_pretrained_backbone(runs):
    pre = load_checkpoint(runs["pretrain"].checkpoints[-1]).model_state
    start = load_checkpoint(runs["finetune"].checkpoints[0]).model_state
    end = load_checkpoint(runs["finetune"].checkpoints[-1]).model_state
    for k in pre:
        if k.startswith("backbone."):
            assert torch.equal(pre[k], start[k]), k
    assert start["head.weight"].shape == (5, pre["head.weight"].shape[1])
    assert not torch.equal(pre["backbone.0.weight"], end["backbone.0.weight"])  # all layers train
    ckpt = load_checkpoint(runs["finetune"].checkpoints[0])
    assert ckpt.config["init"]["mode"] == "pretrain" and ckpt.config["init"]["epoch"] == FAST["epochs"]


def test_pretraining_helps_on_synthetic_downstream(runs):
    """The synthetic source shares motifs across classes, so the probe beats chance clearly."""
    assert _acc(runs["probe"], FAST["epochs"]) > 0.6


@pytest.mark.parametrize("augment", ["none", "flip_crop"])
def test_same_seed_gives_bitwise_identical_weights(tasks, tmp_path, augment):
    down = tasks["downstream"]
    cfg = TrainConfig(mode="scratch", augment=augment, seed=7, **{**FAST, "epochs": 1})
    a = train(cfg, down.train, down.test, tmp_path / "a")
    b = train(cfg, down.train, down.test, tmp_path / "b")
    c = train(
        TrainConfig(mode="scratch", augment=augment, seed=8, **{**FAST, "epochs": 1}),
        down.train,
        down.test,
        tmp_path / "c",
    )
    sa, sb, sc = (load_checkpoint(r.checkpoints[-1]).model_state for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    pd.testing.assert_frame_equal(a.metrics.drop(columns="seconds"), b.metrics.drop(columns="seconds"))


def test_missing_init_checkpoint_is_a_clear_error(tasks, tmp_path):
    down = tasks["downstream"]
    missing = tmp_path / "pretrain" / "epoch-003.pt"
    with pytest.raises(CheckpointError) as err:
        train(TrainConfig(mode="finetune", init=str(missing), **FAST), down.train, down.test, tmp_path / "ft")
    assert str(missing) in str(err.value)
    with pytest.raises(ValueError, match="needs --init"):
        TrainConfig(mode="probe")


def test_weights_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="--weights"):
        load_checkpoint(path)


def test_cli_end_to_end(tmp_path, capsys):
    data = tmp_path / "data"
    args = [
        "prepare-data",
        "--source",
        "synthetic",
        "--synthetic-image-size",
        "16",
        "--synthetic-train-per-class",
        "30",
        "--synthetic-test-per-class",
        "10",
        "--upstream-classes",
        "0-4",
        "--downstream-classes",
        "5-9",
        "--downstream-train-per-class",
        "12",
        "--upstream-out",
        str(data / "up.pt"),
        "--downstream-out",
        str(data / "down.pt"),
        "--summary",
        str(data / "summary.json"),
    ]
    assert cli_main(args) == 0
    down = load_task(data / "down.pt")
    assert down.train.class_counts() == [12] * 5 and down.test.class_counts() == [10] * 5
    common = ["--epochs", "1", "--batch-size", "16", "--threads", "1"]
    assert (
        cli_main(
            [
                "pretrain",
                "--data",
                str(data / "up.pt"),
                *common,
                "--out-dir",
                str(tmp_path / "pre"),
                "--metrics",
                str(tmp_path / "m" / "pretrain.parquet"),
            ]
        )
        == 0
    )
    assert (
        cli_main(
            [
                "finetune",
                "--data",
                str(data / "down.pt"),
                "--init",
                str(tmp_path / "pre" / "epoch-001.pt"),
                *common,
                "--lr",
                "0.01",
                "--out-dir",
                str(tmp_path / "ft"),
                "--metrics",
                str(tmp_path / "m" / "finetune.parquet"),
            ]
        )
        == 0
    )
    ckpt = load_checkpoint(tmp_path / "ft" / "epoch-001.pt")
    assert ckpt.config["train"]["lr"] == 0.01 and ckpt.config["data"]["info"]["classes"] == [5, 6, 7, 8, 9]
    assert ckpt.config["data"]["class_names"] == [f"synthetic-{c}" for c in range(5, 10)]
    frame = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "m").glob("*.parquet"))])
    assert set(frame.model) == {"pretrain", "finetune"} and len(frame) == 8


@pytest.mark.parametrize("stage", ["prepare-data", "pretrain", "probe", "finetune", "scratch"])
def test_cli_help(stage, capsys):
    with pytest.raises(SystemExit) as done:
        cli_main([stage, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "--out-dir" in text or "--downstream-out" in text


def test_pretrain_from_weights_only_writes_epoch_zero(tmp_path):
    import torchvision.models as tvm

    path = tmp_path / "resnet18.pth"
    torch.save(tvm.resnet18().state_dict(), path)
    r = train(
        TrainConfig(mode="pretrain", arch="resnet18", epochs=0, weights=str(path)),
        None,
        None,
        tmp_path / "pre",
        tmp_path / "pre.parquet",
    )
    assert [p.name for p in r.checkpoints] == ["epoch-000.pt"] and len(r.metrics) == 0
    model = load_classifier(r.checkpoints[0])
    assert model.num_classes == 1000 and model.arch == "resnet18"
    assert tuple(pd.read_parquet(tmp_path / "pre.parquet").columns) == METRIC_COLUMNS
    with pytest.raises(ValueError, match="only epochs=0"):
        train(
            TrainConfig(mode="pretrain", arch="resnet18", epochs=1, weights=str(path)), None, None, tmp_path / "x"
        )


def test_wrong_channel_count_for_init_is_explained(runs, tmp_path):
    rgb = prepare_task(
        "synthetic",
        range(5, 10),
        train_per_class=4,
        channels=3,
        source_options={**SYNTH, "test_per_class": 2},
    )
    init = str(runs["pretrain"].checkpoints[-1])
    with pytest.raises(ValueError, match="--channels 1"):
        train(TrainConfig(mode="finetune", init=init, **FAST), rgb.train, rgb.test, tmp_path / "x")


def test_checkpoint_path_naming():
    assert checkpoint_path(Path("a/b"), 7) == Path("a/b/epoch-007.pt")


def test_learning_rate_warms_up_linearly_then_decays_by_cosine():
    from pretrain_knowledge.training import lr_factor

    factors = [lr_factor(step, total=10, warmup=4, schedule="cosine") for step in range(10)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 6)))
    assert [lr_factor(s, 10, 2, "constant") for s in range(4)] == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_keep_deletes_the_other_checkpoints_and_the_manifest_lists_the_kept(tasks, tmp_path):
    cfg = TrainConfig(mode="scratch", **{**FAST, "epochs": 3}, keep=(1,))
    result = train(cfg, tasks["downstream"].train, tasks["downstream"].test, tmp_path / "s",
                   manifest_path=tmp_path / "s.json")  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["epoch-001.pt", "epoch-003.pt"]
    assert [p.name for p in result.checkpoints] == ["epoch-001.pt", "epoch-003.pt"]
    import json

    assert sorted(json.loads((tmp_path / "s.json").read_text())["files"]) == ["epoch-001.pt", "epoch-003.pt"]
