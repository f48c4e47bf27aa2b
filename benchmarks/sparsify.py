"""Sparsification against its references; every ratio is measured in the same run.

    .venv/bin/python benchmarks/sparsify.py [--device cpu|cuda] [--threads 2] [--games 64]
        [--highs-games 64] [--repeats 1] [--large 12,14,16] [--large-games 8] [--large-timeout 600]

Real games come from the small CNN of benchmarks/interactions.py (Fashion-MNIST, n central
patches as players). Sections (goals from the sparsification issue):

1. n = 10, ``--games`` games:
   - the default (``lp``) against the CNN's forward passes for the same games (goal: ratio ≤ 1);
   - against the previous dense solver (``lp-dense``, context);
   - per game against scipy's HiGHS on the sparse formulation (W = J − K, one core; goal ≥ 5×),
     each timed ``--repeats`` times (the least kept), and its relative gap to HiGHS's optimum
     (goal ≤ 1e-6 on every game);
   - relabelling the players (goal: the result permutes, ≤ 1e-5 of |v(N) − v(∅)|, identical
     salient sets), batching (each game alone gives the same bits as in the batch);
   - how far the canonical point moved from the dense solver's (max |ΔI| / |v(N) − v(∅)|, and
     the games whose salient sets differ).
2. n in ``--large``: wall time and peak memory per game, ``--large-games`` games, each n solved
   in a child process (its peak resident memory is the solver's plus torch's baseline) that
   stops at ``--large-timeout`` seconds; the games are solved one by one, so what finished is
   reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from interactions import real_setup  # noqa: E402
from pretrain_knowledge.game import Players, evaluate_games  # noqa: E402
from pretrain_knowledge.interactions import sparsify  # noqa: E402
from references import highs_solution, relabel, salient  # noqa: E402

PERMUTATION = [3, 7, 0, 9, 5, 1, 8, 2, 6, 4]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def row(section: str, case: str, ours: float, reference: float, goal: str, unit: str = "s", ratio: float | None = None) -> dict:
    if ratio is None:
        ratio = reference / ours if ours else float("nan")
    return {"section": section, "case": case, "ours": ours, "reference": reference, "ratio": ratio,
            "unit": unit, "goal": goal}


def section_n10(args: argparse.Namespace) -> list[dict]:
    device, count = args.device, args.games
    model, images, labels, players = real_setup(10, count, device)
    evaluate_games(model, images[:1], labels[:1], _first(players), batch_size=512)  # warm-up
    v, forward = timed(lambda: evaluate_games(model, images, labels, players, batch_size=512), device)
    v = v.double()
    result, lp_time = timed(lambda: sparsify(v), device)
    rows = [row("1 n=10", f"{count} games: lp vs CNN forward passes (ratio = forward / lp)", lp_time, forward, "lp/forward ≤ 1 (ratio ≥ 1)")]
    if not args.skip_dense:
        dense, dense_time = timed(lambda: sparsify(v, method="lp-dense"), device)
        rows.append(row("1 n=10", f"{count} games: lp vs previous dense solver (lp-dense)", lp_time, dense_time, "(context)"))
        rows += _canonical_change(v, result, dense)
    rows += _per_game_and_highs(v, result, args)
    rows += _relabelling(v, result)
    d = result.diagnostics
    rows.append(row("1 n=10", "games converged / games", float(d.converged.sum()), float(count), "all", unit="games", ratio=float(d.converged.float().mean())))
    rows.append(row("1 n=10", "max certified gap (diagnostics.gap)", float(d.gap.max()), 1e-6, "(reported)", unit="rel"))
    rows.append(row("1 n=10", "max universal-matching error", float(d.matching_error.max()), 1e-9, "≤ 1e-9", unit="abs"))
    return rows


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _first(players: Players) -> Players:
    return Players(players.grid, players.patch_ids[:1])


def _per_game_and_highs(v: torch.Tensor, result, args: argparse.Namespace) -> list[dict]:
    """Each game solved alone (time, bits) and by HiGHS on one core (time, optimum).

    The two take turns going first, game by game and repeat by repeat, so that neither always
    runs on caches the other left; with ``--repeats`` above 1 each time is the least of the
    repeats (as timeit reports), which leaves out pauses caused by other processes."""
    count = min(args.highs_games, v.shape[0])
    ours, highs, gaps, same_bits = [], [], [], 0
    torch_threads = torch.get_num_threads()

    def by_highs(b: int) -> tuple[float, float]:
        """HiGHS's time and optimum for game ``b``."""
        start = time.perf_counter()
        optimum = highs_solution(v[b].cpu().numpy(), 0.04)[0]
        return time.perf_counter() - start, optimum

    for b in range(v.shape[0]):
        mine, theirs = [], []
        for repeat in range(args.repeats):
            highs_first = b < count and (b + repeat) % 2
            if highs_first:
                theirs.append(by_highs(b))
            alone, seconds = timed(lambda: sparsify(v[b : b + 1]), args.device)
            mine.append(seconds)
            if repeat == 0:
                same_bits += int(torch.equal(alone.I_and[0], result.I_and[b]) and torch.equal(alone.I_or[0], result.I_or[b]))
            if b < count and not highs_first:
                theirs.append(by_highs(b))
        ours.append(min(mine))
        if theirs:
            highs.append(min(seconds for seconds, _ in theirs))
            optimum = theirs[0][1]
            gaps.append((float(result.diagnostics.l1_final[b]) - optimum) / optimum)
    torch.set_num_threads(torch_threads)
    ours_h = np.array(ours[:count])
    highs_a = np.array(highs)
    per_game = highs_a / ours_h
    return [
        row("1 n=10", "each game alone vs in the batch: games with identical bits / games", float(same_bits), float(v.shape[0]), "all", unit="games", ratio=same_bits / v.shape[0]),
        row("1 n=10", f"mean time per game alone vs HiGHS sparse, {count} games, least of {args.repeats}", float(ours_h.mean()), float(highs_a.mean()), "≥ 5×"),
        row("1 n=10", "per-game ratio HiGHS / lp: minimum", float(ours_h[per_game.argmin()]), float(highs_a[per_game.argmin()]), "≥ 5×"),
        row("1 n=10", "per-game ratio HiGHS / lp: median", float(np.median(ours_h)), float(np.median(highs_a)), "(context)", ratio=float(np.median(per_game))),
        row("1 n=10", f"max relative gap of lp's L1 to HiGHS's optimum ({count} games)", float(np.max(gaps)), 1e-6, "≤ 1e-6", unit="rel", ratio=float(np.min(gaps))),
    ]


