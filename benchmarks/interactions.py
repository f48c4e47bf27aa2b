"""Benchmarks of the interaction engine; every row is measured against a reference in the same run.

    .venv/bin/python benchmarks/interactions.py [--device cpu|cuda] [--quick]

Sections (goals from the engine's issue):
1. transform time per game, butterfly vs the dense 2^n × 2^n matrix (one game at a time, as the
   lab code does; a batched dense matmul is listed too) and vs shapiq's exact Möbius transform,
   n = 8, 10, 12. Goal at n = 12: ≥ 100× faster than dense, ≥ 1000× faster than shapiq.
2. sparsification of 64 real games at n = 10 under the reference recipe's budget (10 000 SGD
   steps): the batched engine vs a per-game dense-matrix loop. Goal: ≥ 20× faster. The loop is
   timed for ``--loop-steps`` steps on a few games and extrapolated linearly (stated in the row).
3. the default (exact LP) L1 against the LP optimum found by scipy's HiGHS. Goal: within 1 %
   (benchmarks/sparsify.py holds the exact solver to 1e-6 and times it against HiGHS).
4. game evaluation throughput vs plain batched inference. Goal: ratio ≥ 0.8.

Real games come from a small CNN trained for one short epoch on Fashion-MNIST (the Debian
package's idx files), with n players drawn from the central patches.
"""

from __future__ import annotations

import argparse
import copy
import functools
import gzip
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from game_throughput import small_cnn, throughput_rows  # noqa: E402
from pretrain_knowledge.game import PatchGrid, Players, evaluate_games  # noqa: E402
from pretrain_knowledge.interactions import and_transform, sparsify  # noqa: E402
from references import dense_and_matrix, dense_or_matrix, dense_reference_recipe, highs_optimum  # noqa: E402

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MEAN, FASHION_STD = 0.286, 0.353


