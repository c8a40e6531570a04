"""CUDA kernels of the CoLaNET simulator (``--snn-device cuda``): the CPU kernels' model, on a GPU.

Same model, same numbers: the kernels here call the CPU kernels' step functions of
:mod:`pipeline.colanet_kernels` (plain ``@njit`` functions; numba-cuda compiles them again for the
device when a CUDA kernel calls them), so the model has one definition and a change to a step (for
example the summation order of the threshold sum, ``positive_weight_sum``'s 8 lanes) reaches both
devices. Plasticity runs on the same neuron-major ``r_t``, ``w_t`` (N, D) per copy as on the CPU,
through the same ``K.TrainScratch`` (:func:`thread_scratch`).
Only the loops that the CPU runs serially are reorganised over threads; every per-neuron float
operation, its order (currents summed in ascending input order in float64, the same float32
roundings) and the counter-based hash are the CPU kernels' own. ``tests/test_cuda.py`` checks
votes, spikes and every state array against the CPU kernels, bit for bit.

Layout (one persistent kernel per chunk):

* training: one thread block per (copy, column group), looping over the chunk's samples and
  ticks (skipping, all threads alike, the samples the block's copy sits out: ``copy_share``). Copies share nothing, and within a copy columns share nothing but the (read-only) input:
  every step acts on one neuron, one column, or the label column. So a group of columns
  (:func:`column_group`; :data:`MAX_THREADS` // m of them, one thread per neuron) runs the whole
  chunk on its own. Its threads stride over the group's neurons for the per-neuron steps (reset,
  the buffered currents, leak and noise, input, conservation) and over its columns for the
  unforced spikes with their anti-Hebbian step; in the group holding the label column, thread 0
  decides the GATE and forces the column and the column's neurons take their dopamine side by
  side. ``syncthreads`` separates the steps, in the CPU kernel's order.
* inference: samples are independent too, so a grid of blocks strides over (copy, sample,
  column group) items, each a fresh neuron state in its block's scratch.
* the arrival lists of a chunk (which inputs arrive at each tick, ascending) are computed once
  per chunk by a kernel with one thread per (sample, tick), shared by the copies; with
  ``input_share`` below 1 each copy masks them with the words of the inputs it sees
  (``K.seen_words``), where the CPU kernel masks its pattern before making its lists.

Scratch arrays cannot be allocated in device code: they are allocated once per call in global
memory, per copy (training: currents, stale flags, ``r_t`` and ``w_t``), per thread (training: the
synapse selection, ``D`` int64 each) or per block (inference).

Arrays reach the kernels inside named tuples. On a GPU that is how numba passes several arrays;
under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, how the tests run without a GPU) it
keeps them plain NumPy arrays, which the ``@njit`` step functions need (the simulator wraps a bare
array argument in a fake device array that compiled CPU code cannot take).

Bit identity on a real GPU needs NVVM's fused multiply-add contraction off (it is on by default:
:func:`keep_multiply_and_add_apart`; ``tests/test_cuda.py`` compiles the kernels to PTX and finds
no ``fma`` in them), and rests on one more thing: ``stability_scale`` evaluates
``pow(2, -S)``; the CPU's LLVM turns it into ``exp2`` and libdevice's ``pow`` may differ from it
in the last ulp for some ``S``. The check on a real GPU (``tests/test_cuda.py`` with
``NUMBA_ENABLE_CUDASIM=0``, and ``bench/gpu.py``, which compares the GPU's votes and state with
the CPU kernels' before it times anything) would show such a difference.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import cuda, njit
from numba.core import config as numba_config

from . import colanet_kernels as K

#: Whether this process runs Numba's CUDA simulator (set NUMBA_ENABLE_CUDASIM=1 before numba.cuda
#: is first imported): the kernels then run as Python threads on the host, on NumPy arrays.
SIMULATED = bool(numba_config.ENABLE_CUDASIM)

#: Most threads per block (the CUDA limit is 1024; 256 leaves registers for the plasticity loops).
MAX_THREADS = 256

#: Inference blocks per streaming multiprocessor (the grid strides over the work items).
INFER_BLOCKS_PER_SM = 4


def keep_multiply_and_add_apart() -> None:
    """Compile CUDA code with NVVM's ``-fma=0`` (no fastmath: unless a kernel asks for it).

    NVVM contracts ``a * b + c`` into one fused multiply-add by default, which rounds once where
    the CPU kernels round twice (``u * leak + s_stim * U``, ``u + g * I``, the stability update):
    the GPU would drift from the CPU in the last bits. numba-cuda has no per-kernel option for
    this, so its one call into NVVM gets the option; libdevice's own explicit fma (inside
    ``pow``) is not a contraction and stays. Idempotent; not needed under the simulator."""
    from numba.cuda.cudadrv import nvvm

    compile_ir = nvvm.compile_ir
    if getattr(compile_ir, "keeps_multiply_and_add_apart", False):
        return

    def compile_ir_without_contraction(llvmir, **options):
        if not options.get("fastmath"):
            options.setdefault("fma", False)
        return compile_ir(llvmir, **options)

    compile_ir_without_contraction.keeps_multiply_and_add_apart = True
    nvvm.compile_ir = compile_ir_without_contraction


if not SIMULATED:
    keep_multiply_and_add_apart()


def device_problem() -> str | None:
    """Why the CUDA kernels cannot run in this process (a one-line reason), or None when a GPU
    (or the simulator) is usable."""
    try:
        if cuda.is_available():
            return None
    except Exception as e:  # a broken driver install raises instead of answering False
        return f"numba.cuda cannot use the GPU ({type(e).__name__}: {str(e).strip()[:120]})"
    return "numba.cuda finds no usable NVIDIA GPU and driver on this machine"


class TrainScratch(NamedTuple):
    """Global-memory scratch of the training kernel: per copy what the CPU kernel's
    :class:`pipeline.colanet_kernels.TrainScratch` holds per copy (the buffered currents, the
    stale flags and the neuron-major ``r_t``, ``w_t`` that plasticity works on), and per thread
    slot (block * threads per block + thread) the synapse selection of
    :func:`pipeline.colanet_kernels.select_synapses`, which the threads of a copy use side by
    side. Each thread hands the step functions a ``K.TrainScratch`` of its copy's and its slot's
    slices (:func:`thread_scratch`)."""

    current: np.ndarray  # (E, P, N) float64
    stale: np.ndarray  # (E, N) bool
    r_t: np.ndarray  # (E, N, D) float32
    w_t: np.ndarray  # (E, N, D) float32
    selected: np.ndarray  # (S, D) int64
    selection_key: np.ndarray  # (S, 5) uint64
    selection_count: np.ndarray  # (S, 1) int64
    unused: np.ndarray  # (1,) int64: the CPU's arrival lists and stale list (not read here)
    # Per block, the current sample's arrival pattern and history of the inputs its copy sees
    # (``input_share``): what the plasticity steps select synapses from.
    pat_seen: np.ndarray  # (blocks, D) uint64
    bits_seen: np.ndarray  # (blocks, D) uint64


class InferScratch(NamedTuple):
    """Global-memory scratch of the inference kernel, one slice per block: a fresh neuron state."""

    u: np.ndarray  # (G, N) float64
    block_until: np.ndarray  # (G, C) int64
    block_by: np.ndarray  # (G, C) int32
    current: np.ndarray  # (G, P, N) float64


class Arrivals(NamedTuple):
    """A chunk's input arrivals, shared by the copies."""

    pat: np.ndarray  # (B, D) uint64: bit k of pat[b, j]: input j arrives at local tick k
    arriving: np.ndarray  # (B,) uint64: the OR of pat[b] (bit k: some input arrives at tick k)
    count: np.ndarray  # (B, P) int32: inputs arriving at tick k of sample b
    inputs: np.ndarray  # (B, P, D) int32: those inputs, ascending, in inputs[b, k, :count[b, k]]
    sample_index: np.ndarray  # (B,) int64: the samples' global ids (keys of the noise)
    neuron_key: np.ndarray  # (N,) uint64: K.neuron_keys(N)
    seen: np.ndarray  # (E, D) uint64: K.seen_words of each copy (all ones: it sees input j)


