"""A real single-node SLURM cluster for tests, started from Debian's slurm-wlm and munge.

The recipe and its pitfalls are in ../shared/docs/slurm-local.md. In short: the config must be
reachable at /etc/slurm/slurm.conf (the executor's job step clears SLURM_CONF before it calls
srun), there is no accounting database (so the executor must poll with squeue), and the daemons
are stopped by the pids in their pid files, never by name.

Use ``local_slurm_cluster()`` as a context manager, or the ``slurm_cluster`` pytest fixture.
Only one cluster can run per machine (it owns /etc/slurm/slurm.conf); a file lock makes
concurrent test runs wait for each other instead of clobbering each other's config.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN = Path("/run/munge")
MUNGE_PIDFILE = MUNGE_RUN / "munged.pid"
LOCK_FILE = Path("/run/lock/pretrain-knowledge-slurm.lock")
LOCK_TIMEOUT_S = 900
# Two partitions on the one node: jobs land in GPU_PARTITION only when asked for by name, which
# is how a test sees that the profile passed the user's partition on.
DEFAULT_PARTITION = "main"
GPU_PARTITION = "gpu"
# The node is declared bigger than the machine (SlurmdParameters=config_overrides: slurmd trusts
# slurm.conf instead of the hardware; nothing enforces memory or CPU without cgroups). It mimics a
# GPU node, so the workflow's real requests (gpu=1, 8 GB, several threads) are scheduled
# unchanged and several jobs run side by side. The GPUs are stand-in device files (copies of
# /dev/null; the gpu plugin insists on character devices): a `--gpus=1` job gets one, and a
# CUDA_VISIBLE_DEVICES, and runs on the CPU.
MIN_CPUS = 16
MIN_MEMORY_MB = 96_000
FAKE_GPUS = 8
APT_PACKAGES = ("slurm-wlm", "munge")


class ClusterUnavailable(RuntimeError):
    """The local cluster cannot be started on this machine (not root, no apt, daemon failed)."""


@dataclass(frozen=True)
class SlurmJob:
    """One row of ``squeue --states=all``: the executor puts ``rule_<name>_wildcards_...`` in
    the comment, which is how a job is traced back to its Snakemake rule."""

    job_id: int
    name: str
    partition: str
    state: str
    tres: str
    comment: str

    @property
    def rule(self) -> str:
        prefix = "rule_"
        body = self.comment[len(prefix) :] if self.comment.startswith(prefix) else self.comment
        return body.split("_wildcards_")[0]


@dataclass(frozen=True)
class SlurmCluster:
    root: Path
    conf: Path
    node: str
    cpus: int
    real_memory_mb: int
    gpus: int

    def jobs(self) -> list[SlurmJob]:
        """All jobs slurmctld still remembers (MinJobAge keeps finished ones for 10 min)."""
        # A bare "|" suffix means: no padding, no truncation, "|" after the field.
        fmt = "JobID:|,Name:|,Partition:|,State:|,tres-per-job:|,Comment:|"
        out = subprocess.run(
            ["squeue", "--states=all", "-h", "-O", fmt],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        jobs = []
        for line in out.splitlines():
            job_id, name, partition, state, tres, comment = line.split("|")[:6]
            jobs.append(SlurmJob(int(job_id), name, partition, state, tres, comment))
        return jobs

    def log_tail(self, lines: int = 40) -> str:
        """The end of both daemon logs, for assertion messages."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.root / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(parts)


