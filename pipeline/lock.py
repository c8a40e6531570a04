"""An exclusive lock per output (a store, a run folder, a study), held for a stage's lifetime.

``fcntl.flock`` on a ``.lock`` file beside the output: the kernel releases it when the holder
exits, even by SIGKILL, so a killed run never leaves a stale lock. The file names its holder
(pid, host, start time, command) for the message a second run gets. An output on an fsspec URL
(an object store) is locked by a file in the local temporary folder named after the URL: that
guards against a second run on this machine, not on another one.
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


@contextmanager
def exclusive(output: str | Path) -> Iterator[None]:
    """Hold ``<output>.lock`` for the block; refuse at once if another process holds it."""
    if is_url(output):
        digest = hashlib.sha256(location(output).encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir(), "annsnn-locks", f"{digest}.lock")
    else:
        path = Path(f"{location(output)}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{output} is in use by {_holder(path)}; wait for that run to end or "
                            f"stop it, then run again") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "command": " ".join(sys.argv)[:200]}).encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _holder(path: Path) -> str:
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on {h['host']} since {h['since']} ({h['command']})"
    except (OSError, ValueError, KeyError):
        return "another process"