class TrainChunk(NamedTuple):
    """The rest of a training chunk: labels, history, votes out, the spike record."""

    bits0: np.ndarray  # (B, D) uint64: arrival history at each sample's start
    labels: np.ndarray  # (B,) int64
    votes: np.ndarray  # (B, E, C) int32, zero on entry
    rec: np.ndarray  # (B, P, E, N) bool; an empty array when not recording (see KERNELS)


class InferChunk(NamedTuple):
    """The outputs of an inference chunk and the frozen model it reads."""

    w: np.ndarray  # (E, D, N) float32
    theta_add: np.ndarray  # (E, N) float64
    votes: np.ndarray  # (B, E, C) int32, zero on entry
    rec: np.ndarray  # (B, P, E, N) bool; an empty array when not recording (see KERNELS)


# --- device-side helpers ------------------------------------------------------------------------
@njit(cache=True)
def neuron_currents(w, pat, seen, current, n):
    """The buffered currents of neuron n for a whole sample, ``current[k, n] = sum_j w_jn`` over
    the inputs j (that the copy sees: ``seen``) arriving at tick k, summed in ascending j in
    float64: the sums of :func:`pipeline.colanet_kernels.sample_currents`, one neuron per thread.
    Threads n, n+1, ... read ``w[j, n], w[j, n+1], ...`` together: one coalesced row segment per
    input."""
    P = current.shape[0]
    for ka in range(P):
        current[ka, n] = 0.0
    for j in range(w.shape[0]):
        p = pat[j] & seen[j]
        if p == K._ZERO:
            continue
        v = np.float64(w[j, n])
        for ka in range(P):
            if K.arrives(p, ka):
                current[ka, n] += v


