"""Data sources for stage one: what images there are, their labels and their split.

A source is named by a string (the ``--data`` option):

``digits``
    scikit-learn's handwritten digits: 1,797 real 8x8 images shipped inside the package, so the
    default path works offline. Stratified train/test split from a fixed seed.
``imagefolder:PATH``
    one sub-folder per class (``PATH/<class>/*.jpg``), or the ImageNet layout with split folders
    (``PATH/train/<class>/...``, ``PATH/val/...``, ``PATH/test/...``). Without split folders the
    split is stratified and seeded.
``csv:PATH`` (or a path ending in ``.csv``)
    rows ``path,label[,split]`` with a header; paths are relative to the CSV's folder and must stay
    inside it. Without a split column the split is stratified and seeded.

Every split is stored in a seeded random order: CoLaNET learns online, in store order, and a
class-sorted order would teach it one class at a time.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from pipeline.errors import UserError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split: row i is image ``ids[i]`` of class ``labels[i]``."""

    ids: np.ndarray  # str; a path relative to the source root, or "digits/<index>"
    labels: np.ndarray  # int64 index into DataSet.class_names

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class DataSet:
    """A resolved data source: class names, splits and how to read one image."""

    spec: str  # the --data string as given
    name: str  # short name used for the store's file name
    root: str  # folder that ids are relative to ("" for built-in sets)
    class_names: tuple[str, ...]
    splits: dict[str, Split]
    read_image: Callable[[str], Image.Image] = field(repr=False, compare=False)
    fingerprint: str = ""


def open_dataset(spec: str, *, seed: int = 0, test_fraction: float = 0.25,
                 limit: int | None = None) -> DataSet:
    """Resolve a ``--data`` string into a :class:`DataSet` (no image is decoded here)."""
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"--test-fraction {test_fraction} must lie strictly between 0 and 1")
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit} must be a positive number of images per split")
    if spec == "digits":
        ds = _digits(seed, test_fraction)
    elif spec.startswith("imagefolder:"):
        ds = _image_folder(spec, Path(spec.split(":", 1)[1]), seed, test_fraction)
    elif spec.startswith("csv:") or spec.endswith(".csv"):
        ds = _csv_list(spec, Path(spec.split(":", 1)[1] if spec.startswith("csv:") else spec),
                       seed, test_fraction)
    else:
        raise UserError(
            f"unknown data source {spec!r}: use 'digits', 'imagefolder:PATH' or 'csv:PATH'")
    if len(ds.class_names) < 2:
        raise UserError(f"{spec}: found a single class ({', '.join(ds.class_names) or 'none'}); a "
                        f"classifier needs at least two")
    if limit is not None:
        ds = _replace_splits(ds, {k: Split(s.ids[:limit], s.labels[:limit])
                                  for k, s in ds.splits.items()})
    return _replace_splits(ds, ds.splits, fingerprint=_fingerprint(ds))


def source_name(spec: str) -> str:
    """The short name a source's store is named after, without scanning it."""
    if spec.startswith("imagefolder:"):
        return Path(spec.split(":", 1)[1]).resolve().name
    if spec.startswith("csv:") or spec.endswith(".csv"):
        return Path(spec.split(":", 1)[1] if spec.startswith("csv:") else spec).stem
    return spec


