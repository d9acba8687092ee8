"""One writer per output folder: an exclusive lock held for a whole command.

Two ``onecycle fit`` processes on one ``--out`` (a retried job, a double click, two ranks
of a mis-launched job) would interleave their checkpoints and overwrite each other's
``metrics.json``. Every command that writes a folder (``fit``, ``lr-find``, ``study``,
``schedule``, and the ``Checkpoint`` callback for its folder) holds ``FolderLock`` on it:
``fcntl.flock`` on ``<folder>/.onecycle.lock``, whose content names the holder (pid,
host, command, start time) for the message the next one gets:

    out='runs/fit' is invalid: expected a folder no other process is writing: pid 4242
    (onecycle fit ..., since 2025-01-01 12:00:03) holds runs/fit/.onecycle.lock; ...

- The kernel drops a ``flock`` when its holder dies, however it dies: a lock file that
  still names a pid but can be locked was left by a killed process, and is taken over
  with a warning naming that pid. A clean release empties the file (it is never deleted:
  a process that opened it just before would lock a file no one else sees).
- NFS: since Linux 2.6.12 the client emulates ``flock`` with a byte-range lock on the whole
  file (``fcntl``, the NLM protocol on NFSv3, NFSv4's own locks), so it excludes
  processes on other clients too, as long as the server supports locking. A mount with
  ``nolock`` or ``local_lock=flock|all`` keeps locks on one client: two hosts are then not
  kept apart. A file system that refuses locks (``ENOLCK``, ``EOPNOTSUPP``) gets a warning
  and no lock, not a refusal.
- Under ``torchrun`` only rank 0 locks; its answer (refused or not) is every rank's.
- Re-entrant within a process: a command that locks ``out`` may run code that locks it
  again (``onecycle demo`` runs ``run_fit``).

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d, FolderLock(d) as lock:
...     with FolderLock(d):  # the same process: nested, not refused
...         lock.holder()["pid"] == os.getpid()
True
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onecycle import distributed as D
from onecycle.errors import ConfigError

__all__ = ["LOCK_FILE", "FolderInUse", "FolderLock", "on_main"]

log = logging.getLogger(__name__)

LOCK_FILE = ".onecycle.lock"
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)

# this process's locks, by real path: [fd, depth] (re-entrant; flock itself is not: a
# second open file in the same process would be refused by the first)
_held: dict[str, list[int]] = {}
_guard = threading.Lock()


class FolderInUse(ConfigError):
    """Another live process holds the folder's lock (the CLI: one line, exit status 2)."""


def on_main(fn: Callable[[], Any]) -> None:
    """Run ``fn`` on rank 0 only (every process outside ``torchrun``); a ``ConfigError`` it
    raises is raised on every rank, so no rank waits for a peer that gave up."""
    failed: tuple[str, Any, str] | str | None = None
    error: BaseException | None = None
    if D.is_main():
        try:
            fn()
        except ConfigError as e:
            failed, error = (e.name, e.value, e.allowed), e
        except Exception as e:  # an I/O error: the peers must not wait for rank 0 either
            failed, error = f"{type(e).__name__}: {e}", e
    if D.is_distributed():
        failed = D.broadcast_object(failed)
    if error is not None:
        raise error
    if isinstance(failed, tuple):
        raise ConfigError(*failed)
    if failed is not None:
        raise RuntimeError(f"rank 0 failed: {failed}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another process (it has not written its pid yet)"
    where = "" if holder.get("host") in (None, socket.gethostname()) else f" on {holder['host']}"
    extra = [str(holder["command"])] if holder.get("command") else []
    extra += [f"since {holder['since']}"] if holder.get("since") else []
    return f"pid {holder['pid']}{where}" + (f" ({', '.join(extra)})" if extra else "")


def _read(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        record = dict(json.loads(raw)) if raw.strip() else {}
    except (OSError, ValueError, TypeError):  # unreadable, or not what we write
        return {}
    if not isinstance(record.get("pid"), int) or isinstance(record.get("pid"), bool):
        record["pid"] = None
    return record


class FolderLock:
    """An exclusive, re-entrant lock on ``folder`` for this process (rank 0 under
    ``torchrun``): ``with FolderLock(out): ...``, or ``acquire()`` / ``release()``.

    ``acquire`` raises ``FolderInUse`` (a ``ConfigError`` naming ``name``, the folder and
    the holder's pid) when a live process holds it; a lock left by a killed one is taken
    over with a warning."""

    def __init__(self, folder: str | Path, name: str = "out") -> None:
        self.folder, self.name = Path(folder), name
        self.path = self.folder / LOCK_FILE
        self._key: str | None = None  # held in this process (rank 0 under torchrun)
        self._acquired = False  # on every rank alike: acquire/release stay collective

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def holder(self) -> dict[str, Any]:
        """What the lock file says of its holder (``{}`` when free or unreadable)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return {}
        try:
            return _read(fd)
        finally:
            os.close(fd)

    def acquire(self) -> FolderLock:
        if not self._acquired:
            on_main(self._acquire)
            self._acquired = True
        return self

    def release(self) -> None:
        key, self._key, self._acquired = self._key, None, False
        if key is None:
            return
        with _guard:
            entry = _held.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[key]
        fd = entry[0]
        if fd < 0:  # the file system had no locks
            return
        try:
            os.ftruncate(fd, 0)  # released cleanly: no pid left for the next one to doubt
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _acquire(self) -> None:
        key = os.path.realpath(self.folder)
        with _guard:
            if key in _held:
                _held[key][1] += 1
                self._key = key
                return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # NFS: write access
        except OSError as e:
            what = f"a folder this user can write ({e.strerror or e})"
            raise ConfigError(self.name, str(self.folder), what) from None
        try:
            if self._lock(fd):
                self._take_over(fd)
            else:
                os.close(fd)
                fd = -1
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        with _guard:
            _held[key] = [fd, 1]
        self._key = key

    def _lock(self, fd: int) -> bool:
        """Lock ``fd``; False where the file system has no locks (warned)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            holder: dict[str, Any] = {}
            for _ in range(20):  # the holder may be between its flock and its write
                holder = _read(fd)
                if holder.get("pid"):
                    break
                time.sleep(0.025)
            raise FolderInUse(
                self.name, str(self.folder),
                f"a folder no other process is writing: {_describe(holder)} holds "
                f"{self.path}; wait for it to end, or use another folder",
            ) from None  # fmt: skip
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                raise
            log.warning("%s: this file system does not lock files (%s): two runs into this "
                        "folder would not be kept apart", self.folder, e.strerror or e)  # fmt: skip
            return False

    def _take_over(self, fd: int) -> None:
        """Warn if the file still names a holder that did not release it; write ours."""
        old = _read(fd)  # a clean release empties the file: a pid here was never released
        if old.get("pid"):
            pid, here = int(old["pid"]), old.get("host") in (None, socket.gethostname())
            why = (
                "no longer holds it" if not here
                else "no longer holds it (that pid now belongs to another process)"
                if pid != os.getpid() and _alive(pid)
                else "ended without releasing it (killed or crashed)"
            )  # fmt: skip
            log.warning("taking over the lock of %s: %s %s", self.folder, _describe(old), why)
        since = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "command": _command(), "since": since}  # fmt: skip
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError:  # a full disk: the lock holds, only its message loses the pid
            pass


def _command() -> str:
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("__main__.py", "onecycle"):
        argv[0] = "onecycle"
    text = " ".join(argv)
    return text if len(text) <= 120 else text[:117] + "..."
