"""Do ensemble copies that each see their own presentation order beat copies that share one?

Issue 12 asks whether copies that differ in more than their noise make the ensemble worth more.
For each store this trains, on the fit rows of the train split (the tail ``--val-fraction`` scores,
as in ``annsnn tune``):

* ``shared``: one network of E copies (shipped defaults) on one class-balanced presentation list
  (each row of class c presented ``max(1, n_mean/n_c)`` times in expectation, shuffled);
* ``own``: E networks of one copy each, every one with its own balanced draw, its own shuffle and
  its own noise seed, their votes summed: what copies with their own order would do. (The
  engine's copies share one order; ``--copy-share`` bagging is measured by bench/options.py.)
* with ``--feature-share S``, ``features``: E networks of one copy each on the shared list, every
  one seeing its own seeded share S of the features (the others zeroed, so that centred on their
  mean, 0, they never spike), their votes summed: copies on feature subsets.
* ``codings``: the E copies in three contiguous groups (``pipeline.colanet.copy_groups``), each a
  network on the shared list that codes its own transform of the features: as they are, their
  square root, and their square root scaled to unit L2 norm per row (the power and norm
  transforms that help nearest-class-mean on CNN features); their votes summed. What copies with
  their own input coding would do (the engine's copies share one coding).
* ``signs``: the E copies in two groups on the shared list, one coding the whitened inputs ``z``
  (shipped), the other ``-z`` (its whitening map negated): the coder spikes on the positive side
  only, so each group sees the half the other misses; their votes summed.
* ``rotations``: the E copies in ``--groups`` groups (3), each coding ``z R_g``, ``R_0`` the
  identity and the others seeded dense random rotations: whitened inputs whose positive parts
  differ; votes summed. (The engine's ``--views`` rotates groups of 32 inputs instead.)
  ``rotated``, its control: all E copies in one group on ``R_1``.

All feed their lists to the estimator's in-order ``partial_fit``, each estimator on one view
and with every copy learning every sample (``EMULATED``: the variants are the copies' diversity,
the engine's views and bagging left out, so the earlier rounds' figures stay). Prints each
variant's validation accuracy per repeat (the repeat seeds the draws); ``--folds K`` scores
every train row once by K-fold validation (fold k: the model of the other folds, as ``annsnn
tune --folds``) instead of the tail::

    python bench/diversity.py --stores data/embeddings/digits-tf_efficientnet_lite0.zarr --repeats 2
    python bench/diversity.py --stores data/embeddings/caltech51-lite0.zarr --folds 5 \\
        --variants shared,codings
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline.training as training  # noqa: E402
from pipeline.colanet import copy_groups  # noqa: E402
from pipeline.estimator import ColanetClassifier  # noqa: E402
from pipeline.store import EmbeddingStore, store_name  # noqa: E402
from pipeline.streaming import read_rows  # noqa: E402
from pipeline.tuning import scored_bounds, split_rows  # noqa: E402


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 norm (a zero row stays zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


#: Every estimator's settings beyond the defaults: one view, every copy learning every sample
#: (the copies' diversity is what the variants emulate).
EMULATED = {"views": 1, "copy_share": 1.0}

#: The feature transforms of the ``codings`` variant, one per group of copies.
TRANSFORMS = (lambda x: x, lambda x: np.sqrt(np.maximum(x, 0)),
              lambda x: unit_rows(np.sqrt(np.maximum(x, 0))))


def rotation(d: int, seed: int) -> np.ndarray:
    """A seeded random rotation of R^d (QR of a Gaussian matrix, signs fixed); 0: the identity."""
    if seed == 0:
        return np.eye(d)
    q, r = np.linalg.qr(np.random.default_rng([seed, 11]).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@contextlib.contextmanager
def whitened_then(extra: np.ndarray):
    """The coding's whitening map followed by ``extra`` (D, D): patches
    ``pipeline.training.zca_map`` for the estimators fitted inside the ``with``."""
    original = training.zca_map
    training.zca_map = lambda cov, a: (original(cov, a) @ extra).astype(np.float32)
    try:
        yield
    finally:
        training.zca_map = original


def balanced_list(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one balanced pass: a row of class c ``floor(r_c)`` times plus once more with
    probability ``frac(r_c)``, ``r_c = max(1, n_mean / n_c)``; shuffled."""
    counts = np.bincount(labels)
    r = np.maximum(1.0, counts.mean() / counts)[labels]
    times = np.floor(r).astype(np.int64) + (rng.random(len(r)) < r - np.floor(r))
    rows = np.repeat(np.arange(len(r)), times)
    return rows[rng.permutation(len(rows))]


