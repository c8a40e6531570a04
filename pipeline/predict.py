"""`annsnn predict`: a trained model's answers for new images, or for a store's features.

The model comes from a model file (``annsnn export``) or straight from a finished run folder
(:func:`pipeline.model_file.run_model`: what export writes). Images are embedded with the encoder
the model was trained with, as its model file records it: the timm model, the weights (checked
against their recorded sha256) and the preprocessing (input size, resize, crop, normalisation),
by default on the device its features were computed on. Each image is one forward pass: a
pass's floats depend on the batch's shape (and on the device and torch's thread count), so one
image at a time makes an answer depend on the image alone, and a store embedded with
``--batch-size 1`` on the same device with the same thread count holds bit for bit the features
predict computes. A store given as input is
answered from its features, no encoder runs; it must come from the model's encoder.

The frozen network answers through :class:`pipeline.estimator.ColanetClassifier` with its default
sample ids (:func:`pipeline.estimator.content_ids`, a hash of each row's features): an image's
answer is what ``ColanetClassifier.predict`` answers for its features, whatever else is predicted
with it.

The answers are a CSV (:func:`header`): one row per image, in the order the inputs were given
(a folder's images sorted by path, a source's as it lists them, a store's in split and row order).
An image that cannot be read is a row with the reason in ``error``, never a stop.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import numpy as np
from tqdm import tqdm

from pipeline.colanet import ranked_classes
from pipeline.config import PredictConfig
from pipeline.data import (IMAGE_EXTENSIONS, failure_reason, find_images, is_source, list_images,
                           read_image_file)
from pipeline.errors import UserError
from pipeline.estimator import ColanetClassifier
from pipeline.lock import shared
from pipeline.model_file import Model, read_model, run_model
from pipeline.store import (FEATURE_LIMIT, EmbeddingStore, encoder_difference, location,
                            storable_text, store_exists)
from pipeline.streaming import require_complete, undecodable

COLUMNS = ("path", "predicted", "votes_share", "second", "no_answer")
BLOCK = 32  # rows answered at once (an answer does not depend on its block)
NOT_FINITE = "features are not finite (NaN or infinity)"
TOO_LARGE = f"features beyond {FEATURE_LIMIT:g} (not an embedding)"


@dataclass(frozen=True)
class Images:
    """Images to embed: the ``path`` column of each, its key and how a key is read."""

    paths: list[str]
    keys: list[Any]
    read: Callable[[Any], Any]  # key -> PIL image


@dataclass(frozen=True)
class StoreInput:
    """A store whose features are answered directly."""

    path: str
    rows: int


def header(top_k: int = 0) -> list[str]:
    """``path,predicted,votes_share,second,no_answer``, then ``top1,top1_share`` ... ``topK,
    topK_share`` for ``top_k``, then ``error``."""
    ranks = [f"top{i}{part}" for i in range(1, top_k + 1) for part in ("", "_share")]
    return [*COLUMNS, *ranks, "error"]


def predict(cfg: PredictConfig, inputs: list[str], stdout: TextIO | None = None
            ) -> dict[str, Any]:
    """Answer every image (or store row) ``inputs`` name with the model of ``cfg``; the CSV goes
    to ``cfg.out`` (published only when complete, never over an existing file) or ``stdout``
    (default: ``sys.stdout``).
    Returns the summary: images, failures, rows with no answer, seconds (start-up: the model
    file read, the encoder built and its first forward pass, the kernels loaded; per image: the
    rest, divided among the images)."""
    started = time.perf_counter()
    _check_out(cfg.out)
    found = find_inputs(inputs)
    total = sum(len(f.paths) if isinstance(f, Images) else f.rows for f in found)
    if not total:
        raise UserError(f"no images found in {' '.join(inputs)} (folders are searched at any "
                        f"depth for {', '.join(sorted(IMAGE_EXTENSIONS))}); give image files, "
                        f"folders of images, imagefolder:PATH, csv:PATH or a store")
    model = read_model(cfg.model) if cfg.model else run_model(cfg.run)
    where = cfg.model or cfg.run
    if cfg.top_k > len(model.classes):
        raise UserError(f"--top-k {cfg.top_k}: the model {where} has {len(model.classes)} classes")
    for f in found:
        if isinstance(f, StoreInput):
            with shared(f.path):
                _open_store(f.path, model, where)
    clf = ColanetClassifier.from_model(model)
    encoder = (_encoder(model, cfg, where) if any(isinstance(f, Images) for f in found)
               else None)
    clf.votes(np.zeros((1, model.n_features), np.float32))  # the kernels loaded (compiled) now
    startup = time.perf_counter() - started
    failures = no_answer = 0
    with _csv_output(cfg.out, stdout or sys.stdout) as stream, \
            tqdm(total=total, unit="img", desc="predict", dynamic_ncols=True) as bar:
        writer = _CsvRows(stream)
        writer.writerow(header(cfg.top_k))
        for f in found:
            blocks = (_embedded(f, encoder, bar) if isinstance(f, Images)
                      else _stored(f.path, model, where, bar))
            for paths, features, errors in blocks:
                rows = answer_rows(clf, paths, features, errors, cfg.top_k)
                failures += int((errors != "").sum())
                no_answer += sum(row[COLUMNS.index("no_answer")] == "1" for row in rows)
                writer.writerows(rows)
    seconds = time.perf_counter() - started
    return {"images": total, "failures": failures, "no_answer": no_answer,
            "seconds": seconds, "startup_seconds": startup,
            "seconds_per_image": (seconds - startup) / total, "out": cfg.out}


def find_inputs(inputs: list[str]) -> list[Images | StoreInput]:
    """What each INPUT names: an image file, a folder (its images at any depth), a data source
    (``imagefolder:PATH``, ``csv:PATH`` or a ``*.csv`` file, ``digits``: the images it lists) or
    a store. A path that does not exist is refused."""
    found: list[Images | StoreInput] = []
    for given in inputs:
        path = Path(given)
        if is_source(given) or (path.suffix.lower() == ".csv" and path.is_file()) or (
                given == "digits" and not path.exists()):
            ds = list_images(given)
            ids = [str(i) for split in ds.splits.values() for i in split.ids]
            found.append(Images([image_path(ds.root, i) for i in ids], ids, ds.read_image))
        elif store_exists(given):
            store = EmbeddingStore.open(given)
            found.append(StoreInput(location(given), sum(store.split(s)["features"].shape[0]
                                                         for s in store.splits)))
        elif path.is_dir():
            files = find_images(path)
            found.append(Images([str(f) for f in files], files, read_image_file))
        elif path.is_file():
            found.append(Images([given], [path], read_image_file))
        else:
            raise UserError(f"{given}: no such file or folder; give image files, folders of "
                            f"images, imagefolder:PATH, csv:PATH or a store")
    return found


def image_path(root: str, image_id: str) -> str:
    """The file of a source's (or store's) image id; the id itself for built-in or imported
    data (no root)."""
    return str(Path(root) / image_id) if root else image_id


def answer_rows(clf: ColanetClassifier, paths: list[str], features: np.ndarray,
                errors: np.ndarray, top_k: int = 0) -> list[list[str]]:
    """The CSV rows (:func:`header`) of ``features``: the votes of each row whose ``errors`` is
    empty, the reason for the others. A row with no vote at all has ``no_answer`` 1 and leaves
    the classes empty; a class with no vote is never listed (``second``, ``topN``)."""
    ok = errors == ""
    votes = np.zeros((len(paths), len(clf.classes_)), np.int64)
    if ok.any():
        votes[ok] = clf.votes(features[ok]).sum(axis=1)
    names = [str(c) for c in clf.classes_]
    top = ranked_classes(votes[:, None, :], max(top_k, 2))  # most votes first; ties: first class
    rows = []
    for path, total, classes, error in zip(storable_text(paths), votes, top, errors):
        if error:
            rows.append([path, "", "", "", "", *[""] * (2 * top_k), error])
            continue
        n = total.sum()
        ranked = [(names[c], f"{total[c] / n:.4f}") if c >= 0 else ("", "") for c in classes]
        (first, share), (second, _) = ranked[0], ranked[1]
        rows.append([path, first, share, second, "0" if n else "1",
                     *[x for pair in ranked[:top_k] for x in pair], ""])
    return rows


def _embedded(images: Images, encoder, bar) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """``(paths, features, errors)`` of the images, a block at a time, each image alone through
    the encoder; an unreadable image has zero features and its reason."""
    for start in range(0, len(images.paths), BLOCK):
        keys = images.keys[start:start + BLOCK]
        features = np.zeros((len(keys), encoder.feature_dim), np.float32)
        errors = np.full(len(keys), "", dtype=object)
        for i, key in enumerate(keys):
            try:
                x = encoder.transform(images.read(key))
            except Exception as e:  # any decoder failure is a property of the file: a row says it
                errors[i] = failure_reason(e)
            else:
                features[i] = encoder.embed(x[None])[0]
            bar.update(1)
        yield images.paths[start:start + BLOCK], features, errors.astype(str)


def _stored(path: str, model: Model, where: str, bar
            ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """``(paths, features, errors)`` of every row of a store, a stored chunk at a time (the
    store's lock shared meanwhile); a skipped image keeps the reason the store recorded."""
    with shared(path):
        store = _open_store(path, model, where)
        root = store.attrs["dataset"].get("root", "")
        for split in store.splits:
            group = store.split(split)
            for chunk in range(group["done"].shape[0]):
                rows = store.chunk_slice(split, chunk)
                try:
                    features = np.asarray(group["features"][rows], dtype=np.float32)
                    errors = np.asarray(group["errors"][rows]).astype(object)
                    ids = np.asarray(group["ids"][rows])
                except Exception as e:  # a codec or I/O failure: this chunk's files are damaged
                    raise undecodable(path, split, chunk, e) from None
                finite = np.isfinite(features).all(axis=1)
                errors[(errors == "") & ~finite] = NOT_FINITE
                with np.errstate(invalid="ignore"):
                    too_large = finite & (np.abs(features) > FEATURE_LIMIT).any(axis=1)
                errors[(errors == "") & too_large] = TOO_LARGE
                yield ([image_path(root, str(i)) for i in ids],
                       features, errors.astype(str))
                bar.update(rows.stop - rows.start)


def _open_store(path: str, model: Model, where: str) -> EmbeddingStore:
    """The store, refused unless it is finished and holds features of the model's encoder (a
    model that records none, a saved estimator, needs only as many features)."""
    store = EmbeddingStore.open(path)
    record, stored = model.source.get("encoder"), store.attrs["encoder"]
    differ = record and encoder_difference(stored, record)
    if differ:
        raise UserError(f"{path}: holds features of encoder {differ[0]} but the model {where} was "
                        f"trained on encoder {differ[1]}; predict a store embedded with the "
                        f"model's encoder, or the images themselves")
    if int(stored["feature_dim"]) != model.n_features:
        raise UserError(f"{path}: holds {stored['feature_dim']} features a row but the model "
                        f"{where} takes {model.n_features}")
    for split in store.splits:
        require_complete(store, split)
    return store


def _encoder(model: Model, cfg: PredictConfig, where: str):
    """The encoder the model was trained with, built here and checked against its record."""
    record = model.source.get("encoder")
    if not record:
        raise UserError(f"{where}: records no encoder (a model saved by ColanetClassifier.save); "
                        f"predict a store of its features, or export the model from its run")
    if record.get("weights") == "imported":
        raise UserError(f"{where}: was trained on imported features (annsnn import): the encoder "
                        f"that made them ({record.get('model')}) is not known here; predict a "
                        f"store of such features instead of images")
    import torch  # only when images are embedded: a store's features need no torch

    from pipeline.encoder import load_encoder

    done = model.source.get("embedding") or {}  # absent from model files of earlier versions
    recorded_device = (done.get("compute") or {}).get("device")
    device = cfg.device or ("cuda" if recorded_device == "cuda" and torch.cuda.is_available()
                            else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # a forward pass's floats depend on the thread count
    encoder = load_encoder(record["model"], cfg.weights or record["weights"],
                           image_size=record["preprocessing"]["input_size"][-1], device=device)
    differ = encoder_difference(encoder.identity(), record)
    if differ:
        raise UserError(f"{where}: the encoder built here, {differ[0]}, is not the one the model "
                        f"was trained with, {differ[1]}; give its checkpoint with --weights PATH "
                        f"(or use the timm version its store records)")
    encoder.embed(torch.zeros((1, *encoder.data_config["input_size"])))  # first pass: set-up
    return encoder


def _check_out(out: str | None) -> None:
    """Refuse an ``--out`` that exists (predict writes only new files) or that lies below a
    file; a missing folder is made when the CSV is written, as ``export --out`` makes one."""
    if out is None:
        return
    path = Path(out)
    if path.is_dir():
        raise UserError(f"{out}: is a folder; give the CSV file's path (e.g. "
                        f"{out}/predictions.csv)")
    if path.exists() or path.is_symlink():
        raise UserError(f"{out}: already exists; nothing was written: choose another --out "
                        f"(predict never replaces a file)")
    above = next((p for p in path.parents if p.exists() or p.is_symlink()), None)
    if above is not None and not above.is_dir():
        raise UserError(f"{out}: {above} is a file, not a folder; choose another --out")


class _CsvRows:
    """Rows ending in "\n", as csv.writer writes them with ``lineterminator="\n"``, except that a
    row holding a carriage return (a file name may) is quoted whole: csv quotes a field for the
    characters of its own line terminator only, and a bare "\r" would end the row for readers."""

    def __init__(self, stream: TextIO):
        self.plain = csv.writer(stream, lineterminator="\n")
        self.quoted = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(self, row: list[str]) -> None:
        (self.quoted if any("\r" in str(v) for v in row) else self.plain).writerow(row)

    def writerows(self, rows: list[list[str]]) -> None:
        for row in rows:
            self.writerow(row)


@contextmanager
def _csv_output(out: str | None, stdout: TextIO) -> Iterator[TextIO]:
    """``stdout``, or a temporary file beside ``out`` that becomes ``out`` once complete (a
    hard link: never over a file that appeared meanwhile); an interrupted run leaves nothing."""
    if out is None:
        yield stdout
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8", newline="") as stream:
            yield stream
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise UserError(f"{out}: appeared while predicting; it was left as it is: choose "
                            f"another --out") from None
        except OSError:  # a file system without hard links
            if path.exists():
                raise UserError(f"{out}: appeared while predicting; it was left as it is: choose "
                                f"another --out") from None
            os.rename(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
