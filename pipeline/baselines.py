"""Conventional heads on the same embeddings, so the SNN is always shown beside them."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Multinomial logistic regression on standardised features (L2, C=1): test predictions."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    return model.fit(x_train, y_train).predict(x_test)


def nearest_class_mean(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Nearest class mean (Euclidean) on the raw features: test predictions."""
    with warnings.catch_warnings():  # features that are constant within a class are fine here
        warnings.simplefilter("ignore", UserWarning)
        # ... and features that are zero in every row (sparse pooled features) make scikit-learn
        # divide 0 by 0 in a statistic it does not use for the plain Euclidean rule
        warnings.simplefilter("ignore", RuntimeWarning)
        return NearestCentroid().fit(x_train, y_train).predict(x_test)
