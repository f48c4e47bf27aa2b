"""Cost of config/paper.yaml: counted forward passes per experiment, measured throughput, GPU-hours.

    .venv/bin/python benchmarks/paper_cost.py [--measure] [--config config/paper.yaml]

Counts come from the config itself (epochs, checkpoints, samples, players), merged over
config/config.yaml and its per-dataset and per-architecture overrides as the workflow merges
them, with the official split sizes of each dataset. A training image costs 3 forward-pass
equivalents (forward + backward), an evaluated or masked image 1, a probe training image 1 (its
backbone is frozen). ``--measure`` times fp32 forward passes of each architecture at 224² and the LP
sparsification of a batch of n = 10 games, on the GPU when there is one, else on the CPU.

GPU throughputs are *estimates* for one A100: ResNet-50's training rate is NVIDIA's published
DGX-A100 figure (DeepLearningExamples, ResNet-50 v1.5, 1 GPU: 2470 img/s with AMP, 938 img/s
TF32) halved for this project's simpler input pipeline; fp32/TF32 inference (extraction) is 3×
the TF32 training rate (no backward), AMP inference twice that; VGG-16 and ViT-B/16 are scaled by their multiply-accumulates relative to
ResNet-50 (torchvision: 4.09, 15.47, 17.56 GFLOPS), ViT's fp32 matmuls (no TF32 by default in
PyTorch) at a further 1/2. Replace them with ``--gpu-rates`` once measured.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

SPLITS = {  # official train / test images and classes
    "cifar10": (50_000, 10_000, 10),
    "cub200": (5_994, 5_794, 200),
    "stanford_cars": (8_144, 8_041, 196),
}
GMACS = {"resnet50": 4.09, "vgg16": 15.47, "vit_b_16": 17.56}
_R50_TRAIN_AMP = 2470 / 2
_R50_INFER = 3 * 938
GPU_RATES = {  # img/s on one A100: (training with AMP, inference with AMP, extraction in fp32/TF32)
    arch: (
        _R50_TRAIN_AMP * GMACS["resnet50"] / macs,
        2 * _R50_INFER * GMACS["resnet50"] / macs,
        _R50_INFER * GMACS["resnet50"] / macs * (0.5 if arch == "vit_b_16" else 1.0),
    )
    for arch, macs in GMACS.items()
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: Path) -> dict:
    return _merge(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()), yaml.safe_load(path.read_text()))


@dataclass(frozen=True)
class Passes:
    """Forward-pass equivalents of one experiment, by how they run."""

    experiment: str
    arch: str
    train: int
    """Fine-tuning and scratch training images × 3 (forward + backward), with AMP."""
    infer: int
    """Probe training (frozen backbone), every evaluation and the selection, with AMP."""
    extract: int
    """Masked images of every explained checkpoint, in fp32."""
    samples: int
    checkpoints: int

    def gpu_hours(self, rates: tuple[float, float, float]) -> float:
        train, infer, extract = rates
        return (self.train / train + self.infer / infer + self.extract / extract) / 3600


def count(config: dict) -> list[Passes]:
    out = []
    for grid in config["experiments"]:
        for dataset in grid["datasets"]:
            for arch in grid["architectures"]:
                for seed in grid.get("seeds", [0]):
                    settings = {k: config[k] for k in ("training", "selection", "extraction")}
                    for source in (config["datasets"][dataset], config["architectures"][arch]):
                        settings = _merge(settings, {k: v for k, v in source.get("overrides", {}).items() if k in settings})
                    n_train, n_test, classes = SPLITS[config["datasets"][dataset]["source"]]
                    t = settings["training"]
                    infer = n_train + (t["probe"]["epochs"] + 1) * n_test + t["probe"]["epochs"] * n_train
                    train = 0
                    explained = 1  # the pre-trained model, through its probe
                    for mode in ("finetune", "scratch"):
                        epochs = t[mode]["epochs"]
                        train += 3 * epochs * n_train
                        infer += n_train + (epochs + 1) * n_test
                        wanted = {epochs + 1 + e if e < 0 else e for e in settings["extraction"]["checkpoints"]}
                        explained += len(wanted | {epochs})
                    infer += 3 * n_test  # selection classifies the test set with the three final models
                    samples = classes * settings["selection"]["per_class"]
                    games = samples * 2 ** settings["selection"]["players"]["n"]
                    out.append(Passes(f"{dataset}-{arch}-s{seed}", arch, train, infer, games * explained, samples, explained))
    return out


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
        model = build_model(arch, 200, image_size=224).eval().to(device)
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
    print("| experiment | samples | explained checkpoints | training passes (M) | inference passes (M) "
          "| masked images (M) | A100 GPU-hours (estimate) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    total = 0.0
    for r in rows:
        hours = r.gpu_hours(rates[r.arch])
        total += hours
        print(f"| {r.experiment} | {r.samples} | {r.checkpoints} | {r.train / 1e6:.2f} | {r.infer / 1e6:.2f} "
              f"| {r.extract / 1e6:.2f} | {hours:.1f} |")
    print(f"| **total** | | | {sum(r.train for r in rows) / 1e6:.1f} | {sum(r.infer for r in rows) / 1e6:.1f} "
          f"| {sum(r.extract for r in rows) / 1e6:.1f} | **{total:.0f}** |")
    print("\nA100 rates used (img/s: train AMP, inference AMP, extraction fp32):")
    for arch, (a, b, c) in rates.items():
        print(f"  {arch}: {a:.0f}, {b:.0f}, {c:.0f}")
    if args.measure:
        device = _device()
        rates = measure_forward()
        print(f"\nmeasured on {device} (fp32 forward, 224², batch {256 if device == 'cuda' else 4}):")
        for arch, rate in rates.items():
            print(f"  {arch}: {rate:.2f} img/s")
        seconds = measure_lp()
        print(f"LP sparsification of 16 games, n = 10, on {device}: {seconds:.1f} s")


if __name__ == "__main__":
    main()
