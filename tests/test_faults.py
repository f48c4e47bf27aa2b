"""Faults a user meets on a finished run, each ending in an exact restore or an early, clear error.

Every test works on its own copy of the shared tiny run (``damaged_run``) and compares the Parquet
tables after the repair with the untouched run: byte for byte where no training reran, by content
without the timing columns where it did.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import CONFIG, EXPERIMENT, copy_repo, overlay, planned_jobs, snakemake
from pretrain_knowledge.extraction import check_finite
from pretrain_knowledge.players import PatchGrid
from pretrain_knowledge.training import load_checkpoint
from pretrain_knowledge.results import Games

TIMING = ("seconds",)
RESULTS = Path("results") / EXPERIMENT


def _parquet(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted((root / "results").rglob("*.parquet"))}


def assert_same_bytes(a: Path, b: Path) -> None:
    left, right = _parquet(a), _parquet(b)
    assert set(left) == set(right)
    differ = [name for name in left if left[name].read_bytes() != right[name].read_bytes()]
    assert not differ, f"tables differ after the repair: {differ}"


def assert_same_tables(a: Path, b: Path, *, subset: bool = False) -> None:
    """Every Parquet table of run ``b`` equals run ``a``'s bit for bit (``subset``: b built only some)."""
    left, right = _parquet(a), _parquet(b)
    assert set(right) <= set(left) if subset else set(left) == set(right)
    for name in right:
        x, y = pd.read_parquet(left[name]), pd.read_parquet(right[name])
        drop = [c for c in TIMING if c in x.columns]
        pd.testing.assert_frame_equal(x.drop(columns=drop), y.drop(columns=drop), check_exact=True, obj=name)


