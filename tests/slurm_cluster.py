"""A throw-away single-node SLURM cluster for tests (Slurm 22.05, Debian packages).

:class:`LocalSlurm` writes ``/etc/slurm/slurm.conf`` and ``gres.conf`` (backing up and
later restoring any existing files), starts ``munged`` (only if no munge daemon answers
already), ``slurmctld`` and ``slurmd`` as child processes in the foreground, waits for
the node to become idle, and on :meth:`LocalSlurm.stop` cancels leftover jobs and stops
exactly the daemons it started. The node offers two partitions on the same host, ``cpu``
(default) and ``gpu``, and advertises ``n_gpus`` stand-in GPUs so that GPU requests can
be scheduled and checked on a machine without GPUs.

Why the configuration looks the way it does (facts found on these machines):

* ``slurm.conf`` must sit at the default path: the executor plugin's job-step wrapper
  clears every ``SLURM_*`` variable (``SLURM_CONF`` too) before its inner ``srun``.
* Without an accounting database ``sacct`` fails, so Snakemake must poll with
  ``squeue``; that needs finished jobs to stay visible, hence ``MinJobAge=600``.
* ``proctrack/linuxproc`` and ``task/none`` need neither cgroups nor systemd.
* GRES wants one distinct character device per GPU; harmless ones stand in.
* ``SlurmdParameters=config_overrides`` lets the node advertise more CPUs and memory than
  the test machine has, so rules with realistic ``threads``/``mem_mb`` can be scheduled
  on a 2-core CI runner (nothing is enforced: no cgroups).

Usable by hand as root: ``python tests/slurm_cluster.py start [STATE_DIR]`` (Ctrl-C stops it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SLURM_ETC = Path("/etc/slurm")
MANAGED_FILES = ("slurm.conf", "gres.conf")
BACKUP_SUFFIX = ".irm-bench-backup"
PROGRAMS = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")
CTLD_PORT, SLURMD_PORT = 6817, 6818
# Distinct harmless character devices standing in for GPUs in gres.conf.
FAKE_GPU_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
MIN_JOB_AGE_S = 600
PARTITIONS = ("cpu", "gpu")


class SlurmHarnessError(RuntimeError):
    """The local cluster could not be set up, started or stopped."""


def missing_programs() -> list[str]:
    """Names of the SLURM/munge programs that are not installed (empty when ready).

    Looks on ``PATH`` and in ``/usr/sbin`` (daemons live there on Debian).
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [p for p in PROGRAMS if shutil.which(p, path=search) is None]


def _sbin(name: str) -> str:
    search = os.pathsep.join(["/usr/sbin", "/sbin", os.environ.get("PATH", "")])
    path = shutil.which(name, path=search)
    if path is None:
        raise SlurmHarnessError(f"{name} not found; install the Debian packages slurm-wlm munge")
    return path


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _munge_answers() -> bool:
    try:
        out = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def _physical_mem_mb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise SlurmHarnessError("MemTotal missing from /proc/meminfo")


