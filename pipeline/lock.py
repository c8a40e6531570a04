"""One lock per output (a store, a run folder, a study), held for a stage's lifetime.

``fcntl.flock`` on a ``.lock`` file beside the output: the kernel releases it when the holder
exits, even by SIGKILL, so a killed run never leaves a stale lock (only its file, which the next
run reuses). The last holder to finish removes the file: it takes the lock
exclusively, without waiting, and unlinks the file only if that succeeds. A process that opened
the file before it was removed sees, once it holds the lock, that the path no longer names that
file, and locks the path's new file instead, so two runs never hold two different files of one
output. Writers (embed, import,
``--overwrite``, a training run in its run folder) hold it exclusively; readers of a store
(train-snn, tune, report, inspect) hold it shared, so a store cannot be replaced or rewritten under a
running train-snn while any number of readers share it.

The lock is keyed by the output's resolved path: ``X.zarr``, ``X.zarr/``, ``./X.zarr`` and a symlink
to it are one output with one lock file, ``<resolved path>.lock``. The file names its holders (pid,
host, start time, command; a JSON line each) for the message a refused run gets. An output on an
fsspec URL (an object store) is locked by a file in the local temporary folder named after the URL:
that guards against a second run on this machine, not on another one.

A forked child (a DataLoader worker decoding images) closes its copies of the held lock
descriptors at once: the lock is the parent's, and a child outliving a killed parent for a moment
would otherwise keep it and refuse the rerun.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.errors import UserError
from pipeline.store import is_url, location


_HELD: set[int] = set()  # descriptors of the locks this process holds


def _close_held_in_child() -> None:
    for fd in _HELD:
        try:
            os.close(fd)  # the child's copy only: the parent's descriptor keeps the lock
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def lock_path(output: str | Path) -> Path:
    """The lock file of ``output``: beside its resolved path, or in the temporary folder for a URL."""
    if is_url(output):
        digest = hashlib.sha256(location(output).rstrip("/").encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir(), "annsnn-locks", f"{digest}.lock")
    return Path(f"{os.path.realpath(os.path.expanduser(location(output)))}.lock")


@contextmanager
def exclusive(output: str | Path) -> Iterator[None]:
    """Hold ``output``'s lock alone for the block; refuse at once if any process holds it."""
    with _locked(output, fcntl.LOCK_EX):
        yield


@contextmanager
def shared(output: str | Path) -> Iterator[None]:
    """Hold ``output``'s lock beside other readers for the block; refuse at once if a writer
    holds it. Where no lock file can be made (a read-only folder) nobody can write there either,
    and the block runs unlocked; a local output that does not exist is not locked either (there is
    nothing to read, and a reader leaves no lock file beside a mistyped path)."""
    if not is_url(output) and not os.path.exists(os.path.expanduser(location(output))):
        yield
        return
    with _locked(output, fcntl.LOCK_SH):
        yield


#: How often a lock whose file was removed meanwhile (by its finishing holder) is taken again.
_ATTEMPTS = 5


@contextmanager
def _locked(output: str | Path, mode: int) -> Iterator[None]:
    path = lock_path(output)
    for _ in range(_ATTEMPTS):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            if mode == fcntl.LOCK_SH and not path.exists():
                yield
                return
            raise UserError(f"{path}: cannot create the lock file of {output} "
                            f"({e.strerror or e}); check that its folder is writable") from None
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            role = "written" if mode == fcntl.LOCK_EX else "read"
            raise UserError(f"{output} is in use by {_holder(path)} (it cannot be {role} while "
                            f"that runs); wait for that run to end or stop it, then run again") from None
        if _names(path, fd):
            break
        os.close(fd)  # its holder removed the file before we locked it: lock the new one
    else:
        raise UserError(f"{path}: the lock file of {output} was replaced {_ATTEMPTS} times while "
                        f"taking it; another program is deleting it: stop that, then run again")
    try:
        # The file lists its holders, a JSON line each: a writer alone (it empties the file
        # first), readers one after another (appended: readers share the lock, and each write of
        # an O_APPEND file lands whole at its end). A reader that ends leaves its line, so a
        # refused run is told the first holder still alive (:func:`_holder`).
        if mode == fcntl.LOCK_EX:
            os.ftruncate(fd, 0)
        os.write(fd, (json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                  "command": " ".join(sys.argv)[:200]}) + "\n").encode())
        _HELD.add(fd)
        yield
    finally:
        _HELD.discard(fd)
        _release(path, fd)


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` is still the file open as ``fd``."""
    try:
        here = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _release(path: Path, fd: int) -> None:
    """Release the lock, removing its file when no other process holds it (see the module)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while another reader holds it
        if _names(path, fd):
            path.unlink()
    except OSError:  # held by another reader, or the folder is read-only: the file stays
        pass
    finally:
        os.close(fd)  # closing the descriptor releases the lock


#: Holder lines read for a refusal's message (the file grows by one line a reader while held).
_HOLDER_LINES = 1000


def _holder(path: Path) -> str:
    """The lock's first recorded holder that still runs (a process on another host is taken to),
    and how many more there are; ``another process`` when the file names none."""
    try:
        lines = path.read_text(errors="replace").splitlines()[:_HOLDER_LINES]
    except OSError:
        return "another process"
    here, holders = socket.gethostname(), []
    for line in lines:
        try:
            h = json.loads(line)
            text = f"pid {h['pid']} on {h['host']} since {h['since']} ({h['command']})"
            if h["host"] != here or _running(int(h["pid"])):
                holders.append(text)
        except (ValueError, KeyError, TypeError):
            continue
    if not holders:
        return "another process"
    more = len(holders) - 1
    return holders[0] + (f" and {more} more reader{'s' if more > 1 else ''}" if more else "")


def _running(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True
