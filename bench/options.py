"""Validation accuracy of one model option at each of its values, the rest at the shipped defaults.

The evidence behind each named reading of the spec and each other [choice] in docs/accuracy.md:
every value (with ``--seeds N``: under model seeds s..s+N-1, s the value's seed, 0 unless set
by ``--set seed=S`` or varied, scored by their mean) is trained on
the first 80 % of each store's (seeded, shuffled) train split and scored
on the last 20 % (``pipeline.tuning.run_trial``: the test splits are never read), beside the linear
probe and nearest class mean fitted on the same rows. With ``--folds K`` every train row is scored
once, by K-fold validation (``pipeline.tuning.cross_validate``): the better estimate on small
stores::

    python bench/options.py --stores data/embeddings/digits-tf_efficientnet_lite0.zarr \\
        data/embeddings/caltech51-lite0.zarr --vary firing=column_argmax,all_above_threshold

Writes ``data/bench/options-<key>.json`` and prints one table per option.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.colanet import ColanetConfig  # noqa: E402
from pipeline.store import EmbeddingStore, store_name  # noqa: E402
from pipeline.tuning import baseline_validation, run_trial, trial_params  # noqa: E402


def parse_values(text: str) -> tuple[str, list]:
    """``key=v1,v2``: the option and its values, typed like the option's default."""
    import typing

    key, _, values = text.partition("=")
    hint = typing.get_type_hints(ColanetConfig)[key]  # e.g. int | None: values are ints
    kind = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
    if kind is bool:
        return key, [v.lower() in ("1", "true", "yes") for v in values.split(",")]
    return key, [kind(v) for v in values.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", nargs="+", required=True)
    ap.add_argument("--vary", nargs="+", required=True, help="KEY=V1,V2,... (one or more options)")
    ap.add_argument("--set", nargs="*", default=[], help="KEY=V: a base other than the defaults")
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--passes", type=int, default=1, help="online passes over the fit rows")
    ap.add_argument("--folds", type=int, default=1,
                    help="K > 1: K-fold validation on the whole train split "
                         "(pipeline.tuning.cross_validate) instead of its 20 %% tail")
    ap.add_argument("--seeds", type=int, default=1,
                    help="score each value by its mean over model seeds S..S+N-1 "
                         "(S: its seed, 0 unless --set or --vary gives one)")
    ap.add_argument("--out", default="data/bench")
    a = ap.parse_args()
    base = dict(parse_values(s) for s in a.set)
    base = {k: v[0] for k, v in base.items()}
    baselines = {s: baseline_validation(s, a.val_fraction, a.folds) for s in a.stores}
    for key, values in (parse_values(v) for v in a.vary):
        rows = []
        for value in values:
            for path in a.stores:
                dim = EmbeddingStore.open(path).attrs["encoder"]["feature_dim"]
                config = trial_params(ColanetConfig(), {**base, key: value}, dim)
                started = time.perf_counter()
                results = [run_trial(path, dataclasses.replace(config, seed=config.seed + s),
                                     a.val_fraction, passes=a.passes, folds=a.folds)
                           for s in range(a.seeds)]
                rows.append({"option": key, "value": value, "store": store_name(path),
                             "val_accuracy": float(np.mean([r["val_accuracy"] for r in results])),
                             "per_seed": [r["val_accuracy"] for r in results],
                             "no_answer_rate": float(np.mean([r["no_answer_rate"]
                                                              for r in results])),
                             "probe": baselines[path]["probe"], "ncm": baselines[path]["ncm"],
                             "seconds": round(time.perf_counter() - started, 1)})
                r = rows[-1]
                print(f"{key}={value!s:<22} {r['store'][:36]:<36} SNN {r['val_accuracy']:.4f} "
                      f"(no answer {r['no_answer_rate']:.3f})  probe {r['probe']:.4f}  "
                      f"NCM {r['ncm']:.4f}  {r['seconds']:.0f} s", flush=True)
        tag = "".join(f"-{k}={v}" for k, v in sorted(base.items()))
        out = Path(a.out) / (f"options-{key}{tag}{'-passes%d' % a.passes if a.passes > 1 else ''}"
                             f"{'-seeds%d' % a.seeds if a.seeds > 1 else ''}"
                             f"{'-folds%d' % a.folds if a.folds > 1 else ''}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"base": base, "val_fraction": a.val_fraction,
                                   "passes": a.passes, "seeds": a.seeds, "folds": a.folds,
                                   "rows": rows},
                                  indent=2))


if __name__ == "__main__":
    main()
