"""Typed, JSON-round-trippable configs of the stages; each output keeps the resolved one beside it."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any

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


@dataclass(frozen=True)
class EmbedConfig:
    """Stage one: which images, which encoder, where to write."""

    data: str = "digits"  # digits | imagefolder:PATH | csv:PATH
    model: str = "tf_efficientnet_lite0"  # any timm model name
    weights: str = "package"  # package | hub | none | PATH to a checkpoint
    image_size: int | None = None  # None: the model's own input size (timm data config)
    out: str | None = None  # store path; None: data/embeddings/<data>-<model>.zarr
    embeddings_dir: str = "data/embeddings"
    split_seed: int = 0  # split and sample order
    test_fraction: float = 0.25  # for sources without split folders
    limit: int | None = None  # at most this many images per split (quick runs)
    chunk_size: int = 256  # rows per Zarr chunk = unit of completion and resume
    batch_size: int = 32
    workers: int = 0  # DataLoader worker processes decoding images
    threads: int | None = None  # torch CPU threads; None: torch's default
    device: str = "auto"  # auto | cpu | cuda
    strict: bool = False  # fail on the first unreadable image instead of recording it
    overwrite: bool = False  # replace a store written for another encoder or data
    verify: bool = False  # read every finished chunk and embed again those that do not decode

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
class TrainConfig:
    """Stage two: where the run lives and how it streams, checkpoints and evaluates.

    The model's own hyperparameters are :class:`pipeline.colanet.ColanetParams`.
    """

    run: str | None = None  # run folder name under runs_dir; None: the store's name
    runs_dir: str = "data/runs"
    # Coding saturation: this percentile of the positive train features, one level per feature
    # (spec: 99 and one global level; chosen on validation data, see docs/accuracy.md).
    sat_percentile: float = 99.88
    sat_scope: str = "feature"  # global: one level for all features | feature: one per feature
    checkpoint_every: int = 1000  # samples between checkpoints (and on SIGINT/SIGTERM)
    eval_split: str | None = None  # None: test, or val when the store has no test split
    skip_baselines: bool = False  # leave out the linear probe and nearest class mean
    numba_threads: int | None = None  # None: numba's default (all cores)
    restart: bool = False  # discard this run's checkpoint and train afresh

    def __post_init__(self):
        _require(0.0 < self.sat_percentile <= 100.0, "sat_percentile", self.sat_percentile,
                 "must lie in (0, 100]")
        _require(self.sat_scope in ("global", "feature"), "sat_scope", self.sat_scope,
                 "must be global or feature")
        _require(self.checkpoint_every >= 1, "checkpoint_every", self.checkpoint_every,
                 "must be positive")
        _require(self.eval_split in (None, "train", "val", "test"), "eval_split", self.eval_split,
                 "must be train, val or test")
        _check_threads("numba_threads", self.numba_threads)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TuneConfig:
    """The search: how many trials, how they are split and where they run."""

    name: str | None = None  # study folder under tune_dir; None: the store's name
    stores: str | None = None  # comma-separated store paths for a joint study (instead of --data)
    tune_dir: str = "data/tune"
    trials: int = 40  # total trials (a rerun with more continues the study)
    batch: int = 4  # trials asked at once (the result does not depend on processes)
    val_fraction: float = 0.2  # tail of the train split scored by each trial
    search_seed: int = 0  # seed of the search strategy
    startup: int = 8  # random trials before TPE models the results
    numba_threads: int = 1  # per trial (workers run trials side by side)

    def __post_init__(self):
        _require(self.trials >= 1, "trials", self.trials, "must be positive")
        _require(self.batch >= 1, "batch", self.batch, "must be positive")
        _require(0.0 < self.val_fraction < 1.0, "val_fraction", self.val_fraction,
                 "must lie strictly between 0 and 1")
        _require(0 <= self.search_seed <= MAX_SEED, "search_seed", self.search_seed,
                 f"must lie between 0 and {MAX_SEED}")
        _require(self.startup >= 0, "startup", self.startup, "must be 0 or more")
        _check_threads("numba_threads", self.numba_threads)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClusterConfig:
    """Where parallel work runs: a running dask scheduler, or a LocalCluster this run starts.

    Neither given: embedding and evaluation run in this process; tuning starts ``local:2``.
    Results do not depend on the choice (see README, "Scale past one machine").
    """

    scheduler: str | None = None  # address of a running dask scheduler, e.g. tcp://10.0.0.5:8786
    cluster: str | None = None  # local:N: a LocalCluster of N worker processes

    def __post_init__(self):
        if self.cluster is not None:
            kind, _, n = self.cluster.partition(":")
            _require(kind == "local" and n.isdigit() and int(n) >= 1, "cluster", repr(self.cluster),
                     "is not understood; use local:N (N worker processes on this machine), or "
                     "--scheduler ADDRESS for a running cluster")
        _require(not (self.scheduler and self.cluster), "scheduler", self.scheduler,
                 "give --scheduler ADDRESS or --cluster local:N, not both")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
