"""Stage two: train a CoLaNET ensemble online on a store's train split, then evaluate it.

Streams the store a chunk at a time, checkpoints the whole state every N samples and on
SIGINT/SIGTERM, resumes from the checkpoint on a rerun (ending with exactly the weights of an
uninterrupted run), evaluates with plasticity frozen, fits the baselines on the same embeddings, and
writes ``metrics.json``, ``config.json`` and plots to ``data/runs/<run>/``.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
from tqdm import tqdm

from pipeline import plots
from pipeline.baselines import linear_probe, nearest_class_mean
from pipeline.checkpoint import (check_arrays, load_checkpoint, remove_stale_temporaries,
                                 save_checkpoint)
from pipeline.colanet import (ColanetParams, ColanetState, infer_chunk, init_state, readout,
                              state_arrays, state_from_arrays, state_schema, train_chunk)
from pipeline.cluster import connect
from pipeline.config import ClusterConfig, EmbedConfig, TrainConfig
from pipeline.errors import UserError
from pipeline.lock import exclusive, shared
from pipeline.metrics import classification_metrics, write_metrics
from pipeline.outputs import check_name, claim_folder
from pipeline.store import (EmbeddingStore, absolute_location, store_exists, store_name,
                            store_path_for)
from pipeline.streaming import check_split, coding_levels, iter_batches, read_rows, require_complete


@dataclass
class Progress:
    """The run's own resumable state beside the model's."""

    cursor: int  # next train-split row to learn
    sat: float | np.ndarray  # the coder's level, or one level per feature
    online_correct: np.ndarray  # (samples seen,) bool: answered right before learning
    online_answered: np.ndarray  # (samples seen,) bool
    train_seconds: float


class _StopRequested:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the next sample boundary and stops."""

    def __init__(self):
        self.signal: int | None = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)


def open_or_embed(embed_cfg: EmbedConfig, cluster: ClusterConfig = ClusterConfig(), *,
                  data_given: bool = True) -> EmbeddingStore:
    """The finished store of ``embed_cfg``, embedding it first where that is what was asked.

    A missing store is embedded from ``embed_cfg`` (the default store of ``--data``), except a
    missing ``--out`` given without ``--data``: a mistyped path must not quietly embed the
    built-in digits. An unfinished store is finished with the embed configuration the store
    itself records, never with this command line's defaults.
    """
    path = store_path_for(embed_cfg)
    if store_exists(path):
        try:
            store = EmbeddingStore.open(path)
        except UserError:
            if not data_given:  # e.g. a creation that was interrupted: nothing recorded yet
                raise
            store = None
        if store is not None and store.is_complete():
            return store
        if store is not None:
            recorded = store.attrs.get("config", {})
            if "data" not in recorded:
                raise UserError(f"{path}: unfinished, and not made by `annsnn embed` (it was "
                                f"imported); run the same `annsnn import` again to finish it")
            embed_cfg = EmbedConfig.from_dict({**recorded, "out": path, "overwrite": False})
    elif embed_cfg.out and not data_given:
        raise UserError(f"{path}: no store here; run `annsnn embed --out {path} ...` first, or "
                        f"pass --data to embed one there now")
    print(f"{path} is missing or unfinished: running stage one first")
    from stages.embed import run_embed  # torch is loaded only when there is embedding to do

    run_embed(embed_cfg, cluster)
    return EmbeddingStore.open(path)


def checkpoint_identity(store: EmbeddingStore) -> dict[str, Any]:
    """What a checkpoint must share with the store it resumes on."""
    a = store.attrs
    return {"encoder": a["identity"]["encoder"]["model"],
            "weights_sha256": a["identity"]["encoder"]["weights_sha256"],
            "data_fingerprint": a["identity"]["data_fingerprint"],
            "feature_dim": a["encoder"]["feature_dim"], "class_names": a["dataset"]["class_names"]}


