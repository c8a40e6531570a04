"""Embeddings made elsewhere: a store from an ``.npz`` of arrays (`annsnn import`).

The file holds ``X_<split>`` (N, D) and ``y_<split>`` (N,) for splits among train/val/test, and
``classes`` (C,) names. Rows are stored in a seeded random order, as every source's are: the file
may be sorted by class, and CoLaNET learns online in store order.

Every check runs in ``read_npz`` before anything is written: a refused file leaves no store, no
folder and no partial chunks behind, and the message names the file and the array at fault.
"""

from __future__ import annotations

import difflib
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from pipeline.checkpoint import NPY_MAGIC, ZIP_MAGIC
from pipeline.config import ImportConfig
from pipeline.data import is_text
from pipeline.errors import UserError, short_reason
from pipeline.lock import exclusive
from pipeline.store import (FEATURE_LIMIT, SPLIT_NAMES, EmbeddingStore, is_url, location,
                            write_arrays)

# What a truncated or corrupt zip raises, on opening or (members are decoded lazily) on each read.
READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError,
               struct.error, NotImplementedError)
KNOWN_KEYS = ("classes", *(f"{a}_{s}" for s in SPLIT_NAMES for a in ("X", "y")))
LAYOUT = ("an .npz of X_<split> (N, D), y_<split> (N,) integer labels (split: train, val, test) "
          "and classes")

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def import_npz(path: str | Path, cfg: ImportConfig = ImportConfig()) -> EmbeddingStore:
    """A store of the file's splits; the whole file is checked first, so a refusal writes nothing."""
    model, out, split_seed = cfg.model, cfg.out, cfg.split_seed
    path = Path(path)
    splits, class_names = read_npz(path)
    for name, (x, y) in splits.items():
        order = np.random.default_rng(split_seed).permutation(len(y))
        splits[name] = (x[order], y[order])
    out = location(out) if out else str(Path(cfg.embeddings_dir) / f"{path.stem}.zarr")
    EmbeddingStore.refuse_foreign(out)  # before the lock file: a refused import writes nothing
    if not is_url(out):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    with exclusive(out):
        return write_arrays(out, splits, class_names,
                            encoder={"model": model, "weights": f"imported from {path.name}"},
                            source=f"npz:{path.name}:seed{split_seed}", chunk_size=cfg.chunk_size,
                            overwrite=cfg.overwrite)


def read_npz(path: Path) -> tuple[Splits, list[str]]:
    """The validated splits (X float32 (N, D), y int64 (N,), in file order) and class names.

    Refuses, with a one-line ``UserError`` naming the file and the array, anything a store would
    hold silently wrong: unknown keys (a typo like ``X_tets`` would drop a split), float or
    out-of-range labels, non-finite features, mismatched lengths or widths, bad class lists.
    """
    arrays = _read_members(path)
    splits: Splits = {}
    for s in SPLIT_NAMES:
        if f"X_{s}" in arrays or f"y_{s}" in arrays:
            splits[s] = (_features(path, f"X_{s}", arrays[f"X_{s}"]),
                         _labels(path, f"y_{s}", arrays[f"y_{s}"]))
            if len(splits[s][0]) != len(splits[s][1]):
                raise UserError(f"{path}: X_{s} has {len(splits[s][0])} rows but y_{s} has "
                                f"{len(splits[s][1])}; each row needs one label")
    class_names = _class_names(path, arrays["classes"])
    for s, (_, y) in splits.items():
        bad = np.flatnonzero((y < 0) | (y >= len(class_names)))
        if len(bad):
            raise UserError(f"{path}: y_{s} row {bad[0]} holds label {y[bad[0]]}, outside "
                            f"0..{len(class_names) - 1} (classes has {len(class_names)} names)")
    widths = {s: x.shape[1] for s, (x, _) in splits.items()}
    if len(set(widths.values())) > 1:
        listed = ", ".join(f"X_{s} {w}" for s, w in widths.items())
        raise UserError(f"{path}: splits have different feature widths ({listed}); every split "
                        f"needs the same features")
    return {s: (x, y.astype(np.int64)) for s, (x, y) in splits.items()}, class_names


def _read_members(path: Path) -> dict[str, np.ndarray]:
    """Every array of the file, after the key names are checked (so a typo costs no decoding).

    The file is opened here and handed to numpy as an open file: ``np.load`` leaks its own handle
    when a zip is truncated, and sniffing the first bytes tells a ``.npy`` or a text file apart.
    """
    if not path.exists():
        raise UserError(f"{path}: no such file; `annsnn import` needs {LAYOUT}")
    if not path.is_file():
        raise UserError(f"{path}: not a file; `annsnn import` needs {LAYOUT}")
    try:
        f = open(path, "rb")
    except OSError as e:
        raise UserError(f"{path}: cannot be opened ({short_reason(e)})") from None
    with f:
        try:
            head = f.read(len(NPY_MAGIC))
            f.seek(0)
            if head.startswith(NPY_MAGIC):
                raise UserError(f"{path}: is a .npy file (one array), not an .npz; save X_<split>, "
                                f"y_<split> and classes together with np.savez")
            if not head.startswith(ZIP_MAGIC):
                raise UserError(f"{path}: not an .npz (not a zip archive); save {LAYOUT} with "
                                f"np.savez")
            z = np.load(f, allow_pickle=False)
        except READ_ERRORS as e:
            raise UserError(f"{path}: not a readable .npz ({short_reason(e)}); the file is truncated or "
                            f"corrupt: save it again") from None
        with z:
            _check_keys(path, z.files)
            return {key: _read_member(path, z, key) for key in z.files}


