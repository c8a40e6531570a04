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

from pipeline.errors import UserError

STORE_FORMAT = 1
SPLIT_NAMES = ("train", "val", "test")  # the splits a store may hold, in this order
# Every chunk is written even when it equals the fill value (zarr skips those by default; the
# setting is per process, not stored in the array): a finished chunk without its file is then
# damage, never a legitimate chunk of zeros (see EmbeddingStore.chunk_problems).
zarr.config.set({"array.write_empty_chunks": True})
OWNER = "created_by"  # zarr.json attribute written with the group, before anything else
REQUIRED_ATTRS = ("dataset", "encoder", "identity", "layout")  # dicts every finished store has
SPLIT_ARRAYS = ("features", "labels", "ids", "errors", "done")  # the arrays of every split
#: The largest feature magnitude that is read as an embedding. No encoder's activations come near
#: it, and below it sums and covariances over a split cannot overflow float32; beyond it a store
#: (or an imported array) holds something else, e.g. features scaled by mistake.
FEATURE_LIMIT = 1e6


def default_store_path(root: str | Path, dataset_name: str, model_name: str) -> str:
    """``data/embeddings/<data set>-<model>.zarr``: one store per (data set, encoder)."""
    return location(f"{str(root).rstrip('/')}/{dataset_name}-{model_name}.zarr")


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
        group = _open_group(path, mode)
        attrs = dict(group.attrs)
        if attrs.get("format") != STORE_FORMAT:
            what = ("its creation was interrupted" if attrs.get(OWNER) == "annsnn"
                    else f"not an embedding store of format {STORE_FORMAT}")
            raise UserError(f"{path}: {what}; run `annsnn embed` with the same options to finish it "
                            f"(or --overwrite to rebuild it)")
        missing = [k for k in REQUIRED_ATTRS if not isinstance(attrs.get(k), dict)]
        if missing:
            raise UserError(f"{path}/zarr.json: damaged attributes (missing {', '.join(missing)}); "
                            f"rebuild the store with `annsnn embed --overwrite`")
        store = cls(group, path)
        store._check_arrays()
        return store

    def _check_arrays(self) -> None:
        """Refuse a store whose split groups or arrays cannot be opened (a ``zarr.json`` of theirs
        deleted or damaged), naming the file: every reader opens them, and would otherwise fail
        deep inside zarr. Only metadata is read here; chunks are checked where they are read."""
        try:
            splits = self.splits
        except Exception as e:  # a split group's zarr.json that is not readable JSON
            raise UserError(f"{self.path}: a split's zarr.json is damaged ({type(e).__name__}); "
                            f"rebuild the store with `annsnn embed --overwrite`") from None
        recorded = self.attrs["dataset"].get("sizes")
        lost = [k for k in recorded if k not in splits] if isinstance(recorded, dict) else []
        if lost or not splits:
            where = f"/{lost[0]}/zarr.json" if lost else ""
            raise UserError(f"{self.path}{where}: missing or damaged (the store records the splits "
                            f"{', '.join(recorded or ['train'])}, finds "
                            f"{', '.join(splits) or 'none'}); rebuild the store with "
                            f"`annsnn embed --overwrite` (or import it again)")
        for split in splits:
            for name in SPLIT_ARRAYS:
                try:
                    array = self.group[split][name]
                    if not isinstance(array, zarr.Array):
                        raise TypeError("a group, not an array")
                except Exception as e:
                    raise UserError(f"{self.path}/{split}/{name}/zarr.json: missing or damaged "
                                    f"({type(e).__name__}); rebuild the store with `annsnn embed "
                                    f"--overwrite` (or import it again)") from None

    @staticmethod
    def refuse_foreign(path: str | Path) -> None:
        """Refuse ``path`` as an output unless it is free or one of our stores (reads only: called
        before the store's lock file is made, so a refused run writes nothing)."""
        _ownership(location(path))

    @classmethod
    def open_for_writing(cls, path: str | Path, *, identity: dict[str, Any],
                         attrs: dict[str, Any], splits: dict[str, SplitLayout], feature_dim: int,
                         chunk_size: int, overwrite: bool = False) -> "EmbeddingStore":
        """Open our store at ``path`` to continue it, or create it where nothing of anyone else's is.

        ``identity`` (encoder and data fingerprint) must equal the stored one, else the store is
        refused unless ``overwrite``. Only our own stores are ever reset: a folder is ours when its
        ``zarr.json`` carries the marker written first at creation (:data:`OWNER`), and then only
        what we create in it (``zarr.json`` and the split groups) is deleted. A store whose creation
        was interrupted (marker, no ``format`` yet) holds no finished chunk and is created again. A
        missing or empty folder is created; any other existing folder is refused untouched.
        """
        path = location(path)
        identity = json.loads(json.dumps(identity))  # compare as stored: tuples become lists
        status = _ownership(path)
        if status == "complete" and not overwrite:
            group = _open_group(path, "r+")
            stored = group.attrs.get("identity", {})
            if stored != identity:
                raise UserError(f"{path}: {_describe_mismatch(stored, identity)}; pass "
                                f"--overwrite to replace it, or --out to write elsewhere")
            store = cls(group, path)
            store._check_arrays()
            return store
        if status in ("complete", "partial", "damaged"):
            if status == "damaged" and not overwrite:
                raise UserError(f"{path}/zarr.json: damaged (not readable JSON); rerun with "
                                f"--overwrite to rebuild this store")
            _remove_own_entries(path)
        group = zarr.create_group(store=path, attributes={OWNER: "annsnn"})  # the marker, first
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
        group.attrs.update({**attrs, "identity": identity,
                            "layout": {"chunk_size": chunk_size, "empty_chunks_written": True},
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
            raise UserError(f"{self.path}: has no split {name!r} (it has {', '.join(self.splits)}); "
                            f"name one it has (train-snn, report, tune: --eval-split), or make "
                            f"the store again with that split")
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
            try:
                rows[chunk] = np.asarray(errors[chunk]) == ""
            except Exception:  # a damaged chunk holds nothing usable (chunk_problems names it)
                pass
        return rows

    def chunk_problems(self, split: str, *, decode: bool = False,
                       chunks: slice = slice(None)) -> dict[int, str]:
        """Finished chunks of ``split`` (those in the range ``chunks``) that do not hold what
        their ``done`` flag promises: chunk -> what is wrong. A chunk file that is missing is
        found from a listing of the range's keys; with ``decode`` every finished chunk is also
        read (a truncated or corrupt file fails to decode). Such chunks are never trained on:
        ``embed`` embeds them again."""
        sub = self.split(split)
        first = range(sub["done"].shape[0])[chunks].start
        done = first + np.flatnonzero(self.done_chunks(split, chunks))
        problems: dict[int, str] = {}
        features = sub["features"]
        keys = {int(c): features.metadata.encode_chunk_key((int(c), 0)) for c in done}
        present = _chunk_keys(self.group.store, features.path,
                              None if chunks == slice(None) else list(keys.values()))
        all_written = bool(self.attrs.get("layout", {}).get("empty_chunks_written"))
        for c in done:
            key = keys[int(c)]
            if key in present:
                continue
            # Older stores skipped chunks equal to the fill value: all-zero features are
            # legitimate there when every image of the chunk failed to embed.
            rows = self.chunk_slice(split, int(c))
            if all_written or not _all_failed(sub["errors"], rows):
                problems[int(c)] = f"file {features.path}/{key} is missing"
        if decode:
            for c in done:
                if int(c) in problems:
                    continue
                rows = self.chunk_slice(split, int(c))
                try:
                    for name in ("features", "errors", "labels"):
                        np.asarray(sub[name][rows])
                except Exception as e:  # any codec or I/O failure is damage of this chunk's files
                    problems[int(c)] = f"{name} cannot be decoded ({type(e).__name__})"
        return problems

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
    identity = {"encoder": encoder_identity(enc), "data_fingerprint": h.hexdigest()}
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


def _chunk_keys(store, array_path: str, wanted: list[str] | None = None) -> set[str]:
    """Keys of the chunk files an array holds, relative to the array: one listing of the array,
    or of just the folders of the ``wanted`` keys, so a task checking one chunk does not list a
    whole split."""
    from zarr.core.sync import sync

    prefixes = ([f"{array_path}/"] if wanted is None or any("/" not in k for k in wanted) else
                sorted({f"{array_path}/{k.rpartition('/')[0]}/" for k in wanted}))

    async def collect() -> set[str]:
        cut = len(array_path) + 1
        return {k[cut:] for p in prefixes async for k in store.list_prefix(p)}

    return sync(collect())


def _all_failed(errors, rows: slice) -> bool:
    try:
        return bool((np.asarray(errors[rows]) != "").all())
    except Exception:
        return False


def _open_group(path: str, mode: str) -> zarr.Group:
    """The Zarr group at ``path``; a missing or damaged one becomes a message naming the file.

    A local path is opened as an absolute one: dask tasks built from the group's arrays may run in
    worker processes with another working folder, where a relative path would name no store and
    read as chunks of zeros."""
    try:
        return zarr.open_group(absolute_location(path), mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        refuse_file(path)
        raise UserError(f"{path}: no embedding store here; run `annsnn embed` (or `make embed`) "
                        f"first") from None
    except (ValueError, TypeError, KeyError, OSError, zarr.errors.BaseZarrError) as e:
        raise UserError(f"{path}/zarr.json: damaged ({type(e).__name__}); rebuild the store with "
                        f"`annsnn embed --overwrite`") from None


def refuse_file(path: str) -> None:
    """Refuse ``path`` when it names a file (anything but a folder): a store is a folder
    (``NAME.zarr``)."""
    fs, root = _fs(path)
    if fs.exists(root) and not fs.isdir(root):
        raise UserError(f"{path}: is a file, not an embedding store (a folder NAME.zarr); nothing "
                        f"was written: pass a store folder, or another --out")


def _fs(path: str):
    import fsspec

    return fsspec.core.url_to_fs(path)


def _ownership(path: str) -> str:
    """What is at ``path``: ``absent`` (nothing, or an empty folder), ``complete`` or ``partial``
    (our store, finished layout or interrupted creation), ``damaged`` (an unreadable
    ``zarr.json`` among only the entries we create); anything else is refused here, untouched."""
    fs, root = _fs(path)
    if not fs.exists(root):
        return "absent"
    refuse_file(path)
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
    if not names:
        return "absent"
    if "zarr.json" not in names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise UserError(f"{path}: an existing folder that is not an embedding store (it holds "
                        f"{shown}); nothing was written: give --out a new or empty folder, e.g. "
                        f"{path.rstrip('/')}/store.zarr")
    try:
        attrs = json.loads(fs.cat(f"{root.rstrip('/')}/zarr.json")).get("attributes", {})
    except (ValueError, AttributeError, OSError):
        if set(names) <= {"zarr.json", *SPLIT_NAMES}:
            return "damaged"
        raise UserError(f"{path}/zarr.json: damaged, and the folder holds other files; nothing was "
                        f"written: move them or give --out another folder") from None
    if attrs.get("format") == STORE_FORMAT:
        return "complete"
    if attrs.get(OWNER) == "annsnn":
        return "partial"
    raise UserError(f"{path}: a Zarr store that annsnn did not create; nothing was written: give "
                    f"--out a new or empty folder")


def _remove_own_entries(path: str) -> None:
    """Delete what we create in a store folder (the split groups, then ``zarr.json``, so a kill
    in between still leaves the marker); anything else in the folder is kept."""
    fs, root = _fs(path)
    root = root.rstrip("/")
    for name in SPLIT_NAMES:
        if fs.exists(f"{root}/{name}"):
            fs.rm(f"{root}/{name}", recursive=True)
    fs.rm(f"{root}/zarr.json")


def visible_text(text: str) -> str:
    """``text`` as valid UTF-8: a file name that is not UTF-8 (held by Python with surrogate
    escapes) keeps its bytes visible as ``\\xNN`` escapes instead of failing a write."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def storable_text(values) -> np.ndarray:
    """Strings as valid UTF-8 for Zarr (:func:`visible_text` each)."""
    return np.array([visible_text(str(v)) for v in values], dtype=object).astype(str) \
        if len(values) else np.asarray(values)


#: What decides an encoder's features: equal values give equal features (a store's identity).
ENCODER_IDENTITY = ("model", "weights_sha256", "preprocessing")


def encoder_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The part of an encoder's record (``Encoder.identity()``, a store's ``encoder`` attribute)
    that decides its features, as JSON stores it (tuples as lists)."""
    return json.loads(json.dumps({k: record.get(k) for k in ENCODER_IDENTITY}))


def encoder_difference(have: dict[str, Any], want: dict[str, Any]) -> tuple[str, str] | None:
    """None when two encoder records have the same identity, else each one described by its
    model and the first setting that differs: ``("lite0 (weights_sha256=653246f58bc5)", ...)``."""
    have, want = encoder_identity(have), encoder_identity(want)
    for key in ENCODER_IDENTITY:
        a, b, name = have[key], want[key], key
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):  # the preprocessing: its first setting
            sub = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
            a, b, name = a.get(sub), b.get(sub), f"{key}.{sub}"
        return (f"{have['model']} ({name}={_short(a)})", f"{want['model']} ({name}={_short(b)})")
    return None


def _describe_mismatch(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    differ = encoder_difference(stored.get("encoder", {}), wanted.get("encoder", {}))
    if differ:
        return f"holds embeddings from encoder {differ[0]} but this run asks for {differ[1]}"
    if stored.get("data_fingerprint") != wanted.get("data_fingerprint"):
        return (f"was written for other data (fingerprint {_short(stored.get('data_fingerprint'))}, "
                f"now {_short(wanted.get('data_fingerprint'))}: images, labels or split changed)")
    return "was written with other settings"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:12] if isinstance(value, str) and len(text) == 64 else text[:80]