def coding_config(train_cfg: TrainConfig) -> dict[str, Any]:
    """The input coding's settings: part of the model, compared on resume like its parameters."""
    return {"sat_percentile": train_cfg.sat_percentile, "sat_scope": train_cfg.sat_scope}


def load_progress(path: Path, store: EmbeddingStore, params: ColanetParams, train_cfg: TrainConfig
                  ) -> tuple[ColanetState, Progress] | None:
    """The run's state from its checkpoint (None when there is none). A checkpoint of another
    store or model configuration, or a damaged one, is refused naming the file."""
    if not path.exists():
        return None
    arrays, meta = load_checkpoint(path)
    want = checkpoint_identity(store)
    if meta.get("identity") != want:
        diff = [k for k in want if (meta.get("identity") or {}).get(k) != want[k]]
        raise UserError(f"{path}: checkpoint was trained on another store ({', '.join(diff)} "
                        f"differ from {store.path}); use --run NAME for a new run or --restart")
    stored = {**(meta.get("params") or {}),
              **(meta.get("coding") or {k: (meta.get("train") or {}).get(k)
                                        for k in coding_config(train_cfg)})}
    current = {**params.to_dict(), **coding_config(train_cfg)}
    if stored != current:
        diff = sorted(k for k in current if stored.get(k) != current[k])
        raise UserError(f"{path}: checkpoint was trained with other settings "
                        f"({', '.join(f'{k}={stored.get(k)!r}' for k in diff) or 'unknown keys'}; "
                        f"this run: {', '.join(f'{k}={current[k]!r}' for k in diff)}); pass the "
                        f"same options, --run NAME for a new run, or --restart to discard it")
    d, c = store.attrs["encoder"]["feature_dim"], len(store.class_names)
    n_rows = store.split("train")["features"].shape[0]
    try:
        cursor, seconds = int(meta["cursor"]), float(meta["train_seconds"])
        sat = (np.asarray(meta["sat"], dtype=np.float64) if isinstance(meta["sat"], list)
               else float(meta["sat"]))
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: checkpoint metadata is damaged (cursor, sat or seconds); rerun "
                        f"with --restart to discard it and train afresh") from None
    n_online = len(arrays.get("online_correct", ()))
    check_arrays(path, arrays, {**state_schema(params, d, c),
                                "online_correct": ((n_online,), np.bool_),
                                "online_answered": ((n_online,), np.bool_)})
    if not 0 <= cursor <= n_rows or n_online > cursor or np.shape(sat) not in ((), (d,)):
        raise UserError(f"{path}: checkpoint is inconsistent (cursor {cursor} of {n_rows} rows, "
                        f"{n_online} online results, sat of shape {np.shape(sat)}); rerun with "
                        f"--restart to discard it")
    online = {k: arrays.pop(k) for k in ("online_correct", "online_answered")}
    return state_from_arrays(arrays), Progress(cursor=cursor, sat=sat, train_seconds=seconds,
                                               **online)


def save_progress(path: Path, store: EmbeddingStore, params: ColanetParams, train_cfg: TrainConfig,
                  state: ColanetState, progress: Progress) -> None:
    try:
        _save_progress(path, store, params, train_cfg, state, progress)
    except OSError as e:
        raise UserError(f"{path}: writing the checkpoint failed ({e.strerror or e}); the previous "
                        f"checkpoint is intact: free space or fix the disk, then rerun") from None


def _save_progress(path: Path, store: EmbeddingStore, params: ColanetParams, train_cfg: TrainConfig,
                   state: ColanetState, progress: Progress) -> None:
    save_checkpoint(path, {**state_arrays(state), "online_correct": progress.online_correct,
                           "online_answered": progress.online_answered},
                    {"identity": checkpoint_identity(store), "params": params.to_dict(),
                     "coding": coding_config(train_cfg), "train": train_cfg.to_dict(),
                     "store": store.path, "cursor": progress.cursor,
                     "sat": np.asarray(progress.sat).tolist(), "train_seconds": progress.train_seconds})