def _run(cmd: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, check=True, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def _is_root() -> bool:
    return os.geteuid() == 0


def ensure_installed() -> None:
    """Install slurm-wlm and munge with apt when missing (CI starts from a clean Debian)."""
    needed = ("slurmctld", "slurmd", "sinfo", "squeue", "sbatch", "srun", "munged")
    if all(shutil.which(tool) or Path("/usr/sbin", tool).exists() for tool in needed):
        return
    if not _is_root():
        raise ClusterUnavailable(
            "slurm-wlm/munge are not installed and this is not root; install them with "
            "`sudo apt-get install -y slurm-wlm munge` or deselect with -m 'not slurm'"
        )
    if shutil.which("apt-get") is None:
        raise ClusterUnavailable("slurm-wlm/munge are missing and apt-get is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        _run(["apt-get", "update", "-qq"], timeout=300, env=env)
        _run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], timeout=600, env=env)
    except subprocess.CalledProcessError as err:
        raise ClusterUnavailable(f"apt-get install {' '.join(APT_PACKAGES)} failed:\n{err.stderr}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_hardware() -> tuple[str, int, int]:
    """Node name, CPUs and RealMemory (MiB) as slurmd itself sees them."""
    node = socket.gethostname().split(".")[0]
    fields = dict(
        item.split("=", 1) for item in _run(["slurmd", "-C"]).stdout.split() if "=" in item
    )
    return node, int(fields["CPUs"]), int(fields["RealMemory"])


def write_slurm_conf(root: Path) -> SlurmCluster:
    """slurm.conf (and gres.conf) that work without systemd, cgroups or slurmdbd."""
    node, hw_cpus, hw_memory = _node_hardware()
    cpus = max(hw_cpus, MIN_CPUS)
    real_memory = max(int(hw_memory * 0.9), MIN_MEMORY_MB)
    gpus = FAKE_GPUS
    for sub in ("state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=pktest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={max(real_memory // (2 * cpus), 100)}
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
ReturnToService=2
SchedulerParameters=sched_interval=1
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={real_memory} Gres=gpu:{gpus} State=UNKNOWN
PartitionName={DEFAULT_PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName={GPU_PARTITION} Nodes=ALL Default=NO MaxTime=INFINITE State=UP
""")
    # slurmd reads gres.conf from the directory of the slurm.conf it was started with.
    null = os.stat("/dev/null").st_rdev
    for index in range(gpus):
        device = root / f"fake-gpu{index}"
        if not device.exists():
            os.mknod(device, 0o666 | stat.S_IFCHR, null)
    (root / "gres.conf").write_text(
        f"AutoDetect=off\nNodeName={node} Name=gpu File={root}/fake-gpu[0-{gpus - 1}]\n"
    )
    return SlurmCluster(root, conf, node, cpus, real_memory, gpus)


@contextmanager
def _system_conf_link(conf: Path) -> Iterator[None]:
    """Point /etc/slurm/slurm.conf at ``conf``; put back whatever was there before."""
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    backup: Path | None = None
    if SYSTEM_CONF.is_symlink() or SYSTEM_CONF.exists():
        backup = SYSTEM_CONF.with_name(f"slurm.conf.pk-backup-{os.getpid()}")
        os.replace(SYSTEM_CONF, backup)
    try:
        SYSTEM_CONF.symlink_to(conf)
        yield
    finally:
        if SYSTEM_CONF.is_symlink() and SYSTEM_CONF.resolve() == conf.resolve():
            SYSTEM_CONF.unlink()
        if backup is not None:
            os.replace(backup, SYSTEM_CONF)


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (daemonised, nobody reaps it) counts as gone."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(predicate, timeout: float, what: str, diagnose=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ClusterUnavailable(
                f"timed out after {timeout:.0f} s waiting for {what}\n{diagnose()}"
            )
        time.sleep(0.2)


def _stop_pid(pid: int, timeout: float = 15) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def _munged() -> Iterator[None]:
    """Run munged as the munge user; reuse one that is already running (and leave it)."""
    if not MUNGE_KEY.exists():
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        _run(["mungekey", "--create", "--keyfile", str(MUNGE_KEY)])
        shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_KEY.chmod(0o400)
    MUNGE_RUN.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_RUN, "munge", "munge")
    MUNGE_RUN.chmod(0o755)
    running = _read_pid(MUNGE_PIDFILE)
    if running is not None and _alive(running):
        yield
        return
    # munged daemonises; the pid it records is the one to stop later.
    _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--force"])
    _wait_for(lambda: _read_pid(MUNGE_PIDFILE) is not None, 10, "munged's pid file")
    pid = _read_pid(MUNGE_PIDFILE)
    assert pid is not None
    try:
        _run(["sh", "-c", "munge -n | unmunge"], timeout=10)
        yield
    finally:
        _stop_pid(pid)


@contextmanager
def _daemon(cmd: list[str], pidfile: Path, log: Path) -> Iterator[None]:
    """Start a slurm daemon in the background; stop it by the pid in its pid file."""
    # The daemons fork into the background; their exit status says whether start-up worked.
    with open(log.with_suffix(".out"), "wb") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=30)
    if proc.returncode != 0:
        raise ClusterUnavailable(
            f"{' '.join(cmd)} exited with {proc.returncode}:\n"
            f"{log.with_suffix('.out').read_text(errors='replace')}\n"
            f"{log.read_text(errors='replace') if log.exists() else ''}"
        )
    try:
        _wait_for(lambda: _read_pid(pidfile) is not None, 15, f"{pidfile}")
        yield
    finally:
        # Read the pid before stopping: the daemon deletes its pid file on exit.
        pid = _read_pid(pidfile)
        if pid is not None:
            _stop_pid(pid)


_ACTIVE_STATES = "PENDING,CONFIGURING,RUNNING,SUSPENDED,COMPLETING"


def _active_jobs() -> list[str]:
    proc = subprocess.run(
        ["squeue", "-h", "-o", "%i", f"--states={_ACTIVE_STATES}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.stdout.split() if proc.returncode == 0 else []


@contextmanager
def _cancel_jobs_on_exit() -> Iterator[None]:
    """Cancel what is still queued or running before the daemons go: a job step outlives a
    stopped slurmd and would keep running with nobody to end it."""
    try:
        yield
    finally:
        jobs = _active_jobs()
        if jobs:
            subprocess.run(["scancel", *jobs], capture_output=True, timeout=30)
            deadline = time.monotonic() + 30
            while _active_jobs() and time.monotonic() < deadline:
                time.sleep(0.5)


def _try_lock(handle) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _node_idle() -> bool:
    """The node is idle in every partition (sinfo prints one line per partition)."""
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    return proc.returncode == 0 and set(proc.stdout.split()) == {"idle"}


@contextmanager
def local_slurm_cluster(
    root: Path | None = None, start_timeout: float = 60
) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd; yield the cluster once the node is idle.

    Needs root (it writes /etc/slurm/slurm.conf and runs the daemons as root); raises
    ``ClusterUnavailable`` when that is impossible. Everything else lives under ``root``.
    """
    if not _is_root():
        raise ClusterUnavailable(
            "a local SLURM cluster needs root; deselect this test with -m 'not slurm'"
        )
    ensure_installed()
    with ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pk-slurm-")))
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        lock = stack.enter_context(open(LOCK_FILE, "w"))
        _wait_for(
            lambda: _try_lock(lock), LOCK_TIMEOUT_S, f"{LOCK_FILE} (another cluster is running)"
        )
        cluster = write_slurm_conf(root)
        stack.enter_context(_system_conf_link(cluster.conf))
        stack.enter_context(_munged())
        stack.enter_context(
            _daemon(
                ["slurmctld", "-f", str(cluster.conf)],
                root / "slurmctld.pid",
                root / "slurmctld.log",
            )
        )
        stack.enter_context(
            _daemon(
                ["slurmd", "-f", str(cluster.conf), "-N", cluster.node],
                root / "slurmd.pid",
                root / "slurmd.log",
            )
        )
        _wait_for(_node_idle, start_timeout, "sinfo to report idle", cluster.log_tail)
        stack.enter_context(_cancel_jobs_on_exit())
        yield cluster


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """The cluster for a test module. Outside CI a machine that cannot run it skips with the
    reason; in CI (CI=true) that is a failure, so the test can never vanish unnoticed."""
    root = tmp_path_factory.mktemp("slurm")
    try:
        cluster_cm = local_slurm_cluster(root)
        cluster = cluster_cm.__enter__()
    except ClusterUnavailable as err:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes") or _is_root():
            pytest.fail(f"cannot start the local SLURM cluster: {err}")
        pytest.skip(f"cannot start the local SLURM cluster: {err}")
    try:
        yield cluster
    finally:
        cluster_cm.__exit__(None, None, None)