def _check_keys(path: Path, keys: list[str]) -> None:
    """Only known names, in X/y pairs, with train and classes: a typo would drop data silently."""
    unknown = [k for k in keys if k not in KNOWN_KEYS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], KNOWN_KEYS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"{path}: unknown array {unknown[0]!r}; {hint}expected X_<split> and "
                        f"y_<split> (split: train, val, test) and classes")
    for s in SPLIT_NAMES:
        if (f"X_{s}" in keys) != (f"y_{s}" in keys):
            have, lack = (f"X_{s}", f"y_{s}") if f"X_{s}" in keys else (f"y_{s}", f"X_{s}")
            raise UserError(f"{path}: has {have} but no {lack}; both are needed")
    if "X_train" not in keys or "classes" not in keys:
        raise UserError(f"{path}: needs X_train, y_train and classes (found "
                        f"{', '.join(sorted(keys)) or 'no arrays'})")


def _read_member(path: Path, z: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    """One array, decoded now: a damaged member shows only when it is read."""
    try:
        array = z[key]
    except READ_ERRORS as e:
        if isinstance(e, ValueError) and "allow_pickle" in str(e):
            raise UserError(f"{path}: array {key!r} holds Python objects; save plain numeric "
                            f"(X, y) or string (classes) arrays") from None
        raise UserError(f"{path}: array {key!r} cannot be read ({short_reason(e)}); the file is "
                        f"truncated or corrupt: save it again") from None
    if not isinstance(array, np.ndarray):
        raise UserError(f"{path}: member {key!r} is not a numpy array; save the file with np.savez")
    return array


def _features(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """``x`` as float32, refused unless 2-D, non-empty, real, finite (also after the cast) and
    within :data:`pipeline.store.FEATURE_LIMIT`."""
    if x.ndim != 2:
        raise UserError(f"{path}: {key} has shape {x.shape}; it must be 2-D (rows, features)")
    if x.shape[0] == 0 or x.shape[1] == 0:
        empty = "rows" if x.shape[0] == 0 else "features"
        raise UserError(f"{path}: {key} has shape {x.shape}, no {empty}; leave the split out or "
                        f"save its data")
    if x.dtype.kind not in "fiu":
        raise UserError(f"{path}: {key} has dtype {x.dtype}; features must be real numbers "
                        f"(float or int)")
    with np.errstate(over="ignore"):  # an overflow is reported below, naming the value
        as_float32 = x.astype(np.float32)
    bad = ~np.isfinite(as_float32)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        what = "beyond float32's range" if np.isfinite(x[row, col]) else "non-finite"
        raise UserError(f"{path}: {key} row {row} column {col} holds {x[row, col]} ({what}); "
                        f"replace or drop such rows before importing")
    big = np.abs(as_float32) > FEATURE_LIMIT
    if big.any():
        row, col = np.argwhere(big)[0]
        raise UserError(f"{path}: {key} row {row} column {col} holds {x[row, col]:g}, beyond the "
                        f"{FEATURE_LIMIT:g} that is read as an embedding; check how the features "
                        f"were made (scaled by mistake?) and import them again")
    return as_float32


def _labels(path: Path, key: str, y: np.ndarray) -> np.ndarray:
    """``y`` unless it is not 1-D integers: float labels would be truncated silently."""
    if y.ndim == 2 and y.shape[1] == 1:
        raise UserError(f"{path}: {key} has shape {y.shape}; flatten it to ({y.shape[0]},) "
                        f"(y.ravel()) before saving")
    if y.ndim != 1:
        raise UserError(f"{path}: {key} has shape {y.shape}; labels must be 1-D (rows,)")
    if y.dtype.kind == "f":
        integral = " (integral values)" if np.all(np.isfinite(y) & (y == np.round(y))) else ""
        raise UserError(f"{path}: {key} has dtype {y.dtype}{integral}; save labels as integers "
                        f"(class indices 0..C-1)")
    if y.dtype.kind not in "iu":
        raise UserError(f"{path}: {key} has dtype {y.dtype}; save labels as integers (class "
                        f"indices 0..C-1, names in classes)")
    return y


def _class_names(path: Path, classes: np.ndarray) -> list[str]:
    """The names as text; at least two, each once (a duplicate would merge two classes' labels)."""
    if classes.ndim != 1:
        raise UserError(f"{path}: classes has shape {classes.shape}; it must be 1-D (one name "
                        f"per class)")
    if classes.dtype.kind not in "USiu":
        raise UserError(f"{path}: classes has dtype {classes.dtype}; save class names as strings")
    names = [c.decode("utf-8", "backslashreplace") if isinstance(c, bytes) else str(c)
             for c in classes.tolist()]
    if len(names) < 2:
        raise UserError(f"{path}: classes holds {len(names)} name{'s' if len(names) != 1 else ''}; "
                        f"a classifier needs at least two classes")
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not name.strip():
            raise UserError(f"{path}: classes[{i}] is {name!r}, an empty name; give every class "
                            f"a name (predictions print it)")
        if not is_text(name):
            raise UserError(f"{path}: classes[{i}] is {name!r}, which holds a lone surrogate, "
                            f"not text; save the class names as valid Unicode strings")
        if name in seen:
            raise UserError(f"{path}: classes names {name!r} twice; class names must be unique")
        seen.add(name)
    return names