def best_time(fn: Callable[[], object], repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def transform_rows(device: str, quick: bool) -> list[dict]:
    from shapiq import ExactComputer

    rows = []
    for n in (8, 10) if quick else (8, 10, 12):
        games = torch.randn(64, 1 << n, dtype=torch.float64, device=device)
        ours = best_time(lambda: and_transform(games)) / 64
        matrix = dense_and_matrix(n).to(device)
        few = games[:4]
        dense_one = best_time(lambda: [matrix @ g for g in few]) / 4
        dense_batch = best_time(lambda: games @ matrix.T) / 64
        values = games[0].cpu().numpy()
        weights = 1 << np.arange(n)

        def shapiq_once() -> None:
            ExactComputer(lambda c: values[(c.astype(np.int64) * weights).sum(1)], n_players=n)("Moebius")

        start = time.perf_counter()
        shapiq_once()
        shapiq_time = time.perf_counter() - start
        rows += [
            _row("1 transform", f"n={n} vs dense matvec (per game)", ours, dense_one, "≥100× at n=12"),
            _row("1 transform", f"n={n} vs dense batched matmul", ours, dense_batch, "(context)"),
            _row("1 transform", f"n={n} vs shapiq ExactComputer", ours, shapiq_time, "≥1000× at n=12"),
        ]
    return rows


def _row(section: str, case: str, ours: float, reference: float, goal: str, unit: str = "s",
         ratio: float | None = None) -> dict:
    if ratio is None:
        ratio = reference / ours if ours else float("nan")
    return {"section": section, "case": case, "ours": ours, "reference": reference,
            "ratio": ratio, "unit": unit, "goal": goal}


def read_idx(name: str) -> np.ndarray:
    with gzip.open(FASHION_MNIST / name) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


@functools.lru_cache(maxsize=1)
def trained_cnn() -> torch.nn.Module:
    """A small CNN trained for two short epochs on 6 000 Fashion-MNIST images (seeded, CPU)."""
    torch.manual_seed(0)
    images = torch.from_numpy(read_idx("train-images-idx3-ubyte.gz")[:6000].copy()).float()[:, None] / 255
    labels = torch.from_numpy(read_idx("train-labels-idx1-ubyte.gz")[:6000].astype(np.int64))
    images = (images - FASHION_MEAN) / FASHION_STD
    model = small_cnn(10)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(2):
        for start in range(0, len(images), 64):
            loss = torch.nn.functional.cross_entropy(model(images[start : start + 64]), labels[start : start + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def real_setup(n: int, count: int, device: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, Players]:
    """Model, test images, labels and players (n central patches per image) of real games."""
    test = torch.from_numpy(read_idx("t10k-images-idx3-ubyte.gz")[:count].copy()).float()[:, None] / 255
    test = (test - FASHION_MEAN) / FASHION_STD
    test_labels = torch.from_numpy(read_idx("t10k-labels-idx1-ubyte.gz")[:count].astype(np.int64))
    grid = PatchGrid(28, 28, 4)
    central = torch.tensor([r * 7 + c for r in range(1, 6) for c in range(1, 6)])
    g = torch.Generator().manual_seed(0)
    patch_ids = torch.stack([central[torch.randperm(len(central), generator=g)[:n]] for _ in range(count)])
    return copy.deepcopy(trained_cnn()).to(device), test.to(device), test_labels, Players(grid, patch_ids)


def real_games(n: int, count: int, device: str) -> torch.Tensor:
    """v of ``count`` Fashion-MNIST test images under the small CNN of :func:`trained_cnn`."""
    model, images, labels, players = real_setup(n, count, device)
    return evaluate_games(model, images, labels, players, batch_size=512)


def sparsify_rows(v: torch.Tensor, device: str, niter: int, loop_steps: int, lp_games: int) -> list[dict]:
    n = v.shape[-1].bit_length() - 1
    games = v.to(device)
    lr = 1e-5
    start = time.perf_counter()
    ref = sparsify(games, method="reference", lr=lr, niter=niter)
    engine_time = time.perf_counter() - start
    start = time.perf_counter()
    default = sparsify(games)
    lp_time = time.perf_counter() - start

    to_and, to_or = dense_and_matrix(n).to(device), dense_or_matrix(n).to(device)
    loop_games = 3
    start = time.perf_counter()
    for b in range(loop_games):
        bound = 0.04 * abs(float(v[b, -1] - v[b, 0]))
        dense_reference_recipe(games[b], bound, lr, niter, matrices=(to_and, to_or), steps=loop_steps)
    per_step = (time.perf_counter() - start) / (loop_games * loop_steps)
    loop_time = per_step * niter * v.shape[0]

    d, r = default.diagnostics, ref.diagnostics
    rows = [
        _row("2 sparsify", f"{v.shape[0]} games n={n}, {niter} steps: batched engine vs per-game dense loop "
             f"(loop extrapolated from {loop_steps} steps × {loop_games} games)", engine_time, loop_time, "≥20×"),
        _row("2 sparsify", f"default exact LP, {v.shape[0]} games, wall time vs dense loop", lp_time, loop_time, "(context)"),
        _row("2 sparsify", "mean L1: default LP (ours) vs reference recipe", float(d.l1_final.mean()),
             float(r.l1_final.mean()), "ours ≤ reference", unit="L1"),
        _row("2 sparsify", "mean L1: default LP (ours) vs even split", float(d.l1_final.mean()),
             float(d.l1_even.mean()), "ours ≤ even", unit="L1"),
        _row("2 sparsify", "games where reference ends above the even split", float((r.l1_final > r.l1_even).sum()),
             float(v.shape[0]), "(count / games)", unit="games"),
        _row("2 sparsify", "max over games of L1(default) / L1(reference)",
             float((d.l1_final / r.l1_final).max()), 1.0, "≤ 1", unit="ratio"),
    ]
    for b in range(lp_games):
        start = time.perf_counter()
        optimum = highs_optimum(v[b].double().cpu().numpy(), 0.04)
        highs_time = time.perf_counter() - start
        rows.append(_row("3 LP optimum", f"game {b}: L1 default vs HiGHS optimum (HiGHS {highs_time:.1f} s)",
                         float(d.l1_final[b]), optimum, "ratio ≥ 0.99", unit="L1"))
    return rows


def print_table(rows: list[dict]) -> None:
    header = f"{'section':<13} {'case':<96} {'ours':>11} {'reference':>11} {'ratio':>9} {'unit':<6} goal"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['section']:<13} {r['case']:<96} {r['ours']:>11.4g} {r['reference']:>11.4g} "
              f"{r['ratio']:>9.3g} {r['unit']:<6} {r['goal']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--niter", type=int, default=10_000, help="reference recipe steps")
    parser.add_argument("--loop-steps", type=int, default=200, help="steps timed in the dense loop")
    parser.add_argument("--lp-games", type=int, default=3, help="games checked against HiGHS")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = transform_rows(args.device, args.quick)
    count = 8 if args.quick else 64
    v = real_games(10, count, args.device)
    niter = 300 if args.quick else args.niter
    rows += sparsify_rows(v, args.device, niter, min(args.loop_steps, niter), 1 if args.quick else args.lp_games)
    rows += [
        _row("4 game", f"{r['model']} {r['input']}: masked images/s (ours) vs plain inference, batch {r['batch_size']}",
             r["game_img_per_s"], r["plain_img_per_s"], "ours/ref ≥ 0.8", unit="img/s", ratio=r["ratio"])
        for r in throughput_rows(device=args.device, resnet=not args.quick)
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
