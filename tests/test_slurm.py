"""The workflow on a real SLURM cluster: `--profile slurm` end to end (README, "Running on a
SLURM cluster").

The cluster is Debian's slurm-wlm on this machine (tests/slurm_cluster.py). The tiny test config
runs twice, once through `--profile slurm` and once locally, and the two must agree table for
table. Needs root; deselect with `-m 'not slurm'` (in CI, CI=true, it cannot be skipped).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from slurm_cluster import GPU_PARTITION, SlurmCluster, SlurmJob, slurm_cluster  # noqa: F401

from conftest import copy_repo  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
OVERLAY = REPO / "tests" / "data" / "slurm-test-profile"
TEST_CONFIG = "config/test.yaml"
# Everything a run needs from the repository, copied so results never land in the real results/.
# The rules that do real work; everything else (metrics, knowledge, figures, all) is cheap and
# runs on the submit host.
REMOTE_RULES = {"prepare_data", "pretrain", "probe", "finetune", "scratch", "scratch_b", "random_probe", "select", "games", "sparsify"}
# Both runs get the same thread counts (numerically identical results need identical threads);
# one thread each is also what tiny models train fastest with, on 2 shared cores.
MAX_THREADS = 1
RUN_TIMEOUT_S = 900
# The SLURM run builds every remote rule's outputs for two shards, not the whole DAG: every stage
# that runs on the cluster runs there at least once, in a few minutes of CI (the whole tiny DAG
# is ~90 SLURM jobs). The local stages after them (knowledge, figures) are tested on the local run.
EXPERIMENT = "synthetic-small_cnn-s0"
TARGETS = (
    f"results/{EXPERIMENT}/metrics.parquet",
    f"results/{EXPERIMENT}/interactions/model=finetune/epoch=2/shard-0.parquet",
    f"results/{EXPERIMENT}/interactions/model=scratch/epoch=2/shard-1.parquet",
)
# Columns that measure the machine, not the model.
TIMING_COLUMNS = {"seconds"}


@dataclass(frozen=True)
class JobRecord:
    """One job as Snakemake's log announces it."""

    jobid: int
    rule: str
    local: bool


@dataclass(frozen=True)
class Run:
    workdir: Path
    returncode: int
    log: str
    seconds: float

    def jobs(self) -> dict[int, JobRecord]:
        """Snakemake job id → rule, from the `rule x:` / `localrule x:` blocks of the log."""
        jobs, current = {}, None
        for line in self.log.splitlines():
            header = re.match(r"^(local)?rule (\w+):$", line)
            if header:
                current = (header.group(2), header.group(1) is not None)
                continue
            jobid = re.match(r"^\s+jobid: (\d+)$", line)
            if jobid and current is not None:
                jobs[int(jobid.group(1))] = JobRecord(int(jobid.group(1)), *current)
                current = None
        return jobs

    def submissions(self) -> dict[int, tuple[int, Path]]:
        """Snakemake job id → (SLURM job id, SLURM log) from the executor's submission lines."""
        pattern = r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\."
        return {
            int(m.group(1)): (int(m.group(2)), Path(m.group(3)))
            for m in re.finditer(pattern, self.log)
        }


def _workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return copy_repo(path)


def _env(**extra: str) -> dict[str, str]:
    # A user's own cluster settings must not leak into the runs (nor SNAKEMAKE_PROFILE into the
    # local one).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SBATCH_", "SLURM_")) and k != "SNAKEMAKE_PROFILE"
    }
    env.update(extra)
    return env


@dataclass
class _Running:
    proc: subprocess.Popen
    workdir: Path
    log_path: Path
    started: float

    def finish(self) -> Run:
        returncode = self.proc.wait()
        return Run(
            self.workdir, returncode, self.log_path.read_text(), time.monotonic() - self.started
        )


def _launch(workdir: Path, *args: str, env: dict[str, str], timeout_s: int) -> _Running:
    # Snakemake ignores SIGTERM while jobs run: timeout's -k makes sure it ends.
    cmd = ["timeout", "-k", "10", str(timeout_s), str(SNAKEMAKE), *args]
    log_path = workdir / f"snakemake-test-{time.monotonic_ns()}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    return _Running(proc, workdir, log_path, time.monotonic())


def _snakemake(
    workdir: Path, *args: str, env: dict[str, str], timeout_s: int = RUN_TIMEOUT_S
) -> Run:
    return _launch(workdir, *args, env=env, timeout_s=timeout_s).finish()


