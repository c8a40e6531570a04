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


def support(coding: Coding):
    """Which inputs ``coding`` makes spike at all, as a function of rows: rate ``d`` spikes
    ``floor(P d)`` times in the ``P`` presentation ticks of the accumulator coder, so at least once
    when ``P d >= 1`` (up to the rounding of its running sum)."""
    ticks = ColanetConfig().present_ticks
    return lambda z: (coding.rates(z) * ticks >= 1.0).astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", nargs="+", required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--shrinkage", type=float, nargs="+", default=[0.85, 0.95])
    a = ap.parse_args()
    for path in a.stores:
        x, y = read_rows(EmbeddingStore.open(path), "train")
        right: dict[str, int] = {}
        for fit, scored in split_rows(fold_bounds(len(y), a.folds)):
            # the shipped coding measured once per fold, on the fit rows, for its three views;
            # one view of it (views=1): the rates one copy sees
            shipped = Coding.measured(ColanetConfig(views=1),
                                      lambda: array_batches(x[fit], y[fit]), x[fit], "fit rows")
            heads = {"probe": (linear_probe, lambda z: z),
                     "NCM": (nearest_class_mean, lambda z: z),
                     **{f"NCM whitened {s}": (nearest_class_mean, whitened(x[fit], y[fit], s))
                        for s in a.shrinkage},
                     "NCM on the shipped coding's rates": (nearest_class_mean, shipped.rates),
                     "probe on those rates": (linear_probe, shipped.rates),
                     "probe on their support": (linear_probe, support(shipped))}
            for name, (head, f) in heads.items():
                right[name] = right.get(name, 0) + int(
                    (head(f(x[fit]), y[fit], f(x[scored])) == y[scored]).sum())
        print(store_name(path), "  ".join(f"{k} {100 * v / len(y):.2f} %"
                                          for k, v in right.items()), flush=True)


if __name__ == "__main__":
    main()
