"""Locks that say who holds them: one process at a time in a run directory, or building one data directory.

A lock is flock(2) on a lock file, held through a file descriptor the holder keeps open: the kernel releases it
when that descriptor closes or the process ends, however it ends (an exception, a signal, SIGKILL, a crash), so a
lock file left behind never blocks anyone; only a live holder does. The holder writes its pid, host and start
time into the file, for the message of whoever finds it held. The file itself stays: removing a lock file that
others may have open would let two processes each hold "the" lock.

NFS clients (Linux) turn flock into POSIX locks, which the server arbitrates between nodes. A file system that
refuses flock altogether (Lustre mounted without `flock`, say) gets a warning naming the file and no lock,
rather than a failure: nothing then keeps a second process out, as before there were locks.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its file says; fields are None where it says nothing (not written yet, or garbled)."""

    pid: int | None = None
    host: str | None = None
    since: float | None = None  # seconds since the epoch

    @classmethod
    def me(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), time.time())

    @classmethod
    def read(cls, path: Path) -> Holder:
        """The holder the lock file `path` names (nobody's, when it is gone)."""
        try:
            return cls.parse(path.read_text())
        except FileNotFoundError:
            return cls()

    @classmethod
    def parse(cls, text: str) -> Holder:
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), float(data["since"]))
        except (ValueError, TypeError, KeyError):
            return cls()

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "since": self.since}) + "\n"

    def is_dead(self) -> bool:
        """Whether the holder is known to have ended: a process of this host that no longer runs. One elsewhere,
        or unnamed, cannot be checked from here."""
        if self.pid is None or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # another user's process: alive
            return False
        return False

    def __str__(self) -> str:
        if self.pid is None:
            return "an unnamed process"
        since = time.strftime(" since %Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since)) if self.since else ""
        return f"pid {self.pid} on host {self.host}{since}"


class LockHeld(Exception):
    """The lock at `path` is held by a live process, `holder`."""

    def __init__(self, path: Path, holder: Holder):
        super().__init__(f"{path} is held by {holder}")
        self.path, self.holder = path, holder


class Lock:
    """An exclusive lock on the file `path` (created if missing), for one holder at a time across processes and
    hosts. Taken by `take` or `wait`, held until `release`, the end of a `with` block, or the process's end."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def take(self) -> None:
        """Take the lock now, or raise LockHeld naming its holder."""
        if not self._lock(blocking=False):
            raise LockHeld(self.path, Holder.read(self.path))

    def wait(self, what: str) -> None:
        """Take the lock, waiting for its holder first; a wait is announced once, as waiting for `what`."""
        if not self._lock(blocking=False):
            print(f"waiting for {what}: {self.path} is held by {Holder.read(self.path)}", flush=True)
            self._lock(blocking=True)

    def release(self) -> None:
        """Release the lock if this object holds it."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _lock(self, blocking: bool) -> bool:
        """Whether the lock is now held; on a file system without flock, True after a warning."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this object")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # no O_TRUNC: the holder's name stays readable
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as err:
            os.close(fd)
            print(f"warning: {self.path}: this file system does not lock files ({err.strerror or err}); nothing "
                  "keeps a second process out", flush=True)
            return True
        os.ftruncate(fd, 0)
        os.pwrite(fd, Holder.me().to_json().encode(), 0)
        self._fd = fd
        return True
