"""One run per run_dir: `RUN_DIR/run.lock` names the process (pid, host) that owns the directory.

A second `tools/train.py` on the same run_dir refuses with `RunDirLocked` (naming the run_dir, the pid and the host
of the holder) instead of interleaving checkpoints and logs. A lock left by a killed run (same host, pid no longer
alive, or alive but a different process: its start time differs) is taken over with a warning, so rerunning after
a kill -9 resumes as before. A lock from another host cannot be checked: the message says to delete the file once
that run is gone. Under DDP only global rank 0 takes the lock (the other ranks belong to the same run).

The lock file is created complete or not at all (`datamodules.atomic.atomic_create`: write, fsync, hard link).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Optional

from datamodules.atomic import atomic_create

log = logging.getLogger("milnce")

LOCK_NAME = "run.lock"


class RunDirLocked(RuntimeError):
    """Another live process holds the run_dir."""


def is_global_zero_process() -> bool:
    """Before the Trainer exists: rank 0 unless the launcher says otherwise (torchrun: RANK; Lightning's DDP
    launcher: LOCAL_RANK/NODE_RANK; srun: SLURM_PROCID; mpirun: OMPI_COMM_WORLD_RANK)."""
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"):
        value = os.environ.get(var)
        if value not in (None, "") and value.strip() != "0":
            return False
    return True


def _start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (Linux /proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunLock:
    """`with RunLock(run_dir):` — raises RunDirLocked if a live run holds run_dir; released on exit."""

    def __init__(self, run_dir, enabled: Optional[bool] = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.enabled = is_global_zero_process() if enabled is None else enabled
        self.held = False
        self.record = {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S")}

    def _read(self) -> Optional[dict]:
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def _stale(self, holder: dict) -> Optional[str]:
        """Why the holder is gone (None: it may be alive)."""
        if not holder:
            return "unreadable lock file"
        if holder.get("host") != self.record["host"]:
            return None
        try:
            pid = int(holder.get("pid"))
        except (TypeError, ValueError):
            return "lock file names no pid"
        if pid == os.getpid():
            return f"pid {pid} is this process (an earlier incarnation on this host)"
        if not _alive(pid):
            return f"pid {pid} is no longer alive"
        start = _start_time(pid)
        if holder.get("start") and start and start != holder["start"]:
            return f"pid {pid} is now another process"
        return None

    def acquire(self) -> None:
        if not self.enabled:
            return
        text = json.dumps(self.record, sort_keys=True) + "\n"
        for _ in range(10):
            if atomic_create(self.path, text):
                self.held = True
                return
            holder = self._read()
            if holder is None:  # released between our attempt and the read
                continue
            why = self._stale(holder)
            if why is None:
                raise RunDirLocked(
                    f"run_dir {self.run_dir} is in use by pid {holder.get('pid')} on host {holder.get('host')} "
                    f"(since {holder.get('since', '?')}; lock file {self.path}). Wait for that run to finish, "
                    f"stop it, or choose another run_dir; if that run is gone, delete {self.path}.")
            # take the stale lock over: move it aside, and only keep going if what moved is the lock we judged
            aside = self.path.with_name(f".{LOCK_NAME}.stale-{os.getpid()}")
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:
                continue
            try:
                moved = json.loads(aside.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                moved = {}
            if moved and moved != holder:  # another process took it over in between: give it back
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
                aside.unlink()
                continue
            aside.unlink()
            log.warning("taking over the stale lock of run_dir %s (pid %s on host %s: %s)", self.run_dir,
                        holder.get("pid"), holder.get("host"), why)
        raise RunDirLocked(f"run_dir {self.run_dir}: could not take the lock {self.path} (contended)")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = self._read()
        if holder and holder.get("pid") == self.record["pid"] and holder.get("host") == self.record["host"]:
            self.path.unlink()

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