def train(store: EmbeddingStore, params: ColanetParams, train_cfg: TrainConfig, run_dir: Path,
          *, stop_after_samples: int | None = None) -> tuple[ColanetState, Progress, bool]:
    """The online pass, resumed from ``run_dir/checkpoint.npz`` when there is one.

    Returns the state, the progress and whether the pass is complete. ``stop_after_samples``
    stops (with a checkpoint) once that many samples have been learned in this call: a stand-in
    for an interruption in tests.
    """
    state, progress = start_or_resume(store, params, train_cfg, run_dir)
    return train_from(store, params, train_cfg, run_dir, state, progress,
                      stop_after_samples=stop_after_samples)


def start_or_resume(store: EmbeddingStore, params: ColanetParams, train_cfg: TrainConfig,
                    run_dir: Path) -> tuple[ColanetState, Progress]:
    """The state the online pass continues from: the run's checkpoint, or a fresh model whose
    coding levels are measured on the train split."""
    ckpt = run_dir / "checkpoint.npz"
    remove_stale_temporaries(ckpt)  # left by a writer killed mid-save; we hold the run's lock
    if train_cfg.restart:
        ckpt.unlink(missing_ok=True)
    resumed = load_progress(ckpt, store, params, train_cfg)
    if resumed is None:
        sat_started = time.perf_counter()
        sat = coding_levels(store, "train", train_cfg.sat_percentile, train_cfg.sat_scope)
        state = init_state(params, store.attrs["encoder"]["feature_dim"], len(store.class_names))
        progress = Progress(cursor=0, sat=sat, online_correct=np.zeros(0, bool),
                            online_answered=np.zeros(0, bool),
                            train_seconds=time.perf_counter() - sat_started)
    else:
        state, progress = resumed
    return state, progress


def train_from(store: EmbeddingStore, params: ColanetParams, train_cfg: TrainConfig, run_dir: Path,
               state: ColanetState, progress: Progress, *, stop_after_samples: int | None = None
               ) -> tuple[ColanetState, Progress, bool]:
    """The online pass from ``progress.cursor`` to the end of the train split, checkpointing."""
    ckpt = run_dir / "checkpoint.npz"
    n_usable = int(store.finished_rows("train").sum())
    n_rows = store.split("train")["features"].shape[0]
    learned_now, since_checkpoint = 0, 0
    with _StopRequested() as stop, tqdm(total=n_usable, initial=len(progress.online_correct),
                                        unit="sample", desc="train-snn", dynamic_ncols=True) as bar:
        for batch in iter_batches(store, "train", progress.cursor, max_rows=train_cfg.checkpoint_every):
            started = time.perf_counter()
            votes, state = train_chunk(params, state, batch.features, batch.labels, batch.sample_id,
                                       progress.sat)
            pred, answered = readout(votes)
            progress.online_correct = np.concatenate([progress.online_correct, pred == batch.labels])
            progress.online_answered = np.concatenate([progress.online_answered, answered])
            progress.cursor = batch.stop
            progress.train_seconds += time.perf_counter() - started
            learned_now += len(batch.labels)
            since_checkpoint += len(batch.labels)
            bar.update(len(batch.labels))
            bar.set_postfix(online_acc=f"{progress.online_correct.mean():.3f}")
            interrupted = stop.signal is not None or (stop_after_samples is not None
                                                      and learned_now >= stop_after_samples)
            if since_checkpoint >= train_cfg.checkpoint_every or interrupted:
                save_progress(ckpt, store, params, train_cfg, state, progress)
                since_checkpoint = 0
            if stop.signal is not None:
                raise KeyboardInterrupt
            if interrupted:
                return state, progress, False
    if since_checkpoint:
        save_progress(ckpt, store, params, train_cfg, state, progress)
    return state, progress, progress.cursor >= n_rows


