"""Checkpoints: the whole resumable state of a stage-two run in one ``.npz`` (no pickle).

Arrays are the model state (resources, weights, neuron state, counters) plus the run's own arrays
(the online pass's per-sample results); ``meta`` is one JSON string: the resolved config, ``sat``,
the cursor and the identity of the store it was trained on. Written to a temporary file in the same
folder, flushed, then renamed over the old one, so a kill leaves either the old or the new file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError


def save_checkpoint(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "meta" in arrays:
        raise ValueError("'meta' is reserved for the JSON metadata")
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint; anything but plain arrays (e.g. pickled objects) is refused."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e}); delete it "
                        f"to start the run afresh") from None
    if "meta" not in arrays:
        raise UserError(f"{path}: checkpoint has no metadata; delete it to start afresh")
    return arrays, json.loads(str(arrays.pop("meta")))
