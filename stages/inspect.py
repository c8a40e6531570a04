"""`annsnn inspect`: what a store holds, read with plain zarr and dask (no encoder needed)."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np

from pipeline.store import EmbeddingStore

PERCENTILES = (1, 50, 99)


def describe(path: str | Path) -> str:
    """A human-readable report of a store: metadata, splits, completion, classes, statistics."""
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
        f"{'split':<6} {'rows':>7} {'dim':>5} {'dtype':<8} {'chunk':>10} {'done':>9} {'failures':>8}",
    ]
    stats = []
    for s in store.splits:
        g = store.split(s)
        f = g["features"]
        done = store.done_chunks(s)
        usable = store.finished_rows(s)
        n_done = sum(store.chunk_slice(s, c).stop - store.chunk_slice(s, c).start
                     for c in np.flatnonzero(done))
        n_failed = n_done - int(usable.sum())
        lines.append(f"{s:<6} {f.shape[0]:>7} {f.shape[1]:>5} {str(f.dtype):<8} "
                     f"{f.chunks[0]:>5}x{f.chunks[1]:<4} {int(done.sum()):>4}/{len(done):<4} "
                     f"{n_failed:>8}")
        labels = np.asarray(g["labels"][:])
        counts = np.bincount(labels, minlength=len(data["class_names"]))
        stats.append((s, usable, counts, store.features(s)))
    lines += ["", "class counts (all rows)",
              "  " + f"{'class':<24}" + "".join(f"{s:>8}" for s, *_ in stats)]
    for k, name in enumerate(data["class_names"]):
        lines.append(f"  {name[:24]:<24}" + "".join(f"{c[k]:>8}" for _, _, c, _ in stats))
    lines += ["", "feature statistics (finished rows; percentiles merged per chunk by dask)",
              f"  {'split':<6} {'rows':>7} {'zeros':>7} " + "".join(f"{'p' + str(p):>9}" for p in PERCENTILES)
              + f"{'max':>9}{'mean':>9}"]
    for s, usable, _, x in stats:
        if not usable.any():
            lines.append(f"  {s:<6} {0:>7}  (nothing embedded yet)")
            continue
        x = x[usable]
        zeros, mx, mean, pct = da.compute((x == 0).mean(), x.max(), x.mean(),
                                          da.percentile(x.ravel(), list(PERCENTILES)))
        lines.append(f"  {s:<6} {int(usable.sum()):>7} {float(zeros):>7.3f} "
                     + "".join(f"{v:>9.4f}" for v in pct) + f"{float(mx):>9.4f}{float(mean):>9.4f}")
    run = a.get("last_run")
    if run:
        lines += ["", f"last run  {run['images']} images in {run['seconds']} s "
                      f"({run['images_per_s']} images/s), {run['failures']} failures"]
    return "\n".join(lines)
