"""Data sources for stage one: what images there are, their labels and their split.

A source is named by a string (the ``--data`` option):

``digits``
    scikit-learn's handwritten digits: 1,797 real 8x8 images shipped inside the package, so the
    default path works offline. Stratified train/test split from a fixed seed.
``imagefolder:PATH``
    one sub-folder per class (``PATH/<class>/*.jpg``), or the ImageNet layout with split folders
    (``PATH/train/<class>/...``, ``PATH/val/...``, ``PATH/test/...``; also ``training``,
    ``valid``/``validation``/``dev``, ``testing``, in any case). Without split folders the split
    is stratified and seeded. Hidden entries (names starting with ``.``) are ignored everywhere;
    any other folder beside split folders is refused.
``csv:PATH`` (or a path ending in ``.csv``)
    rows ``path,label[,split]`` with a header, UTF-8 (a BOM is fine); paths are relative to the
    CSV's folder and must stay inside it; values are stripped of surrounding blanks and splits take
    the same aliases as split folders. A file listed twice (in one split or in two) is refused.
    Without a split column the split is stratified and seeded.

Every split is stored in a seeded random order: CoLaNET learns online, in store order, and a
class-sorted order would teach it one class at a time.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import math
import os
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps

from pipeline.errors import UserError
from pipeline.store import SPLIT_NAMES, visible_text

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Names a split folder or a CSV split value may have (compared lower-cased) -> the split it is.
SPLIT_ALIASES = {"train": "train", "training": "train",
                 "val": "val", "valid": "val", "validation": "val", "dev": "val",
                 "test": "test", "testing": "test"}


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
    ds = list_images(spec)
    if "" in ds.splits:  # the source names no splits: a stratified, seeded one
        listed = ds.splits[""]
        where = "digits" if spec == "digits" else str(_spec_path(spec))
        ds = _replace_splits(ds, _seeded_split(listed.ids, listed.labels, seed, test_fraction,
                                               where=where, class_names=ds.class_names))
    else:
        ds = _replace_splits(ds, {k: Split(*_shuffled(s.ids, s.labels, seed))
                                  for k, s in ds.splits.items()})
    if len(ds.class_names) < 2:
        raise UserError(f"{spec}: found a single class ({', '.join(ds.class_names) or 'none'}); a "
                        f"classifier needs at least two")
    if limit is not None:
        ds = _replace_splits(ds, {k: Split(s.ids[:limit], s.labels[:limit])
                                  for k, s in ds.splits.items()})
    return _replace_splits(ds, ds.splits, fingerprint=_fingerprint(ds))


def list_images(spec: str) -> DataSet:
    """The images a ``--data`` string names, as the source lists them (no image is decoded, no
    split is drawn): the splits the source names (split folders, a CSV's split column), else one
    split ``""`` holding every image, in listing order (class by class, or the CSV's rows)."""
    path = _spec_path(spec)
    if spec == "digits":
        return _digits()
    if spec.startswith("imagefolder:"):
        return _image_folder(spec, path)
    if path is not None:
        return _csv_list(spec, path)
    raise UserError(
        f"unknown data source {spec!r}: use 'digits', 'imagefolder:PATH' or 'csv:PATH'")


def _spec_path(spec: str) -> Path | None:
    """The folder of ``imagefolder:PATH``, the file of ``csv:PATH`` (or of a bare ``*.csv``)."""
    if spec.startswith(("imagefolder:", "csv:")):
        return Path(spec.split(":", 1)[1])
    return Path(spec) if spec.endswith(".csv") else None


def source_name(spec: str) -> str:
    """The short name a source's store is named after, without scanning it."""
    if spec.startswith("imagefolder:"):
        return _spec_path(spec).resolve().name
    path = _spec_path(spec)
    return spec if path is None else path.stem


def is_source(spec: str) -> bool:
    """Whether ``spec`` names a data source by its prefix (``imagefolder:``, ``csv:``)."""
    return spec.startswith(("imagefolder:", "csv:"))


def find_images(folder: str | os.PathLike) -> list[Path]:
    """The image files below ``folder``, at any depth, sorted; hidden entries (names starting
    with ".") are left out, as everywhere."""
    found = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(here, f) for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found)


def failure_reason(e: BaseException) -> str:
    """Why an image could not be read, as a store records it: the exception's type and the
    first line of its text (at most 300 characters)."""
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]


#: An image longer than this many times its short side is cut to this shape around its centre.
#: The eval transform scales the short side to the input size, so a 1 x 1,000,000 strip would
#: become gigabytes; its centre crop takes a square from the middle, which the cut keeps.
MAX_ASPECT = 16


