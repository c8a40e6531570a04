"""The embedding store: one Zarr v3 group per (data set, encoder).

Layout (readable with plain ``zarr``, ``dask.array.from_zarr`` and ``xarray.open_zarr``)::

    <name>.zarr/
      zarr.json                 attributes: format, dataset, encoder, versions, layout, config,
                                batch_size and threads (what every chunk is computed with)
      <split>/                  train, test (and val where the source has one)
        features  (N, D) float32   chunks (chunk_size, D)   dims (sample, feature)
        labels    (N,)   int64     class index into attrs["dataset"]["class_names"]
        ids       (N,)   str       source path relative to the data root, or "digits/<index>"
        errors    (N,)   str       "" for an embedded image, else why it was skipped (features are 0)
        done      (n_chunks,) bool chunk i of features/errors is complete (chunks of 1: one file each)

Labels and ids are written when the store is created; features and errors chunk by chunk, each
chunk's ``done`` flag only after its data. A killed run therefore loses at most the chunks in flight.
Chunks are independent files, so any number of processes may write different chunks at once.

A store's location is a local path or any fsspec URL (``file://``, ``memory://``, ``s3://`` when
s3fs is installed, ...); ``file://`` URLs are used as the local paths they name.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.config import EmbedConfig
from pipeline.data import source_name
from pipeline.errors import UserError

STORE_FORMAT = 1


def default_store_path(root: str | Path, dataset_name: str, model_name: str) -> str:
    """``data/embeddings/<data set>-<model>.zarr``: one store per (data set, encoder)."""
    return location(f"{str(root).rstrip('/')}/{dataset_name}-{model_name}.zarr")


def store_path_for(cfg: EmbedConfig) -> str:
    """Where the store of an embed config lives (``--out``, else named after data set and model)."""
    return location(cfg.out) if cfg.out else default_store_path(cfg.embeddings_dir,
                                                                source_name(cfg.data), cfg.model)


def location(path: str | Path) -> str:
    """A store's canonical location: a local path as given, ``file://X`` as the path ``X``,
    any other fsspec URL unchanged."""
    text = str(path)
    return text[len("file://"):] if text.startswith("file://") else text


def absolute_location(path: str | Path) -> str:
    """The location as a process with another working folder (a cluster worker) must see it: a
    local path made absolute, a URL unchanged."""
    return location(path) if is_url(path) else os.path.abspath(location(path))


def is_url(path: str | Path) -> bool:
    """Whether ``path`` names a store through fsspec rather than the local file system."""
    return "://" in location(path)


def store_name(path: str | Path) -> str:
    """The store's name without ``.zarr``: run and study folders are named after it."""
    return Path(location(path).rstrip("/").rsplit("/", 1)[-1]).stem


def store_exists(path: str | Path) -> bool:
    """Whether a store (complete or not) has been started at ``path``."""
    path = location(path)
    if not is_url(path):
        return Path(path, "zarr.json").exists()
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    return fs.exists(f"{root.rstrip('/')}/zarr.json")