def score(path: str, variant: str, repeat: int, val_fraction: float, copies: int,
          feature_share: float = 1.0, folds: int = 1, groups: int = 3) -> float:
    """Validation accuracy of one variant: on the tail, or over ``folds`` folds."""
    store = EmbeddingStore.open(path)
    x, y = read_rows(store, "train")
    bounds = scored_bounds(store, val_fraction, folds)
    right = 0
    for fit, scored in split_rows(bounds):
        right += score_rows(x[fit], y[fit], x[scored], y[scored], variant, repeat, copies,
                            feature_share, groups)
    return right / int(bounds[-1] - bounds[0])


def score_rows(x_fit, y_fit, x_val, y_val, variant: str, repeat: int, copies: int,
               feature_share: float, groups: int = 3) -> int:
    """How many validation rows one variant answers right."""
    classes, labels = np.unique(y_fit, return_inverse=True)
    if variant == "shared":
        rows = balanced_list(labels, np.random.default_rng([repeat, 0]))
        model = ColanetClassifier(e=copies, seed=repeat, **EMULATED).partial_fit(
            x_fit[rows], y_fit[rows], classes=classes)
        total = model.votes(x_val).astype(np.int64).sum(axis=1)
    elif variant == "features":
        rows = balanced_list(labels, np.random.default_rng([repeat, 0]))
        total = np.zeros((len(x_val), len(classes)), np.int64)
        for copy in range(copies):
            seen = np.random.default_rng([repeat, copy, 7]).random(x_fit.shape[1]) < feature_share
            model = ColanetClassifier(e=1, seed=repeat * 1000 + copy, **EMULATED).partial_fit(
                x_fit[rows] * seen, y_fit[rows], classes=classes)
            total += model.votes(x_val * seen).astype(np.int64).sum(axis=1)
    elif variant == "codings":
        rows = balanced_list(labels, np.random.default_rng([repeat, 0]))
        total = np.zeros((len(x_val), len(classes)), np.int64)
        for transform, group in zip(TRANSFORMS, copy_groups(copies, len(TRANSFORMS))):
            model = ColanetClassifier(e=len(group), seed=repeat * 1000 + group.start, **EMULATED
                                      ).partial_fit(transform(x_fit[rows]), y_fit[rows],
                                                    classes=classes)
            total += model.votes(transform(x_val)).astype(np.int64).sum(axis=1)
    elif variant in ("signs", "rotations", "split", "rotated"):
        rows = balanced_list(labels, np.random.default_rng([repeat, 0]))
        total = np.zeros((len(x_val), len(classes)), np.int64)
        d = x_fit.shape[1]
        extras = {"signs": [np.eye(d), -np.eye(d)], "split": [np.eye(d), np.eye(d)],
                  "rotated": [rotation(d, 1)],
                  "rotations": [rotation(d, g) for g in range(groups)]}[variant]
        for extra, group in zip(extras, copy_groups(copies, len(extras))):
            with whitened_then(extra):
                model = ColanetClassifier(e=len(group), seed=repeat * 1000 + group.start, **EMULATED
                                          ).partial_fit(x_fit[rows], y_fit[rows], classes=classes)
            total += model.votes(x_val).astype(np.int64).sum(axis=1)
    else:
        total = np.zeros((len(x_val), len(classes)), np.int64)
        for copy in range(copies):
            rows = balanced_list(labels, np.random.default_rng([repeat, copy]))
            model = ColanetClassifier(e=1, seed=repeat * 1000 + copy, **EMULATED).partial_fit(
                x_fit[rows], y_fit[rows], classes=classes)
            total += model.votes(x_val).astype(np.int64).sum(axis=1)
    return int((classes[total.argmax(axis=1)] == y_val).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", nargs="+", required=True)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--copies", type=int, default=ColanetClassifier().e)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--variants", default="shared,own",
                    help="of shared, own, features, codings, signs, rotations, and the controls "
                         "split and rotated")
    ap.add_argument("--folds", type=int, default=1,
                    help="K > 1: K-fold validation on the whole train split, not the tail")
    ap.add_argument("--feature-share", type=float, default=0.5,
                    help="share of the features each copy sees (variant features)")
    ap.add_argument("--groups", type=int, default=3,
                    help="groups of copies, each its own rotation (variant rotations)")
    a = ap.parse_args()
    variants = a.variants.split(",")
    print(f"{'store':<40} {'repeat':>6} " + " ".join(f"{v:>8}" for v in variants) + "  seconds",
          flush=True)
    for path in a.stores:
        for repeat in range(a.repeats):
            started = time.perf_counter()
            acc = [score(path, v, repeat, a.val_fraction, a.copies, a.feature_share, a.folds,
                         a.groups)
                   for v in variants]
            print(f"{store_name(path)[:40]:<40} {repeat:>6} " + " ".join(f"{v:>8.4f}" for v in acc)
                  + f"  {time.perf_counter() - started:.0f}", flush=True)


if __name__ == "__main__":
    main()