def evaluate(store: EmbeddingStore, split: str, params: ColanetParams, state: ColanetState,
             sat: float | np.ndarray, client=None) -> tuple[np.ndarray, np.ndarray]:
    """Frozen-plasticity predictions (-1: no answer) and labels of a split's usable rows.

    With a dask ``client`` each stored chunk is one task (the state is sent to every worker once);
    the predictions are identical to the serial path's, since a sample's noise is keyed by its id
    and nothing is learned.
    """
    if client is None:
        return predict_rows(store.path, split, 0, None, params, state, sat)
    require_complete(store, split)  # once here, not in every task
    n_chunks = store.split(split)["done"].shape[0]
    state_on_workers = client.scatter(state, broadcast=True)
    path = absolute_location(store.path)
    futures = [client.submit(predict_rows, path, split, rows.start, rows.stop, params,
                             state_on_workers, sat, 1, pure=False)
               for rows in (store.chunk_slice(split, c) for c in range(n_chunks))]
    parts = client.gather(futures) or [(np.zeros(0, np.int64), np.zeros(0, np.int64))]
    return np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts])


def predict_rows(path: str, split: str, start: int, stop: int | None, params: ColanetParams,
                 state: ColanetState, sat: float | np.ndarray, numba_threads: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels of the usable rows ``start:stop`` of a split (plasticity frozen);
    ``numba_threads`` sets the simulator's threads (a worker running one task per core: 1)."""
    if numba_threads:
        numba.set_num_threads(numba_threads)
    preds, labels = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for batch in iter_batches(EmbeddingStore.open(path), split, start, stop=stop):
        pred, _ = readout(infer_chunk(params, state, batch.features, batch.sample_id, sat))
        preds.append(pred)
        labels.append(batch.labels)
    return np.concatenate(preds), np.concatenate(labels)


def run_train_snn(embed_cfg: EmbedConfig, train_cfg: TrainConfig, params: ColanetParams,
                  cluster: ClusterConfig = ClusterConfig(), *, data_given: bool = True,
                  stop_after_samples: int | None = None) -> dict[str, Any] | None:
    """Embed if needed, train (resuming), evaluate, write the run folder; returns the metrics
    (None when stopped early by ``stop_after_samples``).

    The store is read under its shared lock (it cannot be replaced meanwhile) and the run folder is
    written under its exclusive lock; every input is checked before the run folder is touched. The
    online pass runs here (each sample learns from the state the previous one left); with a
    cluster, embedding and the frozen evaluation spread over its workers.
    """
    if train_cfg.numba_threads:
        numba.set_num_threads(train_cfg.numba_threads)
    if train_cfg.run is not None:
        check_name(train_cfg.run, "--run")
    path = open_or_embed(embed_cfg, cluster, data_given=data_given).path
    with shared(path):
        store = EmbeddingStore.open(path)
        eval_split = train_cfg.eval_split or ("test" if "test" in store.splits else "val")
        store.split(eval_split)  # refuse an unknown split before training, not after
        check_split(store, "train", needs_positive=True)
        check_split(store, eval_split)
        run_dir = claim_folder(Path(train_cfg.runs_dir) / (train_cfg.run or store_name(path)), "run")
        with exclusive(run_dir):
            state, progress = start_or_resume(store, params, train_cfg, run_dir)
            # What runs is now settled (a refused checkpoint wrote nothing): record it.
            _write_json(run_dir / "config.json", {
                "store": path, "embed": store.attrs["config"], "train": train_cfg.to_dict(),
                "colanet": params.to_dict(), "coding": coding_config(train_cfg)})
            state, progress, complete = train_from(store, params, train_cfg, run_dir, state,
                                                   progress, stop_after_samples=stop_after_samples)
            if not complete:
                return None
            return _evaluate_run(store, eval_split, params, train_cfg, cluster, state, progress,
                                 run_dir)


def _evaluate_run(store: EmbeddingStore, eval_split: str, params: ColanetParams,
                  train_cfg: TrainConfig, cluster: ClusterConfig, state: ColanetState,
                  progress: Progress, run_dir: Path) -> dict[str, Any]:
    seconds = {"train": round(progress.train_seconds, 3)}
    started = time.perf_counter()
    with connect(cluster, stores=(store.path,)) as client:
        pred, y_test = evaluate(store, eval_split, params, state, progress.sat, client)
    seconds["snn_eval"] = round(time.perf_counter() - started, 3)
    classes = store.class_names
    snn = classification_metrics(y_test, pred, len(classes))
    finite_sat = np.asarray(progress.sat, dtype=np.float64)
    finite_sat = finite_sat[np.isfinite(finite_sat)]  # features never positive have no level
    metrics: dict[str, Any] = {
        "store": store.path, "run_dir": str(run_dir), "eval_split": eval_split,
        "n_train": len(progress.online_correct), "n_test": int(len(y_test)),
        "sat": float(np.median(finite_sat)) if finite_sat.size else None,
        "sat_scope": train_cfg.sat_scope,
        "snn_accuracy": snn["accuracy"], "no_answer_rate": snn["no_answer_rate"],
        "online_train_accuracy": float(progress.online_correct.mean()),
        "per_class_accuracy": dict(zip(classes, snn["per_class_accuracy"])),
        "confusion": snn["confusion"],
    }
    if not train_cfg.skip_baselines:
        started = time.perf_counter()
        x_train, y_train = read_rows(store, "train")
        x_test, _ = read_rows(store, eval_split)
        metrics["probe_accuracy"] = float((linear_probe(x_train, y_train, x_test) == y_test).mean())
        metrics["ncm_accuracy"] = float((nearest_class_mean(x_train, y_train, x_test) == y_test).mean())
        seconds["baselines"] = round(time.perf_counter() - started, 3)
    metrics["seconds"] = seconds
    _plot(run_dir, store, eval_split, params, state, progress, snn, classes)
    return write_metrics(run_dir, metrics)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, allow_nan=False))


