"""Model files: a trained CoLaNET classifier in one self-contained ``.npz`` (no pickle).

One format for ``annsnn export`` (a finished run) and :class:`pipeline.estimator.ColanetClassifier`
(``save``/``load``). It is the checkpoint format (:mod:`pipeline.checkpoint`: plain arrays, read
with ``allow_pickle=False``, plus ``meta``, one JSON string; written atomically):

* arrays: the model's checkpoint arrays (:func:`pipeline.colanet.checkpoint_arrays`: the
  resources ``r``, the neuron, column and input state, the counters ``t`` and ``n_seen``; with
  ``theta_refresh="anti_hebbian"`` also ``theta_add``). The weights ``w`` (and otherwise
  ``theta_add``) are rebuilt from ``r`` on loading, exactly as training left them. ``classes``:
  (C,) the label of each column of the network (unicode or numeric).
* ``meta``: ``format`` ("annsnn-model"), ``version`` (1), ``created_by`` ("annsnn"), ``config``
  (the resolved :class:`pipeline.colanet.ColanetConfig`), ``coding`` (``sat``: one level or one
  per input, ``Infinity`` for an input that never spikes; ``centre``: the per-feature train mean
  or null; ``on_off``), ``n_features`` (features per sample), ``class_names`` (the classes as
  text), ``passes``, ``next_sample_id`` (training ids so far lie below it: where further learning
  continues), ``feature_names`` (or null) and ``source``: for an exported run the run folder, the
  store, the encoder's record and identity (model, weights and their sha256, preprocessing, data
  fingerprint), how its features were computed (``embedding``: batch size, torch threads,
  device and precision; absent in files written before it was recorded) and the evaluation's
  split and accuracy; for a saved estimator ``{}``.

A file that cannot be read, is not a model file, or whose arrays or metadata do not fit its
configuration is refused with one line naming it. An existing file is replaced only when asked
(``overwrite``) and only when it is a model file annsnn wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.checkpoint import FileRole, check_arrays, load_checkpoint, save_checkpoint
from pipeline.colanet import (ColanetConfig, ColanetState, checkpoint_arrays, checkpoint_schema,
                              state_from_checkpoint)
from pipeline.errors import UserError, short_reason
from pipeline.lock import shared
from pipeline.outputs import marked_kind
from pipeline.store import EmbeddingStore, store_exists
from pipeline.streaming import class_counts
from pipeline.training import (CHECKPOINT, Coding, checkpoint_identity, ids_used, load_progress,
                               presentations, store_rows)

FORMAT, VERSION = "annsnn-model", 1
MODEL_FILE = FileRole("model file", "its configuration",
                      "export the run again (annsnn export --run RUN_DIR --out FILE --overwrite) "
                      "or save the classifier again")
MAX_SAMPLE_ID = 2**62  # sample ids key the noise as int64: room to count on from any recorded id
CLASS_KINDS = "biufU"  # label dtypes a plain array holds (bool, int, uint, float, unicode)


@dataclass
class Model:
    """Everything a model file holds (see the module docstring)."""

    config: ColanetConfig
    state: ColanetState
    coding: Coding
    classes: np.ndarray  # (C,) the label of each column
    n_features: int
    passes: int = 1
    next_sample_id: int = 0
    feature_names: list[str] | None = None
    source: dict[str, Any] = field(default_factory=dict)


def write_model(path: str | Path, model: Model, *, overwrite: bool = False) -> Path:
    """Write ``model`` to ``path`` atomically. An existing ``path`` is refused, or with
    ``overwrite`` replaced when it is a readable model file annsnn wrote (never anything else)."""
    if not str(path):
        raise UserError("an empty path; give the model file's path (e.g. model.npz)")
    path = Path(path)
    try:
        is_dir, present = path.is_dir(), path.exists() or path.is_symlink()
    except OSError as e:  # a name too long for the file system, a folder we may not read
        raise UserError(f"{path}: {e.strerror or e}; nothing was written: choose another "
                        f"path") from None
    if is_dir:
        raise UserError(f"{path}: is a folder; give the model file's path (e.g. model.npz)")
    if present:
        if not overwrite:
            raise UserError(f"{path}: already exists; nothing was written: choose another path, "
                            f"or pass --overwrite (overwrite=True) to replace a model file")
        try:
            read_model(path)
        except UserError:
            raise UserError(f"{path}: exists and is not a readable model file annsnn wrote; "
                            f"nothing was written: choose another path") from None
    classes = np.asarray(model.classes)
    if classes.dtype == object and classes.size and all(isinstance(c, str) for c in classes.flat):
        classes = classes.astype(str)  # text held as objects (a pandas string column): text
    if classes.ndim != 1 or classes.dtype.kind not in CLASS_KINDS:
        raise ValueError(f"classes of dtype {classes.dtype} cannot be stored without pickle; use "
                         f"text or numeric labels")
    meta = {"format": FORMAT, "version": VERSION, "created_by": "annsnn",
            "config": model.config.to_dict(), "coding": model.coding.to_meta(),
            "n_features": int(model.n_features), "class_names": [str(c) for c in classes],
            "passes": int(model.passes), "next_sample_id": int(model.next_sample_id),
            "feature_names": model.feature_names, "source": model.source}
    try:
        save_checkpoint(path, {**checkpoint_arrays(model.state, model.config),
                               **model.coding.to_arrays(), "classes": classes},
                        meta)
    except OSError as e:
        raise UserError(f"{path}: writing the model file failed ({e.strerror or e}); free space "
                        f"or fix the folder's permissions, then write it again") from None
    return path


def read_model(path: str | Path) -> Model:
    """The model in ``path``; a damaged file, or one that is not a model file, is refused naming
    it (:class:`pipeline.errors.UserError`)."""
    arrays, meta = load_checkpoint(path, MODEL_FILE)
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: not an annsnn model file (no format {FORMAT!r} in its metadata); "
                        f"write one with `annsnn export` or ColanetClassifier.save")
    if meta.get("version") != VERSION:
        raise UserError(f"{path}: model file version {meta.get('version')!r}; this annsnn reads "
                        f"version {VERSION}: {MODEL_FILE.remedy}")
    try:
        config = ColanetConfig.from_recorded(meta["config"])
        coding = Coding.from_meta(meta["coding"], arrays)
        n_features, passes = int(meta["n_features"]), int(meta["passes"])
        next_id = int(meta["next_sample_id"])
        names, source = meta.get("feature_names"), meta.get("source") or {}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: model file metadata is damaged ({short_reason(e)}); "
                        f"{MODEL_FILE.remedy}") from None
    classes = arrays.pop("classes", None)
    if (classes is None or classes.ndim != 1 or not len(classes)
            or classes.dtype.kind not in CLASS_KINDS or len(np.unique(classes)) != len(classes)):
        raise UserError(f"{path}: model file has no valid 'classes' array (one distinct label "
                        f"per column); {MODEL_FILE.remedy}")
    n_inputs = config.n_inputs(max(n_features, 1))
    check_arrays(path, arrays, checkpoint_schema(config, n_inputs, len(classes)), role=MODEL_FILE)
    counts = {"n_features": (n_features, 1), "passes": (passes, 1), "next_sample_id": (next_id, 0)}
    wrong = next((f"{k} {v} (at least {low}{', below 2^62' if k == 'next_sample_id' else ''})"
                  for k, (v, low) in counts.items() if v < low or v >= MAX_SAMPLE_ID), None)
    if wrong is not None:
        raise UserError(f"{path}: model file is inconsistent ({wrong}); {MODEL_FILE.remedy}")
    if not coding.fits(config, n_features):
        raise UserError(f"{path}: model file is inconsistent (coding {config.coding!r} with sat of "
                        f"shape {np.shape(coding.sat)} for {config.n_coded(n_features)} coded "
                        f"inputs, {n_features} features); {MODEL_FILE.remedy}")
    return Model(config=config, state=state_from_checkpoint(arrays, config, n_inputs, len(classes)),
                 coding=coding, classes=classes, n_features=n_features, passes=passes,
                 next_sample_id=next_id, feature_names=names, source=source)


def export_run(run_dir: str | Path, out: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Write the model of a finished run folder to ``out``; returns a summary (the file, classes,
    features, the run's evaluation). Refused: see :func:`run_model`, and an existing ``out`` (see
    :func:`write_model`)."""
    model = run_model(run_dir)
    write_model(out, model, overwrite=overwrite)
    return {"out": str(out), "run": str(run_dir), "classes": len(model.classes),
            "n_features": model.n_features, "eval_split": model.source["eval_split"],
            "snn_accuracy": model.source["snn_accuracy"]}


