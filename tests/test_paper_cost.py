"""benchmarks/paper_cost.py against one experiment of config/paper.yaml counted by hand.

The hand count reads the numbers off config/paper.yaml (CIFAR-10 × ResNet-50: probe and
random_probe 30 frozen-backbone epochs; finetune, scratch and scratch_b 30 epochs; the converged
scratch baseline 60; 10 classes × 2 samples; n = 10; 9 explained checkpoints of finetune and
scratch, one each of pretrain, scratch_b, random_probe and scratch_converged) and CIFAR-10's
official split (50,000 / 10,000).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper_cost():
    spec = importlib.util.spec_from_file_location("paper_cost", REPO / "benchmarks" / "paper_cost.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_cost"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cifar_resnet(paper_cost):
    rows = {r.experiment: r for r in paper_cost.count(paper_cost.load_config(REPO / "config" / "paper.yaml"))}
    return rows["cifar10-resnet50-s0"]


def test_training_images_count_each_image_once(cifar_resnet):
    # finetune + scratch + scratch_b (30 epochs each) + scratch_converged (60), one pass per image:
    # the backward pass is in the training rate, not a multiple of the image count.
    assert cifar_resnet.train == (30 + 30 + 30 + 60) * 50_000


def test_inference_images_are_probes_evaluations_and_selection(cifar_resnet):
    frozen = (30 + 30) * 50_000  # probe and random_probe
    epochs = {"probe": 30, "finetune": 30, "scratch": 30, "scratch_b": 30, "random_probe": 30, "scratch_converged": 60}
    evaluations = sum(50_000 + (e + 1) * 10_000 for e in epochs.values())  # train split once, test every epoch
    selection = 6 * 10_000  # the test split under every downstream model
    assert cifar_resnet.infer == frozen + evaluations + selection == 5_520_000


def test_masked_images_and_checkpoints(cifar_resnet):
    explained = 1 + 9 + 9 + 1 + 1 + 1
    assert (cifar_resnet.samples, cifar_resnet.checkpoints) == (20, explained)
    assert cifar_resnet.extract == 20 * explained * 2**10
    # keep: explained — the ImageNet weights, probe's last, finetune's and scratch's 9 explained
    # (their last among them), the last of scratch_b, random_probe and scratch_converged.
    assert cifar_resnet.kept == 1 + 1 + 9 + 9 + 1 + 1 + 1


def test_disk_is_fp32_checkpoints_plus_shards(paper_cost, cifar_resnet):
    resnet50_10_classes = 23_508_032 + 2048 * 10 + 10  # torchvision's backbone + a 10-way head
    games = 20 * 22
    assert cifar_resnet.checkpoint_bytes == 4 * resnet50_10_classes * 23
    assert cifar_resnet.shard_bytes == games * (11_800 + 51_800)


def test_keeping_every_epoch_counts_every_checkpoint(paper_cost):
    config = paper_cost.load_config(REPO / "config" / "paper.yaml")
    config["training"]["keep"] = "all"
    row = {r.experiment: r for r in paper_cost.count(config)}["cifar10-resnet50-s0"]
    assert row.kept == 1 + (30 + 1) * 5 + (60 + 1)


def test_gpu_hours_divide_each_count_by_its_rate(paper_cost, cifar_resnet):
    rates = (1000.0, 4000.0, 2000.0)
    expected = (7_500_000 / 1000 + 5_520_000 / 4000 + cifar_resnet.extract / 2000) / 3600
    assert cifar_resnet.gpu_hours(rates) == pytest.approx(expected)