def _relabelling(v: torch.Tensor, result) -> list[dict]:
    moved = sparsify(relabel(v, PERMUTATION))
    worst, differ = 0.0, 0
    for b in range(v.shape[0]):
        scale = abs(float(v[b, -1] - v[b, 0]))
        back_and, back_or = relabel(result.I_and[b], PERMUTATION), relabel(result.I_or[b], PERMUTATION)
        deviation = max(float((moved.I_and[b] - back_and).abs().max()), float((moved.I_or[b] - back_or).abs().max()))
        worst = max(worst, deviation / scale)
        differ += int(salient(moved.I_and[b], moved.I_or[b]) != salient(back_and, back_or))
    return [
        row("1 n=10", "relabelled players: max |ΔI| / |v(N) − v(∅)| over games", worst, 1e-5, "≤ 1e-5", unit="rel"),
        row("1 n=10", "relabelled players: games whose salient sets differ", float(differ), float(v.shape[0]), "0", unit="games"),
    ]


def _canonical_change(v: torch.Tensor, result, dense) -> list[dict]:
    """How far the least-norm point is from the previous solver's point, on the same optimum."""
    worst, differ, jaccard = 0.0, 0, []
    for b in range(v.shape[0]):
        scale = abs(float(v[b, -1] - v[b, 0]))
        change = max(float((result.I_and[b] - dense.I_and[b]).abs().max()), float((result.I_or[b] - dense.I_or[b]).abs().max()))
        worst = max(worst, change / scale)
        ours, theirs = salient(result.I_and[b], result.I_or[b]), salient(dense.I_and[b], dense.I_or[b])
        differ += int(ours != theirs)
        jaccard.append(len(ours & theirs) / max(1, len(ours | theirs)))
    l1_change = float(((result.diagnostics.l1_final - dense.diagnostics.l1_final) / dense.diagnostics.l1_final).abs().max())
    return [
        row("1 n=10", "canonical point vs lp-dense: max |ΔI| / |v(N) − v(∅)|", worst, float("nan"), "(report)", unit="rel"),
        row("1 n=10", "canonical point vs lp-dense: games whose salient sets differ", float(differ), float(v.shape[0]), "(report)", unit="games"),
        row("1 n=10", "canonical point vs lp-dense: mean Jaccard of salient sets", float(np.mean(jaccard)), 1.0, "(report)", unit="ratio"),
        row("1 n=10", "canonical point vs lp-dense: max relative L1 difference", l1_change, 1e-6, "≤ 1e-6 (same optimum)", unit="rel"),
    ]


