"""Benchmark stage two: CoLaNET training and inference throughput, its bounds, and streaming memory.

On synthetic pooled-ReLU6-like features fitted to real EfficientNet-Lite0 ones (45 % zeros, varying
from sample to sample, long-tailed; see :class:`Synthetic`), coded as train-snn codes them (the
shipped coding, measured on the train rows), at the paper's size (D 1536, C 64) with M 10, E 15
(``paper``) and with the shipped M and E (``shipped``), and at the default size (D 1280, C 10,
M 10, E 15), this one run measures:

* training samples/s and synaptic events/s of :func:`pipeline.colanet.train_chunk` (the Numba
  kernels), synaptic events = sum over samples of (input spikes, counted with ``encode_inputs``)
  x (L neurons per copy, N = C*M) x (copies E);
* the same for the NumPy reference :func:`pipeline.colanet_reference.train_chunk` on the first
  ``--ref-samples`` samples (it is slow), and again on the last ones from the state the Numba run
  had reached there; the Numba kernels are timed on exactly that work too, and their votes are
  checked against the reference's.  Figure of merit: numba / reference (target >= 100x), with
  the Numba rate of the whole ``--samples`` run (a call of a few samples also times the parallel
  region's start and loses the reuse of each copy's weights in cache across a chunk's samples, so
  the same-work rate, reported beside it, is lower);
* a row-add bound: a minimal Numba kernel that only adds the weight rows of the same input spikes
  (per sample, per presentation tick, per active input j: ``cur[k] += w[e, j, :]``, prange over
  copies), measured before and after the training run (the faster counts, so a busy moment on a
  shared machine cannot flatter the ratio).  Figure of merit: numba / bound (target >= 0.5x);
* inference samples/s of :func:`pipeline.colanet.infer_chunk` on held-out samples with the trained
  state (plus its accuracy, to show the network learnt and spikes plausibly);
* input spikes and L spikes per sample (training: every L spike, forced ones included, of one more
  chunk from the trained state; inference: the votes);
* with ``--peer PYTHON`` (a venv with brian2: ``make peer-venv``), at the paper sizes, the Brian2
  peer ``bench/peer_brian2.py`` (runtime mode, Cython, plastic and frozen, ``--peer-samples``
  samples, fed the same input spikes: view 0's, with views) in a child process: training / Brian2
  plastic (goal >= 20x) and inference / Brian2 frozen (goal >= 40x);
* peak memory (ru_maxrss) of the streaming training loop (``iter_batches`` + ``train_chunk``) over
  a synthetic store of ``--memory-rows`` sizes, each in a fresh subprocess; goal: flat (<= 1.1x).

    python bench/snn.py [--samples 1024] [--ref-samples 8] [--threads N]
                        [--sizes paper,shipped,default] [--skip-memory] [--out data/bench/snn.json]
                        [--peer .venv-peer/bin/python] [--peer-samples 1000] [--peer-winit 0,0.66]

Writes data/bench/snn.json and prints a compact table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import colanet_reference  # noqa: E402
from pipeline.streaming import array_batches  # noqa: E402
from pipeline.training import Coding  # noqa: E402
from pipeline.colanet import (ColanetConfig, copy_groups, encode_inputs, infer_chunk,  # noqa: E402
                              init_state, readout, train_chunk)

# name: (D inputs, C classes, M, E); M or E None: the shipped default (ColanetConfig)
SIZES = {"paper": (1536, 64, 10, 15), "shipped": (1536, 64, None, None),
         "default": (1280, 10, 10, 15)}
M, E = 10, 15
CHUNK = 256  # rows per train_chunk / infer_chunk call, as the store's chunks in stage two
SEED = 0
TARGET_REF, TARGET_BOUND, TARGET_MEMORY = 100.0, 0.5, 1.1
TARGET_PEER_TRAIN, TARGET_PEER_INFER = 20.0, 40.0  # x Brian2 runtime plastic / frozen
PEER = Path(__file__).resolve().parent / "peer_brian2.py"
PEER_D, PEER_C = 1536, 64  # the peer's network is the paper's size


# --- synthetic features ------------------------------------------------------------------------
class Synthetic:
    """Pooled-ReLU6-like features with class structure, fitted to real EfficientNet-Lite0 features
    (the dev stores of caltech51 and imagenette-mini; ``--real-store`` prints both side by side).

    Whether feature j of a sample of class y is 0 is a logistic draw: logit P(zero) = f_j (feature,
    N(logit 0.445, 0.45)) + c_yj (class, N(0, 1)) + s (sample, N(0, 0.6): some images switch off
    many features, others few).  A kept feature is ``mag[y, j] * Exp(1) * exp(-0.2 s)``
    (``mag`` ~ Gamma(8, 0.034): most values small, a long tail), capped at 6 (ReLU6).  Measured
    (D 1280, shipped coding): 45 % zeros (real 44-45 %), per-sample zero fraction sd 0.11 (real
    0.12-0.13), 750 +- 290 input spikes per sample (real 720 +- 210 to 760 +- 250), mean positive
    value 0.34 (real 0.33-0.34)."""

    def __init__(self, n_inputs: int, n_classes: int, seed: int = SEED):
        rng = np.random.default_rng([seed, n_inputs, n_classes])
        feature = rng.normal(np.log(0.445 / 0.555), 0.45, n_inputs)
        self.zero_logit = feature[None, :] + rng.normal(0.0, 1.0, (n_classes, n_inputs))
        self.mag = rng.gamma(8.0, 0.034, (n_classes, n_inputs))
        self.n_classes = n_classes

    def sample(self, n: int, seed: int, block: int = 2048):
        """``n`` samples (X (n, D) float32, y (n,) int64), made ``block`` rows at a time so that
        the float64 temporaries stay small."""
        x = np.empty((n, self.mag.shape[1]), np.float32)
        y = np.empty(n, np.int64)
        for i, lo in enumerate(range(0, n, block)):
            rng = np.random.default_rng([seed, i])
            yb = rng.integers(0, self.n_classes, min(block, n - lo))
            s = rng.normal(0.0, 0.6, (len(yb), 1))
            p_zero = 1.0 / (1.0 + np.exp(-(self.zero_logit[yb] + s)))
            keep = rng.random(p_zero.shape) >= p_zero
            v = self.mag[yb] * rng.exponential(1.0, keep.shape) * np.exp(-0.2 * s)
            x[lo:lo + len(yb)] = np.where(keep, np.minimum(v, 6.0), 0.0)
            y[lo:lo + len(yb)] = yb
        return x, y


def saturation(x: np.ndarray) -> float:
    """sat = 99th percentile of the positive values."""
    return float(np.percentile(x[x > 0], 99))


# --- the bound: row additions only --------------------------------------------------------------
@njit(cache=True, parallel=True)
def row_add_bound(w, ptr, idx, n_ticks, sink, starts):
    """For each copy (prange), sample, presentation tick and active input j of the copy's view
    (CSR ``ptr``/``idx`` over the (sample, tick) pairs, in that order, of the coded inputs; copy
    e's view is ``starts[e] .. starts[e] + D - 1``, found by bisection since j ascends):
    ``cur[k, :] += w[e, j - starts[e], :]`` into a float64 per-tick buffer zeroed per sample.
    One element per tick goes into ``sink`` so that no add can be optimised away."""
    E, D, N = w.shape
    n_bt = ptr.shape[0] - 1
    for e in prange(E):
        cur = np.zeros((n_ticks, N))
        we = w[e]
        s = 0.0
        lo_j, hi_j = starts[e], starts[e] + D
        for bt in range(n_bt):
            k = bt % n_ticks
            if k == 0:
                for kk in range(n_ticks):
                    for n in range(N):
                        cur[kk, n] = 0.0
            row = idx[ptr[bt]:ptr[bt + 1]]
            first = ptr[bt] + np.searchsorted(row, lo_j)
            last = ptr[bt] + np.searchsorted(row, hi_j)
            for i in range(first, last):
                j = idx[i] - lo_j
                for n in range(N):
                    cur[k, n] += we[j, n]
            s += cur[k, bt % N]
        sink[e] = s


def spike_csr(spikes: np.ndarray):
    """(B, T, D) bool -> CSR (ptr (B*T+1,), idx) of the active inputs of each (sample, tick)."""
    B, T, D = spikes.shape
    flat = spikes.reshape(B * T, D)
    rows, cols = np.nonzero(flat)  # row-major: ascending j within a (sample, tick)
    ptr = np.zeros(B * T + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=B * T), out=ptr[1:])
    return ptr, cols.astype(np.int64)


def view_starts(params, n_inputs: int) -> np.ndarray:
    """The first coded input of each copy's view (``pipeline.colanet.copy_groups``)."""
    return np.array([v * n_inputs for v, group in enumerate(copy_groups(params.e, params.n_views))
                     for _ in group], np.int64)


def time_bound(w, ptr, idx, n_ticks, starts) -> float:
    sink = np.zeros(w.shape[0])
    started = time.perf_counter()
    row_add_bound(w, ptr, idx, n_ticks, sink, starts)
    return time.perf_counter() - started


# --- stage-two kernels ---------------------------------------------------------------------------
def train_timed(params, state, x, y, sid, sat, snapshot_at=None):
    """Train in chunks of CHUNK rows; returns (votes, seconds, state copy at row snapshot_at).
    The snapshot is taken outside the timed calls."""
    n = len(x)
    cuts = sorted({*range(0, n, CHUNK), n} | ({snapshot_at} if snapshot_at is not None else set()))
    votes, seconds, snap = [], 0.0, None
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if lo == snapshot_at:
            snap = state.copy()
        started = time.perf_counter()
        v, _ = train_chunk(params, state, x[lo:hi], y[lo:hi], sid[lo:hi], sat)
        seconds += time.perf_counter() - started
        votes.append(v)
    return np.concatenate(votes), seconds, snap


def infer_timed(params, state, x, sid, sat):
    votes, seconds = [], 0.0
    for lo in range(0, len(x), CHUNK):
        started = time.perf_counter()
        votes.append(infer_chunk(params, state, x[lo:lo + CHUNK], sid[lo:lo + CHUNK], sat))
        seconds += time.perf_counter() - started
    return np.concatenate(votes), seconds


def same_work(params, start_state, x, y, sid, sat, numba_repeats: int):
    """The reference and the Numba kernels on the same few samples from the same state.
    Returns the reference's seconds and votes, and the Numba kernels' best seconds and votes."""
    state = start_state.copy()
    started = time.perf_counter()
    ref_votes, _ = colanet_reference.train_chunk(params, state, x, y, sid, sat)
    ref_s = time.perf_counter() - started
    best, nb_votes = float("inf"), None
    for _ in range(numba_repeats):
        state = start_state.copy()
        started = time.perf_counter()
        nb_votes, _ = train_chunk(params, state, x, y, sid, sat)
        best = min(best, time.perf_counter() - started)
    return ref_s, ref_votes, best, nb_votes


CHECKPOINT_EVERY = 1000  # train-snn's default


def checkpoint_seconds(state) -> float:
    """Seconds to write one checkpoint of ``state`` as train-snn does (the best of 2)."""
    import tempfile

    from pipeline.checkpoint import save_checkpoint
    from pipeline.colanet import checkpoint_arrays

    best = np.inf
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(2):
            started = time.perf_counter()
            save_checkpoint(Path(tmp) / "checkpoint.npz", checkpoint_arrays(state), {"bench": 1})
            best = min(best, time.perf_counter() - started)
    return best


def bench_size(name: str, n_samples: int, n_ref: int, log, overrides: dict | None = None,
               peer: dict | None = None) -> dict:
    D, C, m, e = SIZES[name]
    fixed = {k: v for k, v in (("m", m), ("e", e)) if v is not None}
    params = ColanetConfig(**{"seed": SEED, **(overrides or {}), **fixed})
    M, E = params.m, params.e
    N = C * M
    gen = Synthetic(D, C)
    x, y = gen.sample(n_samples, seed=1)
    xt, yt = gen.sample(n_samples, seed=2)
    zeros = float(np.mean(x == 0))
    # the coding train-snn measures on the train rows (centre, per-feature levels), applied as it is
    coding = Coding.measured(params, lambda: array_batches(x, y), x, "synthetic features")
    x, xt, D, sat = coding.inputs(x), coding.inputs(xt), params.n_inputs(D), coding.sat
    sid = np.arange(n_samples, dtype=np.int64)
    sid_t = np.arange(n_samples, dtype=np.int64) + n_samples
    spikes = encode_inputs(params, x, sid, sat)
    spikes_t = encode_inputs(params, xt, sid_t, sat)
    per_sample = spikes.sum(axis=(1, 2))  # of the coded inputs: every view's
    ev_per_spike = N * E / params.n_views  # a spike reaches the N neurons of its view's copies
    n_ref = max(1, min(n_ref, n_samples))
    late = n_samples - n_ref if n_samples >= 2 * n_ref else None

    fresh = init_state(params, D, C)
    log(f"[{name}] D {D} C {C} M {M} E {E}: {n_samples} samples, {per_sample.mean():.0f} input "
        f"spikes/sample, {zeros:.0%} zeros")

    # warm-up: JIT compile (or load the cache) before timing each kernel
    train_chunk(params, fresh.copy(), x[:2], y[:2], sid[:2], sat)
    infer_chunk(params, fresh, xt[:2], sid_t[:2], sat)
    ptr, idx = spike_csr(spikes)
    wptr, widx = spike_csr(spikes[:2])
    starts = view_starts(params, D)
    row_add_bound(fresh.w, wptr, widx, params.present_ticks, np.zeros(E), starts)

    bound_s = [time_bound(fresh.w, ptr, idx, params.present_ticks, starts)]
    state = fresh.copy()
    votes, train_s, snap = train_timed(params, state, x, y, sid, sat, snapshot_at=late)
    bound_s.append(time_bound(state.w, ptr, idx, params.present_ticks, starts))
    bound_best = min(bound_s)
    log(f"[{name}] numba train {n_samples / train_s:.1f}/s, bound {n_samples / bound_best:.1f}/s")

    save_s = checkpoint_seconds(state)
    with_saves = n_samples / (train_s + save_s * n_samples / CHECKPOINT_EVERY)
    log(f"[{name}] checkpoint {save_s:.2f} s; training with a checkpoint every "
        f"{CHECKPOINT_EVERY} samples {with_saves:.1f}/s")

    ivotes, infer_s = infer_timed(params, state, xt, sid_t, sat)
    ipred, ians = readout(ivotes)
    # every L spike of training (forced ones included), untimed: the trained state (a copy) on
    # one more chunk; in inference every L spike is a vote
    rows = slice(0, min(CHUNK, n_samples))
    _, _, rec = train_chunk(params, state.copy(), xt[rows], yt[rows], sid_t[rows], sat, record=True)
    l_train, l_infer = float(rec.sum()) / len(rec), float(ivotes.sum()) / n_samples
    log(f"[{name}] inference {n_samples / infer_s:.1f}/s; L spikes/sample: training {l_train:.1f}, "
        f"inference {l_infer:.1f}")
    tpred, tans = readout(votes)
    half = n_samples // 2

    ref = {}
    for phase, lo, start in (("first", 0, fresh), ("late", late, snap)):
        if lo is None:
            continue
        hi = lo + n_ref
        ref_s, ref_votes, nb_s, nb_votes = same_work(params, start, x[lo:hi], y[lo:hi], sid[lo:hi],
                                                     sat, numba_repeats=3)
        ev = int(int(per_sample[lo:hi].sum()) * ev_per_spike)
        ref[phase] = {
            "rows": [int(lo), int(hi)],
            "reference_samples_per_s": n_ref / ref_s,
            "reference_events_per_s": ev / ref_s,
            "numba_same_work_samples_per_s": n_ref / nb_s,
            "same_work_ratio": ref_s / nb_s,
            "votes_match": bool(np.array_equal(ref_votes, nb_votes)
                                and np.array_equal(nb_votes, votes[lo:hi])),
        }
        log(f"[{name}] reference ({phase} {n_ref}) {n_ref / ref_s:.2f}/s, numba same work "
            f"{n_ref / nb_s:.1f}/s, votes match {ref[phase]['votes_match']}")

    events = int(int(per_sample.sum()) * ev_per_spike)
    train_rate = n_samples / train_s
    ref_rate = ref["first"]["reference_samples_per_s"]
    bound_rate = n_samples / bound_best
    infer_rate = n_samples / infer_s
    peer_result = None
    if peer is not None:
        peer_result = bench_peer(peer, params, gen, coding, spikes, name, log)
        if peer_result is not None and "error" not in peer_result:
            peer_result["train_ratio"] = train_rate / peer_result["plastic"]["samples_per_s"]
            peer_result["infer_ratio"] = infer_rate / peer_result["frozen"]["samples_per_s"]
            log(f"[{name}] x Brian2: training {peer_result['train_ratio']:.1f}x "
                f"(goal {TARGET_PEER_TRAIN:.0f}x), inference {peer_result['infer_ratio']:.1f}x "
                f"(goal {TARGET_PEER_INFER:.0f}x)")
    return {
        "size": name, "n_inputs": D, "n_classes": C, "m": M, "e": E, "n_neurons": N,
        "samples": n_samples, "ref_samples": n_ref, "chunk": CHUNK, "coding": params.coding,
        "sat_median": float(np.median(sat)),
        "zero_fraction": zeros,
        "input_spikes_per_sample": float(per_sample.mean()),
        "input_spikes_per_sample_sd": float(per_sample.std()),
        "views": params.n_views,
        "l_spikes_per_sample": {"train": l_train, "infer": l_infer},
        "peer": peer_result,
        "synaptic_events_per_sample": events / n_samples,
        "train": {"seconds": train_s, "samples_per_s": train_rate, "events_per_s": events / train_s,
                  "checkpoint_seconds": save_s, "checkpoint_every": CHECKPOINT_EVERY,
                  "samples_per_s_with_checkpoints": with_saves,
                  "votes_per_sample": float(votes.sum(axis=(1, 2)).mean()),
                  "accuracy_second_half": float(np.mean(tpred[half:] == y[half:])),
                  "answered_second_half": float(np.mean(tans[half:]))},
        "reference": ref,
        "bound": {"seconds": bound_s, "samples_per_s": bound_rate,
                  "events_per_s": events / bound_best},
        "infer": {"seconds": infer_s, "samples_per_s": infer_rate,
                  "events_per_s": int(spikes_t.sum()) * ev_per_spike / infer_s,
                  "accuracy": float(np.mean(ipred == yt)), "answered": float(np.mean(ians))},
        "numba_over_reference": train_rate / ref_rate,
        "numba_over_bound": train_rate / bound_rate,
        "target_reference": TARGET_REF, "target_bound": TARGET_BOUND,
        "meets_reference": train_rate / ref_rate >= TARGET_REF,
        "meets_bound": train_rate / bound_rate >= TARGET_BOUND,
    }


# --- the Brian2 peer ------------------------------------------------------------------------------
def bench_peer(peer: dict, params: ColanetConfig, gen: Synthetic, coding: Coding,
               spikes: np.ndarray, name: str, log) -> dict | None:
    """Run bench/peer_brian2.py (Brian2 runtime/Cython, plastic and frozen) in a child process of
    the peer's own Python on the input spikes of our coding (its first sample is its warm-up), at
    this size's E and M. None when the peer does not simulate this size.

    With views (``params.n_views`` > 1) each of our copies works on its own view's D inputs and
    the peer's copies all share one input stream, so the peer is fed view 0's spikes: a view's worth,
    as each of our copies gets (on the synthetic features view 0 has about a fifth fewer spikes than
    the views' mean, which errs in the peer's favour)."""
    D, C = spikes.shape[2] // params.n_views, gen.n_classes
    if (D, C) != (PEER_D, PEER_C) or (params.present_ticks, params.period) != (10, 15):
        log(f"[{name}] no Brian2 peer: it simulates D {PEER_D}, C {PEER_C}, 10 + 5 ticks")
        return None
    n = peer["samples"] + 1
    if len(spikes) < n:  # more samples than the bench trains on: code more of the same kind
        xs, _ = gen.sample(n, seed=1)
        spikes = encode_inputs(params, coding.inputs(xs), np.arange(n, dtype=np.int64), coding.sat)
    b, k, j = np.nonzero(spikes[:n, :, :D])  # view 0; row-major: by tick, then input
    with tempfile.TemporaryDirectory() as tmp:
        inputs, out = Path(tmp) / "inputs.npz", Path(tmp) / "peer.json"
        np.savez(inputs, idx=j.astype(np.int32), ticks=(b * params.period + k).astype(np.int64))
        cmd = [peer["python"], str(PEER), "--mode", "runtime", "--plasticity", "both",
               "--ensemble", str(params.e), "--m", str(params.m), "--samples", str(peer["samples"]),
               f"--winit={peer['winit']}", "--inputs", str(inputs), "--max-load", "1e9",
               "--out", str(out)]
        log(f"[{name}] Brian2 peer: {' '.join(cmd[1:])}")
        started = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        rows = json.loads(out.read_text())["results"] if out.exists() else []
    rows = {("plastic" if r["plastic"] else "frozen"): r for r in rows if "error" not in r}
    if run.returncode != 0 or set(rows) != {"plastic", "frozen"}:
        error = (run.stderr or run.stdout)[-2000:]
        log(f"[{name}] Brian2 peer failed:\n{error}")
        return {"error": error}
    keys = ("samples_per_s", "run_s", "compile_s", "setup_s", "in_spikes_per_sample",
            "post_spikes", "samples", "N")
    result = {kind: {k: r[k] for k in keys} for kind, r in rows.items()}
    for r in result.values():
        r["l_spikes_per_sample"] = r["post_spikes"] / r["samples"]
    result.update(winit=peer["winit"], wall_seconds=seconds, mode="runtime (Cython)")
    log(f"[{name}] Brian2 plastic {result['plastic']['samples_per_s']:.1f}/s, frozen "
        f"{result['frozen']['samples_per_s']:.1f}/s ({seconds:.0f} s with compiles)")
    return result


# --- streaming memory ----------------------------------------------------------------------------
MEM_D, MEM_C, MEM_M, MEM_E = 1280, 10, 10, 1


def memory_child(store_path: str, sat: float) -> None:
    """Run in a fresh process: stream the store's train split through train_chunk; print JSON."""
    from pipeline.store import EmbeddingStore
    from pipeline.streaming import iter_batches

    def maxrss_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    def vmhwm_mb():  # cross-check: the peak RSS of this process image, from /proc
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    store = EmbeddingStore.open(store_path)
    # The store's features as they are (no coding), so one view: the memory of streaming.
    params = ColanetConfig(m=MEM_M, e=MEM_E, seed=SEED, views=1)
    state = init_state(params, MEM_D, MEM_C)
    warm = np.zeros((1, MEM_D), np.float32)
    train_chunk(params, state.copy(), warm, np.zeros(1, np.int64), np.zeros(1, np.int64), sat)
    before = maxrss_mb()
    rows, correct = 0, 0
    started = time.perf_counter()
    for batch in iter_batches(store, "train"):
        ids = getattr(batch, "sample_id", None)
        ids = batch.index if ids is None else ids
        votes, state = train_chunk(params, state, batch.features, batch.labels, ids, sat)
        correct += int(np.sum(readout(votes)[0] == batch.labels))
        rows += len(batch.labels)
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "seconds": seconds, "maxrss_mb_before_loop": before,
                      "maxrss_mb": maxrss_mb(), "vmhwm_mb": vmhwm_mb(),
                      "online_accuracy": correct / max(rows, 1)}))


