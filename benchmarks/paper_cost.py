"""Cost of config/paper.yaml: counted images per experiment, GPU-hours and disk.

    .venv/bin/python benchmarks/paper_cost.py [--measure] [--config config/paper.yaml]

Counts come from the experiment spec (pretrain_knowledge.spec: the config merged over
config/config.yaml with every override, the controls and the converged scratch baseline) and the
official split sizes of each dataset:

* training images: every epoch of every mode that trains a whole network (finetune, scratch,
  scratch_b, scratch_converged), forward and backward, timed at the training rate;
* inference images: every frozen-backbone epoch of the probes (probe, random_probe), every
  evaluation (the training split before training, the test split after every epoch), the
  selection (the test split under every final downstream model), at the inference rate;
* masked images: samples × 2^n per explained checkpoint, at the extraction rate (fp32).

A training image is *one* image at a rate that already includes its backward pass (an earlier
version counted it as 3 forward passes and divided by that rate: 3× too many hours).

Disk: every kept checkpoint is a full fp32 state dict (parameters counted on the real torchvision
architectures), plus the games and interaction shards (bytes per game measured on the default
run at n = 10: 11.8 kB of games, 51.8 kB of interactions). ``training.keep: explained`` keeps only
the checkpoints later stages read.

GPU throughputs are *estimates* for one A100: ResNet-50's training rate is NVIDIA's published
DGX-A100 figure (DeepLearningExamples, ResNet-50 v1.5, 1 GPU: 2470 img/s with AMP, 938 img/s
TF32) halved for this project's simpler input pipeline; fp32/TF32 inference (extraction) is 3×
the TF32 training rate (no backward), AMP inference twice that; the other architectures are
scaled by their multiply-accumulates relative to ResNet-50 (torchvision: 4.09, 15.47, 17.56;
ViT-S/16 4.61 GFLOPS), ViTs' fp32 matmuls (no TF32 by default in PyTorch) at a further 1/2.
Replace them with ``--gpu-rates`` once measured (``--measure`` on a GPU node).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pretrain_knowledge.spec import Experiment, downstream_classes, load_experiments  # noqa: E402
from pretrain_knowledge.typed import merge  # noqa: E402

SPLITS = {  # official train / test images
    "cifar10": (50_000, 10_000),
    "cub200": (5_994, 5_794),
    "stanford_cars": (8_144, 8_041),
}
GMACS = {"resnet50": 4.09, "vgg16": 15.47, "vit_b_16": 17.56, "vit_s_16": 4.61}
GAME_BYTES = 11_800
INTERACTION_BYTES = 51_800
_R50_TRAIN_AMP = 2470 / 2
_R50_INFER = 3 * 938
GPU_RATES = {  # img/s on one A100: (training with AMP, inference with AMP, extraction in fp32/TF32)
    arch: (
        _R50_TRAIN_AMP * GMACS["resnet50"] / macs,
        2 * _R50_INFER * GMACS["resnet50"] / macs,
        _R50_INFER * GMACS["resnet50"] / macs * (0.5 if arch.startswith("vit") else 1.0),
    )
    for arch, macs in GMACS.items()
}
FULL_TRAINING = ("finetune", "scratch", "scratch_b", "scratch_converged")
FROZEN = ("probe", "random_probe")


def load_config(path: Path) -> dict:
    return merge(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()), yaml.safe_load(path.read_text()))


@dataclass(frozen=True)
class Cost:
    """Images of one experiment by how they run, and what it stores."""

    experiment: str
    arch: str
    train: int
    infer: int
    extract: int
    samples: int
    checkpoints: int
    """Explained checkpoints (one game per sample each)."""
    kept: int
    """Checkpoint files kept on disk."""
    checkpoint_bytes: int
    shard_bytes: int

    def gpu_hours(self, rates: tuple[float, float, float]) -> float:
        train, infer, extract = rates
        return (self.train / train + self.infer / infer + self.extract / extract) / 3600

    @property
    def disk_bytes(self) -> int:
        return self.checkpoint_bytes + self.shard_bytes


@lru_cache(maxsize=None)
def parameters(arch: str, classes: int) -> int:
    """Parameters of the downstream model (its checkpoint takes 4 bytes each)."""
    from pretrain_knowledge.models import build_model

    return sum(p.numel() for p in build_model(arch, classes, image_size=224).parameters())


def cost(e: Experiment, classes: int) -> Cost:
    n_train, n_test = SPLITS[e.dataset.source]
    downstream = [m for m in e.modes if m != "pretrain"]
    train = sum(e.epochs(m) * n_train for m in e.modes if m in FULL_TRAINING)
    infer = sum(e.epochs(m) * n_train for m in e.modes if m in FROZEN)
    infer += sum(n_train + (e.epochs(m) + 1) * n_test for m in downstream)  # evaluations
    infer += n_test * len(downstream)  # the selection classifies the test set under every final model
    samples = classes * e.selection.per_class
    explained = sum(len(e.explained_epochs(model)) for model in e.models)
    games = samples * explained
    keep = e.training.keep == "explained"
    kept = 1 + sum(len(e.kept_epochs(m)) if keep else e.epochs(m) + 1 for m in downstream)  # 1: the ImageNet weights
    return Cost(
        experiment=e.name,
        arch=e.architecture.model,
        train=train,
        infer=infer,
        extract=games * 2**e.selection.players.n,
        samples=samples,
        checkpoints=explained,
        kept=kept,
        checkpoint_bytes=4 * parameters(e.architecture.model, classes) * kept,
        shard_bytes=games * (GAME_BYTES + INTERACTION_BYTES),
    )


def count(config: dict) -> list[Cost]:
    experiments = load_experiments(config).values()
    text = sorted(e.name for e in experiments if e.modality == "text")
    if text:  # no measured or published BERT rates to count them with
        raise SystemExit(f"paper_cost.py counts image experiments only; {', '.join(text)} are text experiments")
    return [cost(e, int(downstream_classes(e.dataset))) for e in experiments]


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure_forward(threads: int = 2, repeats: int = 2) -> dict[str, float]:
    """fp32 forward passes per second at 224² (eval mode), as extraction runs them.

    On the GPU when there is one (batch 256, extraction's batch size), else on the CPU (batch 4).
    """
    import torch

    from pretrain_knowledge.models import build_model

    torch.set_num_threads(threads)
    device = _device()
    batch = 256 if device == "cuda" else 4
    rates = {}
    for arch in GMACS:
        try:
            model = build_model(arch, 200, image_size=224).eval().to(device)
        except ValueError:  # an architecture this checkout does not have
            continue
        x = torch.randn(batch, 3, 224, 224, device=device)
        with torch.inference_mode():
            model(x)  # warm-up
            _sync()
            start = time.perf_counter()
            for _ in range(repeats):
                model(x)
            _sync()
        rates[arch] = batch * repeats / (time.perf_counter() - start)
    return rates


def measure_lp(games: int = 16, n: int = 10, threads: int = 2) -> float:
    """Seconds of the exact LP sparsification of a batch of n-player games (GPU when present)."""
    import torch

    from pretrain_knowledge.interactions import sparsify

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    size = 1 << n
    members = ((torch.arange(size)[:, None] >> torch.arange(n)) & 1).double()
    # Games with a few strong low-order interactions and noise, like real log-odds games.
    weights = torch.randn(games, n, generator=g, dtype=torch.float64)
    pairs = torch.randn(games, n, n, generator=g, dtype=torch.float64) * 0.3
    v = (members @ weights.T).T + torch.einsum("ti,bij,tj->bt", members, pairs, members)
    v = (v + 0.05 * torch.randn(games, size, generator=g, dtype=torch.float64)).to(_device())
    _sync()
    start = time.perf_counter()
    sparsify(v, 0.04, "lp")
    _sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    parser.add_argument("--measure", action="store_true", help="time forward passes and the LP (GPU when present, else CPU)")
    parser.add_argument("--gpu-rates", type=json.loads, default=None,
                        help='JSON {"resnet50": [train, infer, extract], ...} img/s, replacing the estimates')
    args = parser.parse_args()
    rates = {**GPU_RATES, **{k: tuple(v) for k, v in (args.gpu_rates or {}).items()}}
    rows = count(load_config(args.config))
    print("| experiment | samples | explained checkpoints | training images (M) | inference images (M) "
          "| masked images (M) | A100 GPU-hours (estimate) | checkpoints kept | disk (GB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    total = 0.0
    for r in rows:
        hours = r.gpu_hours(rates[r.arch])
        total += hours
        print(f"| {r.experiment} | {r.samples} | {r.checkpoints} | {r.train / 1e6:.2f} | {r.infer / 1e6:.2f} "
              f"| {r.extract / 1e6:.2f} | {hours:.1f} | {r.kept} | {r.disk_bytes / 1e9:.1f} |")
    print(f"| **total** | | | {sum(r.train for r in rows) / 1e6:.1f} | {sum(r.infer for r in rows) / 1e6:.1f} "
          f"| {sum(r.extract for r in rows) / 1e6:.1f} | **{total:.0f}** | {sum(r.kept for r in rows)} "
          f"| **{sum(r.disk_bytes for r in rows) / 1e9:.0f}** |")
    print("\nA100 rates used (img/s: train AMP, inference AMP, extraction fp32):")
    for arch, (a, b, c) in rates.items():
        print(f"  {arch}: {a:.0f}, {b:.0f}, {c:.0f}")
    if args.measure:
        device = _device()
        measured = measure_forward()
        print(f"\nmeasured on {device} (fp32 forward, 224², batch {256 if device == 'cuda' else 4}):")
        for arch, rate in measured.items():
            print(f"  {arch}: {rate:.2f} img/s")
        seconds = measure_lp()
        print(f"LP sparsification of 16 games, n = 10, on {device}: {seconds:.1f} s")


if __name__ == "__main__":
    main()
