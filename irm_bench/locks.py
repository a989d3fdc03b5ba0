"""Recovery of Snakemake's working-directory lock after a hard kill.

Snakemake locks its working directory (``.snakemake/locks``) while it runs and
releases the lock on a normal exit or Ctrl-C. A SIGKILL or power loss leaves the
lock behind, and the next run stops with "Directory cannot be locked". The lock
holds no process id, so staleness is decided here by looking for a live Snakemake
process whose working directory is this one: when there is none, the lock is stale
and is removed (what ``snakemake --unlock`` does).

Run as ``python -m irm_bench.locks [DIR]``; ``make run`` does this before Snakemake.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psutil


def running_snakemake_in(workdir: str | Path) -> list[int]:
    """PIDs of live Snakemake processes whose working directory is ``workdir``.

    Processes that cannot be inspected (other users, already gone) are skipped.
    """
    target = Path(workdir).resolve()
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            is_snakemake = any(Path(part).name == "snakemake" for part in cmd[:2]) or (
                len(cmd) >= 3 and cmd[1] == "-m" and cmd[2] == "snakemake"
            )
            if is_snakemake and Path(proc.cwd()).resolve() == target:
                pids.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return pids


def clear_stale_lock(workdir: str | Path = ".") -> bool:
    """Remove ``workdir/.snakemake/locks/*`` when no Snakemake runs in ``workdir``.

    Returns
    -------
    bool
        True when a stale lock was removed; False when there was none, or when a
        Snakemake process is running there (its lock is live and is kept).
    """
    locks = Path(workdir) / ".snakemake" / "locks"
    lock_files = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    if not lock_files or running_snakemake_in(workdir):
        return False
    for lock in lock_files:
        lock.unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    """Command line: clear a stale lock in the given folder (default: here)."""
    args = sys.argv[1:] if argv is None else argv
    workdir = args[0] if args else "."
    if clear_stale_lock(workdir):
        print(
            f"irm-bench: removed a stale Snakemake lock in {Path(workdir).resolve()} "
            "(left by a killed run; no Snakemake is running there)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
