"""Why the whitened coding: nearest class mean on the features as the codings transform them.

The SNN is a prototype learner, so the space its inputs come from matters as it does for nearest
class mean (NCM). For each store this scores every train row by K-fold validation
(``pipeline.tuning.fold_bounds``; the test split is never read) with NCM on: the features as they
are; their signed square roots centred and whitened by the shrunk covariance of the fit rows, at
each ``--shrinkage`` (``pipeline.training.Coding.measured`` with ``coding="whitened"``: the
coding's own measure); and the coded rates the SNN sees with the shipped coding (positive part,
per-feature saturation levels), beside the linear probe. It also fits the linear probe on those
rates and on their binary support (the inputs that spike at least once in a presentation, which is
all that the learning rule's contribution windows record): what a discriminative learner, rather
than a prototype, can get out of what the SNN sees::

    python bench/whitening.py --stores data/embeddings/digits-tf_efficientnet_lite0.zarr \\
        data/embeddings/caltech51-lite0.zarr --shrinkage 0.85 0.95
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.baselines import linear_probe, nearest_class_mean  # noqa: E402
from pipeline.colanet import ColanetConfig  # noqa: E402
from pipeline.store import EmbeddingStore, store_name  # noqa: E402
from pipeline.streaming import array_batches, read_rows  # noqa: E402
from pipeline.training import Coding  # noqa: E402
from pipeline.tuning import fold_bounds, split_rows  # noqa: E402


def whitened(fit: np.ndarray, labels: np.ndarray, shrinkage: float):
    """The whitened coding's inputs before the coder (its positive part and levels), measured on
    the fit rows as train-snn measures them, as a function of rows."""
    config = ColanetConfig(coding="whitened", whiten_shrinkage=shrinkage)
    return Coding.measured(config, lambda: array_batches(fit, labels), fit, "fit rows").inputs


def coded_rates(fit: np.ndarray, labels: np.ndarray):
    """The rates the shipped coding gives the SNN, measured on the fit rows."""
    return Coding.measured(ColanetConfig(), lambda: array_batches(fit, labels), fit,
                           "fit rows").rates


def coded_support(fit: np.ndarray, labels: np.ndarray):
    """Which inputs the shipped coding makes spike at all: rate ``d`` spikes ``floor(P d)`` times
    in the ``P`` presentation ticks of the accumulator coder, so at least once when ``P d >= 1``
    (up to the rounding of its running sum)."""
    rates, ticks = coded_rates(fit, labels), ColanetConfig().present_ticks
    return lambda z: (rates(z) * ticks >= 1.0).astype(np.float64)


def identity(fit: np.ndarray, labels: np.ndarray):
    """The features as they are."""
    return lambda z: z


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", nargs="+", required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--shrinkage", type=float, nargs="+", default=[0.85, 0.95])
    a = ap.parse_args()
    for path in a.stores:
        x, y = read_rows(EmbeddingStore.open(path), "train")
        heads = {"probe": (linear_probe, identity), "NCM": (nearest_class_mean, identity),
                 **{f"NCM whitened {s}": (nearest_class_mean,
                                          lambda f, yf, s=s: whitened(f, yf, s))
                    for s in a.shrinkage},
                 "NCM on the shipped coding's rates": (nearest_class_mean, coded_rates),
                 "probe on those rates": (linear_probe, coded_rates),
                 "probe on their support": (linear_probe, coded_support)}
        right = dict.fromkeys(heads, 0)
        for fit, scored in split_rows(fold_bounds(len(y), a.folds)):
            for name, (head, make) in heads.items():
                f = make(x[fit], y[fit])
                right[name] += int((head(f(x[fit]), y[fit], f(x[scored])) == y[scored]).sum())
        print(store_name(path), "  ".join(f"{k} {100 * v / len(y):.2f} %"
                                          for k, v in right.items()), flush=True)


if __name__ == "__main__":
    main()