@dataclass
class LocalSlurm:
    """One-node SLURM cluster owned by this process.

    Parameters
    ----------
    state_dir
        Folder for spool, state, logs and the daemons' output (created).
    n_gpus
        Stand-in GPUs advertised as ``gres/gpu`` (0 to 5).
    cpus
        CPUs advertised; default ``max(os.cpu_count(), 8)``.
    mem_mb
        Memory advertised in MB; default ``max(physical, 32000)``.
    """

    state_dir: Path
    n_gpus: int = 2
    cpus: int | None = None
    mem_mb: int | None = None
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, init=False)
    _written: list[Path] = field(default_factory=list, init=False)

    @property
    def ctld_log(self) -> Path:
        """slurmctld's log file (records every submitted job id)."""
        return self.state_dir / "log" / "slurmctld.log"

    # -- configuration ------------------------------------------------------------
    def slurm_conf(self) -> str:
        """Text of ``slurm.conf`` for this node."""
        cpus = self.cpus or max(os.cpu_count() or 1, 8)
        mem = self.mem_mb or max(_physical_mem_mb(), 32000)
        s = self.state_dir
        gres = f" Gres=gpu:{self.n_gpus}" if self.n_gpus else ""
        lines = [
            "ClusterName=irmbench",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"StateSaveLocation={s}/spool/ctld",
            f"SlurmdSpoolDir={s}/spool/d",
            f"SlurmctldPidFile={s}/slurmctld.pid",
            f"SlurmdPidFile={s}/slurmd.pid",
            f"SlurmctldLogFile={self.ctld_log}",
            f"SlurmdLogFile={s}/log/slurmd.log",
            f"SlurmctldPort={CTLD_PORT}",
            f"SlurmdPort={SLURMD_PORT}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SlurmdParameters=config_overrides",
            # Jobs that name no memory get a little, not the whole node.
            "DefMemPerCPU=500",
            "MpiDefault=none",
            "ReturnToService=2",
            f"MinJobAge={MIN_JOB_AGE_S}",
            *(["GresTypes=gpu"] if self.n_gpus else []),
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem}{gres}"
            " State=UNKNOWN",
            f"PartitionName=cpu Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName=gpu Nodes={self.node} Default=NO MaxTime=INFINITE State=UP",
        ]
        return "\n".join(lines) + "\n"

    def gres_conf(self) -> str:
        """Text of ``gres.conf``: one stand-in device per advertised GPU."""
        if not 0 <= self.n_gpus <= len(FAKE_GPU_DEVICES):
            raise SlurmHarnessError(
                f"n_gpus must be in 0..{len(FAKE_GPU_DEVICES)}, found {self.n_gpus}"
            )
        return "".join(
            f"NodeName={self.node} Name=gpu File={dev}\n"
            for dev in FAKE_GPU_DEVICES[: self.n_gpus]
        )

    def _install_config(self) -> None:
        SLURM_ETC.mkdir(parents=True, exist_ok=True)
        texts = {"slurm.conf": self.slurm_conf(), "gres.conf": self.gres_conf()}
        for name in MANAGED_FILES:
            target = SLURM_ETC / name
            backup = target.with_name(name + BACKUP_SUFFIX)
            if backup.exists():
                raise SlurmHarnessError(
                    f"{backup} exists: a previous run did not restore {target}; "
                    "check it and move it back by hand"
                )
            if target.exists() or target.is_symlink():
                target.rename(backup)
            self._written.append(target)
            target.write_text(texts[name])

    def _restore_config(self) -> None:
        for target in reversed(self._written):
            target.unlink(missing_ok=True)
            backup = target.with_name(target.name + BACKUP_SUFFIX)
            if backup.exists() or backup.is_symlink():
                backup.rename(target)
        self._written.clear()

    # -- daemons --------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], **kwargs) -> None:
        out = open(self.state_dir / "log" / f"{name}.out", "ab")  # noqa: SIM115
        self._procs[name] = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs
        )
        out.close()

    def _start_munge(self) -> None:
        if _munge_answers():
            return  # someone else's munged: use it, never stop it
        run_dir = Path("/run/munge")
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(run_dir, "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            raise SlurmHarnessError(
                "/etc/munge/munge.key is missing; create it with `mungekey --create` "
                "(the munge package normally does)"
            )
        self._spawn("munged", [_sbin("munged"), "--foreground"], user="munge", group="munge")
        self._wait(_munge_answers, 20, "munged did not answer `munge -n`")

    def _wait(self, ready, timeout_s: float, message: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SlurmHarnessError(
                        f"{name} exited with {proc.returncode}; see {self.state_dir}/log/"
                    )
            if ready():
                return
            time.sleep(0.5)
        raise SlurmHarnessError(f"{message} within {timeout_s} s; see {self.state_dir}/log/")

    def node_state(self) -> str:
        """State of the node as ``sinfo`` prints it (``idle``, ``mix``, ``down*``...)."""
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T", "-p", "cpu"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() if out.returncode == 0 else ""

    def start(self) -> LocalSlurm:
        """Write the configuration and start the daemons; return when the node is idle.

        Raises
        ------
        SlurmHarnessError
            Not root, programs missing, SLURM ports already taken (another cluster runs
            here), or a daemon died or the node did not become idle in time. Everything
            started so far is stopped again before raising.
        """
        if os.geteuid() != 0:
            raise SlurmHarnessError("the local SLURM cluster must be started as root")
        if missing := missing_programs():
            raise SlurmHarnessError(f"not installed: {', '.join(missing)} (slurm-wlm munge)")
        busy = [p for p in (CTLD_PORT, SLURMD_PORT) if not _port_free(p)]
        if busy:
            raise SlurmHarnessError(
                f"ports {busy} are in use: another SLURM seems to run here; stop it first"
            )
        for sub in ("spool/ctld", "spool/d", "log"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        try:
            self._install_config()
            self._start_munge()
            self._spawn("slurmctld", [_sbin("slurmctld"), "-D", "-c"])
            self._wait(
                lambda: subprocess.run(["scontrol", "ping"], capture_output=True).returncode == 0,
                30,
                "slurmctld did not answer `scontrol ping`",
            )
            self._spawn("slurmd", [_sbin("slurmd"), "-D"])
            self._wait(lambda: self.node_state() == "idle", 60, "the node did not become idle")
        except BaseException:
            self.stop()
            raise
        return self

    def _cancel_jobs(self) -> None:
        if "slurmctld" not in self._procs:
            return
        subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True, timeout=20)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["squeue", "-h", "-t", "PD,R,CG", "-o", "%i"], capture_output=True, text=True
            )
            if out.returncode != 0 or not out.stdout.strip():
                return
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel leftover jobs, stop the daemons this object started, restore configs.

        Safe to call twice and after a failed :meth:`start`.
        """
        try:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self._cancel_jobs()
        finally:
            for name in ("slurmd", "slurmctld", "munged"):
                proc = self._procs.pop(name, None)
                if proc is None:
                    continue
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=10)
            self._restore_config()

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    """Start a cluster and keep it up until SIGINT/SIGTERM (``start``), or ``status``."""
    if not argv or argv[0] not in {"start", "status"}:
        print("usage: slurm_cluster.py start [STATE_DIR] | status", file=sys.stderr)
        return 2
    if argv[0] == "status":
        print("missing programs:", missing_programs() or "none")
        subprocess.run(["sinfo"], check=False)
        return 0
    state = Path(argv[1] if len(argv) > 1 else "/tmp/irm_bench_slurm").resolve()
    # Explicit handlers: a background job may inherit SIGINT ignored, and SIGTERM would
    # otherwise end Python without stopping the daemons.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    with LocalSlurm(state):
        print(f"SLURM up (state in {state}); Ctrl-C stops it and restores /etc/slurm", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