def read_image_file(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file as upright RGB (raises on anything unreadable).

    A camera photo is often stored sideways with an EXIF orientation tag saying how to turn it;
    the tag is applied, so the encoder sees the photo the way a viewer shows it. 16-bit
    greyscale (PNG, TIFF) is scaled to 8 bits, not clipped (Pillow's conversion would turn
    everything above 255 white). See :data:`MAX_ASPECT` for extreme strips.
    """
    with warnings.catch_warnings(), Image.open(path) as img:
        # Large photos (over 89 M pixels) are decoded as any other; Pillow still refuses the
        # ones past twice that (its decompression-bomb error), recorded as the image's failure.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img.load()  # decode now, so truncated files fail here and not inside the transform
        try:
            upright = ImageOps.exif_transpose(img)
        except (OSError, ValueError, TypeError, KeyError, SyntaxError):
            upright = img  # a malformed EXIF block: the pixels are fine, use them as stored
        if upright.mode.startswith("I;16") or (upright.mode == "I"
                                                 and upright.getextrema()[1] > 255):
            grey = np.asarray(upright, dtype=np.float64) * (255.0 / 65535.0)
            upright = Image.fromarray(np.round(np.clip(grey, 0, 255)).astype(np.uint8), mode="L")
        w, h = upright.size
        if max(w, h) > MAX_ASPECT * min(w, h):
            keep_w, keep_h = min(w, MAX_ASPECT * h), min(h, MAX_ASPECT * w)
            left, top = (w - keep_w) // 2, (h - keep_h) // 2
            upright = upright.crop((left, top, left + keep_w, top + keep_h))
        return upright.convert("RGB")


# --- sources ---------------------------------------------------------------------------------

def _digits() -> DataSet:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 grey levels -> 0..255 bytes; the encoder sees an upscaled greyscale photo of a digit.
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    ids = np.array([f"digits/{i}" for i in range(len(pixels))])
    labels = digits.target.astype(np.int64)
    class_names = tuple(str(c) for c in digits.target_names)

    def read(image_id: str) -> Image.Image:
        return Image.fromarray(pixels[int(image_id.split("/", 1)[1])], mode="L").convert("RGB")

    return DataSet(spec="digits", name="digits", root="",
                   class_names=class_names, splits={"": Split(ids, labels)},
                   read_image=read, fingerprint=hashlib.sha256(pixels.tobytes()).hexdigest())


def _image_folder(spec: str, root: Path) -> DataSet:
    if not root.is_dir():
        what = "a file, not a folder" if root.exists() else "no such folder"
        raise UserError(f"{root}: {what}; imagefolder:PATH needs a folder of class folders")
    folders = [p for p in _visible(root) if p.is_dir()]
    split_dirs: dict[str, Path] = {}  # split -> its folder, under the folder's real name
    for d in folders:
        split = SPLIT_ALIASES.get(d.name.lower())
        if split in split_dirs:
            raise UserError(f"{root}: folders {split_dirs[split].name}/ and {d.name}/ are both the "
                            f"{split} split; merge them into one folder")
        if split is not None:
            split_dirs[split] = d
    if split_dirs:
        others = [d.name + "/" for d in folders if d not in split_dirs.values()]
        if others:
            names = ", ".join(others)
            raise UserError(f"{root}: {names} beside the split folders "
                            f"{', '.join(d.name + '/' for d in split_dirs.values())} is no split "
                            f"(train, val or test) and would be left out; move {names} out of "
                            f"{root}, or rename it to a split")
        classes = sorted({c.name for d in split_dirs.values() for c in _visible(d) if c.is_dir()})
    else:
        classes = [c.name for c in folders]
    for name in classes:
        if not is_text(name):
            raise UserError(f"{root}: the class folder {visible_text(name)}/ has a name that is not UTF-8 "
                            f"text; rename it (class names are written as text)")
    if split_dirs:
        splits = {name: Split(*_scan_classes(root, split_dirs[name], classes))
                  for name in SPLIT_NAMES if name in split_dirs}
    else:
        splits = {"": Split(*_scan_classes(root, root, classes))}
    return DataSet(spec=spec, name=source_name(spec), root=str(root.resolve()),
                   class_names=tuple(classes), splits=splits,
                   read_image=lambda i, r=root: read_image_file(r / i))


def is_text(name: str) -> bool:
    """Whether ``name`` is text UTF-8 can hold: a file name that is not UTF-8 reaches Python as
    lone surrogates, which JSON, HTML, CSV and plots cannot write as the name it is."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _visible(folder: Path) -> list[Path]:
    """A folder's entries, sorted, without hidden ones: names starting with "." are tools'
    leftovers (.DS_Store, macOS's ._img.jpg, Jupyter's .ipynb_checkpoints/), never data."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _scan_classes(root: Path, folder: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    if not classes:
        raise UserError(f"{folder}: no class folders inside; put each class's images in "
                        f"{folder}/<class name>/")
    ids, labels = [], []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue  # a split may lack a class (e.g. a small val/)
        files = [p for p in _visible(class_dir)
                 if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir()]  # not "x.jpg/"
        if not files:
            raise UserError(f"{class_dir}: class folder holds no images "
                            f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove it")
        ids += [str(p.relative_to(root)) for p in files]
        labels += [label] * len(files)
    return np.array(ids), np.array(labels, dtype=np.int64)


def _csv_list(spec: str, path: Path) -> DataSet:
    if not path.is_file():
        raise UserError(f"{path}: no such CSV file; csv:PATH needs rows path,label[,split]")
    root = path.resolve().parent
    records = _csv_records(path, _read_utf8(path))
    header_line, header = records[0] if records else (1, [])
    columns = [h.strip().lower() for h in header]
    if not {"path", "label"} <= set(columns):
        raise UserError(f"{path}: header must name the columns path,label[,split]; "
                        f"found {sorted(columns)}")
    for name in ("path", "label", "split"):
        if columns.count(name) > 1:
            raise UserError(f"{path}:{header_line}: the header names column {name!r} twice; "
                            f"keep one")
    at_path, at_label = columns.index("path"), columns.index("label")
    at_split = columns.index("split") if "split" in columns else None
    rows: list[tuple[str, str, str]] = []  # (path, label, split) as listed, stripped
    seen: dict[Path, tuple[int, str]] = {}  # resolved file -> (line, split) it was first listed at
    for line, fields in records[1:]:
        if not any(f.strip() for f in fields):
            continue  # a row of empty cells (spreadsheets write them) lists nothing
        if len(fields) < len(header):
            raise UserError(f"{path}:{line}: {len(fields)} field(s) where the header has "
                            f"{len(header)} ({','.join(header)}); give every row all of them")
        if any(f.strip() for f in fields[len(header):]):
            raise UserError(f"{path}:{line}: {len(fields)} fields where the header has "
                            f"{len(header)}; quote a path or label that holds a comma")
        if any("\n" in f or "\r" in f for f in fields):
            raise UserError(f"{path}:{line}: a field holds a line break (a quote opened here runs "
                            f"on over the next lines?); close the quote or remove the break")
        # NFC: "é" typed as one character or as "e" and an accent (macOS, some exports): one class
        rel = fields[at_path].strip()
        label = unicodedata.normalize("NFC", fields[at_label].strip())
        if not rel:
            raise UserError(f"{path}:{line}: empty path; give the image's path or delete the row")
        if not label:
            raise UserError(f"{path}:{line}: empty label for {rel!r}; give its class or delete "
                            f"the row")
        split = ""
        if at_split is not None:
            given = fields[at_split].strip()
            split = SPLIT_ALIASES.get(given.lower(), "")
            if not split:
                aliases = ", ".join(a for a in SPLIT_ALIASES if a not in SPLIT_NAMES)
                raise UserError(f"{path}:{line}: split {given!r} must be one of {SPLIT_NAMES} "
                                f"(or {aliases})")
        full = (root / rel).resolve()
        if root not in full.parents:
            raise UserError(f"{path}:{line}: {rel!r} lies outside the CSV's folder {root}; "
                            f"list only files below it")
        if full in seen:
            first, first_split = seen[full]
            if first_split != split:
                raise UserError(
                    f"{path}:{line}: {rel!r} is in split {split} here and in {first_split} at "
                    f"line {first}: an image in two splits leaks into the test; keep one of them")
            raise UserError(f"{path}:{line}: {rel!r} is listed again (first at line {first}); "
                            f"delete one of the two rows")
        seen[full] = (line, split)
        rows.append((rel, label, split))
    if not rows:
        raise UserError(f"{path}: the CSV lists no images")
    classes = sorted({label for _, label, _ in rows})
    index = {name: i for i, name in enumerate(classes)}
    ids = np.array([rel for rel, _, _ in rows])
    labels = np.array([index[label] for _, label, _ in rows], dtype=np.int64)
    if at_split is not None:
        where = np.array([split for _, _, split in rows])
        splits = {s: Split(ids[where == s], labels[where == s])
                  for s in SPLIT_NAMES if (where == s).any()}
    else:
        splits = {"": Split(ids, labels)}
    return DataSet(spec=spec, name=source_name(spec), root=str(root), class_names=tuple(classes),
                   splits=splits, read_image=lambda i, r=root: read_image_file(r / i))


def _read_utf8(path: Path) -> str:
    """The CSV's text (a UTF-8 BOM dropped); another encoding is refused at its first bad line."""
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1
        raise UserError(f"{path}:{line}: byte {raw[e.start]:#04x} is not UTF-8 "
                        f"(a Latin-1 or Windows export?); save the file as UTF-8 (a spreadsheet's "
                        f"'CSV UTF-8') and run again") from None


def _csv_records(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """Each non-blank record with the line it starts on (the header first); a malformed record
    is refused at that line (strict: a stray or unclosed quote is an error, not a guess)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records, start = [], 1
    try:
        for fields in reader:
            if fields:
                records.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as e:
        if "field larger than field limit" in str(e):
            through = f" (it runs on to line {reader.line_num})" if reader.line_num > start else ""
            raise UserError(f"{path}:{start}: a field is longer than {csv.field_size_limit()} "
                            f"characters{through}; most often a quote (\") opened and never "
                            f"closed: close it, or quote the whole field") from None
        raise UserError(f"{path}:{start}: not a valid CSV row ({e}); check its quotes (\") and "
                        f"fix or delete the row") from None
    return records


# --- helpers ---------------------------------------------------------------------------------

def _seeded_split(ids: np.ndarray, labels: np.ndarray, seed: int, test_fraction: float,
                  where: str, class_names: tuple[str, ...]) -> dict[str, Split]:
    """sklearn's stratified split, refused (with a --test-fraction that works) where it would
    leave a class without a train or a test image."""
    counts = np.bincount(labels, minlength=len(class_names))
    if (counts > 0).sum() < 2:
        raise UserError(f"{where}: found a single class; a classifier needs at least two")
    lone = [class_names[c] for c in np.flatnonzero(counts == 1)]
    if lone:
        raise UserError(f"{where}: class {_listed(lone)} has one image; a stratified split needs "
                        f"two per class (add images or give train/ and test/ folders)")
    train, test, gap = _stratified(labels, test_fraction, seed, class_names)
    if gap:
        works = _working_fraction(labels, test_fraction, seed, class_names)
        fix = (f"use --test-fraction {works}" if works is not None else
               "add images to the smallest classes or give train/ and test/ folders")
        raise UserError(f"{where}: --test-fraction {test_fraction} {gap}; {fix}")
    return {"train": Split(*_shuffled(ids[train], labels[train], seed)),
            "test": Split(*_shuffled(ids[test], labels[test], seed))}


def _stratified(labels: np.ndarray, test_fraction: float, seed: int,
                class_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, str]:
    """Row indices (train, test) of sklearn's stratified split, and why it leaves some class
    without a train or a test image ("" when it does not)."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels, minlength=len(class_names))
    present = np.flatnonzero(counts)
    n = len(labels)
    n_test = math.ceil(test_fraction * n)  # sklearn's own count, so the check says what it does
    none = np.array([], dtype=np.int64)
    smallest_first = sorted(present, key=lambda c: (counts[c], class_names[c]))
    for side, k in (("test", n_test), ("train", n - n_test)):
        if k < len(present):
            c = smallest_first[0]
            return none, none, (f"puts {k} of {n} images in {side}, fewer than the "
                                f"{len(present)} classes, so some class (e.g. {class_names[c]!r}, "
                                f"{int(counts[c])} images) gets no {side} image")
    try:
        train, test = train_test_split(np.arange(n), test_size=test_fraction, stratify=labels,
                                       random_state=seed)
    except ValueError as e:  # a case the checks above do not foresee
        return none, none, f"cannot split the classes ({e})"
    for side, rows in (("test", test), ("train", train)):
        missing = present[np.bincount(labels[rows], minlength=len(class_names))[present] == 0]
        if len(missing):
            return none, none, (f"leaves class {_listed([class_names[c] for c in missing])} "
                                f"({int(counts[missing[0]])} images) with no {side} image")
    return train, test, ""


def _working_fraction(labels: np.ndarray, wanted: float, seed: int,
                      class_names: tuple[str, ...]) -> float | None:
    """The --test-fraction nearest ``wanted`` (in steps of 0.05) whose split gives every class a
    train and a test image; None when none does."""
    candidates = sorted({k / 20 for k in range(1, 20)}, key=lambda f: (abs(f - wanted), f))
    for fraction in candidates:
        if not _stratified(labels, fraction, seed, class_names)[2]:
            return fraction
    return None


def _listed(names: list[str], most: int = 3) -> str:
    """'a', 'b', 'c' and 2 more: a short list of class names for a message."""
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


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
