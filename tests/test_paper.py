"""The paper-scale configuration (config/paper.yaml) without the real data, weights or a GPU.

* The fake dataset trees of :mod:`pretrain_knowledge.fixtures` are read back by the real loaders
  and compared with the ground truth the generator recorded (labels, splits, boxes and part
  keypoints, also after resizing), computed here independently of the loaders.
* The annotation-based player rules (:mod:`pretrain_knowledge.players`) are checked against
  brute-force geometry: ``bbox`` players lie in the box, ``parts`` players under visible parts.
* ImageNet weights load from a local file (a saved random ResNet-50 state dict) with clear
  errors for a wrong architecture or a missing file.
* ``snakemake -n`` builds the paper's full DAG quickly, with the job counts the config implies.
* The paper config runs end to end through Snakemake on the fake trees with the real ResNet-50,
  VGG-16 and ViT-B/16 (tests/data/paper-overlay.yaml shrinks images, epochs and players).
"""

from __future__ import annotations

import hashlib
import pickle
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import copy_repo
from pretrain_knowledge.data.images import IMAGENET_MEAN, load_task
from pretrain_knowledge.data.prepare import prepare_split
from pretrain_knowledge.data.sources import open_source
from pretrain_knowledge import layout
from pretrain_knowledge import testing as F
from pretrain_knowledge import models as M
from pretrain_knowledge import players as P
from pretrain_knowledge.data import ImageAnnotation, PartLocation
from pretrain_knowledge.game import PatchGrid
from pretrain_knowledge.players import PLAYER_RULES, SampleContext, sample_rng
from pretrain_knowledge.selection import choose_players
from pretrain_knowledge.spec import load_experiments

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "paper.yaml"
OVERLAY = REPO / "tests" / "data" / "paper-overlay.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@pytest.fixture(autouse=True)
def _two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# Fixture trees and the loaders
# ----------------------------------------------------------------------------------------------


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_fixture_trees_are_deterministic_and_seeded(tmp_path):
    F.write_fixtures(tmp_path / "a", classes=2, train_per_class=2, test_per_class=1, seed=3)
    F.write_fixtures(tmp_path / "b", classes=2, train_per_class=2, test_per_class=1, seed=3)
    F.write_fixtures(tmp_path / "c", classes=2, train_per_class=2, test_per_class=1, seed=4)
    a, b, c = (_tree_digest(tmp_path / x) for x in "abc")
    # CUB: 7 text files + 6 images; Cars: 3 .mat + 6 images; CIFAR-10: 5 + 1 batches + meta.
    assert a == b and len(a) == 29
    assert set(a) == set(c) and a != c


def test_cub200_tree_has_the_official_layout(tmp_path):
    tree = F.write_cub200(tmp_path, classes=3, train_per_class=2, test_per_class=2)
    base = tmp_path / "CUB_200_2011"
    for name in ("images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt",
                 "bounding_boxes.txt", "parts/parts.txt", "parts/part_locs.txt"):
        assert (base / name).is_file(), name
    rows = [line.split() for line in (base / "parts" / "part_locs.txt").read_text().splitlines()]
    assert len(rows) == 12 * 15 and all(len(r) == 5 for r in rows)  # every image lists 15 parts
    assert (base / "parts" / "parts.txt").read_text().splitlines()[1] == "2 beak"
    first = tree.images[0]
    assert (base / "images" / first.path).is_file() and first.path.startswith("001.Fake_bird_1/")
    box = (base / "bounding_boxes.txt").read_text().splitlines()[0].split()
    x0, y0, x1, y1 = first.box
    assert [float(v) for v in box[1:]] == [x0, y0, x1 - x0, y1 - y0]  # x y width height


