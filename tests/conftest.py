"""Shared test support: the repository copy the workflow tests run in, and the tiny run they share.

Tiers: every test that runs Snakemake, SLURM or a full training is marked ``slow``; ``pytest -m
"not slow"`` is the fast tier for the development loop, and ``make test`` (CI) runs everything.
The tiny workflow run (``config/test.yaml``) happens once per session (once for all pytest-xdist
workers: ``make test`` runs two), in a temporary copy of the repository so nothing lands in the
real ``results/``; tests that change or damage results copy it first.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
COPIED = ("Snakefile", "workflow", "config", "profiles", "slurm", "envs", "src", "tests/data")
CONFIG = ["--configfile", "config/test.yaml"]
EXPERIMENT = "synthetic-small_cnn-s0"


def copy_repo(dest: Path) -> Path:
    """The workflow's files (not results, caches or the venv) copied to ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in COPIED:
        src = REPO / name
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True, timeout=timeout)


def planned_jobs(workdir: Path, *extra: str) -> dict[str, int]:
    """Rule → number of jobs that `snakemake -n` would run."""
    proc = snakemake(workdir, "-n", "--cores", "2", *extra, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    table = out[out.rindex("Job stats:") :].splitlines()[3:]
    jobs = {}
    for line in table:
        name, _, count = line.rpartition(" ")
        if name.strip() == "total":
            break
        jobs[name.strip()] = int(count)
    return jobs


def overlay(workdir: Path, name: str, settings: dict) -> list[str]:
    """Config arguments with ``settings`` written as one more config file over the test config."""
    (workdir / name).write_text(yaml.safe_dump(settings))
    return [*CONFIG, name]


def tiny_config() -> dict:
    return yaml.safe_load((REPO / "config" / "test.yaml").read_text())


def _shared_root(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A folder every pytest-xdist worker of this session sees (the session's own temp folder
    without workers)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> dict:
    """One full run of the tiny config with --cores 2, shared by every workflow test, and by every
    pytest-xdist worker: the first that needs it runs it under a file lock, the others wait and
    read its record. Tests must not change it (``damaged_run`` makes a private copy)."""
    root = _shared_root(tmp_path_factory, worker_id)
    record = root / "tiny-run.json"
    with open(root / "tiny-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            workdir = copy_repo(root / "tiny-run")
            start = time.perf_counter()
            proc = snakemake(workdir, "--cores", "2", *CONFIG)
            seconds = time.perf_counter() - start
            failure = "" if proc.returncode == 0 else f"workflow failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
            record.write_text(json.dumps({"dir": str(workdir), "seconds": seconds, "log": proc.stderr, "failure": failure}))
            print(f"\ntiny workflow run: {seconds:.0f}s")
    run = json.loads(record.read_text())
    assert not run["failure"], run["failure"]
    return {"dir": Path(run["dir"]), "seconds": run["seconds"], "log": run["log"]}


@pytest.fixture
def damaged_run(tiny_run: dict, tmp_path: Path) -> Path:
    """A private copy of the finished tiny run, for tests that delete or corrupt results."""
    workdir = tmp_path / "copy"
    shutil.copytree(tiny_run["dir"], workdir, symlinks=True)
    return workdir
