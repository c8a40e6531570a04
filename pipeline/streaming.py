"""Stage two's view of a store: finished rows streamed a chunk at a time, and the coding level.

Memory stays flat as the data grows: one chunk of features (rows x D float32), labels and skip
reasons is in memory at a time. In-memory arrays (the scikit-learn estimator) stream through the
same functions: :func:`array_batches` cuts them as a store's chunks, and the coding levels and
means take any array or stream of batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import dask.array as da
import numba
import numpy as np

from pipeline.config import EmbedConfig
from pipeline.errors import UserError
from pipeline.store import FEATURE_LIMIT, EmbeddingStore

SAT_BINS = 1 << 16  # histogram resolution of the saturation percentile (max / 65536)
FEATURE_SAT_BINS = 1 << 10  # per-feature resolution (max_j / 1024): D x 1024 counts in memory
#: Rows per stretch of in-memory data (:func:`array_batches`): a store's default chunk size, so
#: arrays stream in the stretches of a store written with the defaults.
ARRAY_CHUNK_ROWS = EmbedConfig.chunk_size


@dataclass(frozen=True)
class Batch:
    """Usable rows of one stretch of a split."""

    features: np.ndarray  # (n, D) float32
    labels: np.ndarray  # (n,) int64
    sample_id: np.ndarray  # (n,) int64 unique in the store (split offset + row): the RNG key
    stop: int  # the split row after this stretch: the cursor once it is consumed


def split_offset(store: EmbeddingStore, split: str) -> int:
    """Rows of the splits stored before ``split`` (train, val, test order): ids never collide."""
    offset = 0
    for name in store.splits:
        if name == split:
            return offset
        offset += store.split(name)["features"].shape[0]
    raise UserError(f"{store.path}: has no split {split!r}")


def require_complete(store: EmbeddingStore, split: str, start: int = 0,
                     stop: int | None = None) -> None:
    """Refuse a split whose chunks holding rows ``start:stop`` are not all embedded, or whose
    finished chunks lack their file (a missing chunk would read as rows of zeros). Only the flags
    of those chunks and one listing of keys are read."""
    rows = store.chunk_rows(split)
    last = None if stop is None else -(-stop // rows)
    done = store.done_chunks(split, slice(start // rows, last))
    if not done.all():
        raise UserError(f"{store.path}: split {split!r} has {int((~done).sum())} chunk(s) not "
                        f"embedded yet; finish it with `annsnn embed` (it resumes)")
    damaged = store.chunk_problems(split, chunks=slice(start // rows, last))
    if damaged:
        c, why = min(damaged.items())
        raise UserError(f"{store.path}: split {split!r} chunk {c} is damaged ({why}"
                        f"{f'; {len(damaged) - 1} more' if len(damaged) > 1 else ''}); rerun "
                        f"`annsnn embed` with the store's options to embed it again")


def check_split(store: EmbeddingStore, split: str, *, needs_positive: bool = False) -> int:
    """Read a whole split once before any learning or scoring: every chunk finished, present and
    decodable, every usable feature finite, at least one usable row (and, for the train split
    that is learned from, ``needs_positive``: two classes and one positive feature). Returns the
    usable row count; refusals name split, chunk or row.
    """
    n_usable, top, classes = 0, -np.inf, set()
    first, varied = None, False  # whether two usable rows differ
    for batch in iter_batches(store, split):
        n_usable += len(batch.labels)
        classes.update(np.unique(batch.labels).tolist())
        if len(batch.labels):
            top = max(top, float(batch.features.max()))
            first = batch.features[0] if first is None else first
            varied = varied or bool((batch.features != first).any())
    if n_usable == 0:
        n = store.split(split)["features"].shape[0]
        raise UserError(f"{store.path}: split {split!r} has no usable rows ({n} rows, every image "
                        f"failed to embed; `annsnn inspect` lists why)")
    if needs_positive and len(classes) < 2:  # the split learned from: a classifier needs two
        name = store.class_names[classes.pop()]
        raise UserError(f"{store.path}: split {split!r} holds usable rows of one class only "
                        f"({name!r}); a classifier needs at least two: embed more images (a "
                        f"larger --limit)")
    if needs_positive and top <= 0:
        raise UserError(f"{store.path}: split {split!r} has no positive feature (largest {top:g}); "
                        f"the rate coder turns positive activations into spikes: check the encoder "
                        f"and its weights")
    if needs_positive and not varied:
        raise UserError(f"{store.path}: split {split!r}: every usable row holds the same features, "
                        f"so nothing tells the classes apart; check the encoder and its weights, "
                        f"or the imported features")
    return n_usable


def iter_batches(store: EmbeddingStore, split: str, start: int = 0,
                 max_rows: int | None = None, stop: int | None = None) -> Iterator[Batch]:
    """Finished, finite rows ``start:stop`` of ``split``, one stored chunk (or less) at a time.

    ``max_rows`` cuts chunks into smaller stretches (e.g. to checkpoint every N samples).
    Rows whose image was skipped are left out. Non-finite features are refused.
    """
    require_complete(store, split, start, stop)
    # Read with zarr in this process: a stretch is at most one chunk, and a dask compute would run
    # on a cluster's workers whenever a distributed client is active.
    group = store.split(split)
    features, labels, errors = group["features"], group["labels"], group["errors"]
    rows = store.chunk_rows(split)
    n = features.shape[0] if stop is None else min(stop, features.shape[0])
    offset = split_offset(store, split)
    n_classes = len(store.class_names)
    for pos, stop in stretches(start, n, rows, max_rows):
        try:
            keep = np.flatnonzero(np.asarray(errors[pos:stop]) == "")  # all chunks are done
            x = np.asarray(features[pos:stop])[keep]
            y = np.asarray(labels[pos:stop])[keep].astype(np.int64)
        except Exception as e:  # a codec or I/O failure: this chunk's files are damaged
            raise undecodable(store.path, split, pos // rows, e) from None
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            bad = pos + keep[np.flatnonzero((y < 0) | (y >= n_classes))[0]]
            # -1 is the labels array's fill value: what a row reads when its chunk file is gone
            gone = (f" (-1: the file {labels.path}/{labels.metadata.encode_chunk_key((bad // rows,))} "
                    f"is missing)" if labels[bad] == -1 else "")
            raise UserError(f"{store.path}: split {split!r} row {bad} has a label outside the "
                            f"{n_classes} classes{gone}; the store is damaged: rebuild it with "
                            f"--overwrite")
        if not np.isfinite(x).all():
            bad = pos + keep[np.flatnonzero(~np.isfinite(x).all(axis=1))[0]]
            raise UserError(f"{store.path}: split {split!r} row {bad} holds NaN or infinite "
                            f"features; re-embed it (annsnn embed --overwrite)")
        if len(x) and np.abs(x).max() > FEATURE_LIMIT:
            row = np.flatnonzero((np.abs(x) > FEATURE_LIMIT).any(axis=1))[0]
            raise UserError(f"{store.path}: split {split!r} row {pos + keep[row]} holds a feature "
                            f"of {float(np.abs(x[row]).max()):g}, beyond the {FEATURE_LIMIT:g} "
                            f"that is read as an embedding; check how the features were made "
                            f"(scaled by mistake?) and rebuild the store")
        yield Batch(features=x, labels=y, sample_id=(offset + pos + keep).astype(np.int64), stop=stop)


def undecodable(path: str, split: str, chunk: int, e: Exception) -> UserError:
    """The refusal of a stored chunk that fails to decode (its files are damaged)."""
    return UserError(f"{path}: split {split!r} chunk {chunk} cannot be decoded "
                     f"({type(e).__name__}); rerun `annsnn embed --verify` with the store's "
                     f"options to embed it again")


def stretches(start: int, n: int, chunk_rows: int, max_rows: int | None = None
              ) -> Iterator[tuple[int, int]]:
    """The row ranges ``(pos, stop)`` that cover rows ``start:n`` a stretch at a time: at most
    ``max_rows`` rows each (when given), never crossing a multiple of ``chunk_rows`` (a stored
    chunk). A resumed stream cuts the same stretches as an uninterrupted one past its cursor."""
    step = min(chunk_rows, max_rows) if max_rows else chunk_rows
    pos = start
    while pos < n:
        stop = min(n, (pos // chunk_rows + 1) * chunk_rows, pos + step)
        yield pos, stop
        pos = stop


def array_batches(features: np.ndarray, labels: np.ndarray, start: int = 0, *, first_id: int = 0
                  ) -> Iterator[Batch]:
    """Rows ``start:`` of in-memory arrays as :func:`iter_batches` streams a store's split: the
    same stretches as a store chunked by :data:`ARRAY_CHUNK_ROWS` rows (the default chunk size),
    row ``i`` with sample id ``first_id + i`` (a train split: ``first_id`` 0). Every row is
    usable (nothing was skipped) and finite (the caller checked)."""
    for pos, stop in stretches(start, len(features), ARRAY_CHUNK_ROWS):
        yield Batch(features=features[pos:stop], labels=labels[pos:stop],
                    sample_id=np.arange(first_id + pos, first_id + stop, dtype=np.int64), stop=stop)


def read_rows(store: EmbeddingStore, split: str, start: int = 0,
              stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Usable rows ``start:stop`` of a split in memory, ``(features, labels)``: for the
    baselines, which need the whole matrix (the SNN itself streams)."""
    parts = list(iter_batches(store, split, start=start, stop=stop))
    return np.concatenate([b.features for b in parts]), np.concatenate([b.labels for b in parts])


