"""Numba kernels of the CoLaNET simulator.

The model, its equations and the exact per-tick order are documented in
:mod:`pipeline.colanet`; this module only makes them fast.  Nothing here is
called directly by users: :func:`pipeline.colanet.train_chunk` and
:func:`pipeline.colanet.infer_chunk` validate their inputs and call these
kernels with two typed records:

* ``hp``, a :class:`KernelParams`: every hyperparameter by name, built by
  :func:`pipeline.colanet.kernel_params` from a ``ColanetConfig``;
* ``s``, the ensemble's arrays with a leading copy axis (``r``, ``w`` (E, D, N),
  per neuron (E, N), per column (E, C)) as a named tuple built by
  :func:`pipeline.colanet.kernel_state`; their names, dtypes and layout are
  declared once, in :data:`pipeline.colanet.STATE_ARRAYS`.

A sample is simulated by small step functions, one per line of the model's
per-tick order (each with its equation): :func:`reset_sample`,
:func:`leak_and_noise`, :func:`add_input`, :func:`column_spiker`,
:func:`fires_beside` and :func:`unforced_spike` (shared by training and
inference), then, in training only, :func:`train_unforced_spike` with
:func:`continue_or_start_burst` and :func:`anti_hebbian`,
:func:`gate_fires`, :func:`force_label_column`, :func:`dopamine` (with
:func:`stability_after_dopamine`) and :func:`conservation`.
:func:`train_sample` and :func:`infer_sample` string them together.

Design (see the cost model in ``shared/spec/colanet.md``):

* The input spikes of a chunk are computed once, serially, and shared by all
  copies: ``pat[b, j]`` is a 64-bit word whose bit ``ka`` says that input ``j``
  *arrives* at the L neurons at local tick ``ka`` of sample ``b``.  The global
  arrival history seen at the start of each sample is ``bits0[b, j]`` (bit
  ``p`` = arrival at global tick ``t0 - 1 - p``).  A range test "input j
  arrived in [a, b]" is two masked ANDs, one on each word.
* Copies share nothing else, so training runs ``prange`` over copies, each
  copy going through the chunk's samples in order.
* Per sample and copy, the currents of all ticks are accumulated in one pass
  over the active inputs' rows ``w[j, :]`` (each row read once, contiguous)
  into a ``(P, N)`` float64 buffer.  The tick dynamics then read the buffer.
  Whenever a neuron's weights change mid-sample (anti-Hebbian step,
  dopamine, conservation) its buffered currents go stale; from then on its
  current of each tick is recomputed from its row of ``w_t`` over that tick's
  arrival list, in the same ascending input order, and only on ticks where
  it is used (not blocked).  The result is bit-identical to recomputing
  every tick from the weights, as the reference does.
* Plasticity touches only neurons that spiked, got dopamine or release their
  free pool.  Its passes run over one neuron's D synapses, so each copy works
  on neuron-major copies ``r_t``, ``w_t`` (N, D) of its resources and weights
  for the whole chunk (made at the chunk's start; ``r`` is written back at its
  end): a pass is unit-stride, its ``w(r)`` loop vectorises, and the synapses
  it changes are found once per window (:func:`select_synapses`).  The input-major
  ``w`` that the row pass reads is brought up to date at each sample's end,
  for the neurons whose weights changed in it (:func:`write_back_stale_weights`).
* The new threshold ``theta_add`` sums a neuron's positive weights in 8 fixed
  partial sums (:func:`positive_weight_sum`), an order the reference shares.

Randomness is counter-based (splitmix64 finaliser of a chained key), never a
stateful generator: results do not depend on chunking, threads or resume
point.  ``pipeline.colanet_reference`` reproduces the same hash with NumPy
``uint64`` arithmetic.
"""

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange

#: "Never happened" time stamp: far enough in the past that every window test
#: fails, small enough that ``t - NEVER`` cannot overflow int64.
NEVER = -(1 << 40)

#: Depth of the arrival history (bits of a uint64 word).
HISTORY = 64

#: Noise streams: training and inference draw different noise for the same sample.
TRAIN_NOISE = 0
INFER_NOISE = 1


class KernelParams(NamedTuple):
    """The hyperparameters as the kernels read them (one typed record; built by
    :func:`pipeline.colanet.kernel_params`, which documents each field's source)."""

    leak: float  # 1 - 1/tau
    theta0: float
    k_thr: float
    s_stim: float
    w_min: float
    span: float  # w_max - w_min
    gain: float  # the resolved input gain g
    d_h: float
    dopamine: float
    r_s: float
    theta_rise: float
    theta_fall: float
    f_thr: float
    syn_lookback: int  # a contribution window starts this many ticks before t_first (syn_window)
    isi_max: int
    t_dop: int
    n_silent: int
    m: int  # L neurons per column
    present_ticks: int
    period: int  # present_ticks + silent_ticks
    block_span: int  # an unforced spike at t blocks its column until t + block_span (block_span)
    label_tick: int
    force_tick: int
    dopamine_tick: int
    input_delay: int
    seed: int
    bernoulli: bool  # coder "bernoulli" (else the accumulator coder)
    carry_accumulator: bool
    force_all: bool  # forcing "all" (else the most depolarised neuron)
    block_column: bool  # blocking "column" (else none)
    bursts_end_with_sample: bool  # burst_scope "sample" (else "continuous")
    fire_all: bool  # firing "all_above_threshold" (else the column's most depolarised neuron)
    theta_at_ah_only: bool  # theta_refresh "anti_hebbian" (else after every weight change)
    gate_in_sample: bool  # gate_scope "sample" (else the window of gate_ticks)
    gate_ticks: int  # the GATE's silence after an OUT spike (gate_scope "window")
    copy_share: float  # each copy learns from this share of the training samples (bagging)
    input_share: float  # each copy sees this share of the inputs (random subspaces)
    # The ensemble index of the state's copy 0: a state may hold a contiguous group of the
    # copies (copies trained on different workers); noise and bagging are keyed by the ensemble
    # index, so a group learns and votes exactly as those copies of the whole ensemble do.
    first_copy: int
    # Views (:meth:`pipeline.colanet.ColanetConfig.n_coded`): the ensemble's ``n_copies`` copies
    # in ``views`` contiguous groups, group v seeing the coded inputs ``v D .. (v+1) D - 1``.
    views: int
    n_copies: int


class TrainScratch(NamedTuple):
    """Per-copy work arrays of a training chunk."""

    current: np.ndarray  # (P, N) float64: buffered input current of every tick
    stale: np.ndarray  # (N,) bool: weights changed in this sample, recompute the current
    # Inputs arriving at each tick, ascending: tick k's are
    # arrival_inputs[arrival_start[k]:arrival_start[k + 1]].
    arrival_start: np.ndarray  # (P + 1,) int64
    arrival_inputs: np.ndarray  # (P * D,) int64
    # Neuron-major copies of the copy's resources and weights for the chunk: row n holds
    # neuron n's D synapses, contiguous, so that plasticity passes are unit-stride.  ``r_t`` is
    # the truth during the chunk (written back to ``r`` at its end); ``w_t`` is the truth for
    # the neurons marked ``stale`` (their columns are written back to ``w`` at the sample's end).
    r_t: np.ndarray  # (N, D) float32
    w_t: np.ndarray  # (N, D) float32
    stale_list: np.ndarray  # (N,) int64: the stale neurons, ascending, when written back
    # The synapses of the last window selection (:func:`select_synapses`): ``selected[:count]``
    # for the masks ``selection_key[:4]``; ``selection_key[4] == 0``: none yet in this sample.
    selected: np.ndarray  # (D,) int64
    selection_key: np.ndarray  # (5,) uint64
    selection_count: np.ndarray  # (1,) int64