def software_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("annsnn", "torch", "timm", "zarr", "numpy", "numba", "dask"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@dataclass
class SplitLayout:
    """What a split holds before any image is embedded."""

    labels: np.ndarray
    ids: np.ndarray


class EmbeddingStore:
    """Typed access to one store; see the module docstring for the layout."""

    def __init__(self, group: zarr.Group, path: str):
        self.group = group
        self.path = path

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "EmbeddingStore":
        """Open an existing store: read-only, or ``mode="r+"`` for a worker writing chunks of a
        store that its coordinating process created (and checked) with :meth:`open_for_writing`."""
        path = location(path)
        try:
            group = zarr.open_group(path, mode=mode)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            raise UserError(f"{path}: no embedding store here; run `make embed` (or "
                            f"`annsnn embed`) first") from None
        if group.attrs.get("format") != STORE_FORMAT:
            raise UserError(f"{path}: not an embedding store of format {STORE_FORMAT}; "
                            f"rerun `annsnn embed --overwrite` to rebuild it")
        return cls(group, path)

    @classmethod
    def open_for_writing(cls, path: str | Path, *, identity: dict[str, Any],
                         attrs: dict[str, Any], splits: dict[str, SplitLayout], feature_dim: int,
                         chunk_size: int, overwrite: bool = False) -> "EmbeddingStore":
        """Open ``path`` to continue it, or create it.

        ``identity`` (encoder and data fingerprint) must equal the stored one, else the store is
        refused unless ``overwrite``. A store whose creation was interrupted (no ``format``
        attribute yet) holds no finished chunk and is simply created again.
        """
        path = location(path)
        identity = json.loads(json.dumps(identity))  # compare as stored: tuples become lists
        if not overwrite and store_exists(path):
            group = zarr.open_group(path, mode="r+")
            if group.attrs.get("format") == STORE_FORMAT:
                stored = group.attrs.get("identity", {})
                if stored != identity:
                    raise UserError(f"{path}: {_describe_mismatch(stored, identity)}; pass "
                                    f"--overwrite to replace it, or --out to write elsewhere")
                return cls(group, path)
        group = zarr.open_group(path, mode="w")
        for name, split in splits.items():
            n = len(split.labels)
            sub = group.create_group(name)
            rows = max(1, min(chunk_size, n))
            sub.create_array("features", shape=(n, feature_dim), chunks=(rows, feature_dim),
                             dtype="float32", fill_value=0.0, dimension_names=("sample", "feature"))
            sub.create_array("labels", shape=(n,), chunks=(rows,), dtype="int64", fill_value=-1,
                             dimension_names=("sample",))[:] = split.labels
            sub.create_array("ids", shape=(n,), chunks=(rows,), dtype=str,
                             dimension_names=("sample",))[:] = storable_text(split.ids)
            sub.create_array("errors", shape=(n,), chunks=(rows,), dtype=str,
                             dimension_names=("sample",))
            sub.create_array("done", shape=(math.ceil(n / rows),), chunks=(1,), dtype=bool,
                             fill_value=False, compressors=None, dimension_names=("chunk",))
        # The format marker goes last: its presence means the layout is complete.
        group.attrs.update({**attrs, "identity": identity, "layout": {"chunk_size": chunk_size},
                            "versions": software_versions(), "format": STORE_FORMAT})
        return cls(group, path)

    # --- reading ------------------------------------------------------------------------------

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def class_names(self) -> list[str]:
        return list(self.group.attrs["dataset"]["class_names"])

    @property
    def splits(self) -> list[str]:
        order = {"train": 0, "val": 1, "test": 2}
        return sorted((name for name, _ in self.group.groups()), key=lambda n: (order.get(n, 3), n))

    def split(self, name: str) -> zarr.Group:
        if name not in self.splits:
            raise UserError(f"{self.path}: has no split {name!r} (it has {', '.join(self.splits)})")
        return self.group[name]

    def chunk_rows(self, split: str) -> int:
        return self.split(split)["features"].chunks[0]

    def chunk_slice(self, split: str, chunk: int) -> slice:
        rows = self.chunk_rows(split)
        n = self.split(split)["features"].shape[0]
        return slice(chunk * rows, min((chunk + 1) * rows, n))

    def done_chunks(self, split: str, chunks: slice = slice(None)) -> np.ndarray:
        """Boolean completion of the split's chunks (all, or the range ``chunks``: only those
        flag files are read). A flag file cut short by a kill reads as not done."""
        done = self.split(split)["done"]
        try:
            return np.asarray(done[chunks], dtype=bool)
        except Exception:  # a torn flag file: fall back to reading flag by flag
            indices = range(done.shape[0])[chunks]
            flags = np.zeros(len(indices), dtype=bool)
            for k, i in enumerate(indices):
                try:
                    flags[k] = bool(done[i])
                except Exception:
                    pass
            return flags

    def finished_rows(self, split: str) -> np.ndarray:
        """Rows holding a real embedding: in a done chunk and not a skipped image. The reasons
        are read a chunk at a time (as strings, a whole split of them is ~60 bytes a row)."""
        errors = self.split(split)["errors"]
        rows = np.zeros(errors.shape[0], dtype=bool)
        for c in np.flatnonzero(self.done_chunks(split)):
            chunk = self.chunk_slice(split, c)
            rows[chunk] = np.asarray(errors[chunk]) == ""
        return rows

    def is_complete(self) -> bool:
        return all(self.done_chunks(s).all() for s in self.splits)

    def features(self, split: str):
        """The split's features as a lazy dask array, one block per stored chunk."""
        import dask.array as da

        return da.from_zarr(self.split(split)["features"])

    # --- writing ------------------------------------------------------------------------------

    def write_chunk(self, split: str, chunk: int, features: np.ndarray, errors: np.ndarray) -> None:
        """Write one chunk's data, then mark it done (in that order, so a kill never lies)."""
        sub = self.split(split)
        rows = self.chunk_slice(split, chunk)
        sub["features"][rows] = features
        sub["errors"][rows] = storable_text(errors)
        sub["done"][chunk] = True

    def record_run(self, summary: dict[str, Any]) -> None:
        self.group.attrs["last_run"] = json.loads(json.dumps(summary))


def write_arrays(path: str | Path, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                 class_names: list[str], *, encoder: dict[str, Any], source: str,
                 chunk_size: int = 256, overwrite: bool = False) -> EmbeddingStore:
    """A complete store from in-memory features: ``splits[name] = (X (N, D), y (N,))``.

    For embeddings made elsewhere (e.g. an ``.npz`` of features) and synthetic benchmarks.
    ``encoder`` describes where the features came from (``model`` at least); the data fingerprint
    is a hash of the arrays, so importing the same arrays again continues the same store.
    """
    import hashlib

    h = hashlib.sha256(json.dumps([list(class_names), source]).encode())
    path = location(path)
    dims = {x.shape[1] for x, _ in splits.values()}
    if len(dims) != 1:
        raise UserError(f"{source}: splits have different feature dimensions {sorted(dims)}")
    for name, (x, y) in sorted(splits.items()):
        if x.ndim != 2 or len(x) != len(y):
            raise UserError(f"{source}: split {name!r} needs X (N, D) and y (N,), got "
                            f"{x.shape} and {np.shape(y)}")
        if len(y) and (np.min(y) < 0 or np.max(y) >= len(class_names)):
            raise UserError(f"{source}: split {name!r} has labels outside 0..{len(class_names) - 1}")
        h.update(name.encode())
        h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
        h.update(np.asarray(y, dtype=np.int64).tobytes())
    enc = {"weights": "imported", "weights_sha256": "", "preprocessing": {}, "transform": "",
           **encoder, "feature_dim": dims.pop()}
    identity = {"encoder": {k: enc[k] for k in ("model", "weights_sha256", "preprocessing")},
                "data_fingerprint": h.hexdigest()}
    store = EmbeddingStore.open_for_writing(
        path, identity=identity,
        attrs={"dataset": {"spec": source, "name": store_name(path), "root": "",
                           "class_names": list(class_names), "fingerprint": h.hexdigest(),
                           "sizes": {k: len(v[1]) for k, v in splits.items()}},
               "encoder": enc, "config": {"source": source}},
        splits={k: SplitLayout(labels=np.asarray(y, dtype=np.int64),
                               ids=np.array([f"{k}/{i}" for i in range(len(y))]))
                for k, (x, y) in splits.items()},
        feature_dim=enc["feature_dim"], chunk_size=chunk_size, overwrite=overwrite)
    for name, (x, _) in splits.items():
        for c in np.flatnonzero(~store.done_chunks(name)):
            rows = store.chunk_slice(name, c)
            store.write_chunk(name, int(c), np.asarray(x[rows], dtype=np.float32),
                              np.full(rows.stop - rows.start, "", dtype=object).astype(str))
    return store


def storable_text(values) -> np.ndarray:
    """Strings as valid UTF-8 for Zarr: a file name that is not UTF-8 (held by Python with
    surrogate escapes) keeps its bytes visible as ``\\xNN`` escapes instead of failing the write."""
    return np.array([str(v).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                     for v in values], dtype=object).astype(str) if len(values) else np.asarray(values)


def _describe_mismatch(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    old_enc, new_enc = stored.get("encoder", {}), wanted.get("encoder", {})
    for key in ("model", "weights_sha256", "preprocessing"):
        if old_enc.get(key) != new_enc.get(key):
            return (f"holds embeddings from encoder {old_enc.get('model')} "
                    f"({key}={_short(old_enc.get(key))}) but this run asks for "
                    f"{new_enc.get('model')} ({key}={_short(new_enc.get(key))})")
    if stored.get("data_fingerprint") != wanted.get("data_fingerprint"):
        return (f"was written for other data (fingerprint {_short(stored.get('data_fingerprint'))}, "
                f"now {_short(wanted.get('data_fingerprint'))}: images, labels or split changed)")
    return "was written with other settings"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:12] if isinstance(value, str) and len(text) == 64 else text[:80]
