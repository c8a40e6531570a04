"""Stage one: run the encoder once over a data set and cache pooled features in a Zarr store.

Work is done chunk by chunk (the store's unit of completion); a rerun skips finished chunks, so a
killed run continues where it stopped and ends with the same store an uninterrupted run writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline.config import EmbedConfig
from pipeline.data import DataSet, open_dataset, source_name
from pipeline.encoder import Encoder, load_encoder
from pipeline.errors import UserError
from pipeline.lock import exclusive
from pipeline.store import EmbeddingStore, SplitLayout, default_store_path, storable_text


class _Images(Dataset):
    """Rows of all splits behind one flat index; unreadable images become (zeros, reason)."""

    def __init__(self, ds: DataSet, split_order: list[str], transform, input_size: tuple[int, ...]):
        self.ds, self.transform = ds, transform
        self.rows = [(s, i) for s in split_order for i in range(len(ds.splits[s]))]
        self.blank = torch.zeros(input_size)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, flat: int):
        split, row = self.rows[flat]
        image_id = self.ds.splits[split].ids[row]
        try:
            return self.transform(self.ds.read_image(image_id)), flat, ""
        except Exception as e:  # any decoder failure is a property of the file, recorded not fatal
            reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            return self.blank, flat, reason


def store_path_for(cfg: EmbedConfig) -> Path:
    """Where the store of this config lives (``--out``, else named after data set and model)."""
    return Path(cfg.out) if cfg.out else default_store_path(cfg.embeddings_dir,
                                                            source_name(cfg.data), cfg.model)


def prepare(cfg: EmbedConfig) -> tuple[DataSet, Encoder]:
    """Resolve the data source and build the encoder (the two inputs of a store's identity)."""
    ds = open_dataset(cfg.data, seed=cfg.split_seed, test_fraction=cfg.test_fraction, limit=cfg.limit)
    encoder = load_encoder(cfg.model, cfg.weights, image_size=cfg.image_size, device=cfg.device)
    return ds, encoder


def store_identity(ds: DataSet, encoder: Encoder) -> dict[str, Any]:
    """What must match for a rerun to continue a store instead of refusing it."""
    enc = encoder.identity()
    return {"encoder": {k: enc[k] for k in ("model", "weights_sha256", "preprocessing")},
            "data_fingerprint": ds.fingerprint}


def run_embed(cfg: EmbedConfig, *, stop_after_chunks: int | None = None) -> dict[str, Any]:
    """Embed every unfinished chunk of every split; returns the run summary.

    ``stop_after_chunks`` ends the run early after that many chunks (a stand-in for a kill, for
    tests and the kill harness).
    """
    if cfg.chunk_size < 1 or cfg.batch_size < 1:
        raise UserError(f"--chunk-size {cfg.chunk_size} and --batch-size {cfg.batch_size} "
                        f"must be positive")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    path = store_path_for(cfg)
    with exclusive(path):
        return _embed(cfg, path, stop_after_chunks)


def _embed(cfg: EmbedConfig, path: Path, stop_after_chunks: int | None) -> dict[str, Any]:
    ds, encoder = prepare(cfg)
    store = EmbeddingStore.open_for_writing(
        path, identity=store_identity(ds, encoder),
        attrs={"dataset": {"spec": ds.spec, "name": ds.name, "root": ds.root,
                           "class_names": list(ds.class_names), "fingerprint": ds.fingerprint,
                           "sizes": {k: len(v) for k, v in ds.splits.items()}},
               "encoder": encoder.identity(), "config": cfg.to_dict(),
               "batch_size": cfg.batch_size},
        splits={k: SplitLayout(labels=v.labels, ids=v.ids) for k, v in ds.splits.items()},
        feature_dim=encoder.feature_dim, chunk_size=cfg.chunk_size, overwrite=cfg.overwrite)
    # Batches are cut inside chunks with the batch size the store was created with, so a resumed
    # chunk is computed exactly as in an uninterrupted run (batch shape can change float results).
    batch_size = int(store.attrs.get("batch_size", cfg.batch_size))

    images = _Images(ds, store.splits, encoder.transform, tuple(encoder.data_config["input_size"]))
    offsets, total = {}, 0
    for s in store.splits:  # the flat index of images.rows
        offsets[s], total = total, total + len(ds.splits[s])
    todo = [(s, int(c)) for s in store.splits for c in np.flatnonzero(~store.done_chunks(s))]
    if stop_after_chunks is not None:
        todo = todo[:stop_after_chunks]
    batches, batch_chunk, chunk_len = [], [], {}
    for s, c in todo:
        rows = store.chunk_slice(s, c)
        chunk_len[s, c] = rows.stop - rows.start
        for start in range(rows.start, rows.stop, batch_size):
            batches.append(list(range(offsets[s] + start, offsets[s] + min(start + batch_size, rows.stop))))
            batch_chunk.append((s, c))

    n_images = sum(len(b) for b in batches)
    failures: list[tuple[str, str]] = []
    started = time.perf_counter()
    loader = DataLoader(images, batch_sampler=batches, num_workers=cfg.workers,
                        collate_fn=_collate, persistent_workers=False)
    current, parts = None, []
    with tqdm(total=n_images, unit="img", desc=f"embed {path.name}", dynamic_ncols=True) as bar:
        for (x, flat, errors), key in zip(loader, batch_chunk):
            if key != current:
                current, parts = key, []
            feats = encoder.embed(x)
            bad = errors != ""
            feats[bad] = 0.0  # a placeholder image's features are meaningless
            for f in np.flatnonzero(bad):
                split, row = images.rows[flat[f]]
                failures.append((str(ds.splits[split].ids[row]), str(errors[f])))
                if cfg.strict:
                    raise UserError(f"{Path(ds.root) / failures[-1][0]}: {errors[f]} (--strict stops "
                                    f"at the first unreadable image; without it, it is recorded "
                                    f"and skipped)")
            parts.append((feats, errors))
            if sum(len(p[0]) for p in parts) == chunk_len[key]:
                try:
                    store.write_chunk(key[0], key[1], np.concatenate([p[0] for p in parts]),
                                      np.concatenate([p[1] for p in parts]))
                except OSError as e:
                    raise UserError(f"{path}: writing chunk {key[1]} of {key[0]!r} failed "
                                    f"({e.strerror or e}); free space or fix the disk, then rerun: "
                                    f"finished chunks are kept") from None
            bar.update(len(flat))
            bar.set_postfix(failures=len(failures))
    seconds = time.perf_counter() - started
    summary = {"store": str(path), "images": n_images, "seconds": round(seconds, 3),
               "images_per_s": round(n_images / seconds, 2) if seconds > 0 and n_images else 0.0,
               "failures": len(failures), "failed": failures[:100],
               "complete": store.is_complete()}
    store.record_run(summary)
    return summary


def _collate(items):
    x = torch.stack([i[0] for i in items])
    return x, np.array([i[1] for i in items]), np.array([i[2] for i in items], dtype=object).astype(str)


def print_summary(summary: dict[str, Any]) -> None:
    state = "complete" if summary["complete"] else "incomplete (rerun to continue)"
    print(f"embedded {summary['images']} images in {summary['seconds']:.1f} s "
          f"({summary['images_per_s']:.1f} images/s), {summary['failures']} failures; "
          f"store {summary['store']} is {state}")
    for line in storable_text([f"{p}: {r}" for p, r in summary["failed"][:10]]):
        print(f"  skipped {line}")