@njit(cache=True)
def listed_seen_current(w_n, inputs, count, seen):
    """:func:`pipeline.colanet_kernels.listed_current` over the inputs of a shared arrival list
    that the copy sees: the CPU kernel's own list holds only those (the same sum, in the same
    ascending order)."""
    total = 0.0
    for i in range(count):
        j = inputs[i]
        if seen[j] != K._ZERO:
            total += w_n[j]
    return total


@cuda.jit
def arrival_lists_kernel(arrivals):
    """``arrivals.count`` and ``arrivals.inputs`` from ``arrivals.pat``: one thread per
    (sample, tick) lists the inputs arriving then, ascending."""
    i = cuda.grid(1)
    B, D = arrivals.pat.shape
    P = arrivals.count.shape[1]
    if i < B * P:
        b = i // P
        k = i % P
        count = 0
        for j in range(D):
            if K.arrives(arrivals.pat[b, j], k):
                arrivals.inputs[b, k, count] = j
                count += 1
        arrivals.count[b, k] = count


def train_kernel_recording(recording: bool):
    """The training kernel that records spikes into ``chunk.rec``, or not (then the step
    functions get None and compile without the record, as in the CPU kernels: numba-cuda cannot
    pass None as a kernel argument, so the kernel chooses; ``recording`` is a compile-time
    constant)."""

    @cuda.jit
    def train_chunk_kernel(hp, s, arrivals, chunk, scratch, t_start, columns_per_block):
        if recording:
            train_chunk_body(hp, s, arrivals, chunk, scratch, t_start, columns_per_block,
                             chunk.rec)
        else:
            train_chunk_body(hp, s, arrivals, chunk, scratch, t_start, columns_per_block, None)

    return train_chunk_kernel