def _state(root: Path) -> dict[str, int]:
    """Every result file with its modification time: what a failed run must leave untouched."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in (root / "results").rglob("*") if p.is_file()}


@pytest.mark.slow
def test_deleted_shard_folders_are_restored_by_a_plain_rerun(tiny_run: dict, damaged_run: Path) -> None:
    # One folder of each layer in one rerun (the stages after them run once, for CI time).
    folders = ("interactions/model=scratch/epoch=2", "games/model=finetune/epoch=1")
    for folder in folders:
        shutil.rmtree(damaged_run / RESULTS / folder)
    done = snakemake(damaged_run, "--cores", "2", *CONFIG)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all((damaged_run / RESULTS / folder).is_dir() for folder in folders)
    assert_same_bytes(tiny_run["dir"], damaged_run)


@pytest.mark.slow
def test_a_truncated_checkpoint_stops_the_run_and_the_advised_command_restores_it(tiny_run: dict, damaged_run: Path) -> None:
    checkpoint = damaged_run / RESULTS / "checkpoints" / "finetune" / "epoch-001.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    os.utime(checkpoint)
    before = _state(damaged_run)
    stopped = snakemake(damaged_run, "--cores", "2", *CONFIG)
    assert stopped.returncode != 0
    manifest = f"{RESULTS}/checkpoints/finetune.json"
    message = stopped.stdout + stopped.stderr
    assert f"{RESULTS}/checkpoints/finetune/epoch-001.pt has 1000 bytes" in message
    assert f"rm {manifest} && snakemake" in message
    assert _state(damaged_run) == before, "a job ran, or a file was touched, before the error"
    (damaged_run / manifest).unlink()
    # The advised command plans the fine-tuning again (and everything after it, as for any new
    # checkpoint); running it up to the manifest shows the rebuilt weights are the original ones,
    # bit for bit, without the ~5 minutes of the games and knowledge after it.
    planned = planned_jobs(damaged_run, *CONFIG)
    assert planned.get("finetune") == 1 and "pretrain" not in planned, planned
    restored = snakemake(damaged_run, manifest, "--cores", "2", *CONFIG)  # targets before --configfile
    assert restored.returncode == 0, restored.stderr[-3000:]
    original = tiny_run["dir"] / RESULTS / "checkpoints" / "finetune"
    for path in sorted(original.glob("epoch-*.pt")):
        again = load_checkpoint(damaged_run / RESULTS / "checkpoints" / "finetune" / path.name).model_state
        first = load_checkpoint(path).model_state
        assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first), path.name
    assert_same_tables(tiny_run["dir"], damaged_run)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"selection": {"players": {"n": 14}}, "extraction": {"sparsify": {"method": "lp-dense"}}}, "selection.players.n: 14 players exceed the 13"),
        ({"selection": {"players": {"options": {"regoin": 0.6}}}}, "options.regoin: no player rule takes this option"),
        ({"selection": {"players": {"patch_size": 3}}}, "selection.players.patch_size: 3 does not divide the 20-px images"),
        ({"extraction": {"shards": 11}}, "extraction.shards: 11 shards for the 10 samples"),
        ({"extracton": {"shards": 1}}, "extracton: unknown key. Did you mean 'extraction'?"),
        ({"extraction": {"sparsify": {"qthres": 2}}}, "extraction.sparsify.qthres: must be ≤ 1"),
        (
            {"datasets": {"synthetic": {"overrides": {"selection": {"players": {"nn": 3}}}}}},
            "datasets.synthetic.overrides.selection.players.nn: unknown key. Did you mean 'n'?",
        ),
    ],
)
def test_config_errors_stop_the_run_before_anything_is_deleted(damaged_run: Path, settings: dict, expected: str) -> None:
    before = _state(damaged_run)
    proc = snakemake(damaged_run, "--cores", "2", *overlay(damaged_run, "bad.yaml", settings))
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0 and expected in message, message[-3000:]
    assert len(message.splitlines()) < 40, "the useful line drowns in output"
    assert _state(damaged_run) == before


@pytest.mark.slow
def test_command_line_config_unknown_key_and_nested_value(damaged_run: Path) -> None:
    unknown = snakemake(damaged_run, "-n", *CONFIG, "--config", "foo=1")
    assert unknown.returncode != 0 and "config: foo: unknown key" in unknown.stdout + unknown.stderr
    nested = snakemake(damaged_run, "-n", *CONFIG, "--config", "extraction={shards: 2, checkpoints: [0, 1, -1], batch_size: 256}")
    assert nested.returncode == 0, nested.stderr[-2000:]
    assert "Nothing to be done" in nested.stdout + nested.stderr


@pytest.mark.slow
def test_a_yaml_syntax_error_names_file_and_line(damaged_run: Path) -> None:
    default = damaged_run / "config" / "config.yaml"
    lines = default.read_text().splitlines()
    k = lines.index("  fmnist:")  # a key whose value is the block below
    lines[k] = lines[k] + " ["  # an unclosed flow sequence
    default.write_text("\n".join(lines) + "\n")
    proc = snakemake(damaged_run, "-n", *CONFIG)
    assert proc.returncode != 0
    # The line the parser stops at (after the comments following the broken key), as PyYAML says.
    with pytest.raises(yaml.YAMLError) as err:
        yaml.safe_load(default.read_text())
    stop = err.value.problem_mark.line + 1
    assert k + 1 < stop
    assert f"config file config/config.yaml, line {stop}" in proc.stdout + proc.stderr, proc.stderr[-2000:]
    broken = damaged_run / "broken.yaml"
    broken.write_text("extraction:\n  shards: [2\n")
    check = subprocess.run(
        [sys.executable, "-m", "pretrain_knowledge", "check-config", "--default", str(damaged_run / "config" / "test.yaml"), str(broken)],
        capture_output=True, text=True, cwd=damaged_run,
    )  # fmt: skip
    assert check.returncode == 1 and f"config file {broken}, line 3" in check.stderr


@pytest.mark.slow
def test_kill_9_during_extraction_then_the_documented_resume(tiny_run: dict, damaged_run: Path) -> None:
    # The fine-tuned model's games and interactions (6 games jobs of 2 shards × 3 checkpoints):
    # enough for the kill to land inside extraction, a seventh of the tiny run to resume.
    for folder in ("games/model=finetune", "interactions/model=finetune"):
        shutil.rmtree(damaged_run / RESULTS / folder)
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "2", *CONFIG],
        cwd=damaged_run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    games = damaged_run / RESULTS / "games" / "model=finetune"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(list(games.rglob("*.parquet"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < len(list(games.rglob("*.parquet"))) < 6, "extraction was not under way when killed"
    # README, "Running": after a crash or kill, unlock, then run again with --rerun-incomplete;
    # here up to the fine-tuned model's interactions (the stages after them are tested elsewhere).
    assert snakemake(damaged_run, "--unlock", *CONFIG).returncode == 0
    finished = tiny_run["dir"] / RESULTS
    targets = [str(RESULTS / p.relative_to(finished)) for p in (finished / "interactions" / "model=finetune").rglob("*.parquet")]
    assert len(targets) == 6
    resumed = snakemake(damaged_run, *targets, "--cores", "2", "--rerun-incomplete", *CONFIG)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_bytes(tiny_run["dir"], damaged_run)


@pytest.mark.slow
def test_results_do_not_depend_on_cores(tiny_run: dict, tmp_path: Path) -> None:
    """The same config with --cores 1 gives the tables of the shared --cores 2 run: the training
    modes the selection needs (pretrain, probe, finetune, scratch: where thread counts used to
    change the backbone; the controls train by the same code), the selection and the games and
    interactions of the pre-trained and the last fine-tuned model (the stages after them only read
    these tables, so they are built for the cores test by the shared run alone)."""
    workdir = copy_repo(tmp_path / "one-core")
    experiment = RESULTS.name
    targets = [
        f"{RESULTS}/interactions/model=pretrain/epoch=2/shard-0.parquet",
        f"{RESULTS}/interactions/model=finetune/epoch=2/shard-1.parquet",
    ]
    proc = snakemake(workdir, *targets, "--cores", "1", *CONFIG)  # targets first: --configfile takes every word after it
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = {str(p.relative_to(workdir)) for p in (workdir / RESULTS).rglob("*.parquet")}
    assert set(targets) <= built, (experiment, sorted(built))
    assert_same_tables(tiny_run["dir"], workdir, subset=True)


def test_non_finite_games_name_samples_model_and_epoch() -> None:
    v = torch.zeros(3, 4, dtype=torch.float64)
    v[1, 2] = float("nan")
    games = Games(
        sample_ids=torch.tensor([4, 7, 9]), labels=torch.zeros(3, dtype=torch.int64),
        players=torch.tensor([[0, 1]] * 3), grid=PatchGrid(4, 4, 2), v=v,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"model=scratch epoch=6 \(ckpt\.pt\): .* samples \[7\]"):
        check_finite(games, "model=scratch epoch=6 (ckpt.pt)")
