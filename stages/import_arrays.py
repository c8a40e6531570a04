"""`annsnn import`: a store from embeddings made elsewhere (an ``.npz`` of arrays).

The file holds ``X_<split>`` (N, D) and ``y_<split>`` (N,) for splits among train/val/test, and
``classes`` (C,) names. Rows are stored in a seeded random order, as every source's are: the file
may be sorted by class, and CoLaNET learns online in store order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data import SPLIT_NAMES
from pipeline.errors import UserError
from pipeline.store import EmbeddingStore, is_url, location, write_arrays


def import_npz(path: str | Path, *, model: str, out: str | Path | None = None,
               embeddings_dir: str = "data/embeddings", split_seed: int = 0,
               chunk_size: int = 256, overwrite: bool = False) -> EmbeddingStore:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; `annsnn import` needs an .npz of X_<split>, "
                        f"y_<split> and classes")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: not a readable .npz of plain arrays ({type(e).__name__})") from None
    splits = {}
    for s in SPLIT_NAMES:
        if f"X_{s}" in arrays or f"y_{s}" in arrays:
            if f"X_{s}" not in arrays or f"y_{s}" not in arrays:
                raise UserError(f"{path}: has only one of X_{s} and y_{s}; both are needed")
            x, y = arrays[f"X_{s}"].astype(np.float32), arrays[f"y_{s}"].astype(np.int64)
            order = np.random.default_rng(split_seed).permutation(len(y))
            splits[s] = (x[order], y[order])
    if "train" not in splits or "classes" not in arrays:
        raise UserError(f"{path}: needs X_train, y_train and classes (found {sorted(arrays)})")
    out = location(out) if out else str(Path(embeddings_dir) / f"{path.stem}.zarr")
    if not is_url(out):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    return write_arrays(out, splits, [str(c) for c in arrays["classes"]],
                        encoder={"model": model, "weights": f"imported from {path.name}"},
                        source=f"npz:{path.name}:seed{split_seed}", chunk_size=chunk_size,
                        overwrite=overwrite)