def infer_kernel_recording(recording: bool):
    """The inference kernel, recording spikes or not (as :func:`train_kernel_recording`)."""

    @cuda.jit
    def infer_chunk_kernel(hp, arrivals, chunk, scratch, columns_per_block):
        if recording:
            infer_chunk_body(hp, arrivals, chunk, scratch, columns_per_block, chunk.rec)
        else:
            infer_chunk_body(hp, arrivals, chunk, scratch, columns_per_block, None)

    return infer_chunk_kernel


@njit(cache=True)
def column_group(block, n_columns, columns_per_block):
    """``(copy, first column, end column)`` of a block: the copies' columns are cut into groups
    of ``columns_per_block``, numbered copy-major. Columns share nothing within a copy but the
    input (every step acts on one neuron, one column, or the label column), so each group runs
    the whole chunk on its own, with no barrier across blocks."""
    groups = (n_columns + columns_per_block - 1) // columns_per_block
    c_lo = (block % groups) * columns_per_block
    return block // groups, c_lo, min(n_columns, c_lo + columns_per_block)


@cuda.jit(device=True)
def thread_scratch(scratch, e, slot):
    """The ``K.TrainScratch`` that this thread hands the CPU kernel's step functions: copy e's
    currents, stale flags, ``r_t`` and ``w_t`` (shared by the copy's threads, each touching only
    its neurons' rows) and the selection of thread slot ``slot``, its own."""
    return K.TrainScratch(scratch.current[e], scratch.stale[e], scratch.unused, scratch.unused,
                          scratch.r_t[e], scratch.w_t[e], scratch.unused, scratch.selected[slot],
                          scratch.selection_key[slot], scratch.selection_count[slot])


