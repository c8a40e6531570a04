"""Class-incremental learning with `train-snn --init-from`, beside one joint pass and the baselines.

A store's classes are split into ``--tasks`` tasks (consecutive classes in store order); each task
gets a store of its own (its classes' train and test rows, the same encoder record) and is learned
after the previous one, continuing its model (``--init-from``: new classes as new columns). After
each task the model answers the test rows of every class seen so far and of task 1's classes;
beside it a nearest class mean updated with the task's class means (the class means of all classes
seen: NCM is incremental by nature) and a linear probe refitted on all the train data seen (what
joint training with a conventional head reaches), and at the end one joint CoLaNET pass over all
tasks' data (a plain train-snn run on the whole store).

    python bench/incremental.py                      # caltech51 (imported from ../shared/data)
    python bench/incremental.py --store data/embeddings/digits-tf_efficientnet_lite0.zarr --m 8

Writes data/bench/incremental.json (and its task stores and runs under data/bench/incremental/).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.baselines import linear_probe, nearest_class_mean  # noqa: E402
from pipeline.colanet import ColanetConfig, readout  # noqa: E402
from pipeline.config import ImportConfig, TrainConfig  # noqa: E402
from pipeline.errors import UserError  # noqa: E402
from pipeline.model_file import run_model  # noqa: E402
from pipeline.outputs import claim_folder  # noqa: E402
from pipeline.store import EmbeddingStore, store_exists, write_arrays  # noqa: E402
from pipeline.streaming import iter_batches  # noqa: E402
from pipeline.training import train_run, vote  # noqa: E402

CALTECH_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech51-lite0.npz"
DEFAULT_STORE = "data/embeddings/caltech51-lite0.zarr"


def rows(store: EmbeddingStore, split: str):
    """Usable rows of a split: features, labels, sample ids (the store's)."""
    parts = list(iter_batches(store, split))
    return tuple(np.concatenate([getattr(b, k) for b in parts])
                 for k in ("features", "labels", "sample_id"))


def task_store(path: Path, store: EmbeddingStore, data: dict, classes: list[int]) -> EmbeddingStore:
    """A store of ``classes`` only (their rows, in store order), with the source's encoder."""
    names = [store.class_names[c] for c in classes]
    new_label = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split, (x, y, _) in data.items():
        keep = np.isin(y, classes)
        splits[split] = (x[keep], np.array([new_label[v] for v in y[keep]], np.int64))
    encoder = {k: v for k, v in store.attrs["encoder"].items() if k != "feature_dim"}
    return write_arrays(path, splits, names, encoder=encoder, source=f"{store.path}:{names}",
                        chunk_size=256, overwrite=True)


def snn_accuracy(run_dir: Path, x, names, ids) -> float:
    """The run's model on rows ``x`` of classes ``names`` (text), frozen, keyed by ``ids``."""
    model = run_model(run_dir)
    preds = []
    for start in range(0, len(x), 256):
        votes = vote(model.config, model.state, model.coding, x[start:start + 256],
                     ids[start:start + 256])
        pred, answered = readout(votes)
        preds.append(np.where(answered, model.classes[np.maximum(pred, 0)], ""))
    return float((np.concatenate(preds) == names).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=DEFAULT_STORE)
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--m", type=int, default=ColanetConfig.m)
    ap.add_argument("--e", type=int, default=ColanetConfig.e)
    ap.add_argument("--work", default="data/bench/incremental")
    ap.add_argument("--out", default="data/bench/incremental.json")
    args = ap.parse_args(argv)
    if not store_exists(args.store):
        if args.store != DEFAULT_STORE or not CALTECH_NPZ.exists():
            sys.exit(f"{args.store}: no store here; make it with `annsnn embed` or `annsnn import`")
        from pipeline.arrays import import_npz

        import_npz(CALTECH_NPZ, ImportConfig(model="tf_efficientnet_lite0", out=args.store))
    store = EmbeddingStore.open(args.store)
    config = ColanetConfig(m=args.m, e=args.e)
    work = Path(args.work)
    try:  # a folder this benchmark made before (its marker) starts afresh; any other is refused
        claim_folder(work, "incremental benchmark")
    except UserError as e:
        sys.exit(str(e))
    shutil.rmtree(work)
    claim_folder(work, "incremental benchmark")
    (work / "stores").mkdir(parents=True)
    data = {s: rows(store, s) for s in ("train", "test")}
    names = np.array(store.class_names)
    tasks = np.array_split(np.arange(len(names)), args.tasks)
    x_test, y_test, id_test = data["test"]

    def run_cfg(name, init_from=None):
        return TrainConfig(runs_dir=str(work / "runs"), run=name, skip_baselines=True,
                           init_from=init_from)

    table, seen, previous = [], [], None
    started = time.perf_counter()
    for k, classes in enumerate(tasks, 1):
        seen += classes.tolist()
        path = task_store(work / "stores" / f"task{k}.zarr", store, data, classes.tolist())
        train_run(path.path, config, run_cfg(f"task{k}", previous))
        previous = str(work / "runs" / f"task{k}")
        row = {"task": k, "classes_seen": len(seen)}
        for scope, classes_in in (("seen", seen), ("task1", tasks[0].tolist())):
            test = np.isin(y_test, classes_in)
            train = np.isin(data["train"][1], seen)  # the baselines: all train data seen so far
            x_tr, y_tr = data["train"][0][train], data["train"][1][train]
            row[f"snn_{scope}"] = snn_accuracy(Path(previous), x_test[test], names[y_test[test]],
                                               id_test[test])
            row[f"ncm_{scope}"] = float((nearest_class_mean(x_tr, y_tr, x_test[test])
                                         == y_test[test]).mean())
            row[f"probe_{scope}"] = float((linear_probe(x_tr, y_tr, x_test[test])
                                           == y_test[test]).mean())
        table.append(row)
        print(json.dumps(row))
    incremental_s = time.perf_counter() - started
    started = time.perf_counter()
    train_run(store.path, config, run_cfg("joint"))
    joint = {"task": "joint", "classes_seen": len(names)}
    for scope, classes_in in (("seen", np.arange(len(names))), ("task1", tasks[0])):
        test = np.isin(y_test, classes_in)
        joint[f"snn_{scope}"] = snn_accuracy(work / "runs" / "joint", x_test[test],
                                             names[y_test[test]], id_test[test])
    joint_s = time.perf_counter() - started
    print(f"\n{store.path}: {len(names)} classes in {args.tasks} tasks, M {config.m}, "
          f"E {config.e}; test rows of the classes seen so far")
    print(f"{'after task':<11} {'classes':>7} {'SNN seen':>9} {'SNN task1':>10} {'NCM seen':>9} "
          f"{'NCM task1':>10} {'probe seen':>11} {'probe task1':>12}")
    for r in table:
        print(f"{r['task']:<11} {r['classes_seen']:>7} {r['snn_seen']:>9.2%} {r['snn_task1']:>10.2%} "
              f"{r['ncm_seen']:>9.2%} {r['ncm_task1']:>10.2%} {r['probe_seen']:>11.2%} "
              f"{r['probe_task1']:>12.2%}")
    print(f"{'joint SNN':<11} {joint['classes_seen']:>7} {joint['snn_seen']:>9.2%} "
          f"{joint['snn_task1']:>10.2%}")
    print(f"seconds: incremental {incremental_s:.1f} (with baselines), joint {joint_s:.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"store": store.path, "tasks": args.tasks,
                                          "config": config.to_dict(), "incremental": table,
                                          "joint": joint, "seconds": {"incremental": incremental_s,
                                                                      "joint": joint_s}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
