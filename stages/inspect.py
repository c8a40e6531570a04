"""`annsnn inspect`: what a store holds, read with plain zarr and dask (no encoder needed)."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np

from pipeline.arrays import import_npz
from pipeline.config import EmbedConfig, ImportConfig, InspectConfig
from pipeline.errors import UserError
from pipeline.lock import shared
from pipeline.store import EmbeddingStore
from pipeline.tables import format_table

PERCENTILES = (1, 50, 99)


def main(args, config, data_given: bool) -> None:
    store, embed = config(InspectConfig).store, config(EmbedConfig)
    if store and embed.out:  # (--data with --store: make inspect always passes DATA)
        raise UserError(f"--store {store} and --out {embed.out}: both name the store to inspect; "
                        f"give one of them")
    print(describe(store or embed.store_path()))


def main_import(args, config, data_given: bool) -> None:
    """`annsnn import`: make the store, then say what it holds."""
    print(describe(import_npz(args.npz, config(ImportConfig)).path))


def describe(path: str | Path) -> str:
    """A human-readable report of a store: metadata, splits, completion, damage, classes,
    statistics. Read under the store's shared lock: no writer changes it meanwhile."""
    with shared(path):
        return _describe(path)


def _describe(path: str | Path) -> str:
    store = EmbeddingStore.open(path)
    a = store.attrs
    enc, data = a["encoder"], a["dataset"]
    pre = enc["preprocessing"]
    lines = [
        f"store     {path}",
        f"encoder   {enc['model']}  weights={enc['weights']}  sha256={enc['weights_sha256'][:16]}  "
        f"dim={enc['feature_dim']}",
        "preproc   " + ("  ".join(f"{k}={v}" for k, v in pre.items()) or "(imported features)"),
        f"data      {data['spec']}  classes={len(data['class_names'])}  "
        f"fingerprint={data['fingerprint'][:16]}",
        "versions  " + "  ".join(f"{k}={v}" for k, v in a["versions"].items()),
        *([f"compute   batch_size={a['batch_size']}  torch_threads={a['threads']}  (every chunk "
           f"is embedded with these)"] if "threads" in a else []),
        "",
        f"{'split':<6} {'rows':>7} {'dim':>5} {'dtype':<8} {'chunk':>10} {'done':>9} {'failures':>8} "
        f"{'damaged':>7}",
    ]
    stats, damage = [], []
    for s in store.splits:
        g = store.split(s)
        f = g["features"]
        done = store.done_chunks(s)
        usable = store.finished_rows(s)
        problems = store.chunk_problems(s, decode=True)
        for c, why in sorted(problems.items()):
            usable[store.chunk_slice(s, c)] = False
            damage.append(f"  {s} chunk {c}: {why}")
        n_done = sum(store.chunk_slice(s, c).stop - store.chunk_slice(s, c).start
                     for c in np.flatnonzero(done))
        n_failed = n_done - int(usable.sum()) - sum(
            store.chunk_slice(s, c).stop - store.chunk_slice(s, c).start for c in problems)
        lines.append(f"{s:<6} {f.shape[0]:>7} {f.shape[1]:>5} {str(f.dtype):<8} "
                     f"{f.chunks[0]:>5}x{f.chunks[1]:<4} {int(done.sum()):>4}/{len(done):<4} "
                     f"{n_failed:>8} {len(problems):>7}")
        try:
            labels = np.asarray(g["labels"][:])
        except Exception as e:  # damaged label chunks: the counts are unknown, the rest is shown
            damage.append(f"  {s} labels: cannot be decoded ({type(e).__name__})")
            labels = np.zeros(0, np.int64)
        counts = np.bincount(labels[labels >= 0], minlength=len(data["class_names"]))
        features = store.features(s)
        intact = [features[store.chunk_slice(s, c)][usable[store.chunk_slice(s, c)]]
                  for c in np.flatnonzero(done) if c not in problems]  # damaged blocks never read
        stats.append((s, usable, counts, da.concatenate(intact) if intact else None))
    if damage:
        lines += ["", "damaged chunks (flagged done, data missing or unreadable; never trained on; "
                      "`annsnn embed` with the store's options embeds them again, `--verify` finds "
                      "unreadable ones)", *damage]
    counts = format_table(["class", *(s for s, *_ in stats)],
                          [[name, *(c[k] for _, _, c, _ in stats)]
                           for k, name in enumerate(data["class_names"])])
    lines += ["", "class counts (all rows)", *("  " + line for line in counts)]
    lines += ["", "feature statistics (finished rows; percentiles merged per chunk by dask)",
              f"  {'split':<6} {'rows':>7} {'zeros':>7} " + "".join(f"{'p' + str(p):>9}" for p in PERCENTILES)
              + f"{'max':>9}{'mean':>9}"]
    for s, usable, _, x in stats:
        if x is None or not usable.any():
            lines.append(f"  {s:<6} {0:>7}  (nothing embedded yet)")
            continue
        zeros, mx, mean, pct = da.compute((x == 0).mean(), x.max(), x.mean(),
                                          da.percentile(x.ravel(), list(PERCENTILES)))
        lines.append(f"  {s:<6} {int(usable.sum()):>7} {float(zeros):>7.3f} "
                     + "".join(f"{v:>9.4f}" for v in pct) + f"{float(mx):>9.4f}{float(mean):>9.4f}")
    run = a.get("last_run")
    if run:
        lines += ["", f"last run  {run['images']} images in {run['seconds']} s "
                      f"({run['images_per_s']} images/s), {run['failures']} failures"]
    return "\n".join(lines)
