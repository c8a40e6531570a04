"""Output folders this program may write into: only its own.

A run folder or a tuning study is claimed by a marker file written first (``.annsnn.json``, naming
the kind of output). A folder is ours when it holds that marker; a new or empty folder is claimed;
any other existing folder is refused before anything is written, so an output option pointed at a
user's folder never overwrites or deletes a file in it. (Stores carry their marker in their
``zarr.json``: see :mod:`pipeline.store`.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.errors import UserError

MARKER = ".annsnn.json"


def check_name(name: str, option: str) -> str:
    """``name`` as one folder name: ``--run``/``--name`` name outputs, they are not paths, so
    nothing is ever written outside ``--runs-dir``/``--tune-dir``."""
    if (not name.strip() or name != name.strip() or name in (".", "..") or "/" in name
            or os.sep in name or "\0" in name or name.startswith("-")):
        raise UserError(f"{option} {name!r} must be a plain folder name (no '/', not '.' or '..', "
                        f"no blank at either end); choose where the folders go with the --*-dir "
                        f"option")
    return name


def claim_folder(path: str | Path, kind: str) -> Path:
    """Make ``path`` this program's ``kind`` folder (``run``, ``study``), or refuse.

    A folder holding the marker of ``kind`` is ours; a missing or empty folder gets the marker now,
    before anything else is written in it; anything else is refused untouched.
    """
    path = Path(path)
    marker = path / MARKER
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: is a file, not a {kind} folder; choose another name")
    if marker.is_file():
        found = marked_kind(path)
        if found != kind:
            raise UserError(f"{path}: holds another kind of output ({found or 'unreadable marker'}), "
                            f"not a {kind}; choose another name")
        return path
    if path.is_dir() and any(path.iterdir()):
        raise UserError(f"{path}: an existing folder that annsnn did not create (it holds "
                        f"{_some_entries(path)}); nothing was written: choose another name or "
                        f"folder for the {kind}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"kind": kind, "created_by": "annsnn"}) + "\n")
    except OSError as e:
        raise UserError(f"{path}: cannot create the {kind} folder ({e.strerror or e})") from None
    return path


def marked_kind(path: str | Path) -> str | None:
    """The kind of output (``run``, ``study``) whose marker ``path`` holds; None without a
    readable marker (not a folder of ours)."""
    try:
        found = json.loads((Path(path) / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def _some_entries(path: Path, n: int = 3) -> str:
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