def run_model(run_dir: str | Path) -> Model:
    """The model of a finished run folder (read under the run's and its store's shared locks).
    Refused: a folder that is not a run, a run whose training did not finish (no
    ``metrics.json``, or a checkpoint not at the end of its last pass), a run in training (its
    lock), a missing store."""
    run_dir = Path(run_dir)
    if marked_kind(run_dir) != "run":
        raise UserError(f"{run_dir}: not a run folder of annsnn; pass the folder train-snn "
                        f"printed (data/runs/NAME)")
    unfinished = ("finish it with `annsnn train-snn` with the run's options (it resumes), then "
                  "use it")
    with shared(run_dir):  # a run in training holds it alone: refused while it learns
        if not (run_dir / "metrics.json").is_file() or not (run_dir / CHECKPOINT).is_file():
            raise UserError(f"{run_dir}: has no finished model (no metrics.json or {CHECKPOINT}: "
                            f"its training did not finish); {unfinished}")
        try:
            recorded = json.loads((run_dir / "config.json").read_text())
            metrics = json.loads((run_dir / "metrics.json").read_text())
            if not isinstance(recorded, dict) or not isinstance(metrics, dict):
                raise TypeError("not a JSON object")
            config, store_path = ColanetConfig.from_recorded(recorded["colanet"]), recorded["store"]
            recorded_passes = metrics["passes"]
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{run_dir}: config.json or metrics.json is unreadable "
                            f"({short_reason(e)}); {unfinished}") from None
        if not store_exists(store_path):
            raise UserError(f"{run_dir}: its store {store_path} is missing (the run is checked "
                            f"against it and its encoder read from it); restore it, then use it")
        with shared(store_path):
            store = EmbeddingStore.open(store_path)
            state, progress = load_progress(
                run_dir / CHECKPOINT, store, config,
                other_store=f"the store was rebuilt or replaced since the run trained on it; "
                            f"train a new run on it (annsnn train-snn --out {store.path}) and "
                            f"use that")
            n_rows = store.split("train")["features"].shape[0]
            passes = progress.pass_index + 1
            if progress.cursor < n_rows or recorded_passes != passes:
                raise UserError(f"{run_dir}: its checkpoint is not a finished, evaluated model "
                                f"(pass {passes} at train row {progress.cursor} of {n_rows}; "
                                f"metrics.json: {recorded_passes} pass(es)); {unfinished}")
            repeats = presentations(config, class_counts(store, "train"))
            source = {"run": str(run_dir), "store": store.path,
                      "identity": checkpoint_identity(store), "encoder": store.attrs["encoder"],
                      "embedding": {k: store.attrs.get(k)
                                    for k in ("batch_size", "threads", "compute")},
                      "eval_split": metrics.get("eval_split"),
                      "snn_accuracy": metrics.get("snn_accuracy"), "n_train": metrics.get("n_train"),
                      **({} if progress.source is None else {"init_from": progress.source})}
            # A run continued from another model (--init-from) has its own class list and ids.
            return Model(config=config, state=state, coding=progress.coding,
                         classes=np.array(progress.class_names(store)), passes=passes,
                         n_features=int(store.attrs["encoder"]["feature_dim"]),
                         next_sample_id=progress.first_id + ids_used(store_rows(store), passes,
                                                                     repeats), source=source)
