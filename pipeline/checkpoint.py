"""Checkpoints: the whole resumable state of a stage-two run in one ``.npz`` (no pickle).

Arrays are the model state (resources, weights, neuron state, counters) plus the run's own arrays
(the online pass's per-sample results); ``meta`` is one JSON string: the resolved config, ``sat``,
the cursor and the identity of the store it was trained on. Written to a temporary file in the same
folder, flushed, then renamed over the old one, so a kill leaves either the old or the new file
(plus, at worst, a stale ``<name>.*.tmp`` that ``remove_stale_temporaries`` deletes).

A checkpoint that cannot be read, or whose arrays do not fit the state (``check_arrays``), is
refused with a one-line ``UserError`` naming the file and pointing at ``--restart``.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pipeline.errors import UserError, short_reason

#: The first bytes of a .npy file and of a zip archive (an .npz), as ``np.load`` tells them apart:
#: anything else would be handed to its pickle reader (refused, with a message about pickles).
NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", (b"PK\x03\x04", b"PK\x05\x06")

# What a truncated or corrupt zip raises, on opening or (members are decoded lazily) on each read.
READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError, OSError,
               struct.error, NotImplementedError)
RESTART = "rerun with --restart to discard it and train afresh"


class FileRole(NamedTuple):
    """What a file of this format is, for the one-line refusals: the checkpoint of a run, or a
    model file (:mod:`pipeline.model_file`) in the same format."""

    kind: str  # "checkpoint"
    state: str  # what its arrays must fit: "this run's state"
    remedy: str  # what to do about a damaged one


CHECKPOINT_FILE = FileRole("checkpoint", "this run's state", RESTART)

# key -> (shape, dtype); a None in the shape accepts any length on that axis.
Schema = Mapping[str, tuple[tuple[int | None, ...], Any]]


def save_checkpoint(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write atomically: a kill at any point leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "meta" in arrays:
        raise ValueError("'meta' is reserved for the JSON metadata")
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
            # mkstemp makes 0o600; the checkpoint is an output like metrics.json and gets its mode.
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, role: FileRole = CHECKPOINT_FILE
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint; anything but plain arrays (e.g. pickled objects) is refused, and so is a
    truncated or corrupt file (a disk that filled up, a copy cut short), as a one-line error
    (naming the file as ``role`` says: a checkpoint, a model file).

    The file is handed to numpy open: ``np.load`` leaks its own handle when a zip is truncated.
    """
    kind, remedy = role.kind, role.remedy
    try:
        with open(path, "rb") as f:
            if not f.read(len(NPY_MAGIC)).startswith((NPY_MAGIC, *ZIP_MAGIC)):
                raise UserError(f"{path}: not a readable {kind} (neither an .npz nor a .npy "
                                f"file); {remedy}")
            f.seek(0)
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise UserError(f"{path}: not a readable {kind} (a .npy array, not an .npz); "
                                f"{remedy}")
            with z:
                arrays = {key: _read_member(path, z, key, role) for key in z.files}
    except READ_ERRORS as e:
        raise UserError(f"{path}: not a readable {kind} ({short_reason(e)}); {remedy}") from None
    if "meta" not in arrays:
        raise UserError(f"{path}: {kind} has no metadata ('meta'); {remedy}")
    text = arrays.pop("meta")
    if not isinstance(text, np.ndarray) or text.ndim != 0 or text.dtype.kind != "U":
        raise UserError(f"{path}: {kind} metadata ('meta') is not a JSON string; {remedy}")
    try:
        meta = json.loads(str(text))
    except ValueError as e:
        raise UserError(f"{path}: {kind} metadata ('meta') is not valid JSON ({short_reason(e)}); "
                        f"{remedy}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: {kind} metadata ('meta') is a JSON {type(meta).__name__}, "
                        f"not an object; {remedy}")
    return arrays, meta


def check_arrays(path: str | Path, arrays: Mapping[str, np.ndarray], schema: Schema, *,
                 allow_extra: bool = False, role: FileRole = CHECKPOINT_FILE) -> None:
    """Refuse checkpoint arrays that do not fit the state they are to restore.

    ``schema`` maps each key to ``(shape, dtype)``; ``None`` in a shape accepts any length on that
    axis. A missing key, a wrong shape or a wrong dtype raises ``UserError`` naming the file, the
    key, what was expected and what was found. A key the schema does not name is refused too
    (a checkpoint of another state layout) unless ``allow_extra``. Pure: reads nothing, writes
    nothing; pass the arrays as ``load_checkpoint`` returns them (``meta`` already removed).
    """
    problems = []
    for key, (shape, dtype) in schema.items():
        want = f"{_shape_text(shape)} {np.dtype(dtype)}"
        if key not in arrays:
            problems.append(f"lacks array {key!r} (expected {want})")
            continue
        found = np.asarray(arrays[key])
        fits = len(found.shape) == len(shape) and all(w is None or w == n
                                                      for w, n in zip(shape, found.shape))
        if not fits or found.dtype != np.dtype(dtype):
            problems.append(f"array {key!r} is {found.shape} {found.dtype}, expected {want}")
        elif found.dtype.kind == "f" and np.isnan(found).any():  # no state value is ever NaN
            problems.append(f"array {key!r} holds NaN")
    if not allow_extra:
        problems += [f"has unexpected array {key!r}" for key in arrays if key not in schema]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{path}: {role.kind} does not fit {role.state}: {problems[0]}{more}; "
                        f"{role.remedy}")


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the ``<path.name>.*.tmp`` files a killed ``save_checkpoint`` left beside ``path``.

    Only regular files of exactly that form go (not symlinks, folders, ``path`` itself or any other
    ``.tmp``); call it while holding the run's lock, so no live writer owns one. Returns what went.
    """
    path = Path(path)
    prefix, suffix = path.name + ".", ".tmp"
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except FileNotFoundError:
        return []
    for entry in sorted(entries):
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(suffix)
                and len(name) > len(prefix) + len(suffix)):
            continue
        try:
            if not stat.S_ISREG(entry.lstat().st_mode):
                continue
            entry.unlink()
        except FileNotFoundError:
            continue
        removed.append(entry)
    return removed


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (``/proc/self/status``);
    elsewhere set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _read_member(path: str | Path, z: np.lib.npyio.NpzFile, key: str, role: FileRole
                 ) -> np.ndarray:
    """One array, decoded now: a damaged member shows only when it is read."""
    try:
        return z[key]
    except READ_ERRORS as e:
        raise UserError(f"{path}: not a readable {role.kind} (array {key!r}: {short_reason(e)}); "
                        f"{role.remedy}") from None


def _shape_text(shape: tuple[int | None, ...]) -> str:
    """A shape as numpy prints it, with ``N`` for an axis of any length."""
    return str(tuple("N" if n is None else n for n in shape)).replace("'", "")