def _slurm_args(*extra: str) -> tuple[str, ...]:
    return (
        "--cores", "2",
        "--profile", "slurm",
        "--profile", str(OVERLAY),
        "--configfile", TEST_CONFIG,
        "--max-threads", str(MAX_THREADS),
        *extra,
    )  # fmt: skip


def _gpu_rules() -> dict[str, int]:
    """GPUs per rule as the workflow profile declares them: what SLURM must have allocated."""
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    return {
        rule: int(res["gpu"])
        for rule, res in profile.get("set-resources", {}).items()
        if res.get("gpu")
    }


def _parquet_tables(results: Path) -> dict[str, pd.DataFrame]:
    tables = {}
    for path in sorted(results.rglob("*.parquet")):
        frame = pd.read_parquet(path)
        tables[str(path.relative_to(results))] = frame.drop(
            columns=[c for c in frame.columns if c in TIMING_COLUMNS]
        )
    return tables


@pytest.fixture(scope="module")
def runs(slurm_cluster: SlurmCluster, tiny_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The tiny config through `--profile slurm`, and the shared local run of the same config."""
    slurm_dir = _workdir(tmp_path_factory.mktemp("slurm-run"))
    # The partition comes from the environment, as a user would set it (slurm/config.yaml).
    slurm = _snakemake(slurm_dir, *_slurm_args(*TARGETS), env=_env(SBATCH_PARTITION=GPU_PARTITION))
    assert slurm.returncode == 0, (
        f"SLURM run failed ({slurm.returncode}) after {slurm.seconds:.0f} s:\n"
        f"{slurm.log[-6000:]}\n{slurm_cluster.log_tail()}"
    )
    print(f"\nSLURM run {slurm.seconds:.0f} s, local run {tiny_run['seconds']:.0f} s")
    local = Run(tiny_run["dir"], 0, tiny_run["log"], tiny_run["seconds"])
    return {"slurm": slurm, "local": local}


@pytest.mark.slurm
def test_every_remote_job_ran_as_a_slurm_job(runs: dict[str, Run], slurm_cluster: SlurmCluster):
    run = runs["slurm"]
    jobs, submitted = run.jobs(), run.submissions()
    remote = {j.jobid: j for j in jobs.values() if not j.local}
    local = {j.jobid: j for j in jobs.values() if j.local}

    assert {j.rule for j in remote.values()} == REMOTE_RULES
    assert {j.rule for j in local.values()} == {"metrics"}
    assert not {j.rule for j in local.values()} & REMOTE_RULES
    assert set(submitted) == set(remote), "remote jobs without a SLURM submission, or vice versa"

    by_id: dict[int, SlurmJob] = {job.job_id: job for job in slurm_cluster.jobs()}
    gpus = _gpu_rules()
    assert gpus, "profiles/default/config.yaml declares no gpu resource"
    run_names = set()
    for sm_id, (slurm_id, slurm_log) in submitted.items():
        rule = remote[sm_id].rule
        job = by_id.get(slurm_id)
        assert job is not None, f"SLURM never heard of job {slurm_id} ({rule})"
        assert (job.rule, job.state) == (rule, "COMPLETED"), job
        assert job.partition == GPU_PARTITION, f"SBATCH_PARTITION was not honoured: {job}"
        expected_tres = f"gres:gpu:{gpus[rule]}" if rule in gpus else "N/A"
        assert (
            job.tres == expected_tres
        ), f"{rule}: SLURM allocated {job.tres}, want {expected_tres}"
        assert slurm_log.name == f"{slurm_id}.log" and slurm_log.is_file(), slurm_log
        run_names.add(job.name)
    # One Snakemake run, one run id: these are this run's jobs and no one else's.
    assert len(run_names) == 1
    assert {job.job_id for job in by_id.values() if job.name in run_names} == {
        slurm_id for slurm_id, _ in submitted.values()
    }


@pytest.mark.slurm
def test_slurm_outputs_equal_local_outputs(runs: dict[str, Run]):
    slurm = _parquet_tables(runs["slurm"].workdir / "results")
    local = _parquet_tables(runs["local"].workdir / "results")
    targets = {t.removeprefix("results/") for t in TARGETS}
    assert targets <= set(slurm) and set(slurm) <= set(local), sorted(set(slurm) - set(local))
    assert sum("/games/" in name for name in slurm) == 2, sorted(slurm)
    for name, frame in slurm.items():  # every table the SLURM run wrote, bit for bit
        pd.testing.assert_frame_equal(frame, local[name], check_exact=True, obj=name)


@pytest.mark.slurm
def test_failed_job_surfaces_with_its_log(runs: dict[str, Run], slurm_cluster: SlurmCluster):
    """A checkpoint overwritten in place (same size, so the load-time check passes) makes one games
    job fail inside SLURM on its checksum; the run must fail and point at the job's own log, which
    holds the error. (Runs last: it damages the SLURM run.)"""
    run = runs["slurm"]
    experiment = next((run.workdir / "results").glob("*/interactions")).parent.name
    checkpoint = run.workdir / f"results/{experiment}/checkpoints/scratch/epoch-001.pt"
    target = f"results/{experiment}/games/model=scratch/epoch=1/shard-0.parquet"
    rule_log = run.workdir / f"results/{experiment}/logs/games/scratch-1-0.log"
    checkpoint.write_bytes(bytes(checkpoint.stat().st_size))  # in place: no other job is outdated

    failed = _snakemake(
        run.workdir,
        *_slurm_args(target, "--forcerun", "games", "--rerun-triggers", "params", "code"),
        env=_env(SBATCH_PARTITION=GPU_PARTITION),
        timeout_s=300,
    )
    assert failed.returncode not in (0, 124, 137), f"expected a failed run:\n{failed.log[-4000:]}"
    submitted = failed.submissions()
    assert len(submitted) == 1, failed.log[-4000:]
    [(slurm_id, slurm_log)] = submitted.values()
    assert {job.job_id: job.state for job in slurm_cluster.jobs()}[slurm_id] == "FAILED"
    assert "Error in rule games" in failed.log
    assert f"SLURM-job '{slurm_id}' failed" in failed.log
    # The error report names both logs; the rule's log says what went wrong.
    assert str(rule_log.relative_to(run.workdir)) in failed.log
    assert str(slurm_log) in failed.log and slurm_log.is_file()
    # The stage names the damaged file; the SLURM log carries Snakemake's report from the node.
    assert str(checkpoint.relative_to(run.workdir)) in rule_log.read_text(), rule_log.read_text()
    assert "Error in rule games" in slurm_log.read_text(), slurm_log.read_text()[-2000:]
    assert not (run.workdir / target).exists()


def _dry_run_resources(log: str) -> dict[str, list[dict[str, str]]]:
    """Rule → the `resources:` of each of its jobs, from a dry run's job blocks."""
    out: dict[str, list[dict[str, str]]] = {}
    rule = None
    for line in log.splitlines():
        header = re.match(r"^(?:local)?rule (\w+):$", line)
        if header:
            rule = header.group(1)
        elif rule and line.strip().startswith("resources:"):
            items = [i.strip() for i in line.split("resources:", 1)[1].split(", ")]
            out.setdefault(rule, []).append(dict(item.split("=", 1) for item in items))
            rule = None
    return out


def test_profile_passes_partition_account_and_gpus(tmp_path: Path):
    """`snakemake -n --profile slurm` as the README runs it (in a copy of the repository root):
    every job carries the partition and account from the environment, and the GPU rules their
    gpu request. Guards the profile layering (a `default-resources` block in the workflow
    profile silently drops both)."""
    run = _snakemake(
        _workdir(tmp_path),
        "-n", "--forceall", "--cores", "8", "--profile", "slurm",
        env=_env(SBATCH_PARTITION="gpu_a100", SBATCH_ACCOUNT="proj42"),
        timeout_s=120,
    )  # fmt: skip
    assert run.returncode == 0, run.log[-4000:]
    resources = _dry_run_resources(run.log)
    assert REMOTE_RULES <= set(resources), sorted(resources)
    gpus = _gpu_rules()
    for rule, jobs in resources.items():
        for res in jobs:
            assert res.get("slurm_partition") == "gpu_a100", (rule, res)
            assert res.get("slurm_account") == "proj42", (rule, res)
            if rule in gpus:
                assert res.get("gpu") == str(gpus[rule]), (rule, res)
            assert "runtime" in res and "mem_mb" in res, (rule, res)
    assert {"pretrain", "probe", "finetune", "scratch", "games"} <= set(gpus) and "sparsify" not in gpus