def class_counts(store: EmbeddingStore, split: str, stop: int | None = None) -> np.ndarray:
    """Usable rows of each class among rows ``:stop`` of a split, int64 (C,); only labels and
    skip reasons are read, never features."""
    usable = store.finished_rows(split)[:stop]
    labels = np.asarray(store.split(split)["labels"][:len(usable)], dtype=np.int64)[usable]
    return np.bincount(labels[(labels >= 0) & (labels < len(store.class_names))],
                       minlength=len(store.class_names)).astype(np.int64)


def feature_moments(batches: Iterable[Batch], where: str, *, transform=None,
                    covariance: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-feature mean of the rows of ``batches`` (a split's usable rows as :func:`iter_batches`
    streams them, or :func:`array_batches`), each batch's features through ``transform`` first
    when given; with ``covariance`` also their (D, D) covariance (float64, ``n - 1`` in the
    denominator; zero for one row), else None. Summed a stretch at a time in order in float64
    (deterministic for the same stretches); the mean float32 (D,). ``where`` names the rows in a
    refusal."""
    total = square = None
    n = 0
    for batch in batches:
        x = (batch.features if transform is None else transform(batch.features)).astype(np.float64)
        total = x.sum(axis=0) if total is None else total + x.sum(axis=0)
        if covariance:
            square = x.T @ x if square is None else square + x.T @ x
        n += len(batch.labels)
    if total is None or n == 0:
        raise UserError(f"{where} has no usable rows to centre the features on")
    mean = total / n
    if not covariance:
        return mean.astype(np.float32), None
    # One row has no spread: a zero covariance, which the whitening map shrinks to the identity.
    return mean.astype(np.float32), (square - n * np.outer(mean, mean)) / max(n - 1, 1)


#: A feature whose train variance is at most this share of the largest is constant: no spread.
DEAD_SPREAD = 1e-12


def zca_map(cov: np.ndarray, shrinkage: float) -> np.ndarray:
    """The whitening map ``W = S^(-1/2)`` of the shrunk covariance ``S = (1 - a) cov + a
    tr(cov)/D I`` (``a = shrinkage`` in (0, 1]; ZCA: ``W`` is symmetric, so a whitened feature
    stays tied to its own feature), float32 (D, D). The identity's share keeps ``S`` invertible
    when the train split has fewer rows than features. One BLAS thread, so the map is the same
    whatever the machine's thread count. Features constant on the train split (variance at most
    :data:`DEAD_SPREAD` of the largest) are left out: their rows and columns of ``W`` are 0 and
    ``S`` is the covariance of the others."""
    from threadpoolctl import threadpool_limits

    # A feature constant on the train split (a ReLU unit never active: 116 of digits' 1,280)
    # carries nothing; left in, the map gives it a large gain on its rounding residue (1e-16),
    # the coder a level to match, and it spiked at full rate on noise. Its row and column of
    # the map are zero: its input is 0, never spikes, and no other input mixes it in.
    spread = np.diag(cov)
    live = np.flatnonzero(spread > DEAD_SPREAD * float(spread.max(initial=0.0)))
    if len(live) == 0:  # no feature varies (one row): the shrinkage alone, the identity
        live = np.arange(len(spread))
    live_cov = cov if len(live) == len(spread) else cov[np.ix_(live, live)]
    d = live_cov.shape[0]
    level = float(np.trace(live_cov)) / d if d else 0.0
    shrunk = (1.0 - shrinkage) * live_cov + shrinkage * (level if level > 0 else 1.0) * np.eye(d)
    with threadpool_limits(1):
        values, vectors = np.linalg.eigh(shrunk)
        live_map = ((vectors / np.sqrt(np.maximum(values, values.max(initial=0.0) * 1e-12)))
                    @ vectors.T).astype(np.float32)
    if len(live) == len(spread):
        return live_map
    whole = np.zeros(cov.shape, np.float32)
    whole[np.ix_(live, live)] = live_map
    return whole


#: Inputs a view's rotation mixes together: each view rotates seeded random groups of this many
#: whitened inputs (a block-diagonal rotation after a seeded permutation), so that a view costs
#: ``D * VIEW_BLOCK`` multiply-adds a row, not the ``D * D`` of a dense rotation.
VIEW_BLOCK = 32


def view_rotations(n_inputs: int, views: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded rotations of views ``1 .. views - 1`` (view 0 is the whitened inputs
    themselves): ``order`` (views - 1, D) int32, a permutation of the inputs per view, and
    ``blocks`` (views - 1, ceil(D / b), b, b) float32, ``b =`` :data:`VIEW_BLOCK`. View ``v``
    rotates the inputs ``order[v - 1, i b : (i + 1) b]`` together by block ``i``, the Q of the QR
    decomposition of a Gaussian matrix with its columns' signs fixed by R's diagonal (uniform
    over the rotations); a last, shorter group uses the top-left corner of its block, the rest
    zero. One BLAS thread, as :func:`zca_map`."""
    from threadpoolctl import threadpool_limits

    b = VIEW_BLOCK
    n_blocks = -(-n_inputs // b)
    order = np.empty((max(views - 1, 0), n_inputs), np.int32)
    blocks = np.zeros((max(views - 1, 0), n_blocks, b, b), np.float32)
    with threadpool_limits(1):
        for v in range(1, views):
            rng = np.random.default_rng([seed, v, 0x76696577])  # "view"
            order[v - 1] = rng.permutation(n_inputs)
            for i in range(n_blocks):
                k = min(b, n_inputs - i * b)
                q, r = np.linalg.qr(rng.standard_normal((k, k)))
                blocks[v - 1, i, :k, :k] = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    return order, blocks


@numba.njit(parallel=True, cache=True)
def _rotate_views(z, order, blocks):  # pragma: no cover - compiled
    n, d = z.shape
    b = blocks.shape[2]
    out = np.empty((n, (order.shape[0] + 1) * d), np.float32)
    for i in numba.prange(n):
        part = np.empty(b, np.float64)
        for j in range(d):
            out[i, j] = z[i, j]
        for v in range(order.shape[0]):
            base = (v + 1) * d
            for block in range(blocks.shape[1]):
                lo = block * b
                k = min(b, d - lo)
                for c in range(k):
                    part[c] = 0.0
                for a in range(k):
                    x = np.float64(z[i, order[v, lo + a]])
                    if x != 0.0:
                        for c in range(k):
                            part[c] += x * blocks[v, block, a, c]
                for c in range(k):
                    out[i, base + order[v, lo + c]] = part[c]
    return out


def rotate_views(z, order: np.ndarray, blocks: np.ndarray):
    """Every view of the whitened inputs ``z`` (N, D) side by side, (N, views D) float32: view 0
    is ``z``, view ``v`` is ``z R_v`` with ``R_v`` the block rotation of :func:`view_rotations`
    (``(z R_v)[o_c] = sum_a z[o_a] Q[a, c]`` over each group ``o`` of ``order[v - 1]`` and its
    block ``Q``). Sums in float64 in a fixed order, row by row, so a row's inputs are the same
    bits whatever rows share its batch and whatever the thread count (as :func:`decorrelate`)."""
    if isinstance(z, da.Array):
        width = (order.shape[0] + 1) * z.shape[1]
        return z.rechunk({1: -1}).map_blocks(rotate_views, order, blocks, dtype=np.float32,
                                             chunks=(z.chunks[0], (width,)))
    return _rotate_views(np.ascontiguousarray(z, dtype=np.float32),
                         np.ascontiguousarray(order, dtype=np.int32),
                         np.ascontiguousarray(blocks, dtype=np.float32))


def signed_sqrt(x):
    """``sign(x) sqrt(|x|)``: the power step of the whitened coding (numpy or dask)."""
    return np.sign(x) * np.sqrt(np.abs(x))


@numba.njit(parallel=True, cache=True)
def _decorrelate(x, centre, whiten):  # pragma: no cover - compiled
    out = np.empty((x.shape[0], whiten.shape[1]), np.float32)
    for i in numba.prange(x.shape[0]):
        acc = np.zeros(whiten.shape[1], np.float64)
        for j in range(x.shape[1]):
            v = np.float64(x[i, j]) - np.float64(centre[j])
            if v != 0.0:
                for k in range(whiten.shape[1]):
                    acc[k] += v * whiten[j, k]
        for k in range(whiten.shape[1]):
            out[i, k] = acc[k]
    return out


def decorrelate(x, centre: np.ndarray, whiten: np.ndarray):
    """``(x - centre) whiten`` row by row (numpy (N, D) or dask), float32. Each output sums its
    terms in feature order in float64, so a row's value is the same whatever rows share its batch
    and whatever the thread count (a BLAS product would not promise that)."""
    if isinstance(x, da.Array):
        return x.rechunk({1: -1}).map_blocks(decorrelate, centre, whiten, dtype=np.float32,
                                             chunks=(x.chunks[0], (whiten.shape[1],)))
    return _decorrelate(np.ascontiguousarray(x, dtype=np.float32), centre,
                        np.ascontiguousarray(whiten, dtype=np.float32))


def _blocks(x) -> da.Array:
    """``x`` as a dask array whose blocks are rows of every column: an in-memory array cut every
    :data:`ARRAY_CHUNK_ROWS` rows; a dask array's column blocks joined (the on/off inputs
    concatenate two halves along the columns, and each block's columns must be all of them).
    The levels do not depend on how the rows are cut."""
    if not isinstance(x, da.Array):
        return da.from_array(np.asarray(x), chunks=(ARRAY_CHUNK_ROWS, -1))
    return x.rechunk({1: -1})


def _check_percentile(percentile: float) -> None:
    if not 0.0 < percentile <= 100.0:
        raise UserError(f"--sat-percentile {percentile} must lie in (0, 100]")


def saturation_level(x, percentile: float, where: str = "the features") -> float:
    """``sat``: the ``percentile`` of the positive values of ``x`` (N, D), the coder's inputs: a
    store's features (``store.features(split)``, lazy), a transform of them, or an in-memory
    array.

    Two streaming passes with dask (max, then a 65,536-bin histogram of the positive values), so
    the answer is deterministic and exact to max/65536 whatever the data size and blocks.
    """
    _check_percentile(percentile)
    x = _blocks(x)
    top = float(x.max().compute())
    if not np.isfinite(top) or top <= 0.0:
        raise UserError(f"{where} has no positive finite feature (max {top}); the rate coder "
                        f"needs positive activations")
    edges = np.linspace(0.0, top, SAT_BINS + 1)
    edges[0] = np.nextafter(np.float32(0), np.float32(1))  # positive values only
    counts, _ = da.histogram(x, bins=edges)
    cum = np.cumsum(counts.compute())
    target = percentile / 100.0 * cum[-1]
    b = int(np.searchsorted(cum, target))
    below = cum[b - 1] if b else 0
    frac = (target - below) / max(cum[b] - below, 1)
    return float(edges[b] + frac * (edges[b + 1] - edges[b])) if b else float(frac * edges[1])


def feature_saturation_levels(x, percentile: float) -> np.ndarray:
    """Per-feature ``sat_j``: the ``percentile`` of column j's positive values in ``x`` (N, D), as
    :func:`saturation_level` takes it.

    Streaming (one block of rows at a time, a D x 1024 histogram), deterministic, exact to
    max_j / 1024. A feature that is never positive gets ``inf`` (it never spikes).
    """
    _check_percentile(percentile)
    x = _blocks(x)
    top = np.asarray(x.max(axis=0).compute(), dtype=np.float64)
    scale = np.where(top > 0, FEATURE_SAT_BINS / np.where(top > 0, top, 1), 0)
    counts = np.zeros((len(top), FEATURE_SAT_BINS), np.int64)
    for block in x.to_delayed().ravel():
        _count_positive_bins(np.ascontiguousarray(block.compute().T, dtype=np.float64), scale,
                             counts)
    cum = np.cumsum(counts, axis=1)
    target = percentile / 100.0 * cum[:, -1]
    # The bin that holds each column's target, and the share of that bin below it (a column
    # with no positive value gets inf below: it never spikes).
    b = (cum < target[:, None]).sum(axis=1)  # np.searchsorted(cum[j], target[j]) per row
    at = np.minimum(b, FEATURE_SAT_BINS - 1)
    below = np.where(b > 0, np.take_along_axis(cum, np.maximum(b - 1, 0)[:, None], 1)[:, 0], 0)
    inside = np.take_along_axis(cum, at[:, None], 1)[:, 0] - below
    frac = (target - below) / np.maximum(inside, 1)
    levels = np.where(cum[:, -1] > 0, (b + frac) * top / FEATURE_SAT_BINS, np.inf)
    return np.where(levels > 0, levels, np.inf)


@numba.njit(parallel=True, cache=True)
def _count_positive_bins(columns, scale, counts):  # pragma: no cover - compiled
    """Adds each positive value of ``columns`` (D, rows: a block transposed, so that a column's
    values and its histogram row stay in cache) to its column's histogram ``counts`` (D, bins):
    bin ``min(floor(v scale_j), bins - 1)``, all in float64 (any input dtype is cast first, as
    NumPy's float64 arithmetic would). Integer counts, one column a thread: the same whatever the
    blocks, their order or the thread count."""
    last = counts.shape[1] - 1
    for j in numba.prange(columns.shape[0]):
        for i in range(columns.shape[1]):
            v = columns[j, i]
            if v > 0.0:
                counts[j, min(np.int64(v * scale[j]), last)] += 1


def coding_levels(x, percentile: float, scope: str = "global", where: str = "the features"
                  ) -> float | np.ndarray:
    """The coder's ``sat`` for its inputs ``x`` (N, D): one level (``scope="global"``) or one per
    input (``"feature"``). ``x``: a dask array (a store's features, or a transform of them:
    streamed) or an in-memory array; ``where`` names it in a refusal."""
    if scope == "global":
        return saturation_level(x, percentile, where)
    if scope == "feature":
        return feature_saturation_levels(x, percentile)
    raise UserError(f"--sat-scope {scope!r} must be 'global' or 'feature'")
