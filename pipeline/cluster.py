"""Connecting to dask.distributed: a running scheduler, or a LocalCluster started for one run.

Every task sent to a worker is a pure function of its arguments and writes (if it writes at all)
its own chunk-aligned region of a store, so results do not depend on the number of workers.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from pipeline.config import ClusterConfig
from pipeline.errors import UserError


def local_workers(cfg: ClusterConfig) -> int | None:
    """N of ``--cluster local:N`` (None when no LocalCluster is asked for)."""
    if cfg.cluster is None:
        return None
    kind, _, n = cfg.cluster.partition(":")
    if kind != "local" or not n.isdigit() or int(n) < 1:
        raise UserError(f"--cluster {cfg.cluster!r} is not understood; use local:N (N worker "
                        f"processes on this machine), or --scheduler ADDRESS for a running cluster")
    return int(n)


@contextmanager
def connect(cfg: ClusterConfig, *, default_local: int | None = None,
            stores: tuple[str, ...] = ()) -> Iterator:
    """A ``distributed.Client`` for the block, or None when the work stays in this process.

    ``--scheduler`` connects to a running cluster; ``--cluster local:N`` starts N single-threaded
    worker processes (one task each at a time) and stops them afterwards; with neither, a
    LocalCluster of ``default_local`` workers, or None. ``stores`` are the stores the workers will
    open: one they cannot reach is refused before anything starts.
    """
    if cfg.scheduler and cfg.cluster:
        raise UserError("give --scheduler ADDRESS or --cluster local:N, not both")
    n_local = local_workers(cfg) or (None if cfg.scheduler else default_local)
    if not cfg.scheduler and n_local is None:
        yield None
        return
    for path in stores:
        if str(path).startswith("memory://"):
            raise UserError(f"{path}: a memory:// store lives inside one process, so cluster "
                            f"workers cannot reach it; use a path or URL they all reach")
    from distributed import Client, LocalCluster

    if cfg.scheduler:
        try:
            client = Client(cfg.scheduler, timeout="10s")
        except OSError as e:
            raise UserError(f"could not reach the dask scheduler at {cfg.scheduler} ({e}); start "
                            f"one (`dask scheduler`, `dask worker ADDRESS`) or use --cluster "
                            f"local:N") from None
        cluster = None
    else:
        cluster = LocalCluster(n_workers=n_local, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def task_threads(cfg: ClusterConfig) -> int:
    """Compute threads per task on this cluster: the cores of this machine shared by the local
    workers, or 1 on a remote cluster (its workers run one task per core)."""
    n = local_workers(cfg)
    return max(1, (os.cpu_count() or 1) // n) if n else 1

