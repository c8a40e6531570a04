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
    per_class = np.diag(confusion[:, :n_classes]) / np.maximum(confusion.sum(axis=1), 1)
    return {"accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
            "no_answer_rate": float((~answered).mean()) if len(y_true) else 0.0,
            "per_class_accuracy": per_class.round(6).tolist(),
            "confusion": confusion}


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
