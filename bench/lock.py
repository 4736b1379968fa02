"""Which process holds what: a process's identity (host, pid, start time) and the lock of a results folder.

A lock is a POSIX record lock (``fcntl.lockf``) on a file, held for as long as the process lives: the kernel drops
it when the process ends, however it ends (SIGKILL included), and a child made by ``fork`` does not inherit it. The
file also says who holds it (host, pid, start time), so a second run names the holder; the file of a process that
died stays behind with its last holder written in it, and the next run takes the lock over and says so.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path


class Locked(RuntimeError):
    """The folder is in use by another live process; the message names it."""


def _boot_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), which tells a reused pid from the original."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def this_process() -> dict:
    """host, pid and start time of this process (``started``: ticks since boot where the system tells them)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _boot_ticks(os.getpid())}


def alive(proc: dict) -> bool:
    """Is the process ``proc`` (as :func:`this_process` gave it, on this host) still running?"""
    try:
        pid = int(proc.get("pid", -1))
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    started = str(proc.get("started", ""))
    return not started or _boot_ticks(pid) in ("", started)


def describe(holder: dict) -> str:
    when = holder.get("time")
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if isinstance(when, (int, float)) else "?"
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {at}"


class FolderLock:
    """``with FolderLock(path):`` holds the lock file ``path`` or raises :class:`Locked` at once, naming the
    holder. ``taken_over``: the holder a dead process left in the file (None if the lock was free and clean)."""

    def __init__(self, path: Path, what: str = "results folder"):
        self.path, self.what = Path(path), what
        self.fd: int | None = None
        self.taken_over: dict | None = None

    def acquire(self) -> FolderLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read(fd)
            os.close(fd)
            raise Locked(f"{self.path.parent} is in use by another afx-bench run ({describe(holder)}); wait for it "
                         f"to finish, or give another --out") from None
        old = _read(fd)
        if old.get("pid") is not None and not (old.get("host") == socket.gethostname() and old.get("pid") ==
                                               os.getpid()):
            self.taken_over = old
        me = json.dumps({**this_process(), "time": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, me, 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)  # a lock left by a clean exit holds no holder
        os.close(self.fd)  # closing the file drops the lock
        self.fd = None

    def __enter__(self) -> FolderLock:
        return self if self.fd is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