@cuda.jit(device=True)
def train_chunk_body(hp, s, arrivals, chunk, scratch, t_start, columns_per_block, rec):
    """Train one column group of one copy (block ``blockIdx.x``, see :func:`column_group`) on
    the chunk, sample after sample (state ``s`` in place; sample b starts at global tick
    ``t_start + b * period``; the copy skips the samples it sits out, :func:`K.sits_out`):
    :func:`K.train_sample`'s steps, in its order, with threads over the group's neurons and
    columns. Plasticity works on the neuron-major ``r_t``, ``w_t`` as on the CPU: made at the
    chunk's start, ``w`` brought up to date at each sample's end for the neurons whose weights
    changed, ``r`` written back at the chunk's end."""
    C = s.block_until.shape[1]
    e, c_lo, c_hi = column_group(cuda.blockIdx.x, C, columns_per_block)
    n_lo = c_lo * hp.m
    n_hi = c_hi * hp.m
    tid = cuda.threadIdx.x
    step = cuda.blockDim.x
    D = s.w.shape[1]
    u = s.u[e]
    theta_add = s.theta_add[e]
    block_until = s.block_until[e]
    block_by = s.block_by[e]
    r = s.r[e]
    w = s.w[e]
    current = scratch.current[e]
    stale = scratch.stale[e]
    r_t = scratch.r_t[e]
    w_t = scratch.w_t[e]
    mine = thread_scratch(scratch, e, cuda.blockIdx.x * cuda.blockDim.x + tid)
    for n in range(n_lo + tid, n_hi, step):  # K.to_neuron_major, the group's neurons
        for j in range(D):
            r_t[n, j] = r[j, n]
            w_t[n, j] = w[j, n]
    cuda.syncthreads()
    for b in range(arrivals.pat.shape[0]):
        if K.sits_out(hp, e, arrivals.sample_index[b]):
            continue  # e is the block's: every thread of the block skips the sample
        t0 = t_start + b * hp.period
        floor = K.burst_floor(hp, t0)
        seen = arrivals.seen[e]
        pat = scratch.pat_seen[cuda.blockIdx.x]  # K.seen_only: the inputs this copy sees
        bits0 = scratch.bits_seen[cuda.blockIdx.x]
        for j in range(tid, D, step):
            pat[j] = arrivals.pat[b, j] & seen[j]
            bits0[j] = chunk.bits0[b, j] & seen[j]
        cuda.syncthreads()
        label = chunk.labels[b]
        teacher_here = c_lo <= label < c_hi  # the GATE, forcing and dopamine act on this group
        votes = chunk.votes[b, e]
        # Step 1 (K.reset_sample) and the sample's buffered currents.
        for n in range(n_lo + tid, n_hi, step):
            u[n] = 0.0
            stale[n] = False
            neuron_currents(w, pat, seen, current, n)
        for c in range(c_lo + tid, c_hi, step):
            block_until[c] = K.NEVER
            block_by[c] = -1
        mine.selection_key[4] = K._ZERO  # a new sample: new arrival words
        cuda.syncthreads()
        gate = False  # read by thread 0 only
        for k in range(hp.period):
            t = t0 + k
            tick_key = np.uint64(K.noise_tick_key(hp.seed, hp.first_copy + e, K.TRAIN_NOISE,
                                                  arrivals.sample_index[b], k))
            inputs_now = K.arrives(arrivals.arriving[b], k)
            for n in range(n_lo + tid, n_hi, step):  # steps 2 and 3
                K.leak_and_noise_neuron(u, hp, tick_key, arrivals.neuron_key, n)
                if inputs_now:
                    c = n // hp.m
                    if stale[n] and not K.is_blocked(t, n, c, block_until, block_by):
                        current[k, n] = listed_seen_current(w_t[n], arrivals.inputs[b, k],
                                                            arrivals.count[b, k], seen)
                    K.add_input_neurons(u, current[k], hp, t, block_until, block_by, c, n, n + 1)
            cuda.syncthreads()
            for c in range(c_lo + tid, c_hi, step):  # step 4
                best = K.column_spiker(u, theta_add, hp, c)
                if best >= 0:
                    K.train_column_spikes(hp, s, e, b, k, c, best, t, t0, floor, pat, bits0,
                                          mine, votes, rec)
            cuda.syncthreads()
            if tid == 0 and teacher_here:  # step 5: the GATE and the teacher's forced spikes
                if k == hp.label_tick:
                    gate = K.gate_fires(hp, s.t_out[e, label], t, t0)
                if k == hp.force_tick and gate:
                    K.force_label_column(hp, s, e, label, t, floor, b, k, rec, mine)
            if k == hp.force_tick:  # k is the same in every thread: a uniform barrier
                cuda.syncthreads()
            if k == hp.dopamine_tick:  # step 5: dopamine, the label column's neurons side by side
                if teacher_here:
                    for i in range(tid, hp.m, step):
                        K.dopamine_neuron(hp, s, e, label * hp.m + i, t, t0, pat, bits0, mine)
                if hp.theta_rise != 0.0:  # K.dopamine's unrewarded rise, the group's neurons
                    for n in range(n_lo + tid, n_hi, step):
                        K.unrewarded_rise(hp, s, e, n, label, t0, mine)
                cuda.syncthreads()
            for n in range(n_lo + tid, n_hi, step):  # step 6 (K.conservation)
                if K.conserves(hp, s.free_pool[e, n], s.t_spike[e, n], t, floor):
                    K.conserve_neuron(hp, s, e, n, mine)
            cuda.syncthreads()
        # The sample's end (K.write_back_stale_weights): the changed neurons' columns of w.
        for n in range(n_lo + tid, n_hi, step):
            if stale[n]:
                for j in range(D):
                    w[j, n] = w_t[n, j]
        cuda.syncthreads()
    for n in range(n_lo + tid, n_hi, step):  # the chunk's end: r from r_t (K.to_input_major)
        for j in range(D):
            r[j, n] = r_t[n, j]