@pytest.mark.parametrize("size", [32, 224])
def test_cub200_loader_labels_split_boxes_and_parts_after_resizing(tmp_path, size):
    tree = F.write_cub200(tmp_path, classes=3, train_per_class=3, test_per_class=2, seed=1)
    for train in (True, False):
        truth = tree.split(train)
        loaded = prepare_split(open_source("cub200", "train" if train else "test", tmp_path), image_size=size)
        assert loaded.class_names == tree.class_names
        assert loaded.labels.tolist() == [im.label for im in truth]
        assert loaded.images.shape == (len(truth), 3, size, size)
        assert loaded.part_names == F.CUB_PARTS
        for k, im in enumerate(truth):
            sx, sy = size / im.width, size / im.height
            x0, y0, x1, y1 = im.box
            assert loaded.boxes[k].tolist() == pytest.approx([x0 * sx, y0 * sy, x1 * sx, y1 * sy], abs=1e-4)
            for p, (x, y, visible) in enumerate(im.parts):
                got = loaded.parts[k, p].tolist()
                assert bool(got[2]) == visible
                if visible:
                    assert got[:2] == pytest.approx([x * sx, y * sy], abs=1e-4)


def test_stanford_cars_tree_is_what_torchvision_reads(tmp_path):
    import torchvision.datasets as tvd

    tree = F.write_stanford_cars(tmp_path, classes=3, train_per_class=2, test_per_class=2, seed=2)
    for split, train in (("train", True), ("test", False)):
        truth = tree.split(train)
        ds = tvd.StanfordCars(str(tmp_path), split=split)
        assert ds.classes == list(tree.class_names)
        assert [Path(p).name for p, _ in ds._samples] == [Path(im.path).name for im in truth]
        assert [c for _, c in ds._samples] == [im.label for im in truth]
        image, label = ds[1]
        assert image.size == (truth[1].width, truth[1].height) and label == truth[1].label
        loaded = prepare_split(open_source("stanford_cars", split, tmp_path), image_size=64)
        assert loaded.labels.tolist() == [im.label for im in truth]
        for k, im in enumerate(truth):
            sx, sy = 64 / im.width, 64 / im.height
            x0, y0, x1, y1 = im.box
            assert loaded.boxes[k].tolist() == pytest.approx([x0 * sx, y0 * sy, x1 * sx, y1 * sy], abs=1e-4)


