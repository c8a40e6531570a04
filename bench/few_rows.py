"""Validation accuracy on few rows a class: each store's train split cut to the first R rows of
every class (store order, ``--rows``), scored by K-fold validation (``--folds``) beside the
probe and nearest class mean.

The team's many-class held-out sets have about 57 train rows a class, and the development stores
(digits 135, imagenette 120) hide what one online pass does with so few: this cut shows it on
the same photos. Every value of each ``--vary`` option (the rest at the shipped defaults, or
``--set``) is trained on the other folds of the cut rows and scores its fold
(``pipeline.tuning.fold_answers``; the test split is never read), under model seeds S..S+N-1
(S: the value's seed, 0 unless set or varied)::

    python bench/few_rows.py --stores data/embeddings/caltech51-lite0.zarr --rows 25,40 \\
        --vary class_floor=0,50 --seeds 2

Prints one line per store, cut, option value: the SNN's accuracy per seed and their mean.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.options import parse_values  # noqa: E402
from pipeline.colanet import ColanetConfig  # noqa: E402
from pipeline.store import EmbeddingStore, store_name  # noqa: E402
from pipeline.streaming import read_rows  # noqa: E402
from pipeline.tuning import baseline_accuracy, fold_accuracy, fold_bounds  # noqa: E402


def first_rows_of_each_class(y: np.ndarray, rows: int) -> np.ndarray:
    """Indices of the first ``rows`` rows of every class, in store order."""
    return np.sort(np.concatenate([np.flatnonzero(y == c)[:rows] for c in np.unique(y)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", nargs="+", required=True)
    ap.add_argument("--rows", default="25,40", help="R1,R2,...: train rows kept a class")
    ap.add_argument("--vary", nargs="+", required=True, help="KEY=V1,V2,... (one or more options)")
    ap.add_argument("--set", nargs="*", default=[], help="KEY=V: a base other than the defaults")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=2, help="model seeds S..S+N-1 (S: --set seed)")
    ap.add_argument("--passes", type=int, default=1, help="online passes over the fit rows")
    a = ap.parse_args()
    base = {**ColanetConfig().to_dict(), **{k: v[0] for k, v in map(parse_values, a.set)}}
    for path in a.stores:
        x_all, y_all = read_rows(EmbeddingStore.open(path), "train")
        for r in map(int, a.rows.split(",")):
            keep = first_rows_of_each_class(y_all, r)
            x, y = x_all[keep], y_all[keep]
            bounds = fold_bounds(len(y), a.folds)
            heads = baseline_accuracy(x, y, bounds)
            print(f"{store_name(path)}: {r} rows a class ({len(y)} rows, {len(np.unique(y))} "
                  f"classes): probe {heads['probe']:.4f}, NCM {heads['ncm']:.4f}", flush=True)
            for key, values in map(parse_values, a.vary):
                for value in values:
                    params = {**base, key: value, "passes": a.passes}
                    first_seed, scores = params["seed"], []
                    for s in range(a.seeds):
                        params["seed"] = first_seed + s
                        scores.append(fold_accuracy(x, y, params, bounds)["val_accuracy"])
                    print(f"  {key}={value}: SNN {' / '.join(f'{v:.4f}' for v in scores)}, "
                          f"mean {np.mean(scores):.4f}", flush=True)


if __name__ == "__main__":
    main()
