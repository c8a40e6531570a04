"""Typed, JSON-round-trippable configs of the stages; each output keeps the resolved one beside it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