def test_cifar10_batches_match_their_pickles(tmp_path):
    tree = F.write_cifar10(tmp_path, classes=3, train_per_class=4, test_per_class=2, seed=5)
    folder = tmp_path / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    )
    with open(folder / "batches.meta", "rb") as fh:
        assert pickle.load(fh, encoding="latin1")["label_names"][:3] == ["airplane", "automobile", "bird"]
    pixels, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(folder / name, "rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
        pixels.append(entry["data"])
        labels += entry["labels"]
    expected = np.concatenate(pixels).reshape(-1, 3, 32, 32)
    raw = open_source("cifar10", "train", tmp_path)
    assert raw.labels.tolist() == labels == [im.label for im in tree.split(True)]
    decoded = raw.decode(np.arange(len(raw))).images
    assert torch.equal(decoded, torch.from_numpy(expected))
    test = prepare_split(open_source("cifar10", "test", tmp_path), image_size=224, normalization="imagenet")
    assert test.images.shape == (6, 3, 224, 224) and test.boxes is None and test.mean == IMAGENET_MEAN


def test_make_fixtures_command(tmp_path):
    from pretrain_knowledge.cli import main

    assert main(["make-fixtures", "--out", str(tmp_path), "--datasets", "cub200", "cifar10",
                 "--classes", "2", "--train-per-class", "1", "--test-per-class", "1",
                 "--weights", "resnet18"]) == 0
    assert (tmp_path / "cub200" / "CUB_200_2011" / "images.txt").is_file()
    assert (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").is_file()
    assert not (tmp_path / "stanford_cars").exists()
    state = torch.load(tmp_path / "weights" / "resnet18.pth", weights_only=True)
    import torchvision.models as tvm

    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in tvm.resnet18().state_dict().items()}
    assert state["bn1.running_var"].ne(1).any()  # BatchNorm statistics calibrated, not left at init


# ----------------------------------------------------------------------------------------------
# Player rules
# ----------------------------------------------------------------------------------------------


def _coverage(grid: PatchGrid, box) -> dict[int, float]:
    """Share of each patch's area inside the box, patch by patch (plain loops)."""
    x0, y0, x1, y1 = box
    p = grid.patch_size
    out = {}
    for row in range(grid.n_rows):
        for col in range(grid.n_cols):
            w = max(0.0, min((col + 1) * p, x1) - max(col * p, x0))
            h = max(0.0, min((row + 1) * p, y1) - max(row * p, y0))
            out[row * grid.n_cols + col] = w * h / (p * p)
    return out


def _context(box=None, parts=(), index=0) -> SampleContext:
    return SampleContext(
        sample_id=0,
        dataset_index=index,
        label=0,
        image=torch.zeros(3, 224, 224, dtype=torch.uint8),
        annotation=ImageAnnotation(box=box, parts=tuple(parts)),
    )


def test_rules_are_registered_for_the_selection_stage():
    assert {"central", "bbox", "parts"} <= set(PLAYER_RULES)
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    rule = schema["$defs"]["PlayersSpec"]["properties"]["rule"]
    assert set(rule["enum"]) == set(PLAYER_RULES)


def test_bbox_players_lie_in_the_box_and_are_deterministic():
    grid = PatchGrid(224, 224, 32)
    box = (40.0, 70.0, 200.0, 180.0)
    cover = _coverage(grid, box)
    inside = {pid for pid, c in cover.items() if c >= 0.5}
    draws = set()
    for index in range(20):
        ids = PLAYER_RULES["bbox"]()(grid, 10, _context(box, index=index), sample_rng(0, index))
        assert len(set(ids)) == 10 and set(ids) <= inside
        again = PLAYER_RULES["bbox"]()(grid, 10, _context(box, index=index), sample_rng(0, index))
        assert list(again) == list(ids)
        draws.add(tuple(sorted(ids)))
    assert len(draws) > 10  # a draw from 15 patches, not a fixed pick
    strict = P.BoxRule(min_overlap=1.0)(grid, 4, _context(box), sample_rng(0, 0))
    assert all(cover[pid] == 1.0 for pid in strict)


def test_bbox_players_top_up_a_small_box_with_its_nearest_patches():
    grid = PatchGrid(64, 64, 8)
    box = (20.0, 20.0, 30.0, 30.0)  # covers patch (2, 2) fully, parts of its neighbours
    ids = P.BoxRule()(grid, 5, _context(box), sample_rng(0, 0))
    assert 2 * 8 + 2 in ids and len(set(ids)) == 5
    centre = np.array([25.0, 25.0])
    dist = {pid: np.linalg.norm((np.array([pid % 8, pid // 8]) + 0.5) * 8 - centre) for pid in range(64)}
    others = sorted(dist[pid] for pid in range(64) if pid not in ids)
    assert max(dist[pid] for pid in ids) <= others[0] + 1e-9  # nothing nearer was left out
    tiny = P.BoxRule()(grid, 1, _context((33.0, 9.0, 34.0, 10.0)), sample_rng(0, 0))
    assert tiny == [1 * 8 + 4]  # the patch holding the centre of a box smaller than a patch


def test_parts_players_cover_the_visible_parts_then_the_box():
    grid = PatchGrid(224, 224, 32)
    box = (30.0, 30.0, 190.0, 200.0)
    parts = [
        PartLocation("beak", 100.0, 40.0, True),
        PartLocation("crown", 110.0, 50.0, True),  # same patch as the beak: one player
        PartLocation("left eye", 0.0, 0.0, False),  # invisible: ignored
        PartLocation("tail", 180.0, 190.0, True),
        PartLocation("belly", 60.5, 130.2, True),
    ]
    under = {int(y // 32) * 7 + int(x // 32) for _, x, y, v in [(p.name, p.x, p.y, p.visible) for p in parts] if v}
    assert len(under) == 3
    cover = _coverage(grid, box)
    for index in range(10):
        ids = P.PartsRule()(grid, 10, _context(box, parts, index), sample_rng(1, index))
        assert len(set(ids)) == 10 and under <= set(ids)
        assert all(cover[pid] >= 0.5 for pid in set(ids) - under)
        assert ids == P.PartsRule()(grid, 10, _context(box, parts, index), sample_rng(1, index))
    # More part patches than players: all players are part patches.
    many = [PartLocation(f"p{i}", 16.0 + 32 * (i % 7), 16.0 + 32 * (i // 7), True) for i in range(14)]
    ids = P.PartsRule()(grid, 10, _context(box, many), sample_rng(0, 0))
    assert set(ids) <= {int(p.y // 32) * 7 + int(p.x // 32) for p in many} and len(set(ids)) == 10


def test_player_rules_on_the_fixture_trees_after_resizing(tmp_path):
    """The rules, through choose_players, on annotations the real loaders produced."""
    F.write_fixtures(tmp_path, ("cub200", "stanford_cars"), classes=2, train_per_class=1, test_per_class=3)
    for source, rule in (("cub200", "parts"), ("stanford_cars", "bbox")):
        test = prepare_split(open_source(source, "test", tmp_path / source), image_size=64)
        grid = PatchGrid(64, 64, 8)
        contexts = [
            SampleContext(k, k, int(test.labels[k]), test.images[k], test.annotation(k)) for k in range(len(test))
        ]
        players = choose_players(grid, 6, contexts, seed=7, rule=rule, options={"region": 0.6, "min_overlap": 0.5})
        assert torch.equal(players.patch_ids, choose_players(grid, 6, contexts, 7, rule, {}).patch_ids)
        for k, ids in enumerate(players.patch_ids.tolist()):
            assert ids == sorted(ids) and len(set(ids)) == 6
            cover = _coverage(grid, test.boxes[k].tolist())
            under = set()
            if rule == "parts":
                for x, y, v in test.parts[k].tolist():
                    if v:
                        under.add(int(y // 8) * 8 + int(x // 8))
                assert under <= set(ids) or set(ids) <= under
            assert all(cover[pid] >= 0.5 for pid in set(ids) - under)


def test_rule_errors_name_the_fix():
    grid = PatchGrid(32, 32, 8)
    with pytest.raises(ValueError, match="needs bounding boxes.*central"):
        P.BoxRule()(grid, 2, _context(None), sample_rng(0, 0))
    with pytest.raises(ValueError, match="part keypoints or bounding boxes"):
        P.PartsRule()(grid, 2, _context(None), sample_rng(0, 0))
    with pytest.raises(ValueError, match=r"min_overlp: no player rule takes this option\. Did you mean 'min_overlap'"):
        choose_players(grid, 2, [_context((0, 0, 32, 32))], 0, "bbox", {"min_overlp": 0.5})
    with pytest.raises(ValueError, match="min_overlap must lie in"):
        P.BoxRule(min_overlap=0)(grid, 2, _context((0, 0, 32, 32)), sample_rng(0, 0))


# ----------------------------------------------------------------------------------------------
# ImageNet weights from a local file
# ----------------------------------------------------------------------------------------------


def test_resnet50_weights_load_from_a_local_file(tmp_path):
    import torchvision.models as tvm

    path = F.write_random_weights("resnet50", tmp_path / "resnet50-11ad3fa6.pth", seed=11)
    reference = tvm.resnet50()
    reference.load_state_dict(torch.load(path, weights_only=True))
    reference.eval()
    torch.manual_seed(99)  # another init: equality below can only come from the file
    model = M.build_model("resnet50", 1000, image_size=64, weights=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    downstream = M.build_model("resnet50", 200, image_size=224, weights=path)
    assert downstream.num_classes == 200
    assert torch.equal(downstream.backbone.layer3[2].conv2.weight, reference.layer3[2].conv2.weight)
    # Files saved before PyTorch 0.4.1 have no BatchNorm batch counters; they load too.
    state = {k: v for k, v in torch.load(path, weights_only=True).items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "legacy.pth")
    legacy = M.build_model("resnet50", 1000, image_size=64, weights=tmp_path / "legacy.pth").eval()
    with torch.no_grad():
        assert torch.equal(legacy(x), reference(x))
    path.unlink()


def test_pretrain_stage_stores_the_file_weights_as_epoch_0(tmp_path):
    from pretrain_knowledge.training import TrainConfig, load_classifier, train

    path = F.write_random_weights("resnet50", tmp_path / "w.pth", seed=5)
    train(TrainConfig(mode="pretrain", arch="resnet50", epochs=0, weights=str(path)), None, None, tmp_path / "ckpt")
    model = load_classifier(tmp_path / "ckpt" / "epoch-000.pt")
    state = torch.load(path, weights_only=True)
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.head.weight, state["fc.weight"])  # the ImageNet head, kept


def test_wrong_architecture_and_missing_weights_are_clear_errors(tmp_path):
    path = F.write_random_weights("resnet18", tmp_path / "resnet18.pth")
    for arch in ("resnet50", "vit_b_16"):
        with pytest.raises(M.WeightsError) as err:
            M.build_model(arch, 10, image_size=224, weights=path)
        assert str(path) in str(err.value) and f"does not fit architecture {arch}" in str(err.value)
    missing = tmp_path / "vgg16-397923af.pth"
    with pytest.raises(M.WeightsError) as err:
        M.build_model("vgg16", 10, image_size=224, weights=missing)
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)


def test_vit_weights_at_another_resolution_keep_every_weight_but_positions():
    from pretrain_knowledge.training import _resize_vit

    torch.manual_seed(0)
    model = M.build_model("vit_b_16", 5, image_size=224)
    small = _resize_vit(model, 32)
    assert small.image_size == 32 and small.backbone.encoder.pos_embedding.shape == (1, 5, 768)
    # The class token's position is kept; the 14×14 patch grid is interpolated down to 2×2.
    assert torch.equal(small.backbone.encoder.pos_embedding[:, 0], model.backbone.encoder.pos_embedding[:, 0])
    assert torch.equal(small.backbone.conv_proj.weight, model.backbone.conv_proj.weight)
    assert torch.equal(small.head.weight, model.head.weight)
    with torch.no_grad():
        assert torch.isfinite(small.eval()(torch.randn(2, 3, 32, 32))).all()


# ----------------------------------------------------------------------------------------------
# The paper config and its DAG
# ----------------------------------------------------------------------------------------------


def _paper() -> dict:
    return yaml.safe_load(PAPER.read_text())


def _merged(*files: Path) -> dict:
    """config/config.yaml with the given files merged over it, as Snakemake merges --configfile."""

    def merge(base, over):
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for path in files:
        config = merge(config, yaml.safe_load(path.read_text()))
    return config


def test_paper_config_is_the_papers_grid():
    config = _paper()
    grid = {(d, a) for e in config["experiments"] for d in e["datasets"] for a in e["architectures"]}
    archs = ("resnet50", "vgg16", "vit_b_16", "vit_s_16")
    assert grid == {(d, a) for d in ("cifar10", "cub200", "stanford_cars") for a in archs}
    rules = {"cifar10": "central", "cub200": "parts", "stanford_cars": "bbox"}
    for name, dataset in config["datasets"].items():
        assert dataset["source"] == name and dataset["image_size"] == 224
        assert dataset["normalization"] == "imagenet" and dataset["channels"] == 3
        assert dataset["overrides"]["selection"]["players"]["rule"] == rules[name]
    for name, arch in config["architectures"].items():
        # torchvision's V1 weights, but ViT-S/16: a timm file (torchvision has none).
        assert arch["model"] == name
        assert arch["weights"] == ("imagenet" if name != "vit_s_16" else "data/weights/vit_small_patch16_224.augreg_in21k_ft_in1k.bin")
    assert config["selection"]["per_class"] == 2 and config["selection"]["players"]["n"] == 10
    assert 224 % config["selection"]["players"]["patch_size"] == 0
    # Every training mode's hyper-parameters come with a comment giving the reasons.
    text = PAPER.read_text()
    for mode in ("probe", "finetune", "scratch"):
        body = re.search(rf"\n  {mode}:\n((?:    .*\n)+)", text).group(1).splitlines()
        comment = [line for line in body if line.strip().startswith("#")]
        assert body[0].strip().startswith("#") and len(comment) >= 4, f"training.{mode} lacks its reasons"
        keys = {line.split(":")[0].strip() for line in body if not line.strip().startswith("#")}
        assert {"epochs", "optimizer", "lr", "augment", "schedule"} <= keys, mode


def test_paper_and_overlay_validate_against_the_schema():
    from snakemake.utils import validate

    schema = REPO / "workflow" / "schemas" / "config.schema.yaml"
    for files in ((PAPER,), (PAPER, OVERLAY)):
        config = _merged(*files)
        validate(config, str(schema))
        assert config["selection"]["players"]["rule"] == "central"  # per-dataset rules come from overrides


def _expected_jobs(config: dict) -> Counter:
    """Job counts per rule from the spec's expansion: one games and one sparsify job per explained
    (model, checkpoint, shard), one job per experiment for every other rule."""
    jobs: Counter = Counter()
    for e in load_experiments(config).values():
        explained = sum(len(e.explained_epochs(model)) for model in e.models)
        jobs["games"] += explained * e.extraction.shards
        jobs["sparsify"] += explained * e.extraction.shards
        for rule in (*e.modes, "metrics", "select", "knowledge", "sensitivity",
                     *(f"figure_{f}" for f in layout.EXPERIMENT_FIGURES)):
            jobs[rule] += 1
        jobs["prepare_data"] += 1 if e.weights else 2
        variants = e.variants()
        jobs["sensitivity_sparsify"] += sum(not v.startswith("salience=") for v in variants)
        jobs["sensitivity_measures"] += len(variants)
    for rule in ("claims", "all", *(f"figure_{f}" for f in layout.GLOBAL_FIGURES)):
        jobs[rule] = 1
    return jobs


@pytest.mark.slow
def test_dry_run_builds_the_full_paper_dag_quickly(tmp_path):
    workdir = copy_repo(tmp_path)
    start = time.perf_counter()
    proc = subprocess.run([*SNAKEMAKE, "-n", "--configfile", "config/paper.yaml", "--quiet", "rules"],
                          cwd=workdir, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = Counter()
    for line in proc.stdout.splitlines():
        match = re.fullmatch(r"([a-z_]+)\s+(\d+)", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    expected = _expected_jobs(_merged(PAPER))  # as Snakemake merges it over config/config.yaml
    assert counts == expected
    # Four architectures. CIFAR: pretrain + 2 × 9 checkpoints + 2 controls + the converged
    # scratch baseline; CUB, Cars: (1 + 2 × 11 + 2 + 1) × 4 shards.
    assert expected["games"] == 4 * 22 + 8 * 26 * 4
    print(f"\npaper DAG: {sum(counts.values())} jobs in {seconds:.1f}s: {dict(sorted(counts.items()))}")


# ----------------------------------------------------------------------------------------------
# End to end on the fake trees with the real architectures
# ----------------------------------------------------------------------------------------------

E2E = {
    "cub200-vit_s_16-s0": ("cub200", "vit_s_16", "parts"),
}


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory: pytest.TempPathFactory):
    workdir = copy_repo(tmp_path_factory.mktemp("paper"))
    make = [sys.executable, "-m", "pretrain_knowledge", "make-fixtures", "--out", "fixtures", "--classes", "2",
            "--train-per-class", "24", "--test-per-class", "4", "--weights", "vit_s_16"]
    env = {"PYTHONPATH": str(workdir / "src")}
    proc = subprocess.run(make, cwd=workdir, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = time.perf_counter()
    proc = subprocess.run(
        [*SNAKEMAKE, "--cores", "2", "--configfile", "config/paper.yaml", "tests/data/paper-overlay.yaml"],
        cwd=workdir, capture_output=True, text=True, timeout=1800,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, f"paper workflow failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    print(f"\npaper overlay run: {seconds:.0f}s")
    yield {"dir": workdir, "seconds": seconds}
    shutil.rmtree(workdir, ignore_errors=True)  # ~12 GB of VGG/ViT checkpoints


@pytest.mark.slow
def test_paper_run_writes_every_table_and_figure(paper_run):
    root = paper_run["dir"] / "results"
    for experiment in E2E:
        metrics = pd.read_parquet(root / experiment / "metrics.parquet")
        # ImageNet weights are loaded, not trained: pretrain has no metrics rows.
        assert set(metrics["model"].astype(str)) == {"probe", "finetune", "scratch", "scratch_converged"}
        final = metrics[metrics["split"].astype(str) == "test"].groupby("model", observed=True)["epoch"].max()
        assert final.to_dict() == {"probe": 3, "finetune": 3, "scratch": 3, "scratch_converged": 4}
        # The lab's selection rule: correct under probe and finetune; scratch's outcome is a covariate.
        samples = pd.read_parquet(root / experiment / "selection" / "samples.parquet")
        assert samples["correct_probe"].all() and samples["correct_finetune"].all()
        assert {"correct_scratch", "correct_scratch_converged"} <= set(samples.columns)
        for table in ("decomposition", "learnability", "similarity"):
            assert len(pd.read_parquet(root / experiment / "knowledge" / f"{table}.parquet")) > 0
        for figure in ("knowledge", "similarity", "training", "examples"):
            png = root / experiment / "figures" / f"{figure}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    learnability = root / "figures" / "learnability.png"
    assert learnability.stat().st_size > 5000


@pytest.mark.slow
def test_paper_run_loaded_the_weights_files_into_the_real_architectures(paper_run):
    from pretrain_knowledge.training import load_checkpoint

    for experiment, (_, arch, _) in E2E.items():
        results = paper_run["dir"] / "results" / experiment
        weights = torch.load(paper_run["dir"] / "fixtures" / "weights" / f"{arch}.pth", weights_only=True)
        if arch == "vit_s_16":  # timm's layout, under torchvision's names once loaded
            weights = M.timm_vit_to_torchvision(weights)
        pretrain = load_checkpoint(results / "checkpoints" / "pretrain" / "epoch-000.pt")
        assert pretrain.config["model"] == {"arch": arch, "num_classes": 1000, "in_channels": 3, "image_size": 224}
        backbone = {k.removeprefix("backbone."): v for k, v in pretrain.model_state.items() if k.startswith("backbone.")}
        shared = set(backbone) & set(weights)
        assert len(shared) >= len(weights) - 2  # all but the head (split off as head.*)
        assert all(torch.equal(backbone[k], weights[k]) for k in shared)
        finetune = load_checkpoint(results / "checkpoints" / "finetune" / "epoch-000.pt")
        assert finetune.config["model"]["arch"] == arch and finetune.config["model"]["num_classes"] == 2
        # ViT's position embeddings were resized to the 32-px overlay images; CNNs take any size.
        assert finetune.config["model"]["image_size"] == (32 if arch.startswith("vit") else 224)


@pytest.mark.slow
def test_paper_run_players_follow_each_datasets_rule(paper_run):
    from pretrain_knowledge.selection import Selection

    overlay = yaml.safe_load(OVERLAY.read_text())
    n, patch = overlay["selection"]["players"]["n"], overlay["selection"]["players"]["patch_size"]
    for experiment, (dataset, _, rule) in E2E.items():
        results = paper_run["dir"] / "results" / experiment
        selection = Selection.load(results / "selection" / "selection.pt")
        test = load_task(results / "data" / "downstream.pt").test
        grid = selection.players.grid
        assert selection.rule == rule and (grid.height, grid.patch_size) == (32, patch)
        assert selection.n_samples == 2 * 2 and selection.players.patch_ids.shape == (4, n)
        for k, index in enumerate(selection.dataset_index.tolist()):
            ids = set(selection.players.patch_ids[k].tolist())
            assert len(ids) == n
            if rule == "central":
                continue  # a 4×4 grid is all central at region 0.6 (tested in test_workflow)
            cover = _coverage(grid, test.boxes[index].tolist())
            under = set()
            if rule == "parts":
                under = {int(y // patch) * grid.n_cols + int(x // patch)
                         for x, y, v in test.parts[index].tolist() if v}
                assert under <= ids or ids <= under
            assert all(cover[pid] >= 0.5 for pid in ids - under), (experiment, k)


@pytest.mark.slow
def test_paper_run_interactions_match_their_games(paper_run):
    from pretrain_knowledge.selection import Selection

    for experiment in E2E:
        results = paper_run["dir"] / "results" / experiment
        frame = pd.read_parquet(results / "interactions")
        assert set(frame["model"].astype(str)) == {"pretrain", "finetune", "scratch", "scratch_converged"}
        assert frame["matching_error"].max() < 1e-6 and np.isfinite(frame["value"]).all()
        assert set(frame["coalition"]) == set(range(16)) and (frame["image_height"] == 32).all()
        players = Selection.load(results / "selection" / "selection.pt").players.patch_ids
        for sample_id, ids in frame.groupby("sample_id")["players"].first().items():
            assert list(ids) == players[sample_id].tolist()
