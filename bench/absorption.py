"""Where the SNN loses to nearest class mean: recall by class size, and stability by class size.

Issue 12's held-out sets show small classes absorbed by large look-alikes. For each store this
scores every train row by K-fold validation (``pipeline.tuning.fold_bounds``; the shipped defaults
or ``--set``; the test split is never read) and prints:

* recall of the SNN and of nearest class mean over the classes in each third by train rows
  (smallest, middle, largest);
* the mean stability ``S`` of each third's neurons after training on the first fold's fit rows
  (``2^-S`` scales a neuron's plasticity: a neuron at S 10 learns a thousandth of a step) and the
  correlation of a class's mean S with its train rows::

    python bench/absorption.py --stores data/embeddings/caltech51-lite0.zarr --folds 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.options import parse_values  # noqa: E402
from pipeline.baselines import nearest_class_mean  # noqa: E402
from pipeline.colanet import ColanetConfig  # noqa: E402
from pipeline.store import EmbeddingStore, store_name  # noqa: E402
from pipeline.streaming import read_rows  # noqa: E402
from pipeline.tuning import fold_answers, fold_bounds, split_rows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", nargs="+", required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--set", nargs="*", default=[], help="KEY=V: a model other than the defaults")
    a = ap.parse_args()
    params = {**ColanetConfig().to_dict(), **{k: v[0] for k, v in map(parse_values, a.set)}}
    for path in a.stores:
        x, y = read_rows(EmbeddingStore.open(path), "train")
        classes, labels = np.unique(y, return_inverse=True)
        rows = np.bincount(labels)
        third = np.digitize(rows, np.quantile(rows, [1 / 3, 2 / 3]))  # 0 smallest .. 2 largest
        snn, ncm = np.zeros(len(y), bool), np.zeros(len(y), bool)
        bounds = fold_bounds(len(y), a.folds)
        answers = fold_answers(x, y, params, bounds)
        for k, ((fit, fold), (model, _, _, right)) in enumerate(zip(split_rows(bounds), answers)):
            snn[fold] = right
            ncm[fold] = nearest_class_mean(x[fit], y[fit], x[fold]) == y[fold]
            if k == 0:  # stability per class (the copies and microcolumns averaged)
                s = model.state_.stability.reshape(-1, len(classes), model.config_.m)
                class_s = s.mean(axis=(0, 2))
        print(f"{store_name(path)}: {a.folds}-fold SNN {snn.mean():.4f}, NCM {ncm.mean():.4f}; "
              f"corr(train rows, mean S) {np.corrcoef(rows, class_s)[0, 1]:.2f}")
        for t, name in enumerate(("smallest", "middle", "largest")):
            mine = third[labels] == t
            print(f"  {name:<8} third: {int((third == t).sum()):>3} classes, "
                  f"{rows[third == t].min()}-{rows[third == t].max()} train rows; "
                  f"recall SNN {snn[mine].mean():.4f}, NCM {ncm[mine].mean():.4f}; "
                  f"mean S {class_s[third == t].mean():.2f}", flush=True)


if __name__ == "__main__":
    main()
