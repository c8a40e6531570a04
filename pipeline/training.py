"""Stage two's engine: the online pass, its checkpoints, frozen evaluation and the run folder.

One loop learns (:func:`fit_stream`, over a store; :func:`fit_stretches`, over any source of
rows) and one predicts (:func:`predict_stream`, through :func:`vote`); train-snn, tune, report,
the benchmarks and the scikit-learn estimator (:mod:`pipeline.estimator`) all go through them. :func:`train_run` is a whole run: it checks the
store, claims the run folder, resumes from the checkpoint (the whole resumable state: resources,
neuron state, counters, cursor, the resolved model configuration), learns (with a dask cluster,
groups of the copies on its workers: :class:`WorkerCopies`, the same model), checkpoints every
``checkpoint_every`` samples and on SIGINT/SIGTERM, evaluates with plasticity frozen beside the
baselines, and writes ``config.json``, ``metrics.json``, plots and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numba
import numpy as np
from tqdm import tqdm

from pipeline import plots
from pipeline.baselines import linear_probe, nearest_class_mean
from pipeline.checkpoint import (check_arrays, load_checkpoint, remove_stale_temporaries,
                                 save_checkpoint)
from pipeline.cluster import connect, local_workers, task_threads
from pipeline.colanet import (ColanetConfig, ColanetState, checkpoint_arrays, checkpoint_schema,
                              copy_group, copy_groups, infer_chunk, init_state, put_copy_group,
                              ranked_classes, readout, recorded_settings, state_from_checkpoint,
                              train_chunk)
from pipeline.html_report import write_html_report
from pipeline.config import ClusterConfig, EmbedConfig, TrainConfig
from pipeline.errors import UserError, short_reason
from pipeline.lock import exclusive, shared
from pipeline.metrics import (classification_metrics, per_class_table, top_k_accuracy,
                              write_metrics)
from pipeline.outputs import check_name, claim_folder
from pipeline.runs import run_name
from pipeline.store import EmbeddingStore, absolute_location, refuse_file, store_exists
from pipeline.streaming import (VIEW_BLOCK, Batch, check_split, class_counts, coding_levels,
                                decorrelate, feature_moments, iter_batches, read_rows,
                                require_complete, rotate_views, signed_sqrt, view_rotations,
                                zca_map)

CHECKPOINT = "checkpoint.npz"
WHITEN_ARRAY = "coding_whiten"  # the whitened coding's (D, D) map, beside the network's arrays
# The views' rotations (views above 1), beside it: streaming.view_rotations' order and blocks.
VIEW_ORDER_ARRAY, VIEW_BLOCKS_ARRAY = "coding_view_order", "coding_view_blocks"
TOP_K = 5  # metrics.json's snn_top5_accuracy: the class among the 5 with most votes


#: Coding whitened keeps a D x D float64 covariance and its eigendecomposition: 2 GiB at this
#: many features (encoders give 1,280 to 2,560).
MAX_WHITENED_FEATURES = 16384


@dataclass(frozen=True)
class Coding:
    """The input coding as measured on the train split (part of the model, stored with it):
    ``d_j = clip(v_j / sat_j, 0, 1)``, the spike rate of input j, where the inputs ``v`` are the
    features (``centre`` None), the features less ``centre``, or with ``on_off`` both signs of
    that, ``[x - centre, centre - x]`` (``2 D`` inputs; the coder only spikes on positive ones),
    or with ``whiten`` (coding whitened) ``(sqrt±(x) - centre) whiten``, ``centre`` then the
    mean of the signed square roots (:func:`pipeline.streaming.decorrelate`); with views (the
    rotations ``view_order`` and ``view_blocks`` of :func:`view_rotations`) every view of those
    side by side, ``views D`` inputs (:func:`rotate_views`)."""

    sat: float | np.ndarray  # one saturation level, or one per input (inf: never spikes)
    centre: np.ndarray | None = None  # per-feature train mean (coding centred/on_off/whitened)
    on_off: bool = False
    whiten: np.ndarray | None = None  # (D, D) ZCA map (coding whitened), else None
    view_order: np.ndarray | None = None  # (views - 1, D) int32 (views above 1), else None
    view_blocks: np.ndarray | None = None  # (views - 1, blocks, b, b) float32, else None

    @property
    def views(self) -> int:
        """How many views of the whitened inputs the coder codes (1: the inputs themselves)."""
        return 1 if self.view_order is None else self.view_order.shape[0] + 1

    def inputs(self, x):
        """The coder's inputs for features ``x`` (numpy, or dask when measuring the levels)."""
        if self.centre is None:
            return x
        if self.whiten is not None:
            z = decorrelate(signed_sqrt(x), self.centre, self.whiten)
            return z if self.view_order is None else rotate_views(z, self.view_order,
                                                                  self.view_blocks)
        v = x - self.centre
        return np.concatenate([v, -v], axis=1) if self.on_off else v

    def rates(self, x) -> np.ndarray:
        """The spike rates ``d = clip(inputs / sat, 0, 1)`` of features ``x`` (float64)."""
        return np.clip(self.inputs(x).astype(np.float64) / self.sat, 0.0, 1.0)

    def to_meta(self) -> dict[str, Any]:
        """The JSON part (config.json, a checkpoint's metadata); the whitening map, a (D, D)
        matrix, travels as an array: :meth:`to_arrays`."""
        return {"sat": np.asarray(self.sat).tolist(), "on_off": self.on_off,
                "centre": None if self.centre is None else self.centre.tolist(),
                "whitened": self.whiten is not None, "views": self.views}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays a checkpoint or model file stores beside :meth:`to_meta`."""
        arrays = {} if self.whiten is None else {WHITEN_ARRAY: self.whiten}
        if self.view_order is not None:
            arrays.update({VIEW_ORDER_ARRAY: self.view_order, VIEW_BLOCKS_ARRAY: self.view_blocks})
        return arrays

    @classmethod
    def from_meta(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None
                  ) -> "Coding":
        """Inverse of :meth:`to_meta` and :meth:`to_arrays`: ``arrays`` loses the whitening map
        and the views' rotations (so what is left is the network's state); a whitened coding
        without its map, views without their rotations, a value that is not finite or an order
        that is not a permutation is refused (ValueError). Metadata from before views has one."""
        arrays = {} if arrays is None else arrays
        sat = meta["sat"]
        sat = np.asarray(sat, dtype=np.float64) if isinstance(sat, list) else float(sat)
        centre = meta.get("centre")
        if centre is not None and not np.isfinite(np.asarray(centre, dtype=np.float64)).all():
            raise ValueError("centre is not finite")
        whiten = arrays.pop(WHITEN_ARRAY, None)
        order, blocks = arrays.pop(VIEW_ORDER_ARRAY, None), arrays.pop(VIEW_BLOCKS_ARRAY, None)
        if (bool(meta.get("whitened", False)) != (whiten is not None)
                or (whiten is not None and not np.isfinite(whiten).all())):
            raise ValueError("whitening map")
        views = meta.get("views", 1)
        if views != 1:
            if (whiten is None or order is None or blocks is None or order.ndim != 2
                    or blocks.ndim != 4 or len(order) != views - 1 or len(blocks) != views - 1
                    or not np.isfinite(blocks).all()
                    or (np.sort(order, axis=1) != np.arange(order.shape[1])).any()):
                raise ValueError("views' rotations")
            order, blocks = order.astype(np.int32), blocks.astype(np.float32)
        elif order is not None or blocks is not None:
            raise ValueError("views' rotations")
        return cls(sat, None if centre is None else np.asarray(centre, dtype=np.float32),
                   bool(meta.get("on_off", False)),
                   None if whiten is None else np.asarray(whiten, dtype=np.float32), order, blocks)

    def fits(self, config: ColanetConfig, n_features: int) -> bool:
        """Whether this is a coding ``config`` codes ``n_features`` features with: its kind (a
        centre unless ``saturation``, a whitening map with ``whitened`` only, both signs with
        ``on_off`` only), positive levels, one or one per coded input, and the centre, the map
        and the views' rotations shaped for those features and ``config``'s views. The one check
        a checkpoint's and a model file's coding pass before they are used."""
        sat = np.asarray(self.sat, dtype=np.float64)
        groups = -(-n_features // VIEW_BLOCK)  # view_rotations' blocks a view
        return (sat.shape in ((), (config.n_coded(n_features),))
                and not np.isnan(sat).any() and not (sat <= 0).any()
                and (self.centre is None) == (config.coding == "saturation")
                and (self.whiten is None) != (config.coding == "whitened")
                and self.on_off == (config.coding == "on_off")
                and (self.centre is None or np.shape(self.centre) == (n_features,))
                and (self.whiten is None or np.shape(self.whiten) == (n_features, n_features))
                and self.views == config.n_views
                and (self.view_order is None
                     or (self.view_order.shape[1:] == (n_features,)
                         and self.view_blocks.shape[1:] == (groups, VIEW_BLOCK, VIEW_BLOCK))))

    @classmethod
    def measure(cls, store: EmbeddingStore, config: ColanetConfig, stop: int | None = None
                ) -> "Coding":
        """The coding of ``config`` measured on train rows ``:stop`` of a store (streamed)."""
        require_complete(store, "train")
        return cls.measured(config, lambda: iter_batches(store, "train", stop=stop),
                            store.features("train")[:stop], f"{store.path}: split 'train'")

    @classmethod
    def measured(cls, config: ColanetConfig, batches: Callable[[], Iterable[Batch]], features,
                 where: str) -> "Coding":
        """The coding of ``config`` measured on training rows, whatever holds them: ``batches()``
        streams them (the centre, and for the whitened coding the covariance:
        :func:`feature_moments`), ``features`` is all of them as one dask or in-memory array (the
        levels of the coder's inputs: :func:`coding_levels`); ``where`` names them in a
        refusal."""
        whitened = config.coding == "whitened"
        n_features = features.shape[1]
        if whitened and n_features > MAX_WHITENED_FEATURES:
            raise UserError(f"{where}: {n_features} features; coding whitened measures a "
                            f"{n_features} x {n_features} covariance ({8 * n_features**2 / 2**30:.0f} "
                            f"GiB) and is for at most {MAX_WHITENED_FEATURES} features: use "
                            f"--coding centred (coding=\"centred\")")
        centre = whiten = order = blocks = None
        if config.coding != "saturation":
            centre, cov = feature_moments(batches(), where, covariance=whitened,
                                          transform=signed_sqrt if whitened else None)
            whiten = zca_map(cov, config.whiten_shrinkage) if whitened else None
        if config.n_views > 1:
            order, blocks = view_rotations(len(centre), config.n_views, config.seed)
        shape = cls(1.0, centre, config.coding == "on_off", whiten, order, blocks)
        return cls(coding_levels(shape.inputs(features), config.sat_percentile, config.sat_scope,
                                 where), centre, shape.on_off, whiten, order, blocks)


@dataclass
class Progress:
    """The run's own resumable state beside the model's."""

    cursor: int  # next train-split row to learn in the current pass
    coding: Coding  # the resolved input coding
    online_correct: np.ndarray  # (samples seen,) bool: answered right before learning
    online_answered: np.ndarray  # (samples seen,) bool
    train_seconds: float  # learning and checkpointing, compile time excluded
    pass_index: int = 0  # passes over the train split completed before the current one
    # A model continued from another (--init-from, pipeline.incremental); a fresh one: the
    # defaults. ``classes``: each column's class name (None: the store's classes, in its order);
    # ``first_id``: this run's training sample ids start here (above every id of the source);
    # ``source``: the record of the model it started from.
    classes: tuple[str, ...] | None = None
    first_id: int = 0
    source: dict[str, Any] | None = None
    compile_seconds: float = 0.0  # this process's compile (or cache load) of the kernels; not saved

    def class_names(self, store: EmbeddingStore) -> list[str]:
        """The model's classes, column by column."""
        return list(store.class_names if self.classes is None else self.classes)

    @classmethod
    def fresh(cls, coding: Coding, train_seconds: float = 0.0) -> "Progress":
        """Nothing learned yet."""
        return cls(cursor=0, coding=coding, online_correct=np.zeros(0, bool),
                   online_answered=np.zeros(0, bool), train_seconds=train_seconds)


# --- the two loops ------------------------------------------------------------------------------

def check_snn_device(device: str) -> None:
    """Refuse ``--snn-device cuda`` where the CUDA kernels cannot run, in one line that says what
    to do (the CPU needs nothing)."""
    if device != "cuda":
        return
    try:
        from pipeline import colanet_cuda
    except ImportError as e:  # numba without its CUDA target
        problem = f"numba.cuda cannot be imported ({e})"
    else:
        problem = colanet_cuda.device_problem()
    if problem:
        raise UserError(f"--snn-device cuda: {problem}; run with --snn-device cpu (the default: "
                        f"the same results), or on a machine with an NVIDIA GPU and driver and "
                        f"the cuda extra installed (pip install 'annsnn[cuda]')")


def compile_simulator(config: ColanetConfig, coding: Coding, n_features: int,
                      device: str = "cpu") -> float:
    """Compile the simulator's kernels for this model's types (or load them from Numba's cache)
    on a throwaway one-neuron network, so that no timed step pays for it; returns the seconds.
    Numba compiles per argument type, not size: the tiny network compiles what the real one runs."""
    started = time.perf_counter()
    tiny = dataclasses.replace(config, m=1, e=config.n_views)  # one copy a view
    x = coding.inputs(np.zeros((1, n_features), np.float32))
    state, ids = init_state(tiny, config.n_inputs(n_features), 1), np.zeros(1, np.int64)
    train_chunk(tiny, state, x, np.zeros(1, np.int64), ids, coding.sat, device=device)
    infer_chunk(tiny, state, x, ids, coding.sat, device=device)
    return time.perf_counter() - started


def new_model(store: EmbeddingStore, config: ColanetConfig, *, stop: int | None = None
              ) -> tuple[ColanetState, Progress]:
    """A fresh ensemble for ``store`` and its input coding, measured on train rows ``:stop``."""
    started = time.perf_counter()
    coding = Coding.measure(store, config, stop=stop)
    state = init_state(config, config.n_inputs(store.attrs["encoder"]["feature_dim"]),
                       len(store.class_names))
    return state, Progress.fresh(coding, time.perf_counter() - started)


def fit_stream(store: EmbeddingStore, config: ColanetConfig, state: ColanetState,
               progress: Progress, *, stop: int | None = None, max_rows: int | None = None,
               passes: int = 1, device: str = "cpu", workers: "WorkerCopies | None" = None
               ) -> Iterator[Batch]:
    """Learn train rows ``progress.cursor:stop`` online, a stretch at a time (``max_rows`` at most),
    ``passes`` times; after each stretch ``state`` (in place) and ``progress`` hold it, and the
    stretch is yielded (the caller may checkpoint or stop there). ``device``: where the simulator
    runs (``"cpu"`` or ``"cuda"``, the same results). With ``workers`` the copies learn on dask
    workers instead (:class:`WorkerCopies`: the same results): ``state`` is then brought up to
    date only by ``workers.collect(state)``.

    The first pass goes in store order (``order="store"``). Each later pass, and every pass of
    the other orders (``"balanced"``, ``"sqrt"``, ``"equal"``: :func:`presentations`), presents
    each stretch in a seeded order with new sample ids (:func:`_presented`), so the simulator's
    noise differs between presentations; a resumed run repeats exactly what an uninterrupted one
    does.
    """
    columns = label_columns(store, progress.class_names(store))
    repeats = np.ones(state.n_classes)  # per column; a class the store lacks is never presented
    repeats[columns] = presentations(config, class_counts(store, "train", stop))
    yield from fit_stretches(
        config, state, progress,
        lambda cursor: as_columns(iter_batches(store, "train", cursor, max_rows=max_rows,
                                               stop=stop), columns, progress.first_id),
        total_rows=store_rows(store), repeats=repeats, passes=passes, device=device,
        workers=workers)


def label_columns(store: EmbeddingStore, classes: list[str]) -> np.ndarray:
    """Each store label's column in a model of ``classes`` (int64, one per store class): the
    identity for a model of the store's own classes."""
    column = {name: i for i, name in enumerate(classes)}
    return np.array([column[name] for name in store.class_names], np.int64)


def as_columns(batches: Iterable[Batch], columns: np.ndarray, first_id: int = 0
               ) -> Iterator[Batch]:
    """``batches`` with their labels as model columns and their sample ids ``first_id`` on."""
    for b in batches:
        yield Batch(features=b.features, labels=columns[b.labels],
                    sample_id=b.sample_id + first_id, stop=b.stop)


def fit_stretches(config: ColanetConfig, state: ColanetState, progress: Progress,
                  stretches: Callable[[int], Iterable[Batch]], *, total_rows: int,
                  repeats: np.ndarray, passes: int = 1, device: str = "cpu",
                  workers: "WorkerCopies | None" = None) -> Iterator[Batch]:
    """The online loop of :func:`fit_stream` over any source of train rows: ``stretches(cursor)``
    gives the rows from ``cursor`` on, a stretch at a time (:func:`iter_batches` of a store,
    :func:`array_batches` of in-memory arrays); ``total_rows`` is the id stride of later
    presentations, ``repeats`` the :func:`presentations` of each class."""
    while True:
        for batch in stretches(progress.cursor):
            yield _learn(config, state, progress,
                         _presented(config, batch, progress.pass_index, total_rows, repeats),
                         device, workers)
        if progress.pass_index + 1 >= passes:
            return
        progress.pass_index += 1
        progress.cursor = 0


def store_rows(store: EmbeddingStore) -> int:
    """Rows of all the store's splits: the stride of the sample ids of later presentations (a
    split's own ids lie below it, :func:`pipeline.streaming.split_offset`)."""
    return sum(store.split(s)["features"].shape[0] for s in store.splits)


def ids_used(total_rows: int, passes: int, repeats: np.ndarray) -> int:
    """The sample ids that ``passes`` passes over data of ``total_rows`` rows take in training
    lie in ``[0, ids_used)`` (:func:`_presented`): where further learning continues."""
    return total_rows * passes * int(np.ceil(repeats.max(initial=1.0)))


def presentations(config: ColanetConfig, counts: np.ndarray) -> np.ndarray:
    """Expected presentations per pass of one sample of each class, float64 (C,), ``n_c`` the
    class's train rows and ``n_mean`` their mean over the K classes that have any, raised to
    ``class_floor`` if below it (``balanced`` and ``equal``):

    * ``"store"``: 1;
    * ``"balanced"``: ``max(1, n_mean / n_c)``, so no class is learned less often than the mean
      class (a large class keeps all its ``n_c`` presentations);
    * ``"sqrt"``: proportional to ``1 / sqrt(n_c)``, scaled so that a pass presents the N train
      rows' worth (``sum n_c r_c = N``): a class is learned ``sqrt(n_c)`` times in proportion;
    * ``"equal"``: ``n_mean / n_c``, so every class is presented ``n_mean`` times a pass in
      expectation (a large class a fresh subsample each pass, a small one repeated) and a pass
      stays N presentations (``K class_floor`` where that is more).

    A class without rows (never presented) gets the value of a class of one row."""
    if config.order == "store":
        return np.ones(len(counts))
    classes, rows = max(int((counts > 0).sum()), 1), np.maximum(counts, 1)
    if config.order in ("balanced", "equal"):
        total = max(int(counts.sum()), config.class_floor * classes)  # K max(n_mean, floor)
        if config.order == "balanced":
            return np.maximum(1.0, total / classes / rows)
        return total / (classes * rows)  # N / (K n_c): exactly 1 for classes of equal size
    root = np.sqrt(rows)  # "sqrt"; rounded so that classes of equal size get exactly 1
    return np.round(counts.sum() / (root * root[counts > 0].sum()), 12)


def _presented(config: ColanetConfig, batch: Batch, pass_index: int, total_rows: int,
               repeats: np.ndarray) -> Batch:
    """The stretch as pass ``pass_index`` presents it. The first pass of ``order="store"`` is the
    store order. Otherwise each sample is presented ``repeats`` of its class times (the integer
    part, plus one with the fraction's probability: below 1, a sample may sit out the pass) and
    the stretch shuffled, with a seeded generator keyed by where the stretch ends (stretches end
    at the same rows on a resumed run). Every presentation gets its own sample id,
    ``id + (pass * R + repeat) * rows of the store`` (R: the most presentations of any sample),
    so the simulator's noise differs between them."""
    if pass_index == 0 and config.order == "store":
        return batch
    rng = np.random.default_rng([config.seed, pass_index, batch.stop])
    n, most = len(batch.labels), int(np.ceil(repeats.max()))
    if config.order == "store":
        rows, repeat = np.arange(n), np.zeros(n, np.int64)
    else:
        wanted = repeats[batch.labels]
        count = np.floor(wanted).astype(np.int64) + (rng.random(n) < wanted - np.floor(wanted))
        rows = np.repeat(np.arange(n), count)
        repeat = np.arange(len(rows)) - np.repeat(np.cumsum(count) - count, count)
    order = rng.permutation(len(rows))
    rows, repeat = rows[order], repeat[order]
    return Batch(features=batch.features[rows], labels=batch.labels[rows],
                 sample_id=batch.sample_id[rows] + (pass_index * most + repeat) * total_rows,
                 stop=batch.stop)


def _learn(config: ColanetConfig, state: ColanetState, progress: Progress, batch: Batch,
           device: str = "cpu", workers: "WorkerCopies | None" = None) -> Batch:
    """One stretch of the online pass: answer each sample, then learn it (in place, or on the
    ``workers``)."""
    started = time.perf_counter()
    inputs = progress.coding.inputs(batch.features)
    if workers is None:
        votes, _ = train_chunk(config, state, inputs, batch.labels, batch.sample_id,
                               progress.coding.sat, device=device)
    else:
        votes = workers.learn(inputs, batch.labels, batch.sample_id, progress.coding.sat)
    pred, answered = readout(votes)
    progress.online_correct = np.concatenate([progress.online_correct, pred == batch.labels])
    progress.online_answered = np.concatenate([progress.online_answered, answered])
    progress.cursor = batch.stop
    progress.train_seconds += time.perf_counter() - started
    return batch


def train_group_task(config: ColanetConfig, group: ColanetState, copies: range, inputs, labels,
                     sample_id, sat, threads: int | None, device: str
                     ) -> tuple[ColanetState, np.ndarray]:
    """A dask task: one group of copies (:func:`pipeline.colanet.copy_group`) learns a stretch.
    Returns the group's new state (a copy: a task never changes its inputs, which dask may hold)
    and its votes summed over its copies, (B, 1, C) int32."""
    if threads:
        numba.set_num_threads(threads)
    group = group.copy()
    votes, _ = train_chunk(config, group, inputs, labels, sample_id, sat, device=device,
                           copies=copies)
    return group, votes.sum(axis=1, keepdims=True, dtype=np.int32)


class WorkerCopies:
    """The ensemble's copies learning on dask workers: contiguous groups of copies
    (:func:`pipeline.colanet.copy_groups`, one per worker), each group's state held by its worker
    between stretches. Copies share only the input, and noise and bagging are keyed by a copy's
    index in the ensemble, so each stretch's summed votes and the collected state are exactly
    those of one process (tests/test_scale.py); only the stretch's rows travel to the workers and
    the votes back, and the whole state once at each checkpoint (:meth:`collect`)."""

    def __init__(self, client, config: ColanetConfig, state: ColanetState, *,
                 threads: int | None = None, device: str = "cpu"):
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise UserError("the dask cluster has no workers: start some (`dask worker ADDRESS`)"
                            " or use --cluster local:N")
        self.client, self.config, self.threads, self.device = client, config, threads, device
        self.groups = copy_groups(state.n_copies, len(workers))
        self.workers = workers[:len(self.groups)]
        # one group's copy at a time: it is dropped once sent
        self.states = [client.scatter(copy_group(state, copies), workers=[worker], hash=False)
                       for copies, worker in zip(self.groups, self.workers)]

    def describe(self) -> str:
        """E.g. "13 copies as 2 groups on 2 dask workers (copies 0-6, 7-12)"."""
        n = self.groups[-1].stop
        spans = ", ".join(f"{g.start}-{g.stop - 1}" if len(g) > 1 else f"{g.start}"
                          for g in self.groups)
        return (f"{n} copies as {len(self.groups)} group{'s' * (len(self.groups) > 1)} on "
                f"{len(self.workers)} dask worker{'s' * (len(self.workers) > 1)} (copies {spans})")

    def learn(self, inputs, labels, sample_id, sat) -> np.ndarray:
        """Every group learns the stretch; returns the votes summed per group, (B, groups, C)."""
        from operator import getitem

        with self._worker_losses():
            rows = self.client.scatter([np.ascontiguousarray(inputs), labels, sample_id],
                                       broadcast=True, workers=self.workers, hash=False)
            done = [self.client.submit(train_group_task, self.config, group, copies, *rows, sat,
                                       self.threads, self.device, workers=[worker], pure=False)
                    for group, copies, worker in zip(self.states, self.groups, self.workers)]
            self.states = [self.client.submit(getitem, d, 0, workers=[w], pure=False)
                           for d, w in zip(done, self.workers)]
            votes = self.client.gather([self.client.submit(getitem, d, 1, workers=[w],
                                                           pure=False)
                                        for d, w in zip(done, self.workers)])
        return np.concatenate(votes, axis=1)

    def collect(self, state: ColanetState) -> None:
        """Bring ``state`` (in place) up to date with every group's, one group at a time (this
        process holds one group's arrays beside the state, not all of them)."""
        with self._worker_losses():
            for copies, group in zip(self.groups, self.states):
                put_copy_group(state, group.result(), copies)

    @contextmanager
    def _worker_losses(self):
        """A lost worker takes its group's state with it (nothing can recompute it): stop with
        one line; the last checkpoint is intact and a rerun resumes from it."""
        from concurrent.futures import CancelledError

        from distributed import KilledWorker

        try:
            yield
        except (KeyError, CancelledError, KilledWorker, OSError) as e:
            raise UserError(f"a dask worker holding copies of the ensemble was lost "
                            f"({type(e).__name__}: {str(e)[:120]}); the last checkpoint is "
                            f"intact: rerun the same command to resume from it") from None


def predict_stream(store: EmbeddingStore, split: str, config: ColanetConfig, state: ColanetState,
                   coding: Coding, *, start: int = 0, stop: int | None = None,
                   device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Frozen-plasticity predictions (-1: no answer) and labels of the usable rows
    ``start:stop`` of a split, streamed a chunk at a time; ``state`` is not changed."""
    ranked, labels = rank_stream(store, split, config, state, coding, 1, start=start, stop=stop,
                                 device=device)
    return ranked[:, 0], labels


def rank_stream(store: EmbeddingStore, split: str, config: ColanetConfig, state: ColanetState,
                coding: Coding, k: int, *, start: int = 0, stop: int | None = None,
                device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_stream` with each row's ``k`` classes of most votes, (rows, k) int64
    (:func:`pipeline.colanet.ranked_classes`: column 0 is the prediction, -1 an unranked place)."""
    ranked, labels = [np.zeros((0, k), np.int64)], [np.zeros(0, np.int64)]
    for batch in iter_batches(store, split, start, stop=stop):
        ranked.append(ranked_classes(vote(config, state, coding, batch.features,
                                          batch.sample_id, device=device), k))
        labels.append(batch.labels)
    return np.concatenate(ranked), np.concatenate(labels)


def vote(config: ColanetConfig, state: ColanetState, coding: Coding, features: np.ndarray,
         sample_id: np.ndarray, record: bool = False, device: str = "cpu"):
    """Frozen-plasticity votes (B, E, C) of features (B, D) coded by ``coding``, each sample's
    noise keyed by its id (:func:`pipeline.colanet.infer_chunk`; ``record``: with the spikes)."""
    return infer_chunk(config, state, coding.inputs(features), sample_id, coding.sat,
                       record=record, device=device)


def rank_task(path: str, split: str, start: int, stop: int | None, config: ColanetConfig,
              state: ColanetState, coding: Coding, k: int, numba_threads: int | None = None,
              device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """:func:`rank_stream` as a dask task on a worker running one task per core."""
    if numba_threads:
        numba.set_num_threads(numba_threads)
    return rank_stream(EmbeddingStore.open(path), split, config, state, coding, k, start=start,
                       stop=stop, device=device)


def evaluate(store: EmbeddingStore, split: str, config: ColanetConfig, state: ColanetState,
             coding: Coding, client=None, *, k: int = 1, device: str = "cpu"
             ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` classes of most votes, (rows, k) (column 0: the prediction, -1: no
    answer; :func:`rank_stream`), and the labels of a whole split: here, or with a dask
    ``client`` one task per stored chunk (the state is sent to every worker once). The answers
    are the same either way: a sample's noise is keyed by its id and nothing is learned."""
    if client is None:
        return rank_stream(store, split, config, state, coding, k, device=device)
    require_complete(store, split)  # once here, not in every task
    n_chunks = store.split(split)["done"].shape[0]
    state_on_workers = client.scatter(state, broadcast=True)
    path = absolute_location(store.path)
    futures = [client.submit(rank_task, path, split, rows.start, rows.stop, config,
                             state_on_workers, coding, k, 1, device, pure=False)
               for rows in (store.chunk_slice(split, c) for c in range(n_chunks))]
    parts = client.gather(futures) or [(np.zeros((0, k), np.int64), np.zeros(0, np.int64))]
    return np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts])


# --- checkpoints ----------------------------------------------------------------------------------

def checkpoint_identity(store: EmbeddingStore) -> dict[str, Any]:
    """What a checkpoint must share with the store it resumes on."""
    a = store.attrs
    return {"encoder": a["identity"]["encoder"]["model"],
            "weights_sha256": a["identity"]["encoder"]["weights_sha256"],
            "data_fingerprint": a["identity"]["data_fingerprint"],
            "feature_dim": a["encoder"]["feature_dim"], "class_names": a["dataset"]["class_names"]}


def load_progress(path: Path, store: EmbeddingStore, config: ColanetConfig, *,
                  other_store: str = "use --run NAME for a new run or --restart"
                  ) -> tuple[ColanetState, Progress] | None:
    """The run's state from its checkpoint (None when there is none). A checkpoint of another
    store or model configuration, or a damaged one, is refused naming the file; ``other_store``:
    what the refusal of another store's checkpoint tells the user to do."""
    if not path.exists():
        return None
    arrays, meta = load_checkpoint(path)
    want = checkpoint_identity(store)
    if meta.get("identity") != want:
        diff = [k for k in want if (meta.get("identity") or {}).get(k) != want[k]]
        raise UserError(f"{path}: checkpoint was trained on another store ({', '.join(diff)} "
                        f"differ from {store.path}); {other_store}")
    # A field newer than the checkpoint is missing from it: it ran with the field's earlier
    # behaviour (a dict, not a ColanetConfig: a damaged record is refused below as settings that
    # differ).
    current = config.to_dict()
    stored = recorded_settings(meta.get("config") or {})
    if stored != current:
        diff = sorted(k for k in {*current, *stored} if stored.get(k) != current.get(k))
        raise UserError(f"{path}: checkpoint was trained with other settings "
                        f"({', '.join(f'{k}={stored.get(k)!r}' for k in diff)}; this run: "
                        f"{', '.join(f'{k}={current.get(k)!r}' for k in diff)}); pass the same "
                        f"options, --run NAME for a new run, or --restart to discard it")
    d = store.attrs["encoder"]["feature_dim"]
    n_in = config.n_inputs(d)
    n_rows = store.split("train")["features"].shape[0]
    try:
        cursor, seconds = int(meta["cursor"]), float(meta["train_seconds"])
        pass_index, first_id = int(meta.get("pass_index", 0)), int(meta.get("first_sample_id", 0))
        coding = Coding.from_meta(meta, arrays)
        classes = meta.get("classes")  # a model continued from another (--init-from)
        if classes is not None:
            classes = tuple(classes)
            if (not all(isinstance(n, str) for n in classes) or len(set(classes)) != len(classes)
                    or not set(store.class_names) <= set(classes) or first_id < 0):
                raise ValueError("classes")
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: checkpoint metadata is damaged (cursor, coding, classes or "
                        f"seconds); rerun with --restart to discard it and train afresh") from None
    c = len(classes or store.class_names)
    n_online = len(arrays.get("online_correct", ()))
    check_arrays(path, arrays, {**checkpoint_schema(config, n_in, c),
                                "online_correct": ((n_online,), np.bool_),
                                "online_answered": ((n_online,), np.bool_)})
    if not 0 <= cursor <= n_rows or pass_index < 0 or not coding.fits(config, d):
        raise UserError(f"{path}: checkpoint is inconsistent (cursor {cursor} of {n_rows} rows, "
                        f"{n_online} online results, sat of shape {np.shape(coding.sat)}); rerun with "
                        f"--restart to discard it")
    online = {k: arrays.pop(k) for k in ("online_correct", "online_answered")}
    state = state_from_checkpoint(arrays, config, n_in, len(classes or store.class_names))
    return state, Progress(cursor=cursor, coding=coding, train_seconds=seconds,
                           pass_index=pass_index, classes=classes, first_id=first_id,
                           source=meta.get("init_from"), **online)


def save_progress(path: Path, store: EmbeddingStore, config: ColanetConfig, state: ColanetState,
                  progress: Progress) -> None:
    """Checkpoint atomically; derived arrays (weights, thresholds) are rebuilt on load."""
    try:
        save_checkpoint(path, {**checkpoint_arrays(state, config), **progress.coding.to_arrays(),
                               "online_correct": progress.online_correct,
                               "online_answered": progress.online_answered},
                        {"identity": checkpoint_identity(store), "config": config.to_dict(),
                         "store": store.path, "cursor": progress.cursor,
                         "pass_index": progress.pass_index,
                         **progress.coding.to_meta(), "train_seconds": progress.train_seconds,
                         **({} if progress.classes is None else
                            {"classes": list(progress.classes), "first_sample_id": progress.first_id,
                             "init_from": progress.source})})
    except OSError as e:
        raise UserError(f"{path}: writing the checkpoint failed ({e.strerror or e}); the previous "
                        f"checkpoint is intact: free space or fix the disk, then rerun") from None


def start_or_resume(store: EmbeddingStore, config: ColanetConfig, run_cfg: TrainConfig,
                    run_dir: Path, source: tuple[ColanetState, Progress] | None = None
                    ) -> tuple[ColanetState, Progress]:
    """The state the online pass continues from: the run's checkpoint, or a fresh model, or with
    ``run_cfg.init_from`` the source's model grown to the store's classes (``source``, when the
    caller has read it already: :func:`pipeline.incremental.start_from`). A checkpoint always
    wins: a run started from another model resumes from its own checkpoint (which holds the whole
    state), the source is not read again; ``--init-from`` naming another source is refused."""
    from pipeline.incremental import same_source, start_from  # it imports this module

    ckpt = run_dir / CHECKPOINT
    remove_stale_temporaries(ckpt)  # left by a writer killed mid-save; we hold the run's lock
    if run_cfg.restart:
        ckpt.unlink(missing_ok=True)
    resumed = load_progress(ckpt, store, config)
    if resumed is not None:
        done, n_rows = resumed[1], store.split("train")["features"].shape[0]
        if done.cursor >= n_rows and done.pass_index + 1 >= run_cfg.passes:
            print(f"train-snn: {run_dir} is trained; evaluating it again", file=sys.stderr)
        else:
            print(f"train-snn: resuming {run_dir} at train row {done.cursor:,} of {n_rows:,} "
                  f"(pass {done.pass_index + 1} of {run_cfg.passes})", file=sys.stderr)
        if run_cfg.init_from is not None and not same_source(resumed[1].source, run_cfg.init_from):
            started = (resumed[1].source or {}).get("run")
            raise UserError(f"{ckpt}: this run was started "
                            f"{f'from {started}' if started else 'afresh'}, not from --init-from "
                            f"{run_cfg.init_from}; use --run NAME for a new run, or --restart to "
                            f"discard it")
        return resumed
    if run_cfg.init_from is not None:
        return source or start_from(run_cfg.init_from, store, config, run_dir)
    return new_model(store, config)


class _StopRequested:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the next stretch boundary and stops."""

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


def train_from(store: EmbeddingStore, config: ColanetConfig, run_cfg: TrainConfig, run_dir: Path,
               state: ColanetState, progress: Progress, *, stop_after_samples: int | None = None,
               client=None, threads: int | None = None) -> bool:
    """The online pass from ``progress.cursor`` to the end of the train split, a store chunk at a
    time, checkpointing at the first chunk boundary after every ``checkpoint_every`` samples, on a
    signal (then KeyboardInterrupt) and at the end; returns
    whether the pass is complete. ``stop_after_samples`` stops early with a checkpoint: a
    stand-in for an interruption in tests. With a dask ``client`` the copies learn on its
    workers (:class:`WorkerCopies`, ``threads`` simulator threads each; None: the worker's
    default), with the same results."""
    ckpt = run_dir / CHECKPOINT
    n_rows = store.split("train")["features"].shape[0]

    # The bar counts train rows over all passes (the balanced order presents some rows more
    # than once: counting presentations would run past the total).
    def rows_done() -> int:
        return progress.pass_index * n_rows + progress.cursor

    workers = None
    if client is not None and rows_done() < run_cfg.passes * n_rows:
        workers = WorkerCopies(client, config, state, threads=threads, device=run_cfg.snn_device)
        print(f"train-snn: training {workers.describe()}", file=sys.stderr)
    learned_now, since_checkpoint = 0, 0
    progress.compile_seconds = compile_simulator(config, progress.coding,
                                                 store.attrs["encoder"]["feature_dim"],
                                                 run_cfg.snn_device)
    if progress.compile_seconds > 2.0:  # a first run on this machine: say where the time went
        print(f"train-snn: compiled the simulator in {progress.compile_seconds:.1f} s (once per "
              f"machine and model type: later runs load it from Numba's cache; not training "
              f"time)", file=sys.stderr)

    last_save = [0.0]

    def checkpoint() -> None:
        # Training time includes saving: each save's seconds are added before the next save, so
        # the time a checkpoint records is the time a resumed run reports (the last save's few
        # seconds are the only ones left out).
        progress.train_seconds += last_save[0]
        started = time.perf_counter()
        if workers is not None:
            workers.collect(state)
        save_progress(ckpt, store, config, state, progress)
        last_save[0] = time.perf_counter() - started

    with _StopRequested() as stop, tqdm(total=n_rows * run_cfg.passes, initial=rows_done(),
                                        unit="row", desc="train-snn", dynamic_ncols=True) as bar:
        # Stretches are the store's chunks, whatever --checkpoint-every says: the balanced order
        # shuffles a stretch at a time, so cutting them at checkpoints changed the model (and a
        # resume with another --checkpoint-every changed it again). A checkpoint is taken at the
        # first chunk boundary after every checkpoint_every samples.
        for batch in fit_stream(store, config, state, progress, passes=run_cfg.passes,
                                device=run_cfg.snn_device, workers=workers):
            learned_now += len(batch.labels)
            since_checkpoint += len(batch.labels)
            bar.update(rows_done() - bar.n)
            bar.set_postfix(online_acc=f"{progress.online_correct.mean():.3f}")
            interrupted = stop.signal is not None or (stop_after_samples is not None
                                                      and learned_now >= stop_after_samples)
            if since_checkpoint >= run_cfg.checkpoint_every or interrupted:
                checkpoint()
                since_checkpoint = 0
            if stop.signal is not None:
                raise KeyboardInterrupt
            if interrupted:
                return False
    if since_checkpoint:
        checkpoint()
    return progress.pass_index + 1 >= run_cfg.passes and progress.cursor >= n_rows


def ensure_store(embed_cfg: EmbedConfig, cluster: ClusterConfig = ClusterConfig(), *,
                 data_given: bool = True) -> str:
    """The path of the finished store of ``embed_cfg``, embedding it first where that is asked.

    A missing store is embedded from ``embed_cfg`` (the default store of ``--data``), except a
    missing ``--out`` given without ``--data``: a mistyped path must not quietly embed the
    built-in digits. An unfinished store is finished with the embed configuration the store
    itself records, never with this command line's defaults.
    """
    path = embed_cfg.store_path()
    refuse_file(path)
    if store_exists(path):
        try:
            store = EmbeddingStore.open(path)
        except UserError:
            if not data_given:  # e.g. a creation that was interrupted: nothing recorded yet
                raise
            store = None
        if store is not None and store.is_complete():
            return path
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
    from pipeline.embedding import embed_store  # torch is loaded only when there is embedding to do

    embed_store(embed_cfg, cluster)
    return path


# --- a whole run --------------------------------------------------------------------------------

def train_run(store_path: str, config: ColanetConfig, run_cfg: TrainConfig,
              cluster: ClusterConfig = ClusterConfig(), *,
              stop_after_samples: int | None = None) -> dict[str, Any] | None:
    """Train (resuming), evaluate and write the run folder of a finished store; returns the
    metrics as written (None when stopped early by ``stop_after_samples``).

    The store is read under its shared lock (it cannot be replaced meanwhile) and the run folder
    written under its exclusive lock; every input is checked before the run folder is touched.
    """
    if run_cfg.numba_threads:
        numba.set_num_threads(run_cfg.numba_threads)
    check_snn_device(run_cfg.snn_device)
    if run_cfg.run is not None:
        check_name(run_cfg.run, "--run")
    with shared(store_path):
        store = EmbeddingStore.open(store_path)
        eval_split = run_cfg.eval_split or ("test" if "test" in store.splits else "val")
        store.split(eval_split)  # refuse an unknown split before training, not after
        check_split(store, "train", needs_positive=True)
        check_split(store, eval_split)
        run_dir = Path(run_cfg.runs_dir) / (run_cfg.run or run_name(store_path, config))
        source = None
        if run_cfg.init_from is not None:
            from pipeline.incremental import check_run_folder, start_from  # they import this module

            check_run_folder(run_cfg.init_from, run_dir)
            if run_cfg.restart or not (run_dir / CHECKPOINT).exists():  # checked before claiming
                source = start_from(run_cfg.init_from, store, config, run_dir)
        run_dir = claim_folder(run_dir, "run")
        with exclusive(run_dir):
            state, progress = start_or_resume(store, config, run_cfg, run_dir, source)
            # What runs is now settled (a refused checkpoint wrote nothing): record it.
            levels = np.asarray(progress.coding.sat, dtype=np.float64)
            sat = [None if not np.isfinite(v) else float(v) for v in levels.ravel()]  # None: inf
            (run_dir / "config.json").write_text(json.dumps(
                {"store": store.path, "embed": store.attrs.get("config", {}),
                 "run": run_cfg.to_dict(), "cluster": cluster.to_dict(),
                 "colanet": config.to_dict(), "coding": {**progress.coding.to_meta(), "sat": sat if levels.ndim else sat[0]},
                 "classes": progress.class_names(store), "init_from": progress.source},
                indent=2, allow_nan=False))
            # One cluster (when asked for) for the online pass and the evaluation.
            with connect(cluster, stores=(store.path,)) as client:
                threads = task_threads(cluster) if local_workers(cluster) else None
                if not train_from(store, config, run_cfg, run_dir, state, progress,
                                  stop_after_samples=stop_after_samples, client=client,
                                  threads=threads):
                    return None
                return _evaluate_run(store, eval_split, config, run_cfg, client, state,
                                     progress, run_dir)


def _evaluate_run(store: EmbeddingStore, eval_split: str, config: ColanetConfig,
                  run_cfg: TrainConfig, client, state: ColanetState,
                  progress: Progress, run_dir: Path) -> dict[str, Any]:
    seconds = {"train": round(progress.train_seconds, 3),
               "compile": round(progress.compile_seconds, 3)}
    started = time.perf_counter()
    ranked, y_test = evaluate(store, eval_split, config, state, progress.coding, client,
                              k=TOP_K, device=run_cfg.snn_device)
    seconds["snn_eval"] = round(time.perf_counter() - started, 3)
    pred = ranked[:, 0]
    # The model's columns by class name; the store's labels as columns (a model continued with
    # --init-from may know classes the store lacks: they are reported with no eval samples).
    classes = progress.class_names(store)
    columns = label_columns(store, classes)
    y_test = columns[y_test]
    snn = classification_metrics(y_test, pred, len(classes))
    train_count = np.zeros(len(classes), np.int64)
    train_count[columns] = class_counts(store, "train")
    levels = np.asarray(progress.coding.sat, dtype=np.float64).ravel()
    finite_sat = levels[np.isfinite(levels)]  # features never positive have no level
    n_inputs = config.n_inputs(store.attrs["encoder"]["feature_dim"])
    presented = len(progress.online_correct)  # every presentation of every pass, repeats included
    metrics: dict[str, Any] = {
        "store": store.path, "run_dir": str(run_dir), "eval_split": eval_split,
        "n_train": int(train_count.sum()), "passes": progress.pass_index + 1,
        "n_test": int(len(y_test)),
        "sat": float(np.median(finite_sat)) if finite_sat.size else None,
        "sat_scope": config.sat_scope,
        "colanet": config.to_dict(),
        "resolved": {"n_inputs": n_inputs, "views": config.n_views,
                     "gain": config.resolved_gain(n_inputs),
                     "sat_levels": int(levels.size),
                     "sat_min": float(finite_sat.min()) if finite_sat.size else None,
                     "sat_max": float(finite_sat.max()) if finite_sat.size else None,
                     "inputs_never_spiking": int(levels.size - finite_sat.size)},
        "snn_accuracy": snn["accuracy"], "no_answer_rate": snn["no_answer_rate"],
        f"snn_top{TOP_K}_accuracy": top_k_accuracy(y_test, ranked),
        "online_train_accuracy": float(progress.online_correct.mean()),
        "train_presentations": presented,
        "train_samples_per_s": round(presented / progress.train_seconds, 1)
        if progress.train_seconds > 0 else None,
        "eval_samples_per_s": round(len(y_test) / seconds["snn_eval"], 1)
        if seconds["snn_eval"] > 0 else None,
        "classes": classes,
        "per_class_accuracy": dict(zip(classes, snn["per_class_accuracy"])),
        "confusion": snn["confusion"],
    }
    predictions = {"snn": pred}
    if not run_cfg.skip_baselines:
        started = time.perf_counter()
        x_train, y_train = read_rows(store, "train")
        x_test, _ = read_rows(store, eval_split)
        predictions["probe"] = columns[linear_probe(x_train, y_train, x_test)]
        predictions["ncm"] = columns[nearest_class_mean(x_train, y_train, x_test)]
        metrics["probe_accuracy"] = float((predictions["probe"] == y_test).mean())
        metrics["ncm_accuracy"] = float((predictions["ncm"] == y_test).mean())
        seconds["baselines"] = round(time.perf_counter() - started, 3)
    # Per class, in class order: how many train rows it had and each classifier's recall on it.
    metrics["per_class"] = per_class_table(classes, train_count, y_test, predictions)
    metrics["seconds"] = seconds
    try:
        _plot(run_dir, store, eval_split, config, state, progress, snn, metrics["per_class"],
              columns)
    except Exception as e:  # a picture must never cost the run its results (metrics.json)
        print(f"{run_dir}: a plot could not be drawn ({short_reason(e)}); the metrics are "
              f"written all the same", file=sys.stderr)
    written = write_metrics(run_dir, metrics)
    write_html_report(run_dir)  # last: it is made from the files written above
    return written


def class_input_rates(batches: Iterable[Batch], coding: Coding, n_classes: int) -> np.ndarray:
    """Each class's mean input spike rate ``d = clip(v / sat, 0, 1)`` over the rows of
    ``batches`` (labels: columns), float64 (C, inputs), summed a stretch at a time; NaN rows for
    a class without rows. What a class's prototype is drawn against
    (:func:`pipeline.plots.class_prototypes`)."""
    sums, counts = None, np.zeros(n_classes, np.int64)
    for batch in batches:
        rates = coding.rates(batch.features)
        rows = np.zeros((len(batch.labels), n_classes))
        rows[np.arange(len(batch.labels)), batch.labels] = 1.0
        part = rows.T @ rates
        sums = part if sums is None else sums + part
        counts += np.bincount(batch.labels, minlength=n_classes)
    if sums is None:
        raise ValueError("class_input_rates: no rows")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[:, None] > 0, sums / counts[:, None], np.nan)


RASTER_SAMPLES = 6  # samples of the evaluation split in spike_raster.png


def _plot(run_dir: Path, store: EmbeddingStore, split: str, config: ColanetConfig,
          state: ColanetState, progress: Progress, snn: dict, per_class: list[dict[str, Any]],
          columns: np.ndarray) -> None:
    classes = [c["name"] for c in per_class]
    plots.running_accuracy(progress.online_correct, run_dir / "online_accuracy.png",
                           pass_length=len(progress.online_correct) // (progress.pass_index + 1))
    plots.confusion_matrix(np.asarray(snn["confusion"]), classes, run_dir / "confusion.png", split)
    plots.per_class_recall(per_class, run_dir / "per_class_recall.png", split)
    # The raster: samples of as many classes as the first stretch with usable rows offers (the
    # split has one: check_split).
    first = next(b for b in iter_batches(store, split) if len(b.labels))
    shown = plots.raster_samples(first.labels, RASTER_SAMPLES)
    votes, spikes = vote(config, state, progress.coding, first.features[shown],
                         first.sample_id[shown], record=True)
    answers, _ = readout(votes)
    plots.spike_raster(spikes[:, :, 0, :], columns[first.labels[shown]], answers, classes,
                       config.m, run_dir / "spike_raster.png")
    rates = class_input_rates(as_columns(iter_batches(store, "train"), columns), progress.coding,
                              len(classes))
    # With views, copies see different inputs: the plot shows view 0's copies on view 0's inputs.
    first_view = copy_groups(config.e, config.n_views)[0]
    plots.class_prototypes(state.w[first_view.start:first_view.stop], rates[:, :state.n_inputs],
                           classes, config.m, run_dir / "weights.png")