def _plot(run_dir: Path, store: EmbeddingStore, split: str, params: ColanetParams,
          state: ColanetState, progress: Progress, snn: dict, classes: list[str]) -> None:
    plots.running_accuracy(progress.online_correct, run_dir / "online_accuracy.png")
    plots.confusion_matrix(np.array(snn["confusion"]), classes, run_dir / "confusion.png", split)
    first = next(iter_batches(store, split, max_rows=6))
    _, spikes = infer_chunk(params, state, first.features, first.sample_id, progress.sat, record=True)
    plots.spike_raster(spikes[:, :, 0, :], first.labels, params.m, run_dir / "spike_raster.png")
    neurons = [c * params.m for c in range(min(len(classes), 8))]
    plots.neuron_weights(state.w[0], neurons, params.m, run_dir / "weights.png")


def print_table(metrics: dict[str, Any]) -> None:
    rows = [("CoLaNET (SNN)", metrics["snn_accuracy"], f"{metrics['no_answer_rate']:.2%}")]
    if "probe_accuracy" in metrics:
        rows += [("linear probe", metrics["probe_accuracy"], "-"),
                 ("nearest class mean", metrics["ncm_accuracy"], "-")]
    print(f"\n{metrics['store']}: trained on {metrics['n_train']} samples, "
          f"evaluated on {metrics['n_test']} ({metrics['eval_split']})")
    print(f"{'classifier':<20} {'accuracy':>9} {'no answer':>10}")
    for name, acc, none in rows:
        print(f"{name:<20} {acc:>9.2%} {none:>10}")
    s = metrics["seconds"]
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s.items()))
    print(f"run folder: {metrics['run_dir']} (metrics.json, config.json, checkpoint.npz, *.png)")