def section_large(args: argparse.Namespace) -> list[dict]:
    rows = []
    for n in args.large:
        model, images, labels, players = real_setup(n, args.large_games, args.device)
        v = evaluate_games(model, images, labels, players, batch_size=512).double().cpu()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "games.pt"
            torch.save(v, path)
            rows += _child_rows(n, path, args)
    return rows


def _child_rows(n: int, path: Path, args: argparse.Namespace) -> list[dict]:
    command = [sys.executable, __file__, "--child", str(path), "--device", args.device, "--threads", str(args.threads)]
    lines: list[dict] = []
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.large_timeout, check=False)
        output = done.stdout
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
    for line in output.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    games = [line for line in lines if "game" in line]
    summary = next((line for line in lines if "peak_rss_gib" in line), None)
    if not games:
        return [row(f"2 n={n}", f"nothing finished within {args.large_timeout} s", float("nan"), float(args.large_timeout), "8 games ≤ 600 s")]
    seconds = [g["seconds"] for g in games]
    # A child stopped at the timeout prints no summary; its last finished game carries the peak so far.
    peak = summary["peak_rss_gib"] if summary else games[-1]["peak_gib"]
    base = summary["baseline_rss_gib"] if summary else games[-1]["baseline_rss_gib"]
    finished = f"{len(games)}/{args.large_games} games" + ("" if summary else f" (stopped at {args.large_timeout} s)")
    return [
        row(f"2 n={n}", f"{finished}: mean wall time per game", float(np.mean(seconds)), float(np.max(seconds)), "8 games ≤ 600 s", ratio=float(np.sum(seconds))),
        row(f"2 n={n}", "peak resident memory of the solving process (GiB), torch baseline as reference", peak, base, "≤ 24 GiB", unit="GiB", ratio=peak - base),
        row(f"2 n={n}", "max certified gap; ratio column: mean interior-point iterations", max(g["gap"] for g in games), float("nan"), "(reported)", unit="rel", ratio=float(np.mean([g["iterations"] for g in games]))),
        row(f"2 n={n}", "games converged / games finished", float(sum(g["converged"] for g in games)), float(len(games)), "all", unit="games"),
    ]


def child(path: str, device: str, threads: int) -> None:
    """Solve the saved games one by one; one JSON line per game, then the memory summary."""
    torch.set_num_threads(threads)
    v = torch.load(path).to(device)
    baseline = _rss_gib()
    for b in range(v.shape[0]):
        result, seconds = timed(lambda: sparsify(v[b : b + 1]), device)
        d = result.diagnostics
        print(json.dumps({"game": b, "seconds": seconds, "gap": float(d.gap[0]), "iterations": int(d.iterations[0]),
                          "converged": bool(d.converged[0]), "peak_gib": _peak_gib(device),
                          "baseline_rss_gib": baseline}), flush=True)
    print(json.dumps({"peak_rss_gib": _peak_gib(device), "baseline_rss_gib": baseline}), flush=True)


def _peak_gib(device: str) -> float:
    """Peak resident memory of this process so far (peak allocated GPU memory on CUDA).

    The high-water mark of the process's own memory (VmHWM), not getrusage's ru_maxrss: Linux
    carries ru_maxrss across exec, so a child would report its parent's peak when that is larger."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return _status_gib("VmHWM:")


def _rss_gib() -> float:
    return _status_gib("VmRSS:")


def _status_gib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 2**20
    return float("nan")


def print_table(rows: list[dict]) -> None:
    header = f"{'section':<9} {'case':<84} {'ours':>11} {'reference':>11} {'ratio':>10} {'unit':<6} goal"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['section']:<9} {r['case']:<84} {r['ours']:>11.4g} {r['reference']:>11.4g} {r['ratio']:>10.4g} {r['unit']:<6} {r['goal']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--games", type=int, default=64, help="real games at n = 10")
    parser.add_argument("--highs-games", type=int, default=64, help="of those, solved by HiGHS too")
    parser.add_argument("--repeats", type=_positive, default=1, help="times per game alone and by HiGHS (least kept)")
    parser.add_argument("--skip-dense", action="store_true", help="skip the previous dense solver")
    parser.add_argument("--large", type=lambda s: [int(x) for x in s.split(",") if x], default=[12, 14, 16])
    parser.add_argument("--large-games", type=int, default=8)
    parser.add_argument("--large-timeout", type=float, default=600.0, help="seconds per n")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.device, args.threads)
        return
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    rows = section_n10(args) if args.games else []
    rows += section_large(args)
    print_table(rows)


if __name__ == "__main__":
    main()
