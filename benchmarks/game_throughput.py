"""Game evaluation throughput against plain batched inference (goal: ratio ≥ 0.8).

The game feeds B · 2^n masked images to the model; building them must not be what limits the run.
Both sides see the same model, the same number of images and the same batch size; plain inference
reads its batches from images already in memory, so the ratio is the price of masking plus the
log-odds. Times are the best of ``repeats`` runs after one warm-up.

Importable standalone: ``sys.path.insert(0, "benchmarks"); from game_throughput import
throughput_rows``.

    .venv/bin/python benchmarks/game_throughput.py [--device cuda] [--repeats 3] [--no-resnet]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

try:
    from pretrain_knowledge.game import PatchGrid, Players, evaluate_games
except ModuleNotFoundError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from pretrain_knowledge.game import PatchGrid, Players, evaluate_games


def small_cnn(n_classes: int = 10) -> nn.Module:
    """A Fashion-MNIST-sized CNN (28×28×1), the project's default model scale."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, n_classes),
    )


def _resnet18(n_classes: int = 10) -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(num_classes=n_classes)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_times(fns: list[Callable[[], object]], device: torch.device, repeats: int) -> list[float]:
    """Best wall time of each function, run interleaved so CPU contention hits all alike."""
    for fn in fns:
        fn()  # warm-up: allocator, cuDNN/oneDNN algorithm choice
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for j, fn in enumerate(fns):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            best[j] = min(best[j], time.perf_counter() - t0)
    return best


class _Trivial(nn.Module):
    """Ten logits from a pixel mean: a model that costs nothing, to time masking alone."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(-1, 1, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(1, keepdim=True) * self.scale


def _plain_inference(model: nn.Module, images: torch.Tensor, batch_size: int) -> None:
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            model(images[start : start + batch_size])


def measure(
    name: str,
    model: nn.Module,
    image_shape: tuple[int, int, int],
    patch_size: int,
    n_images: int,
    n_players: int,
    batch_size: int,
    device: torch.device,
    repeats: int,
) -> dict:
    """One row: masked images/s of evaluate_games and images/s of plain inference, same load."""
    gen = torch.Generator().manual_seed(0)
    model = model.to(device).eval()
    c, h, w = image_shape
    images = torch.randn(n_images, c, h, w, generator=gen)
    labels = torch.randint(0, 10, (n_images,), generator=gen)
    grid = PatchGrid(h, w, patch_size)
    ids = torch.stack(
        [torch.randperm(grid.n_patches, generator=gen)[:n_players] for _ in range(n_images)]
    )
    players = Players(grid, ids)
    total = n_images << n_players
    plain_images = torch.randn(total, c, h, w, generator=gen).to(device)

    trivial = _Trivial().to(device)
    game_s, plain_s, mask_s = _best_times(
        [
            lambda: evaluate_games(model, images, labels, players, batch_size=batch_size),
            lambda: _plain_inference(model, plain_images, batch_size),
            lambda: evaluate_games(trivial, images, labels, players, batch_size=batch_size),
        ],
        device,
        repeats,
    )
    return {
        "model": name,
        "device": str(device),
        "input": f"{c}x{h}x{w}",
        "patch": patch_size,
        "images": n_images,
        "n_players": n_players,
        "masked_images": total,
        "batch_size": batch_size,
        "game_img_per_s": total / game_s,
        "plain_img_per_s": total / plain_s,
        "ratio": plain_s / game_s,
        "mask_overhead": mask_s / plain_s,
    }


def throughput_rows(device: str = "cpu", repeats: int = 3, resnet: bool = True) -> list[dict]:
    """Rows of the throughput table; sizes keep the CPU run under about a minute on 2 threads."""
    dev = torch.device(device)
    torch.manual_seed(0)
    on_gpu = dev.type == "cuda"
    rows = [
        measure(
            "small_cnn",
            small_cnn(),
            (1, 28, 28),
            4,
            16 if on_gpu else 2,
            10,
            1024 if on_gpu else 256,
            dev,
            repeats,
        ),
    ]
    if resnet:
        rows.append(
            measure(
                "resnet18",
                _resnet18(),
                (3, 64, 64),
                8,
                8 if on_gpu else 1,
                10 if on_gpu else 8,
                512 if on_gpu else 128,
                dev,
                repeats,
            )
        )
    return rows


def format_table(rows: list[dict]) -> str:
    cols = [
        "model",
        "device",
        "input",
        "n_players",
        "masked_images",
        "batch_size",
        "game_img_per_s",
        "plain_img_per_s",
        "ratio",
        "mask_overhead",
    ]
    cells = [[f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(wd) for c, wd in zip(cols, widths))]
    lines += ["  ".join(v.rjust(wd) for v, wd in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the CPU is shared)")
    parser.add_argument("--no-resnet", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = throughput_rows(args.device, args.repeats, resnet=not args.no_resnet)
    print(format_table(rows))
    print("goal: ratio = game / plain throughput ≥ 0.8; mask_overhead = time of the game with a")
    print("free model (masking + log-odds only) / time of plain inference")


if __name__ == "__main__":
    main()