def read_image_file(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file as RGB (raises on anything unreadable)."""
    with Image.open(path) as img:
        img.load()  # decode now, so truncated files fail here and not inside the transform
        return img.convert("RGB")


# --- sources ---------------------------------------------------------------------------------

def _digits(seed: int, test_fraction: float) -> DataSet:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 grey levels -> 0..255 bytes; the encoder sees an upscaled greyscale photo of a digit.
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    ids = np.array([f"digits/{i}" for i in range(len(pixels))])
    labels = digits.target.astype(np.int64)
    splits = _seeded_split(ids, labels, seed, test_fraction, where="digits")

    def read(image_id: str) -> Image.Image:
        return Image.fromarray(pixels[int(image_id.split("/", 1)[1])], mode="L").convert("RGB")

    return DataSet(spec="digits", name="digits", root="",
                   class_names=tuple(str(c) for c in digits.target_names), splits=splits,
                   read_image=read, fingerprint=hashlib.sha256(pixels.tobytes()).hexdigest())


def _image_folder(spec: str, root: Path, seed: int, test_fraction: float) -> DataSet:
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; imagefolder:PATH needs a folder of class folders")
    split_dirs = [root / s for s in SPLIT_NAMES if (root / s).is_dir()]
    if split_dirs:
        classes = sorted({c.name for d in split_dirs for c in d.iterdir() if c.is_dir()})
        splits = {}
        for d in split_dirs:
            ids, labels = _scan_classes(root, d, classes)
            splits[d.name] = Split(*_shuffled(ids, labels, seed))
    else:
        classes = sorted(c.name for c in root.iterdir() if c.is_dir())
        ids, labels = _scan_classes(root, root, classes)
        splits = _seeded_split(ids, labels, seed, test_fraction, where=str(root))
    return DataSet(spec=spec, name=source_name(spec), root=str(root.resolve()),
                   class_names=tuple(classes), splits=splits,
                   read_image=lambda i, r=root: read_image_file(r / i))


def _scan_classes(root: Path, folder: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    if not classes:
        raise UserError(f"{folder}: no class folders inside; put each class's images in "
                        f"{folder}/<class name>/")
    ids, labels = [], []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue  # a split may lack a class (e.g. a small val/)
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise UserError(f"{class_dir}: class folder holds no images "
                            f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove it")
        ids += [str(p.relative_to(root)) for p in files]
        labels += [label] * len(files)
    return np.array(ids), np.array(labels, dtype=np.int64)


def _csv_list(spec: str, path: Path, seed: int, test_fraction: float) -> DataSet:
    if not path.is_file():
        raise UserError(f"{path}: no such CSV file; csv:PATH needs rows path,label[,split]")
    root = path.resolve().parent
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or [])
        if not {"path", "label"} <= columns:
            raise UserError(f"{path}: header must name the columns path,label[,split]; "
                            f"found {sorted(columns)}")
        rows = list(reader)
    if not rows:
        raise UserError(f"{path}: the CSV lists no images")
    for n, row in enumerate(rows, start=2):
        full = (root / row["path"]).resolve()
        if root not in full.parents:
            raise UserError(f"{path}:{n}: {row['path']!r} lies outside the CSV's folder {root}; "
                            f"list only files below it")
        if "split" in columns and row["split"] not in SPLIT_NAMES:
            raise UserError(f"{path}:{n}: split {row['split']!r} must be one of {SPLIT_NAMES}")
    classes = sorted({r["label"] for r in rows})
    ids = np.array([r["path"] for r in rows])
    labels = np.array([classes.index(r["label"]) for r in rows], dtype=np.int64)
    if "split" in columns:
        where = np.array([r["split"] for r in rows])
        splits = {s: Split(*_shuffled(ids[where == s], labels[where == s], seed))
                  for s in SPLIT_NAMES if (where == s).any()}
    else:
        splits = _seeded_split(ids, labels, seed, test_fraction, where=str(path))
    return DataSet(spec=spec, name=source_name(spec), root=str(root), class_names=tuple(classes),
                   splits=splits, read_image=lambda i, r=root: read_image_file(r / i))


# --- helpers ---------------------------------------------------------------------------------

def _seeded_split(ids: np.ndarray, labels: np.ndarray, seed: int, test_fraction: float,
                  where: str) -> dict[str, Split]:
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    if len(counts) < 2 or (counts > 0).sum() < 2:
        raise UserError(f"{where}: found a single class; a classifier needs at least two")
    if counts[counts > 0].min() < 2:
        raise UserError(f"{where}: class {int(np.argmin(np.where(counts > 0, counts, 1 << 30)))} "
                        f"has one image; a stratified split needs two per class (add images or "
                        f"give train/ and test/ folders)")
    tr_ids, te_ids, tr_y, te_y = train_test_split(ids, labels, test_size=test_fraction,
                                                  stratify=labels, random_state=seed)
    return {"train": Split(*_shuffled(tr_ids, tr_y, seed)),
            "test": Split(*_shuffled(te_ids, te_y, seed))}


def _shuffled(ids: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(ids))
    return ids[order], labels[order]


def _replace_splits(ds: DataSet, splits: dict[str, Split], fingerprint: str | None = None) -> DataSet:
    return DataSet(spec=ds.spec, name=ds.name, root=ds.root, class_names=ds.class_names,
                   splits=splits, read_image=ds.read_image,
                   fingerprint=ds.fingerprint if fingerprint is None else fingerprint)


def _fingerprint(ds: DataSet) -> str:
    """Hash of what was listed: classes, each split's ids and labels, and file sizes.

    File contents are not read (a million images would take longer to hash than to list); a
    replaced image of a different size, a renamed or moved file, or a relabelled one all change it.
    Built-in sets contribute a hash of their pixels instead.
    """
    h = hashlib.sha256()
    h.update(json.dumps([ds.class_names, ds.fingerprint]).encode())
    for name in sorted(ds.splits):
        split = ds.splits[name]
        h.update(name.encode())
        h.update(np.asarray(split.labels, dtype=np.int64).tobytes())
        for image_id in split.ids:
            size = _file_size(Path(ds.root) / image_id) if ds.root else 0
            h.update(f"{image_id}\0{size}\0".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1