def measure_memory(row_counts: list[int], threads: int, log) -> dict:
    from pipeline.store import write_arrays

    gen = Synthetic(MEM_D, MEM_C)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in row_counts:
            x, y = gen.sample(n, seed=3)  # in the parent only (n x D float32)
            sat = saturation(x)
            path = str(Path(tmp) / f"synthetic-{n}.zarr")
            write_arrays(path, {"train": (x, y)}, [f"c{i}" for i in range(MEM_C)],
                         encoder={"model": "synthetic"}, source=f"bench/snn.py synthetic {n}",
                         chunk_size=CHUNK)
            del x, y
            env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
            # Linux hands the parent's peak RSS at fork to the child's ru_maxrss (it survives
            # exec), so start the child from a small shell that forks it (not `exec`).
            cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", path,
                   "--sat", repr(sat), "--threads", str(threads)]
            if Path("/bin/sh").exists():
                cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"memory child ({n} rows) failed:\n{out.stderr[-4000:]}")
            run = json.loads(out.stdout.strip().splitlines()[-1])
            log(f"[memory] {n} rows: peak RSS {run['maxrss_mb']:.1f} MB "
                f"(before the loop {run['maxrss_mb_before_loop']:.1f} MB), {run['seconds']:.1f} s")
            runs.append(run)
    ratio = runs[-1]["maxrss_mb"] / runs[0]["maxrss_mb"]
    return {"n_inputs": MEM_D, "n_classes": MEM_C, "m": MEM_M, "e": MEM_E, "chunk": CHUNK,
            "runs": runs, "ratio": ratio, "target": TARGET_MEMORY, "meets": ratio <= TARGET_MEMORY}