class InferScratch(NamedTuple):
    """Per-work-item arrays of inference: a fresh neuron state for each sample."""

    u: np.ndarray  # (N,) float64
    block_until: np.ndarray  # (C,) int64
    block_by: np.ndarray  # (C,) int32
    current: np.ndarray  # (P, N) float64


# --- counter-based hash ----------------------------------------------------
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NOISE_DOMAIN = np.uint64(0x6E6F697365)  # "noise"
_CODER_DOMAIN = np.uint64(0x636F646572)  # "coder"
_BAG_DOMAIN = np.uint64(0x626167)  # "bag"
_SEEN_DOMAIN = np.uint64(0x7365656E)  # "seen"
_SH11 = np.uint64(11)
_SH27 = np.uint64(27)
_SH30 = np.uint64(30)
_SH31 = np.uint64(31)
_SH37 = np.uint64(37)
_LOW26 = np.uint64((1 << 26) - 1)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_INV_2_53 = 1.0 / 9007199254740992.0


@njit(cache=True)
def mix64(z):
    """splitmix64 finaliser (a bijection on uint64 with good avalanche)."""
    z = (z ^ (z >> _SH30)) * _M1
    z = (z ^ (z >> _SH27)) * _M2
    return z ^ (z >> _SH31)


@njit(cache=True)
def absorb(h, x):
    """Chain one more key component ``x`` (uint64) into the hash ``h``."""
    return mix64(h ^ mix64(x + _GOLDEN))


@njit(cache=True)
def unit_float(h):
    """Top 53 bits of ``h`` as a float64 uniform in [0, 1): ``float64(h >> 11) * 2^-53``.

    The 53-bit integer is converted as two exact 27- and 26-bit halves (int32, which AVX2
    converts four at a time; uint64 it cannot), ``hi * 2^26 + lo``: every step is exact, so
    the value is the same as converting it at once."""
    hi = np.float64(np.int32(h >> _SH37))
    lo = np.float64(np.int32((h >> _SH11) & _LOW26))
    return (hi * 67108864.0 + lo) * _INV_2_53


@njit(cache=True)
def noise_tick_key(seed, copy, stream, sample_index, k):
    """Key of the noise of one (copy, stream, sample, local tick); the
    neuron ``n`` gets ``unit_float(absorb(key, n))``."""
    h = absorb(_NOISE_DOMAIN, np.uint64(seed))
    h = absorb(h, np.uint64(copy))
    h = absorb(h, np.uint64(stream))
    h = absorb(h, np.uint64(sample_index))
    return absorb(h, np.uint64(k))


@njit(cache=True)
def coder_tick_key(seed, sample_index, k):
    """Key of the Bernoulli coder at one (sample, presentation tick); input
    ``j`` spikes when ``unit_float(absorb(key, j)) < d_j``."""
    h = absorb(_CODER_DOMAIN, np.uint64(seed))
    h = absorb(h, np.uint64(sample_index))
    return absorb(h, np.uint64(k))


@njit(cache=True)
def sits_out(hp, copy, sample_index):
    """Bagging: the state's copy ``copy`` (ensemble copy ``e = first_copy + copy``) sits training
    sample ``sample_index`` out (it neither learns from it nor votes on it) when
    ``unit_float(absorb(absorb(absorb(BAG, seed), e), sample_index)) >= copy_share``; never with
    ``copy_share`` 1."""
    if hp.copy_share >= 1.0:
        return False
    h = absorb(_BAG_DOMAIN, np.uint64(hp.seed))
    h = absorb(h, np.uint64(hp.first_copy + copy))
    return unit_float(absorb(h, np.uint64(sample_index))) >= hp.copy_share


@njit(cache=True)
def seen_words(hp, copy, out):
    """Random subspaces: which inputs the state's copy ``copy`` (ensemble copy
    ``e = first_copy + copy``) sees, as words to AND arrival patterns with: ``out[j]`` all ones
    when ``unit_float(absorb(absorb(absorb(SEEN, seed), e), j)) < input_share``, else 0 (every
    input with ``input_share`` 1). Returns whether some input is unseen."""
    if hp.input_share >= 1.0:
        out[:] = _ALL
        return False
    h = absorb(absorb(_SEEN_DOMAIN, np.uint64(hp.seed)), np.uint64(hp.first_copy + copy))
    unseen = False
    for j in range(out.shape[0]):
        if unit_float(absorb(h, np.uint64(j))) < hp.input_share:
            out[j] = _ALL
        else:
            out[j] = _ZERO
            unseen = True
    return unseen


