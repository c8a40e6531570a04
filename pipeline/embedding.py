"""Stage one's engine: run the encoder once over a data set and cache pooled features in a store.

Work is done chunk by chunk (the store's unit of completion); a rerun skips finished chunks, so a
killed run continues where it stopped and ends with the same store an uninterrupted run writes.
With ``--cluster local:N`` or ``--scheduler ADDRESS`` the chunks are dask.distributed tasks, each
worker writing its chunk straight into the store; the store is the same as one process writes.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from distributed import as_completed
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline.cluster import connect, task_threads
from pipeline.config import ClusterConfig, EmbedConfig
from pipeline.data import DataSet, failure_reason, open_dataset
from pipeline.encoder import Encoder, load_encoder, release_freed_memory
from pipeline.errors import UserError
from pipeline.lock import exclusive
from pipeline.store import (EmbeddingStore, SplitLayout, absolute_location, encoder_identity,
                            store_name)


class _Images(Dataset):
    """Images indexed by ``(split, row)``; an unreadable image becomes (zeros, reason)."""

    def __init__(self, ds: DataSet, transform, input_size: tuple[int, ...]):
        self.ds, self.transform = ds, transform
        self.blank = torch.zeros(input_size)

    def __getitem__(self, key: tuple[str, int]):
        split, row = key
        try:
            return self.transform(self.ds.read_image(self.ds.splits[split].ids[row])), key, ""
        except Exception as e:  # any decoder failure is a property of the file, recorded not fatal
            return self.blank, key, failure_reason(e)

    def __getitems__(self, keys: list[tuple[str, int]]):
        """A batch's images (the DataLoader's fetch), with one torch thread: the transform's small
        elementwise tensor ops gain nothing from torch's intra-op threads, which spin beside them
        (10x the CPU time, taken from the forward pass). A DataLoader worker has one already; the
        values are the same with any count."""
        threads = torch.get_num_threads()
        if threads == 1:
            return [self[k] for k in keys]
        torch.set_num_threads(1)
        try:
            return [self[k] for k in keys]
        finally:
            torch.set_num_threads(threads)


def prepare(cfg: EmbedConfig) -> tuple[DataSet, Encoder]:
    """Resolve the data source and build the encoder (the two inputs of a store's identity)."""
    ds = open_dataset(cfg.data, seed=cfg.split_seed, test_fraction=cfg.test_fraction, limit=cfg.limit)
    encoder = load_encoder(cfg.model, cfg.weights, image_size=cfg.image_size, device=cfg.device)
    return ds, encoder


def store_identity(ds: DataSet, encoder: Encoder) -> dict[str, Any]:
    """What must match for a rerun to continue a store instead of refusing it."""
    return {"encoder": encoder_identity(encoder.identity()), "data_fingerprint": ds.fingerprint}


def embed_store(cfg: EmbedConfig, cluster: ClusterConfig = ClusterConfig(), *,
              stop_after_chunks: int | None = None) -> dict[str, Any]:
    """Embed every unfinished chunk of every split, here or on a dask cluster; returns the run
    summary.

    ``stop_after_chunks`` ends the run early after that many chunks (a stand-in for a kill, for
    tests and the kill harness).
    """
    if cfg.chunk_size < 1 or cfg.batch_size < 1:
        raise UserError(f"--chunk-size {cfg.chunk_size} and --batch-size {cfg.batch_size} "
                        f"must be positive")
    path = cfg.store_path()
    EmbeddingStore.refuse_foreign(path)
    ds, encoder = prepare(cfg)  # every input checked before anything (a lock file) is written
    with exclusive(path), connect(cluster, stores=(path,)) as client:
        return _embed(cfg, path, ds, encoder, client, cluster, stop_after_chunks)


def _embed(cfg: EmbedConfig, path: str, ds: DataSet, encoder: Encoder, client,
           cluster: ClusterConfig, stop_after_chunks: int | None) -> dict[str, Any]:
    # A forward pass's float results depend on the batch shape and on torch's thread count, so a
    # store's chunks are all computed with the values it was created with: a resumed chunk, or one
    # computed by any cluster worker, is bit-identical to the same chunk of an uninterrupted run.
    threads = cfg.threads or (task_threads(cluster) if client else torch.get_num_threads())
    store = EmbeddingStore.open_for_writing(
        path, identity=store_identity(ds, encoder),
        attrs={"dataset": {"spec": ds.spec, "name": ds.name, "root": ds.root,
                           "class_names": list(ds.class_names), "fingerprint": ds.fingerprint,
                           "sizes": {k: len(v) for k, v in ds.splits.items()}},
               "encoder": encoder.identity(), "config": cfg.to_dict(),
               "batch_size": cfg.batch_size, "threads": threads, "compute": encoder.compute()},
        splits={k: SplitLayout(labels=v.labels, ids=v.ids) for k, v in ds.splits.items()},
        feature_dim=encoder.feature_dim, chunk_size=cfg.chunk_size, overwrite=cfg.overwrite)
    batch_size = int(store.attrs.get("batch_size", cfg.batch_size))
    threads = int(store.attrs.get("threads", threads))
    chunk_size = int(store.attrs["layout"].get("chunk_size", cfg.chunk_size))
    kept = {"--chunk-size": (chunk_size, cfg.chunk_size),
            "--batch-size": (batch_size, cfg.batch_size)}
    changed = [f"{flag} {was} (not {asked})" for flag, (was, asked) in kept.items() if was != asked]
    if changed:  # the layout and the forward pass's batch shape are fixed when a store is made
        print(f"{path}: continuing with the store's {' and '.join(changed)}: they are fixed when "
              f"a store is made; --overwrite rebuilds it with new ones", file=sys.stderr)
    require_same_compute(store, encoder, "this run")

    todo, n_chunks = [], 0
    for s in store.splits:
        damaged = store.chunk_problems(s, decode=cfg.verify)  # finished on paper, not on disk
        for c, why in sorted(damaged.items()):
            print(f"{path}: split {s!r} chunk {c} is damaged ({why}); embedding it again")
        redo = ~store.done_chunks(s)
        redo[list(damaged)] = True
        todo += [(s, int(c)) for c in np.flatnonzero(redo)]
        n_chunks += len(redo)
    if todo and len(todo) < n_chunks:  # an interrupted run (or damage): say what is kept
        print(f"{path}: resuming: {n_chunks - len(todo)} of {n_chunks} chunks done, "
              f"embedding the other {len(todo)}", file=sys.stderr)
    if stop_after_chunks is not None:
        todo = todo[:stop_after_chunks]
    n_images = sum(rows.stop - rows.start for rows in (store.chunk_slice(s, c) for s, c in todo))
    failures: list[tuple[str, str]] = []
    started = time.perf_counter()
    with tqdm(total=n_images, unit="img", desc=f"embed {store_name(path)}", dynamic_ncols=True) as bar:
        def progress(n: int, failed: list[tuple[str, str]]) -> None:
            failures.extend(failed)
            bar.update(n)
            bar.set_postfix(failures=len(failures))

        if client is None:
            torch.set_num_threads(threads)
            embed_chunks(ds, encoder, store, todo, batch_size, cfg.workers, cfg.strict, progress)
        else:
            # One task per chunk; each worker writes its chunk and flag straight into the store.
            worker_cfg = for_workers(cfg)
            futures = {client.submit(embed_chunks_task, worker_cfg, absolute_location(path), [key],
                                     batch_size, threads, pure=False): key for key in todo}
            for future in as_completed(futures):
                progress(*future.result())
    seconds = time.perf_counter() - started
    summary = {"store": path, "images": n_images, "seconds": round(seconds, 3),
               "images_per_s": round(n_images / seconds, 2) if seconds > 0 and n_images else 0.0,
               "failures": len(failures), "failed": failures[:100],
               "complete": store.is_complete(), "already_complete": not todo}
    store.record_run(summary)
    return summary


def require_same_compute(store: EmbeddingStore, encoder: Encoder, who: str) -> None:
    """Refuse to add chunks computed on another device or precision than the store's others."""
    stored = store.attrs.get("compute")
    if stored and stored != encoder.compute():
        raise UserError(f"{store.path}: its features were computed on {stored['device']} "
                        f"({stored['precision']}) but {who} computes on "
                        f"{encoder.compute()['device']} ({encoder.compute()['precision']}), which "
                        f"gives other floats; rerun with --device {stored['device']}, or "
                        f"--overwrite to rebuild the store")


def embed_chunks(ds: DataSet, encoder: Encoder, store: EmbeddingStore, chunks: list[tuple[str, int]],
                 batch_size: int, workers: int, strict: bool,
                 progress: Callable[[int, list[tuple[str, str]]], None] | None = None
                 ) -> tuple[int, list[tuple[str, str]]]:
    """Embed and write ``chunks`` (``(split, chunk)`` pairs) of ``store``; returns the image count
    and the ``(id, reason)`` of each unreadable image. ``progress(n, failed)`` after each batch.

    Batches are cut inside chunks, ``workers`` DataLoader processes decode ahead (0: this process
    decodes each batch before its forward pass), and each chunk is written (then flagged done) as
    soon as its last batch is embedded. The features do not depend on ``workers``.
    """
    batches, batch_chunk, chunk_len = [], [], {}
    for s, c in chunks:
        rows = store.chunk_slice(s, c)
        chunk_len[s, c] = rows.stop - rows.start
        for start in range(rows.start, rows.stop, batch_size):
            batches.append([(s, r) for r in range(start, min(start + batch_size, rows.stop))])
            batch_chunk.append((s, c))
    images = _Images(ds, encoder.transform, tuple(encoder.data_config["input_size"]))
    loader = DataLoader(images, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
                        persistent_workers=False)
    if workers:
        release_freed_memory()  # the workers fork next: no page shared with them is kept in use
    failures: list[tuple[str, str]] = []
    current, parts = None, []
    for (x, keys, errors), key in zip(loader, batch_chunk):
        if key != current:
            current, parts = key, []
        feats = encoder.embed(x)
        bad = errors != ""
        feats[bad] = 0.0  # a placeholder image's features are meaningless
        failed = [(str(ds.splits[keys[f][0]].ids[keys[f][1]]), str(errors[f]))
                  for f in np.flatnonzero(bad)]
        if failed and strict:
            raise UserError(f"{Path(ds.root) / failed[0][0]}: {failed[0][1]} (--strict stops at "
                            f"the first unreadable image; without it, it is recorded and skipped)")
        failures.extend(failed)
        parts.append((feats, errors))
        if sum(len(p[0]) for p in parts) == chunk_len[key]:
            try:
                store.write_chunk(key[0], key[1], np.concatenate([p[0] for p in parts]),
                                  np.concatenate([p[1] for p in parts]))
            except OSError as e:
                raise UserError(f"{store.path}: writing chunk {key[1]} of {key[0]!r} failed "
                                f"({e.strerror or e}); free space or fix the disk, then rerun: "
                                f"finished chunks are kept") from None
        if progress is not None:
            progress(len(keys), failed)
    return sum(chunk_len.values()), failures


_WORKER_INPUTS: dict[str, tuple[DataSet, Encoder]] = {}  # per worker process: built once
_INPUT_FIELDS = ("data", "split_seed", "test_fraction", "limit", "model", "weights", "image_size",
                 "device")  # the config fields that decide the data listing and the encoder


def worker_inputs(cfg: dict[str, Any], *, fresh: bool = False) -> tuple[DataSet, Encoder]:
    """The data listing and encoder of ``cfg`` in this worker process, built on first use (or
    again when ``fresh``: the files may have changed since)."""
    key = json.dumps([cfg[k] for k in _INPUT_FIELDS])
    if fresh or key not in _WORKER_INPUTS:
        _WORKER_INPUTS.clear()
        _WORKER_INPUTS[key] = prepare(EmbedConfig.from_dict(cfg))
    return _WORKER_INPUTS[key]


def embed_chunks_task(cfg: dict[str, Any], path: str, chunks: list[tuple[str, int]],
                      batch_size: int, threads: int) -> tuple[int, list[tuple[str, str]]]:
    """A cluster task: :func:`embed_chunks` in a worker process, which checks that it sees the
    data and weights the store was created for."""
    store = EmbeddingStore.open(path, mode="r+")
    for fresh in (False, True):  # listed again when the files changed since this worker did
        ds, encoder = worker_inputs(cfg, fresh=fresh)
        if json.loads(json.dumps(store_identity(ds, encoder))) == store.attrs["identity"]:
            break
    else:
        raise UserError(f"worker {socket.gethostname()} sees other images or weights for "
                        f"{cfg['data']} than the store {path} was created for; workers need the "
                        f"same data and checkpoint under the same paths")
    require_same_compute(store, encoder, f"worker {socket.gethostname()}")
    torch.set_num_threads(threads)
    return embed_chunks(ds, encoder, store, chunks, batch_size, workers=0, strict=cfg["strict"])


def for_workers(cfg: EmbedConfig) -> dict[str, Any]:
    """The config as workers need it: relative local paths made absolute (a worker's working
    folder may differ; remote workers need the same paths mounted)."""
    data = cfg.data
    if data.startswith(("imagefolder:", "csv:")):
        kind, _, where = data.partition(":")
        data = f"{kind}:{absolute_location(where)}"
    elif data.endswith(".csv"):  # a bare CSV path is a csv: source too
        data = absolute_location(data)
    weights = cfg.weights
    if weights not in ("package", "hub", "none"):  # a checkpoint path
        weights = absolute_location(weights)
    return {**cfg.to_dict(), "data": data, "weights": weights}


def _collate(items):
    x = torch.stack([i[0] for i in items])
    return x, [i[1] for i in items], np.array([i[2] for i in items], dtype=object).astype(str)
