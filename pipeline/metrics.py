"""Accuracy figures of a classifier that may decline to answer (prediction -1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

CONFUSION_IN_JSON = 1000  # at this many classes or more the matrix goes to confusion.npy


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """Accuracy (no answer counts as an error), no-answer rate, per-class accuracy, confusion.

    ``confusion[i, j]`` counts samples of class i predicted as j; column ``n_classes`` counts those
    of class i that got no answer.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    answered = y_pred >= 0
    confusion = np.zeros((n_classes, n_classes + 1), dtype=np.int64)
    np.add.at(confusion, (y_true, np.where(answered, y_pred, n_classes)), 1)
    per_class = [0.0 if r is None else r for r in class_recall(y_true, y_pred, n_classes)]
    return {"accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
            "no_answer_rate": float((~answered).mean()) if len(y_true) else 0.0,
            "per_class_accuracy": per_class,  # 0.0 for a class with no samples (kept as it was)
            "confusion": confusion}


def class_recall(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[float | None]:
    """Per class: the share of its samples predicted as it (no answer, -1, counts as wrong),
    rounded to 6 places; None for a class with no samples."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred)
    samples = np.bincount(y_true, minlength=n_classes)
    correct = np.bincount(y_true[y_pred == y_true], minlength=n_classes)
    return [None if n == 0 else round(float(c / n), 6) for c, n in zip(correct, samples)]


def class_precision(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[float | None]:
    """Per class: the share of the samples predicted as it that are of it, rounded to 6 places;
    None for a class never predicted (no answer, -1, is no prediction of any class)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    predicted = np.bincount(y_pred[y_pred >= 0], minlength=n_classes)
    correct = np.bincount(y_true[y_pred == y_true], minlength=n_classes)
    return [None if n == 0 else round(float(c / n), 6) for c, n in zip(correct, predicted)]


def f1_score(precision: float | None, recall: float | None) -> float | None:
    """The harmonic mean of a class's precision and recall, rounded to 6 places; None when
    either is None (never predicted, or no samples), 0.0 when both are 0."""
    if precision is None or recall is None:
        return None
    if precision + recall == 0:
        return 0.0
    return round(2 * precision * recall / (precision + recall), 6)


def top_k_accuracy(y_true: np.ndarray, ranked: np.ndarray) -> float:
    """The share of samples whose class is among their ranked classes, (samples, k)
    (:func:`pipeline.colanet.ranked_classes`: -1 places rank nothing, so a class with no vote
    never counts and a sample with no vote at all is a miss); 0.0 for no samples."""
    y_true, ranked = np.asarray(y_true), np.asarray(ranked)
    return float((ranked == y_true[:, None]).any(axis=1).mean()) if len(y_true) else 0.0


def per_class_table(class_names: list[str], train_count: np.ndarray, y_true: np.ndarray,
                    predictions: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One entry per class, in class order: ``name``, ``train_count``, ``eval_count`` and for
    each of ``predictions`` (method -> predictions of ``y_true``) ``<method>_recall``,
    ``<method>_precision`` and ``<method>_f1`` (None: see :func:`class_recall`,
    :func:`class_precision`, :func:`f1_score`)."""
    n = len(class_names)
    eval_count = np.bincount(np.asarray(y_true, dtype=np.int64), minlength=n)
    recall = {k: class_recall(y_true, pred, n) for k, pred in predictions.items()}
    precision = {k: class_precision(y_true, pred, n) for k, pred in predictions.items()}
    return [{"name": name, "train_count": int(train_count[i]), "eval_count": int(eval_count[i]),
             **{f"{k}_recall": r[i] for k, r in recall.items()},
             **{f"{k}_precision": p[i] for k, p in precision.items()},
             **{f"{k}_f1": f1_score(precision[k][i], recall[k][i]) for k in predictions}}
            for i, name in enumerate(class_names)]


def worst_classes(per_class: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The ``limit`` entries of :func:`per_class_table` with the lowest SNN recall, worst first
    (ties in class order; classes with no eval samples last)."""
    ranked = sorted(per_class, key=lambda c: (c["snn_recall"] is None, c["snn_recall"] or 0.0))
    return ranked[:max(limit, 0)]


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json`` as strict JSON (a non-finite number is a bug, refused here, never written as
    ``NaN``); a confusion matrix of 1,000+ classes goes to ``confusion.npy`` beside it, and the
    JSON names that file instead of holding millions of numbers. Returns what was written."""
    run_dir = Path(run_dir)
    confusion = np.asarray(metrics["confusion"])
    out = dict(metrics)
    if confusion.shape[0] >= CONFUSION_IN_JSON:
        np.save(run_dir / "confusion.npy", confusion)
        out["confusion"] = "confusion.npy"
    else:
        out["confusion"] = confusion.tolist()
        (run_dir / "confusion.npy").unlink(missing_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(out, indent=2, allow_nan=False))
    return out