@njit(cache=True)
def view_start(hp, copy, D):
    """The first coded input of the view that the state's copy ``copy`` (ensemble copy
    ``e = first_copy + copy``) sees, ``v D``: the ``n_copies`` copies split into ``views``
    contiguous groups of near-equal size, larger ones first (``pipeline.colanet.copy_groups``),
    group ``v`` seeing view ``v``."""
    e = hp.first_copy + copy
    size, larger = hp.n_copies // hp.views, hp.n_copies % hp.views
    if e < larger * (size + 1):
        return (e // (size + 1)) * D
    return (larger + (e - larger * (size + 1)) // size) * D


@njit(cache=True)
def seen_only(words, seen, out):
    """``out = words & seen``: arrival words (a pattern or a history) of the inputs a copy sees;
    returns ``out``."""
    for j in range(words.shape[0]):
        out[j] = words[j] & seen[j]
    return out


@njit(cache=True)
def hash_uniforms(key, count):
    """``unit_float(absorb(key, i))`` for i in 0..count-1 (used by tests)."""
    key = np.uint64(key)
    out = np.empty(count)
    for i in range(count):
        out[i] = unit_float(absorb(key, np.uint64(i)))
    return out


@njit(cache=True)
def neuron_keys(N):
    """``mix64(n + GOLDEN)`` for each neuron, the per-neuron half of the noise key."""
    out = np.empty(N, np.uint64)
    for n in range(N):
        out[n] = mix64(np.uint64(n) + _GOLDEN)
    return out


# --- small helpers ----------------------------------------------------------
@njit(cache=True, error_model="numpy")
def weight_scalar(r, w_min, span):
    """w(r) = w_min + span * r+ / (span + r+), evaluated in float64 from a
    float32 resource and rounded to float32 (same expression order as the
    NumPy version).  (``error_model="numpy"``: no zero-divisor test, which would
    keep LLVM from vectorising the loops that inline it; ``span + r+ > 0``.)"""
    rp = np.float64(r)
    rp = rp if rp > 0.0 else 0.0
    return np.float32(w_min + span * rp / (span + rp))


#: Partial sums of :func:`positive_weight_sum` (a fixed number: the order of its float64
#: additions, and so its rounding, is part of the model).
SUM_LANES = 8


@njit(cache=True)
def positive_weight_sum(w):
    """``sum_j max(w_j, 0)`` of one neuron's weights ``w`` (D,) float32, in float64, in a
    fixed order that vectorises: ``SUM_LANES`` (8) partial sums, lane ``l`` adding the
    ``w_j`` with ``j % 8 == l`` in ascending j (the weights zero-padded to a multiple of 8),
    combined as ``((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))``.

    The one definition of the threshold's sum: the NumPy reference
    (``pipeline.colanet_reference.positive_weight_sum``) and any other port
    must add in exactly this order to give the same ``theta_add``."""
    D = w.shape[0]
    full = D - D % SUM_LANES
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for j in range(0, full, SUM_LANES):
        s0 += max(np.float64(w[j]), 0.0)
        s1 += max(np.float64(w[j + 1]), 0.0)
        s2 += max(np.float64(w[j + 2]), 0.0)
        s3 += max(np.float64(w[j + 3]), 0.0)
        s4 += max(np.float64(w[j + 4]), 0.0)
        s5 += max(np.float64(w[j + 5]), 0.0)
        s6 += max(np.float64(w[j + 6]), 0.0)
        s7 += max(np.float64(w[j + 7]), 0.0)
    # the tail j = full..D-1 goes to lanes 0..D-full-1 (its zero padding adds nothing)
    tail = D - full
    if tail > 0:
        s0 += max(np.float64(w[full]), 0.0)
    if tail > 1:
        s1 += max(np.float64(w[full + 1]), 0.0)
    if tail > 2:
        s2 += max(np.float64(w[full + 2]), 0.0)
    if tail > 3:
        s3 += max(np.float64(w[full + 3]), 0.0)
    if tail > 4:
        s4 += max(np.float64(w[full + 4]), 0.0)
    if tail > 5:
        s5 += max(np.float64(w[full + 5]), 0.0)
    if tail > 6:
        s6 += max(np.float64(w[full + 6]), 0.0)
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(cache=True)
def theta_of_sum(hp, total):
    """theta_add = k_thr * (g * total) of a neuron's :func:`positive_weight_sum`."""
    return hp.k_thr * (hp.gain * total)


@njit(cache=True)
def to_neuron_major(a, out):
    """``out[n, j] = a[j, n]`` for a (D, N) array: strips of 8 input rows, each neuron's 8
    values written at once (the 8 rows' lines stay in cache while n sweeps them)."""
    D, N = a.shape
    full = D - D % 8
    for j in range(0, full, 8):
        for n in range(N):
            o = out[n]
            o[j] = a[j, n]
            o[j + 1] = a[j + 1, n]
            o[j + 2] = a[j + 2, n]
            o[j + 3] = a[j + 3, n]
            o[j + 4] = a[j + 4, n]
            o[j + 5] = a[j + 5, n]
            o[j + 6] = a[j + 6, n]
            o[j + 7] = a[j + 7, n]
    for j in range(full, D):
        for n in range(N):
            out[n, j] = a[j, n]


@njit(cache=True)
def to_input_major(a_t, out):
    """``out[j, n] = a_t[n, j]``: the inverse of :func:`to_neuron_major`, by the same strips."""
    N, D = a_t.shape
    full = D - D % 8
    for j in range(0, full, 8):
        for n in range(N):
            i = a_t[n]
            out[j, n] = i[j]
            out[j + 1, n] = i[j + 1]
            out[j + 2, n] = i[j + 2]
            out[j + 3, n] = i[j + 3]
            out[j + 4, n] = i[j + 4]
            out[j + 5, n] = i[j + 5]
            out[j + 6, n] = i[j + 6]
            out[j + 7, n] = i[j + 7]
    for j in range(full, D):
        for n in range(N):
            out[j, n] = a_t[n, j]


@njit(cache=True)
def theta_of_weights(w, k_thr, gain):
    """theta_add_n = k_thr * (g * sum_j max(w_jn, 0)) for every column n of
    ``w`` (D, N), each summed by :func:`positive_weight_sum`."""
    D, N = w.shape
    w_t = np.empty((N, D), np.float32)
    to_neuron_major(w, w_t)
    total = np.empty(N)
    for n in range(N):
        total[n] = k_thr * (gain * positive_weight_sum(w_t[n]))
    return total


@njit(cache=True)
def range_mask(lo, hi):
    """uint64 with bits lo..hi (inclusive) set; 0 <= lo <= hi <= 63."""
    width = hi - lo + 1
    if width >= 64:
        return _ALL
    return ((_ONE << np.uint64(width)) - _ONE) << np.uint64(lo)


@njit(cache=True)
def window_masks(t0, t, a, b):
    """Masks for "arrived in global ticks [a, b]" as seen at tick ``t`` of the
    sample that started at ``t0``.

    The window is first clipped to the 64-tick history ``[t - 63, t]``; the
    part before ``t0`` tests ``bits0`` (bit p = tick t0-1-p), the part from
    ``t0`` tests the sample's ``pat`` (bit ka = tick t0+ka).
    Returns ``(history_mask, sample_mask)``.
    """
    if a < t - (HISTORY - 1):
        a = t - (HISTORY - 1)
    if b > t:
        b = t
    hm = _ZERO
    cm = _ZERO
    if a > b:
        return hm, cm
    lo = a if a > t0 else t0
    if lo <= b:
        cm = range_mask(lo - t0, b - t0)
    hi = b if b < t0 - 1 else t0 - 1
    if a <= hi:
        hm = range_mask(t0 - 1 - hi, t0 - 1 - a)
    return hm, cm


@njit(cache=True)
def arrives(pattern, k):
    """Whether bit ``k`` of an arrival word is set (an arrival at local tick k)."""
    return (pattern >> np.uint64(k)) & _ONE != _ZERO


@njit(cache=True)
def in_burst(t, t_spike, isi_max, floor):
    """A neuron whose last spike was at ``t_spike`` is in a burst at tick ``t``:
    ``t - t_spike < isi_max`` and ``t_spike >= floor``, where ``floor`` is the
    sample's first tick with burst_scope "sample" (bursts end with their sample)
    and ``NEVER`` with "continuous" (see :func:`burst_floor`)."""
    return t - t_spike < isi_max and t_spike >= floor


@njit(cache=True)
def burst_floor(hp, t0):
    """Earliest last spike that a spike of the sample starting at ``t0`` can continue."""
    return t0 if hp.bursts_end_with_sample else NEVER


@njit(cache=True)
def is_blocked(t, n, c, block_until, block_by):
    """Neuron n of column c is blocked at tick t: ``t < block_until[c]`` and it
    is not the neuron that set the block."""
    return t < block_until[c] and n != block_by[c]


@njit(cache=True)
def record_spike(rec, b, k, e, n):
    """``rec[b, k, e, n] = True`` when spikes are recorded (``rec`` not None)."""
    if rec is not None:
        rec[b, k, e, n] = True


# --- input coding ------------------------------------------------------------
@njit(cache=True)
def encode_sample(x_b, sat, sample_index, acc, hp, d, pat_b):
    """One sample's arrival pattern ``pat_b`` (D,) (zero on entry) from its features ``x_b``:
    the accumulator coder runs on ``acc`` (zeroed first unless ``carry_accumulator``; the
    caller passes a fresh one in inference), the Bernoulli coder on its counter-based uniforms;
    ``d`` (D,) is scratch for the drive."""
    D = x_b.shape[0]
    for j in range(D):
        v = np.float64(x_b[j]) / sat
        if v <= 0.0:
            v = 0.0
        elif v > 1.0:
            v = 1.0
        d[j] = v
    if not hp.bernoulli:
        if not hp.carry_accumulator:
            for j in range(D):
                acc[j] = 0.0
        for k in range(hp.present_ticks):
            bit = _ONE << np.uint64(k + hp.input_delay)
            for j in range(D):
                acc[j] += d[j]
                if acc[j] >= 1.0:
                    acc[j] -= 1.0
                    pat_b[j] |= bit
    else:
        for k in range(hp.present_ticks):
            bit = _ONE << np.uint64(k + hp.input_delay)
            key = coder_tick_key(hp.seed, sample_index, k)
            for j in range(D):
                if unit_float(absorb(key, np.uint64(j))) < d[j]:
                    pat_b[j] |= bit


@njit(cache=True, parallel=True)
def encode_chunk(x, sat, sample_index, acc, hp, fresh):
    """Input arrival patterns of a chunk.

    Returns ``pat`` (B, D) uint64: bit ``k + input_delay`` of ``pat[b, j]`` is
    set when input ``j`` spikes at presentation tick ``k`` of sample ``b``.
    Drive ``d_j = clip(x_j / sat, 0, 1)``.  Accumulator coder: per tick
    ``acc += d; if acc >= 1: spike, acc -= 1``; ``acc`` is zeroed at each
    sample start unless ``carry_accumulator`` (and always when ``fresh``, as in
    inference); it is updated in place (to the last sample's).  Bernoulli coder: spike when
    the counter-based uniform of (seed, sample, k, j) is below ``d_j``.  Samples are coded in
    parallel unless the accumulator carries over from one to the next (:func:`encode_sample`,
    the same arithmetic either way).
    """
    B, D = x.shape
    pat = np.zeros((B, D), np.uint64)
    if hp.carry_accumulator and not fresh and not hp.bernoulli:
        d = np.empty(D)
        for b in range(B):
            encode_sample(x[b], sat, sample_index[b], acc, hp, d, pat[b])
        return pat
    for b in prange(B):
        own, d = np.zeros(D), np.empty(D)
        encode_sample(x[b], sat, sample_index[b], own, hp, d, pat[b])
        if b == B - 1 and not hp.bernoulli:
            acc[:] = own  # where the serial loop would leave it
    return pat


@njit(cache=True)
def history_chunk(bits, pat, period):
    """Arrival history at the start of each sample of a chunk.

    ``bits`` (D,) is the global history before the chunk (bit p = arrival at
    global tick t-1-p); returns ``bits0`` (B, D) and advances ``bits`` in
    place over the chunk (shift by ``period`` per sample, arrivals of local
    tick ka land at bit period-1-ka)."""
    B, D = pat.shape
    bits0 = np.empty((B, D), np.uint64)
    sh = np.uint64(period)
    for b in range(B):
        for j in range(D):
            bits0[b, j] = bits[j]
            p = pat[b, j]
            rev = _ZERO
            for ka in range(period):
                if (p >> np.uint64(ka)) & _ONE:
                    rev |= _ONE << np.uint64(period - 1 - ka)
            bits[j] = (bits[j] << sh) | rev
    return bits0


# --- currents -------------------------------------------------------------------
@njit(cache=True)
def sample_currents(w, pat, current):
    """Buffered currents of a sample: ``I[k, n] = sum_j w_jn`` over the inputs
    ``j`` arriving at local tick ``k``, summed in ascending j in float64, in one
    pass over the active rows (each read once from memory, and again from cache for
    each further tick it arrives at; converting it on the fly costs less than
    storing a converted copy).

    Fills ``current`` (P, N) and returns the OR of the arrival words (bit k:
    some input arrives at tick k)."""
    D, N = w.shape
    P = current.shape[0]
    arriving = _ZERO
    for ka in range(P):
        for n in range(N):
            current[ka, n] = 0.0
    for j in range(D):
        p = pat[j]
        if p == _ZERO:
            continue
        arriving |= p
        row = w[j]
        for ka in range(P):
            if (p >> np.uint64(ka)) & _ONE:
                current_k = current[ka]
                for n in range(N):
                    current_k[n] += row[n]
    return arriving


@njit(cache=True)
def arrival_lists(pat, arriving, arrival_start, arrival_inputs):
    """Inputs arriving at each local tick, ascending: tick k's are
    ``arrival_inputs[arrival_start[k]:arrival_start[k + 1]]`` (what a stale
    neuron's current is recomputed from)."""
    P = arrival_start.shape[0] - 1
    pos = 0
    for ka in range(P):
        arrival_start[ka] = pos
        if arrives(arriving, ka):
            for j in range(pat.shape[0]):
                if arrives(pat[j], ka):
                    arrival_inputs[pos] = j
                    pos += 1
    arrival_start[P] = pos


@njit(cache=True)
def refresh_stale_currents(scratch, k, t, m, block_until, block_by):
    """``I[k, n] = sum_j w_jn`` over tick k's arrival list (ascending j, float64)
    for every neuron whose weights changed in this sample and whose current is
    used at tick k (not blocked): the buffered value predates the change.  The
    weights are read from the neuron-major ``w_t`` (one contiguous row)."""
    current = scratch.current[k]
    lo = scratch.arrival_start[k]
    hi = scratch.arrival_start[k + 1]
    for n in range(scratch.w_t.shape[0]):
        if scratch.stale[n] and not is_blocked(t, n, n // m, block_until, block_by):
            current[n] = listed_current(scratch.w_t[n], scratch.arrival_inputs, lo, hi)


@njit(cache=True, inline="always")
def listed_current(w_n, inputs, lo, hi):
    """``sum_j w_jn`` over ``inputs[lo:hi]`` (one tick's arrival list, ascending), in float64,
    from neuron n's row ``w_n`` of ``w_t``: the current of a neuron whose buffered value went
    stale."""
    total = 0.0
    for i in range(lo, hi):
        total += w_n[inputs[i]]
    return total


@njit(cache=True)
def write_back_stale_weights(scratch, w):
    """At a sample's end: the columns ``w[:, n]`` of the neurons whose weights changed
    in it are copied from ``w_t`` (row by row of ``w``, so that the stale neurons of
    a column share its cache lines), for the next sample's row pass."""
    n_stale = 0
    for n in range(scratch.stale.shape[0]):
        if scratch.stale[n]:
            scratch.stale_list[n_stale] = n
            n_stale += 1
    if n_stale == 0:
        return
    stale_list = scratch.stale_list
    w_t = scratch.w_t
    for j in range(w.shape[0]):
        for i in range(n_stale):
            n = stale_list[i]
            w[j, n] = w_t[n, j]


# --- the steps of a tick, shared by training and inference ----------------------
@njit(cache=True)
def reset_sample(u, block_until, block_by):
    """Step 1, at a sample's first tick: ``u = 0``; every column block is cleared
    (``block_until = NEVER``, ``block_by = -1``)."""
    for n in range(u.shape[0]):
        u[n] = 0.0
    for c in range(block_until.shape[0]):
        block_until[c] = NEVER
        block_by[c] = -1


@njit(cache=True)
def leak_and_noise(u, hp, tick_key, neuron_key):
    """Step 2: ``u_n <- u_n (1 - 1/tau) + s_stim U_n`` with ``U_n`` the
    counter-based uniform of (tick_key, n)."""
    for n in range(u.shape[0]):
        leak_and_noise_neuron(u, hp, tick_key, neuron_key, n)


@njit(cache=True, inline="always")
def leak_and_noise_neuron(u, hp, tick_key, neuron_key, n):
    """Step 2 for neuron n (:func:`leak_and_noise`)."""
    u[n] = u[n] * hp.leak + hp.s_stim * unit_float(mix64(tick_key ^ neuron_key[n]))


@njit(cache=True)
def add_input(u, current, hp, t, block_until, block_by):
    """Step 3, on a tick where inputs arrive: ``u_n <- max(u_n + g I_n, 0)`` for
    every neuron not blocked (:func:`is_blocked`); a blocked neuron keeps its
    ``u``.  (Without arrivals ``u >= 0`` already: leak and noise keep it so.)"""
    for c in range(block_until.shape[0]):  # column by column: no division n // m per neuron
        add_input_neurons(u, current, hp, t, block_until, block_by, c, c * hp.m, (c + 1) * hp.m)


@njit(cache=True)
def add_input_neurons(u, current, hp, t, block_until, block_by, c, lo, hi):
    """Step 3 for the neurons ``lo:hi`` of column c (:func:`add_input`: the CPU passes a whole
    column, a GPU thread its one neuron)."""
    for n in range(lo, hi):
        if not is_blocked(t, n, c, block_until, block_by):
            u[n] += hp.gain * current[n]
        if u[n] < 0.0:
            u[n] = 0.0


@njit(cache=True)
def column_spiker(u, theta_add, hp, c):
    """Step 4: the neuron of column c that fires unforced, among those with
    ``u_n >= theta0 + theta_add_n`` the most depolarised (ties: lowest index);
    -1 when none crosses.  With firing "all_above_threshold" the others above
    threshold fire too (:func:`fires_beside`), and this one sets the block."""
    best = -1
    best_u = -1.0
    for n in range(c * hp.m, (c + 1) * hp.m):
        if u[n] >= hp.theta0 + theta_add[n] and u[n] > best_u:
            best = n
            best_u = u[n]
    return best


@njit(cache=True)
def fires_beside(u, theta_add, hp, n, best):
    """Step 4 with firing "all_above_threshold": neuron n, not the column's most
    depolarised crossing neuron ``best``, fires too when ``u_n >= theta0 + theta_add_n``."""
    return n != best and u[n] >= hp.theta0 + theta_add[n]


@njit(cache=True)
def unforced_spike(hp, n, c, t, u, block_until, block_by, votes):
    """Step 4, what an unforced spike of neuron n (column c) does in training and
    inference alike: ``u_n = 0``, one OUT vote for c, and with blocking "column"
    ``block_until[c] = t + block_span``, ``block_by[c] = n`` (block_span:
    ``block_ticks``, or ``block_ticks + 1`` with block_span "block_ticks").  When
    several neurons of a column fire at one tick the most depolarised one fires
    last, so that it is the one exempt from the block."""
    u[n] = 0.0
    votes[c] += 1
    if hp.block_column:
        block_until[c] = t + hp.block_span
        block_by[c] = n


# --- plasticity (training only) --------------------------------------------------
@njit(cache=True)
def stability_scale(stability):
    """min(2^-S, 1): stability makes a neuron less plastic.  (LLVM evaluates this
    ``pow(2, -S)`` as ``exp2(-S)``; the reference does the same.)"""
    scale = math.pow(2.0, -stability)
    return scale if scale < 1.0 else 1.0


@njit(cache=True, error_model="numpy")
def change_all_synapses(hp, r_n, w_n, dr):
    """``r_j <- float32(r_j + dr)`` and ``w_j <- w(r_j)`` on every synapse of one neuron
    (its contiguous rows ``r_n``, ``w_n`` of ``r_t``, ``w_t``): one elementwise loop
    that LLVM vectorises (``error_model="numpy"``: no zero-divisor test)."""
    for j in range(r_n.shape[0]):
        rr = np.float32(np.float64(r_n[j]) + dr)
        r_n[j] = rr
        w_n[j] = weight_scalar(rr, hp.w_min, hp.span)


@njit(cache=True)
def select_synapses(scratch, inside, outside, pat, bits0):
    """The inputs j (ascending) that arrived in the window ``inside`` and not in
    ``outside`` (each a ``(history_mask, sample_mask)`` pair of :func:`window_masks`):
    ``scratch.selected[:count]``; returns ``count``.  One branch-free pass over the
    arrival words; the last selection of the sample is reused when the masks are the
    same (the neurons of a column given dopamine together often share their window)."""
    key = scratch.selection_key
    if (key[4] != _ZERO and key[0] == inside[0] and key[1] == inside[1]
            and key[2] == outside[0] and key[3] == outside[1]):
        return scratch.selection_count[0]
    selected = scratch.selected
    count = 0
    for j in range(pat.shape[0]):
        arrived = ((bits0[j] & inside[0]) | (pat[j] & inside[1])) != _ZERO
        excluded = ((bits0[j] & outside[0]) | (pat[j] & outside[1])) != _ZERO
        selected[count] = j
        count += np.int64(arrived) & (np.int64(excluded) ^ 1)
    key[0] = inside[0]
    key[1] = inside[1]
    key[2] = outside[0]
    key[3] = outside[1]
    key[4] = _ONE
    scratch.selection_count[0] = count
    return count


@njit(cache=True, error_model="numpy")
def change_synapses(hp, r_n, w_n, dr, selected, count):
    """``r_j <- float32(r_j + dr)`` and ``w_j <- w(r_j)`` on the synapses
    ``selected[:count]`` of one neuron (its contiguous rows ``r_n``, ``w_n`` of
    ``r_t``, ``w_t``; see :func:`select_synapses`)."""
    for i in range(count):
        j = selected[i]
        rr = np.float32(np.float64(r_n[j]) + dr)
        r_n[j] = rr
        w_n[j] = weight_scalar(rr, hp.w_min, hp.span)


#: When :func:`plastic_change` sets ``theta_add`` from the weights.
THETA_IF_CHANGED = 0  # when a synapse changed (theta_refresh "every_change")
THETA_ALWAYS = 1  # at every anti-Hebbian step (theta_refresh "anti_hebbian")
THETA_NEVER = 2  # never: dopamine with theta_refresh "anti_hebbian"


@njit(cache=True)
def plastic_change(hp, s, e, n, dr_base, inside, outside, pat, bits0, scratch, theta_when):
    """A resource change of neuron n on the synapses that arrived in ``inside``
    and not in ``outside``: ``dr = dr_base min(2^-S_n, 1)``, mirrored in the free
    pool ``F_n -= dr * count``; when any synapse changed the neuron's buffered
    currents are stale.  ``theta_add_n`` is set from the weights as ``theta_when``
    says (THETA_IF_CHANGED, THETA_ALWAYS or THETA_NEVER)."""
    dr = dr_base * stability_scale(s.stability[e, n])
    count = select_synapses(scratch, inside, outside, pat, bits0)
    change_synapses(hp, scratch.r_t[n], scratch.w_t[n], dr, scratch.selected, count)
    s.free_pool[e, n] -= dr * count
    if count > 0:
        scratch.stale[n] = True
    if theta_when == THETA_ALWAYS or (theta_when == THETA_IF_CHANGED and count > 0):
        s.theta_add[e, n] = (theta_of_sum(hp, positive_weight_sum(scratch.w_t[n]))
                             + s.theta_shift[e, n])


@njit(cache=True)
def continue_or_start_burst(hp, s, e, n, t, floor):
    """Burst bookkeeping of an unforced spike of neuron n at t: in a burst
    (:func:`in_burst`) it continues it (status 3; a forced burst stays 1), else
    it starts one (status 2, ``t_first = t``); ``t_spike = t``."""
    if in_burst(t, s.t_spike[e, n], hp.isi_max, floor):
        if s.burst[e, n] != 1:
            s.burst[e, n] = 3
    else:
        s.burst[e, n] = 2
        s.t_first[e, n] = t
    s.t_spike[e, n] = t


@njit(cache=True)
def anti_hebbian(hp, s, e, n, t, t0, pat, bits0, scratch):
    """Anti-Hebbian step at an unforced spike of neuron n at t: ``dr = d_h`` on the
    inputs that arrived in ``[t_first - L, t]`` and not in ``[t_first - L,
    last_ah_tick]`` (already depressed in this burst, when ``last_ah_tick >=
    t_first``), ``L = syn_lookback`` (``t_syn``, or ``t_syn - 1`` with syn_window
    "t_syn"); then ``last_ah_tick = t``.  ``theta_add`` follows the weights when a
    synapse changed, or always with theta_refresh "anti_hebbian"."""
    start = s.t_first[e, n] - hp.syn_lookback
    inside = window_masks(t0, t, start, t)
    outside = (_ZERO, _ZERO)
    if s.last_ah_tick[e, n] >= s.t_first[e, n]:
        outside = window_masks(t0, t, start, s.last_ah_tick[e, n])
    plastic_change(hp, s, e, n, hp.d_h, inside, outside, pat, bits0, scratch,
                   THETA_ALWAYS if hp.theta_at_ah_only else THETA_IF_CHANGED)
    s.last_ah_tick[e, n] = t


@njit(cache=True)
def gate_fires(hp, t_out_label, t, t0):
    """Step 5 at label_tick: GATE y fires unless column y's OUT fired within the
    last gate_ticks ticks, i.e. unless ``t_out[y] > t - gate_ticks``; with
    gate_scope "sample", unless it fired in this sample (``t_out[y] >= t0``)."""
    if hp.gate_in_sample:
        return t_out_label < t0
    return not (t_out_label > t - hp.gate_ticks)


@njit(cache=True)
def force_spike(hp, s, e, n, t, floor, scratch):
    """A teacher-forced spike of neuron n at t: ``u_n = 0``, ``t_spike = t``, burst
    status 1 (forced), ``t_first = t`` unless it was in a burst, and its threshold
    falls by ``theta_fall`` (:func:`shift_threshold`); no vote, no block, no
    anti-Hebbian step."""
    if not in_burst(t, s.t_spike[e, n], hp.isi_max, floor):
        s.t_first[e, n] = t
    s.burst[e, n] = 1
    s.t_spike[e, n] = t
    s.u[e, n] = 0.0
    if hp.theta_fall != 0.0:
        shift_threshold(hp, s, e, n, -hp.theta_fall, scratch)


@njit(cache=True)
def shift_threshold(hp, s, e, n, delta, scratch):
    """Threshold adaptation of neuron n: ``theta_shift_n += delta``, and ``theta_add_n``, which
    includes it, moves with it whatever ``theta_refresh`` says (the shift is not a weight).
    With theta_refresh "every_change" ``theta_add`` is set to its weight part plus the shift,
    the sum :func:`pipeline.colanet.sync_derived` rebuilds on resume (adding ``delta`` to it
    would round differently); with "anti_hebbian" it is state of its own and gets ``delta``."""
    s.theta_shift[e, n] += delta
    if hp.theta_at_ah_only:
        s.theta_add[e, n] += delta
    else:
        s.theta_add[e, n] = (theta_of_sum(hp, positive_weight_sum(scratch.w_t[n]))
                             + s.theta_shift[e, n])


@njit(cache=True)
def unrewarded_rise(hp, s, e, n, label, t0, scratch):
    """Step 5 at dopamine_tick, for a neuron n outside column ``label`` that fired in this
    sample (``t_spike >= t0``; only the label column is ever forced, so the spike was its own):
    a spike that got no dopamine raises its threshold by ``theta_rise``."""
    if n // hp.m != label and s.t_spike[e, n] >= t0:
        shift_threshold(hp, s, e, n, hp.theta_rise, scratch)


@njit(cache=True)
def force_label_column(hp, s, e, label, t, floor, b, k, rec, scratch):
    """Step 5 at force_tick, when the GATE fired: the L neurons of column ``label``
    that did not spike at this tick (``t_spike != t``) are forced
    (:func:`force_spike`): all of them with forcing "all", else the most
    depolarised one (ties: lowest index)."""
    chosen = -1
    chosen_u = -1.0
    for n in range(label * hp.m, (label + 1) * hp.m):
        if s.t_spike[e, n] == t:
            continue
        if hp.force_all:
            force_spike(hp, s, e, n, t, floor, scratch)
            record_spike(rec, b, k, e, n)
        elif s.u[e, n] > chosen_u:
            chosen_u = s.u[e, n]
            chosen = n
    if chosen >= 0:
        force_spike(hp, s, e, chosen, t, floor, scratch)
        record_spike(rec, b, k, e, chosen)


@njit(cache=True)
def stability_after_dopamine(hp, s, e, n, t):
    """Stability on dopamine ``Dp``: a forced last burst gives
    ``S = max(0, S - r_s Dp)``, else
    ``S = max(0, S + r_s Dp max(2 - |t - t_first - isi_max| / isi_max, -1))``."""
    if s.burst[e, n] == 1:
        value = s.stability[e, n] - hp.r_s * hp.dopamine
    else:
        deviation = abs(np.float64(t - s.t_first[e, n] - hp.isi_max)) / hp.isi_max
        factor = 2.0 - deviation
        if factor < -1.0:
            factor = -1.0
        value = s.stability[e, n] + hp.r_s * hp.dopamine * factor
    s.stability[e, n] = value if value > 0.0 else 0.0


@njit(cache=True)
def dopamine(hp, s, e, label, t, t0, pat, bits0, scratch):
    """Step 5 at dopamine_tick: every L neuron of column ``label`` receives
    ``Dp = dopamine``.  One that spiked within ``t_dop`` ticks
    (``t - t_spike <= t_dop``) gets ``dr = Dp`` on the inputs that arrived in
    ``[t_first - syn_lookback, t_spike]``; then its stability follows
    (:func:`stability_after_dopamine`).  ``theta_add`` follows the weights, except
    with theta_refresh "anti_hebbian".  Then every neuron outside the column that fired
    in the sample raises its threshold (:func:`unrewarded_rise`)."""
    for n in range(label * hp.m, (label + 1) * hp.m):
        dopamine_neuron(hp, s, e, n, t, t0, pat, bits0, scratch)
    if hp.theta_rise != 0.0:
        for n in range(s.t_spike.shape[1]):
            unrewarded_rise(hp, s, e, n, label, t0, scratch)


@njit(cache=True)
def dopamine_neuron(hp, s, e, n, t, t0, pat, bits0, scratch):
    """Dopamine for neuron n of the label column (:func:`dopamine`)."""
    theta_when = THETA_NEVER if hp.theta_at_ah_only else THETA_IF_CHANGED
    if t - s.t_spike[e, n] <= hp.t_dop:
        inside = window_masks(t0, t, s.t_first[e, n] - hp.syn_lookback, s.t_spike[e, n])
        plastic_change(hp, s, e, n, hp.dopamine, inside, (_ZERO, _ZERO), pat, bits0, scratch,
                       theta_when)
    stability_after_dopamine(hp, s, e, n, t)


@njit(cache=True)
def conservation(hp, s, e, t, floor, scratch):
    """Step 6, every tick: a neuron out of a burst with ``|F| >= f_thr`` spreads its
    pool back, ``r_jn += F / (D + n_silent)`` on all its synapses (the share of the
    ``n_silent`` fictitious synapses leaks away), and ``F = 0``; ``theta_add``
    follows the weights, except with theta_refresh "anti_hebbian"."""
    free_pool = s.free_pool[e]
    t_spike = s.t_spike[e]
    for n in range(free_pool.shape[0]):
        # The test first, on two numbers: the call that passes the whole state is the rare case.
        if conserves(hp, free_pool[n], t_spike[n], t, floor):
            conserve_neuron(hp, s, e, n, scratch)


@njit(cache=True, inline="always")
def conserves(hp, pool, t_spike, t, floor):
    """Whether a neuron with free pool ``pool`` and last spike ``t_spike`` spreads its pool
    back at tick t: out of a burst (:func:`in_burst`) and ``|F| >= f_thr``."""
    return not in_burst(t, t_spike, hp.isi_max, floor) and abs(pool) >= hp.f_thr


@njit(cache=True)
def conserve_neuron(hp, s, e, n, scratch):
    """Step 6 for neuron n, when it :func:`conserves`: ``r_jn += F / (D + n_silent)`` on its row
    of ``r_t``, ``w_t``, ``F = 0`` (:func:`conservation`)."""
    D = scratch.r_t.shape[1]
    change_all_synapses(hp, scratch.r_t[n], scratch.w_t[n],
                        s.free_pool[e, n] / (D + hp.n_silent))
    if not hp.theta_at_ah_only:
        s.theta_add[e, n] = (theta_of_sum(hp, positive_weight_sum(scratch.w_t[n]))
                             + s.theta_shift[e, n])
    s.free_pool[e, n] = 0.0
    scratch.stale[n] = True


# --- one sample -------------------------------------------------------------------
@njit(cache=True)
def train_unforced_spike(hp, s, e, b, k, n, c, t, t0, floor, pat, bits0, scratch, votes, rec):
    """Step 4 in training: an unforced spike of neuron n (column c) at tick t
    (local k): :func:`unforced_spike`, recorded, burst bookkeeping, ``t_out[c] = t``
    and the anti-Hebbian step."""
    unforced_spike(hp, n, c, t, s.u[e], s.block_until[e], s.block_by[e], votes)
    record_spike(rec, b, k, e, n)
    continue_or_start_burst(hp, s, e, n, t, floor)
    s.t_out[e, c] = t
    anti_hebbian(hp, s, e, n, t, t0, pat, bits0, scratch)


@njit(cache=True, inline="always")
def train_column_spikes(hp, s, e, b, k, c, best, t, t0, floor, pat, bits0, scratch, votes, rec):
    """Step 4 in training for column c at tick t, whose most depolarised crossing neuron is
    ``best`` (:func:`column_spiker`, called first by the caller: most columns do not fire): its
    unforced spikes (:func:`fires_beside`), each with :func:`train_unforced_spike`.  Touches only
    column c and its neurons (and their rows of the scratch), so the columns of a copy can run
    side by side (the GPU kernel's threads)."""
    if hp.fire_all:
        u = s.u[e]
        theta_add = s.theta_add[e]
        for n in range(c * hp.m, (c + 1) * hp.m):
            if fires_beside(u, theta_add, hp, n, best):
                train_unforced_spike(hp, s, e, b, k, n, c, t, t0, floor, pat, bits0, scratch,
                                     votes, rec)
    train_unforced_spike(hp, s, e, b, k, best, c, t, t0, floor, pat, bits0, scratch, votes, rec)


@njit(cache=True, inline="always")
def infer_column_spikes(hp, u, theta_add, block_until, block_by, e, b, k, c, best, t, votes, rec):
    """Step 4 in inference for column c at tick t, whose most depolarised crossing neuron is
    ``best`` (:func:`column_spiker`, called first by the caller): its unforced spikes and blocks,
    no plasticity (touches only column c and its neurons)."""
    if hp.fire_all:
        for n in range(c * hp.m, (c + 1) * hp.m):
            if fires_beside(u, theta_add, hp, n, best):
                unforced_spike(hp, n, c, t, u, block_until, block_by, votes)
                record_spike(rec, b, k, e, n)
    unforced_spike(hp, best, c, t, u, block_until, block_by, votes)
    record_spike(rec, b, k, e, best)


@njit(cache=True)
def train_sample(hp, s, e, b, pat, bits0, label, t0, sample_index, neuron_key, scratch, votes,
                 rec):
    """One training sample (P ticks from global tick ``t0``) of copy e, labelled
    ``label``; the steps in the order of :mod:`pipeline.colanet`.  ``votes`` (C,)
    counts its OUT spikes."""
    u = s.u[e]
    theta_add = s.theta_add[e]
    block_until = s.block_until[e]
    block_by = s.block_by[e]
    w = s.w[e]
    floor = burst_floor(hp, t0)
    reset_sample(u, block_until, block_by)
    arriving = sample_currents(w, pat, scratch.current)
    arrival_lists(pat, arriving, scratch.arrival_start, scratch.arrival_inputs)
    scratch.stale[:] = False
    scratch.selection_key[4] = _ZERO  # a new sample: new arrival words
    gate = False
    for k in range(hp.period):
        t = t0 + k
        tick_key = noise_tick_key(hp.seed, hp.first_copy + e, TRAIN_NOISE, sample_index, k)
        leak_and_noise(u, hp, tick_key, neuron_key)
        if arrives(arriving, k):
            refresh_stale_currents(scratch, k, t, hp.m, block_until, block_by)
            add_input(u, scratch.current[k], hp, t, block_until, block_by)
        for c in range(block_until.shape[0]):
            best = column_spiker(u, theta_add, hp, c)
            if best >= 0:
                train_column_spikes(hp, s, e, b, k, c, best, t, t0, floor, pat, bits0, scratch,
                                    votes, rec)
        if k == hp.label_tick:
            gate = gate_fires(hp, s.t_out[e, label], t, t0)
        if k == hp.force_tick and gate:
            force_label_column(hp, s, e, label, t, floor, b, k, rec, scratch)
        if k == hp.dopamine_tick:
            dopamine(hp, s, e, label, t, t0, pat, bits0, scratch)
        conservation(hp, s, e, t, floor, scratch)
    write_back_stale_weights(scratch, w)


@njit(cache=True)
def infer_sample(hp, w, theta_add, e, b, pat, sample_index, neuron_key, scratch, votes, rec):
    """One sample of copy e with plasticity frozen, from a fresh neuron state at
    local tick 0: leak and noise (stream 1), input, unforced spikes and their
    blocks; no teacher, no plasticity.  ``w`` and ``theta_add`` are only read."""
    u = scratch.u
    block_until = scratch.block_until
    block_by = scratch.block_by
    reset_sample(u, block_until, block_by)
    arriving = sample_currents(w, pat, scratch.current)
    for k in range(hp.period):
        t = k  # every sample starts at tick 0
        tick_key = noise_tick_key(hp.seed, hp.first_copy + e, INFER_NOISE, sample_index, k)
        leak_and_noise(u, hp, tick_key, neuron_key)
        if arrives(arriving, k):
            add_input(u, scratch.current[k], hp, t, block_until, block_by)
        for c in range(block_until.shape[0]):
            best = column_spiker(u, theta_add, hp, c)
            if best >= 0:
                infer_column_spikes(hp, u, theta_add, block_until, block_by, e, b, k, c, best, t,
                                    votes, rec)


# --- chunks -----------------------------------------------------------------------
@njit(cache=True, parallel=True)
def train_kernel(hp, s, pat, bits0, y, sample_index, t_start, rec):
    """Train all copies on a chunk (the arrays of ``s`` updated in place); sample
    b starts at global tick ``t_start + b * period``; a copy skips the samples it
    sits out (:func:`sits_out`) and sees only its inputs: its view's block of the
    coded inputs ``pat`` / ``bits0`` (B, views D) (:func:`view_start`), and of those
    with ``input_share`` below 1 its subspace (:func:`seen_words`: the others'
    arrivals are masked out of its pattern and history).  ``rec`` (B, P, E, N)
    bool records every L spike, or is None.

    Returns votes (B, E, C) int32: unforced spikes per class per copy.
    """
    B = pat.shape[0]
    E, D, N = s.w.shape
    C = s.block_until.shape[1]
    P = hp.period
    votes = np.zeros((B, E, C), np.int32)
    neuron_key = neuron_keys(N)
    for e in prange(E):
        scratch = TrainScratch(np.empty((P, N)), np.empty(N, np.bool_),
                               np.empty(P + 1, np.int64), np.empty(P * D, np.int64),
                               np.empty((N, D), np.float32), np.empty((N, D), np.float32),
                               np.empty(N, np.int64), np.empty(D, np.int64),
                               np.zeros(5, np.uint64), np.zeros(1, np.int64))
        to_neuron_major(s.r[e], scratch.r_t)
        to_neuron_major(s.w[e], scratch.w_t)
        seen = np.empty(D, np.uint64)
        subspace = seen_words(hp, e, seen)
        pat_seen, bits_seen = np.empty(D, np.uint64), np.empty(D, np.uint64)
        lo = view_start(hp, e, D)
        for b in range(B):
            if sits_out(hp, e, sample_index[b]):
                continue  # its state waits, unchanged, for its next sample
            pat_b, bits_b = pat[b, lo:lo + D], bits0[b, lo:lo + D]
            if subspace:  # the inputs it does not see never arrive at it
                pat_b = seen_only(pat_b, seen, pat_seen)
                bits_b = seen_only(bits_b, seen, bits_seen)
            train_sample(hp, s, e, b, pat_b, bits_b, y[b], t_start + b * P, sample_index[b],
                         neuron_key, scratch, votes[b, e], rec)
        to_input_major(scratch.r_t, s.r[e])  # w is already current: each sample wrote its changes
    return votes


#: Samples per parallel work item in inference (amortises the scratch arrays).
INFER_BLOCK = 8


@njit(cache=True, parallel=True)
def infer_kernel(hp, w, theta_add, n_classes, pat, sample_index, rec):
    """Frozen-plasticity votes (B, E, C) int32 of the weights ``w`` (E, D, N) and
    thresholds ``theta_add`` (E, N), which are only read, on the coded inputs ``pat``
    (B, views D), each copy its view (:func:`view_start`); every sample starts from
    a fresh neuron state.  ``rec`` (B, P, E, N) bool records every L spike, or is
    None."""
    B = pat.shape[0]
    E, D, N = w.shape
    P = hp.period
    votes = np.zeros((B, E, n_classes), np.int32)
    neuron_key = neuron_keys(N)
    n_blocks = (B + INFER_BLOCK - 1) // INFER_BLOCK
    for item in prange(E * n_blocks):
        e = item // n_blocks
        block = item % n_blocks
        scratch = InferScratch(np.empty(N), np.empty(n_classes, np.int64),
                               np.empty(n_classes, np.int32), np.empty((P, N)))
        seen = np.empty(D, np.uint64)
        subspace = seen_words(hp, e, seen)
        pat_seen = np.empty(D, np.uint64)
        lo = view_start(hp, e, D)
        for b in range(block * INFER_BLOCK, min(B, (block + 1) * INFER_BLOCK)):
            pat_b = pat[b, lo:lo + D]
            if subspace:
                pat_b = seen_only(pat_b, seen, pat_seen)
            infer_sample(hp, w[e], theta_add[e], e, b, pat_b, sample_index[b], neuron_key,
                         scratch, votes[b, e], rec)
    return votes
