"""Accuracy figures of a classifier that may decline to answer (prediction -1)."""

from __future__ import annotations

import numpy as np


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
            "confusion": confusion.tolist()}