@cuda.jit(device=True)
def infer_chunk_body(hp, arrivals, chunk, scratch, columns_per_block, rec):
    """Frozen-plasticity votes of every (copy, sample, column group) item, each from a fresh
    neuron state in its block's scratch: :func:`K.infer_sample`'s steps with threads over the
    group's neurons and columns."""
    g = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    step = cuda.blockDim.x
    E = chunk.theta_add.shape[0]
    B = arrivals.pat.shape[0]
    C = chunk.votes.shape[2]
    groups = (C + columns_per_block - 1) // columns_per_block
    u = scratch.u[g]
    block_until = scratch.block_until[g]
    block_by = scratch.block_by[g]
    current = scratch.current[g]
    # Copy-major, then sample: neighbouring blocks read the same copy's weights.
    for item in range(g, E * B * groups, cuda.gridDim.x):
        b = (item // groups) % B
        e, c_lo, c_hi = column_group((item // (groups * B)) * groups + item % groups, C,
                                     columns_per_block)
        n_lo = c_lo * hp.m
        n_hi = c_hi * hp.m
        w = chunk.w[e]
        theta_add = chunk.theta_add[e]
        votes = chunk.votes[b, e]
        for n in range(n_lo + tid, n_hi, step):
            u[n] = 0.0
            neuron_currents(w, arrivals.pat[b], arrivals.seen[e], current, n)
        for c in range(c_lo + tid, c_hi, step):
            block_until[c] = K.NEVER
            block_by[c] = -1
        cuda.syncthreads()
        for k in range(hp.period):
            t = k  # every sample starts at tick 0
            tick_key = np.uint64(K.noise_tick_key(hp.seed, hp.first_copy + e, K.INFER_NOISE,
                                                  arrivals.sample_index[b], k))
            inputs_now = K.arrives(arrivals.arriving[b], k)
            for n in range(n_lo + tid, n_hi, step):
                K.leak_and_noise_neuron(u, hp, tick_key, arrivals.neuron_key, n)
                if inputs_now:
                    K.add_input_neurons(u, current[k], hp, t, block_until, block_by, n // hp.m, n,
                                        n + 1)
            cuda.syncthreads()
            for c in range(c_lo + tid, c_hi, step):
                best = K.column_spiker(u, theta_add, hp, c)
                if best >= 0:
                    K.infer_column_spikes(hp, u, theta_add, block_until, block_by, e, b, k, c,
                                          best, t, votes, rec)
            cuda.syncthreads()


#: The kernels by whether they record spikes: ``(train, infer)``.
KERNELS = {recording: (train_kernel_recording(recording), infer_kernel_recording(recording))
           for recording in (False, True)}


# --- host side ----------------------------------------------------------------------------------
def to_device(a: np.ndarray):
    """``a`` in device memory (under the simulator: a host copy, as the kernels then need)."""
    return np.array(a) if SIMULATED else cuda.to_device(a)


def to_host(d, out: np.ndarray) -> None:
    """Copy the device array ``d`` into the host array ``out`` (same shape and dtype)."""
    if SIMULATED:
        out[...] = d
    else:
        d.copy_to_host(out)


def device_zeros(shape, dtype):
    return np.zeros(shape, dtype) if SIMULATED else cuda.to_device(np.zeros(shape, dtype))


def launch_shape(n_classes: int, m: int) -> tuple[int, int, int]:
    """``(column groups per copy, columns per group, threads per block)``: as many columns per
    block as :data:`MAX_THREADS` threads cover with one thread per neuron (at least one column;
    the steps stride over a larger one), threads a whole number of warps (under the simulator,
    exactly the group's neurons: every simulated thread is a Python thread)."""
    per_block = max(1, min(n_classes, MAX_THREADS // m))
    neurons = per_block * m
    threads = min(neurons, MAX_THREADS) if SIMULATED else min(32 * math.ceil(neurons / 32),
                                                             max(32, MAX_THREADS))
    return math.ceil(n_classes / per_block), per_block, threads


def chunk_arrivals(hp: K.KernelParams, pat: np.ndarray, sample_index: np.ndarray,
                   n_copies: int, n_neurons: int) -> Arrivals:
    """A chunk's :class:`Arrivals` in device memory; the lists are filled on the device."""
    B, D = pat.shape
    period = hp.period
    seen = np.empty((n_copies, D), np.uint64)
    for e in range(n_copies):
        K.seen_words(hp, e, seen[e])
    arrivals = Arrivals(to_device(pat), to_device(np.bitwise_or.reduce(pat, axis=1)
                                                  if B else np.zeros(0, np.uint64)),
                        device_zeros((B, period), np.int32), device_zeros((B, period, D), np.int32),
                        to_device(sample_index), to_device(K.neuron_keys(n_neurons)),
                        to_device(seen))
    if B:
        threads = 128
        arrival_lists_kernel[math.ceil(B * period / threads), threads](arrivals)
    return arrivals


def view_runs(hp: K.KernelParams, n_copies: int) -> list[tuple[int, int, int]]:
    """The state's copies in runs that see the same view: ``(lo, hi, start)``, copies ``lo ..
    hi - 1`` seeing the coded inputs from ``start`` (:func:`K.view_start`, in inputs of ``D = 1``:
    multiply by D). The device kernels see one view's inputs at a time."""
    runs: list[tuple[int, int, int]] = []
    for e in range(n_copies):
        start = K.view_start(hp, e, 1)
        if runs and runs[-1][2] == start:
            runs[-1] = (runs[-1][0], e + 1, start)
        else:
            runs.append((e, e + 1, start))
    return runs


def one_view(hp: K.KernelParams, lo: int) -> K.KernelParams:
    """``hp`` for the state's copies from ``lo`` on, given their view's inputs alone."""
    return hp._replace(first_copy=hp.first_copy + lo, views=1)


class DeviceEnsemble:
    """The training kernel's arrays (:class:`pipeline.colanet.EnsembleArrays`) kept in device
    memory between chunks; :meth:`download` copies them back into host arrays."""

    def __init__(self, s, arrays=None):
        self.arrays = type(s)(*(to_device(a) for a in s)) if arrays is None else arrays

    def part(self, lo: int, hi: int) -> "DeviceEnsemble":
        """Copies ``lo .. hi - 1`` (device views of the same memory)."""
        return DeviceEnsemble(self.arrays, type(self.arrays)(*(a[lo:hi] for a in self.arrays)))

    def download(self, s) -> None:
        for d, h in zip(self.arrays, s):
            to_host(d, h)


def train_on_device(hp: K.KernelParams, ensemble: DeviceEnsemble, pat, bits0, y, sample_index,
                    t_start, rec=None) -> np.ndarray:
    """Train the device-resident ``ensemble`` on a chunk (arguments as
    :func:`pipeline.colanet_kernels.train_kernel`); returns the votes (B, E, C) int32 on the host
    (``rec``, when given, is filled on the host too)."""
    s = ensemble.arrays
    E, N = s.u.shape
    C = s.block_until.shape[1]
    B = pat.shape[0]
    votes = np.zeros((B, E, C), np.int32)
    if B == 0:
        return votes
    if hp.views > 1:  # each run of copies on its view's inputs, as the CPU kernel slices them
        D = s.w.shape[1]
        for lo, hi, start in view_runs(hp, E):
            inputs = slice(start * D, (start + 1) * D)
            part_rec = None if rec is None else np.zeros((B, hp.period, hi - lo, N), np.bool_)
            votes[:, lo:hi] = train_on_device(
                one_view(hp, lo), ensemble.part(lo, hi), np.ascontiguousarray(pat[:, inputs]),
                np.ascontiguousarray(bits0[:, inputs]), y, sample_index, t_start, part_rec)
            if rec is not None:
                rec[:, :, lo:hi] = part_rec
        return votes
    arrivals = chunk_arrivals(hp, pat, sample_index, E, N)
    chunk = TrainChunk(to_device(bits0), to_device(y), to_device(votes), to_device(
        np.zeros((0, 0, 0, 0), np.bool_) if rec is None else rec))
    D = pat.shape[1]
    groups, per_block, threads = launch_shape(C, hp.m)
    slots = E * groups * threads
    scratch = TrainScratch(device_zeros((E, hp.period, N), np.float64),
                           device_zeros((E, N), np.bool_), device_zeros((E, N, D), np.float32),
                           device_zeros((E, N, D), np.float32), device_zeros((slots, D), np.int64),
                           device_zeros((slots, 5), np.uint64), device_zeros((slots, 1), np.int64),
                           device_zeros(1, np.int64), device_zeros((E * groups, D), np.uint64),
                           device_zeros((E * groups, D), np.uint64))
    train_chunk_kernel = KERNELS[rec is not None][0]
    train_chunk_kernel[E * groups, threads](hp, s, arrivals, chunk, scratch, np.int64(t_start),
                                            np.int64(per_block))
    to_host(chunk.votes, votes)
    if rec is not None:
        to_host(chunk.rec, rec)
    return votes


def train_kernel(hp, s, pat, bits0, y, sample_index, t_start, rec):
    """:func:`pipeline.colanet_kernels.train_kernel` on the GPU: same arguments, same result
    (``s`` updated in place, votes returned); the state goes to the device and back."""
    ensemble = DeviceEnsemble(s)
    votes = train_on_device(hp, ensemble, pat, bits0, y, sample_index, t_start, rec)
    ensemble.download(s)
    return votes


def infer_kernel(hp, w, theta_add, n_classes, pat, sample_index, rec, blocks: int | None = None):
    """:func:`pipeline.colanet_kernels.infer_kernel` on the GPU: same arguments, same votes.
    ``blocks``: the grid (default: :data:`INFER_BLOCKS_PER_SM` per multiprocessor, at most one
    per item)."""
    B = pat.shape[0]
    E, N = theta_add.shape
    votes = np.zeros((B, E, n_classes), np.int32)
    if B == 0:
        return votes
    if hp.views > 1:  # each run of copies on its view's inputs, as the CPU kernel slices them
        D = w.shape[1]
        for lo, hi, start in view_runs(hp, E):
            part_rec = None if rec is None else np.zeros((B, hp.period, hi - lo, N), np.bool_)
            votes[:, lo:hi] = infer_kernel(
                one_view(hp, lo), w[lo:hi], theta_add[lo:hi], n_classes,
                np.ascontiguousarray(pat[:, start * D:(start + 1) * D]), sample_index, part_rec,
                blocks)
            if rec is not None:
                rec[:, :, lo:hi] = part_rec
        return votes
    groups, per_block, threads = launch_shape(n_classes, hp.m)
    if blocks is None:
        sms = 1 if SIMULATED else cuda.get_current_device().MULTIPROCESSOR_COUNT
        blocks = min(E * B * groups, INFER_BLOCKS_PER_SM * sms)
    arrivals = chunk_arrivals(hp, pat, sample_index, E, N)
    chunk = InferChunk(to_device(w), to_device(theta_add), to_device(votes), to_device(
        np.zeros((0, 0, 0, 0), np.bool_) if rec is None else rec))
    scratch = InferScratch(device_zeros((blocks, N), np.float64),
                           device_zeros((blocks, n_classes), np.int64),
                           device_zeros((blocks, n_classes), np.int32),
                           device_zeros((blocks, hp.period, N), np.float64))
    infer_chunk_kernel = KERNELS[rec is not None][1]
    infer_chunk_kernel[blocks, threads](hp, arrivals, chunk, scratch, np.int64(per_block))
    to_host(chunk.votes, votes)
    if rec is not None:
        to_host(chunk.rec, rec)
    return votes