# --- main ----------------------------------------------------------------------------------------
def machine_info(threads: int) -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {"platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "cpu_count": os.cpu_count(), "cpus_usable": affinity,
            "numba_threads": threads, "load_average_at_start": list(os.getloadavg())}


def print_table(result: dict) -> None:
    print(f"{'size':8} {'D':>5} {'C':>3} {'M':>3} {'N':>4} {'E':>3} {'spk/smp':>8} {'train/s':>8} "
          f"{'Gev/s':>6} {'ref/s':>6} {'nb/ref':>7} {'bound/s':>8} {'nb/bound':>8} {'infer/s':>8} "
          f"{'acc':>5}")
    for r in result["sizes"]:
        print(f"{r['size']:8} {r['n_inputs']:5d} {r['n_classes']:3d} {r['m']:3d} "
              f"{r['n_neurons']:4d} "
              f"{r['e']:3d} "
              f"{r['input_spikes_per_sample']:8.0f} {r['train']['samples_per_s']:8.1f} "
              f"{r['train']['events_per_s'] / 1e9:6.2f} "
              f"{r['reference']['first']['reference_samples_per_s']:6.2f} "
              f"{r['numba_over_reference']:6.0f}x {r['bound']['samples_per_s']:8.1f} "
              f"{r['numba_over_bound']:7.2f}x {r['infer']['samples_per_s']:8.1f} "
              f"{r['infer']['accuracy']:5.2f}")
    print(f"targets: numba/reference >= {TARGET_REF:.0f}x, numba/bound >= {TARGET_BOUND}x "
          f"(Gev/s: synaptic events = input spikes x N x E; acc: held-out inference accuracy)")
    for r in result["sizes"]:
        q, l = r["peer"], r["l_spikes_per_sample"]
        print(f"  {r['size']}: {r['zero_fraction']:.0%} zeros, input spikes/sample "
              f"{r['input_spikes_per_sample']:.0f} +- {r['input_spikes_per_sample_sd']:.0f} "
              f"({r['input_spikes_per_sample'] / r['views']:.0f} a view, {r['views']} views), "
              f"L spikes/sample training {l['train']:.1f}, inference {l['infer']:.1f}")
        if q and "error" not in q:
            print(f"  {r['size']}: x Brian2 (runtime, Cython, 1 thread; same input spikes, "
                  f"{q['plastic']['samples']} samples, winit {q['winit']}): training "
                  f"{r['train']['samples_per_s']:.1f}/s / plastic "
                  f"{q['plastic']['samples_per_s']:.2f}/s "
                  f"= {q['train_ratio']:.1f}x (goal {TARGET_PEER_TRAIN:.0f}x), inference "
                  f"{r['infer']['samples_per_s']:.1f}/s / frozen "
                  f"{q['frozen']['samples_per_s']:.2f}/s "
                  f"= {q['infer_ratio']:.1f}x (goal {TARGET_PEER_INFER:.0f}x); Brian2 input spikes/"
                  f"sample {q['plastic']['in_spikes_per_sample']:.0f}, L spikes/sample plastic "
                  f"{q['plastic']['l_spikes_per_sample']:.1f}, frozen "
                  f"{q['frozen']['l_spikes_per_sample']:.1f}")
        elif q:
            print(f"  {r['size']}: Brian2 peer failed (see the log above)")
    for r in result["sizes"]:
        t = r["train"]
        print(f"  {r['size']}: one checkpoint {t['checkpoint_seconds']:.2f} s; training with a "
              f"checkpoint every {t['checkpoint_every']} samples {t['samples_per_s_with_checkpoints']:.1f}/s")
    for r in result["sizes"]:
        for phase, q in r["reference"].items():
            print(f"  {r['size']}: reference on {phase} samples {q['rows'][0]}-{q['rows'][1]}: "
                  f"{q['reference_samples_per_s']:.2f}/s vs numba on the same "
                  f"{q['numba_same_work_samples_per_s']:.1f}/s = {q['same_work_ratio']:.0f}x, "
                  f"votes match: {q['votes_match']}")
    mem = result.get("memory")
    if mem:
        parts = ", ".join(f"{r['rows']:,} rows {r['maxrss_mb']:.1f} MB" for r in mem["runs"])
        print(f"memory (D {mem['n_inputs']}, C {mem['n_classes']}, M {mem['m']}, E {mem['e']}, "
              f"chunk {mem['chunk']}): peak RSS {parts}; ratio {mem['ratio']:.3f} "
              f"(goal <= {TARGET_MEMORY})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=1024,
                   help="training (and inference) samples per size")
    p.add_argument("--ref-samples", type=int, default=8,
                   help="samples for the NumPy reference (first ones, and again the last ones)")
    p.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    p.add_argument("--sizes", default="paper,shipped,default",
                   help=f"comma-separated of {sorted(SIZES)} (shipped: paper size, shipped M, E)")
    p.add_argument("--peer", metavar="PYTHON",
                   help="the Python of a venv with brian2 (make bench-peer makes .venv-peer): "
                        "run bench/peer_brian2.py at the paper sizes and print x Brian2 ratios")
    p.add_argument("--peer-samples", type=int, default=1000, help="timed samples of the peer")
    # On the shipped coding's inputs (a view: about 1,900-2,300 spikes a sample) the peer's L
    # neurons fire about as often as ours with 0,0.66; with 0,1 they fire some 36 times as often
    # (slowing it, which flatters the ratio), with 0,0.55 never (README, "Against Brian2").
    p.add_argument("--peer-winit", default="0,0.66",
                   help="the peer's uniform weight init lo,hi (0,0.66: its L neurons fire about "
                        "as often as ours on the shipped coding's inputs)")
    p.add_argument("--memory-rows", default="2000,20000", help="store sizes for the memory check")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--out", default="data/bench/snn.json")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=V",
                   help="CoLaNET options other than the shipped defaults (a size's M and E stay)")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    p.add_argument("--sat", type=float, help=argparse.SUPPRESS)
    a = p.parse_args()
    numba.set_num_threads(a.threads)
    if a.memory_child:
        memory_child(a.memory_child, a.sat)
        return
    sizes = [s.strip() for s in a.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or not sizes:
        p.error(f"--sizes: unknown {unknown}; choose from {sorted(SIZES)}")
    if a.samples < 1 or a.ref_samples < 1 or a.peer_samples < 1:
        p.error("--samples, --ref-samples and --peer-samples must be >= 1")
    peer = None
    if a.peer:
        if not (Path(a.peer).is_file() and os.access(a.peer, os.X_OK)):
            p.error(f"--peer {a.peer}: no such Python (make bench-peer makes .venv-peer)")
        peer = {"python": a.peer, "samples": a.peer_samples, "winit": a.peer_winit}

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    from options import parse_values  # bench/options.py: KEY=V typed like the field

    overrides = {k: v[0] for k, v in (parse_values(s) for s in a.set)}
    result = {"machine": machine_info(a.threads), "seed": SEED, "overrides": overrides,
              "sizes": [bench_size(s, a.samples, a.ref_samples, log, overrides, peer)
                        for s in sizes]}
    if not a.skip_memory:
        rows = [int(v) for v in a.memory_rows.split(",")]
        result["memory"] = measure_memory(rows, a.threads, log)
    result["wall_seconds"] = time.perf_counter() - started
    if not a.peer:
        print("no Brian2 peer: make peer-venv once, then make bench-snn prints the x Brian2 ratios "
              "(or: python bench/snn.py --peer .venv-peer/bin/python)", file=sys.stderr)
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print_table(result)
    print(f"wall {result['wall_seconds']:.1f} s -> {a.out}")


if __name__ == "__main__":
    main()
