"""Numba kernels of the CoLaNET simulator.

The model, its equations and the exact per-tick order are documented in
:mod:`pipeline.colanet`; this module only makes them fast.  Nothing here is
called directly by users: :func:`pipeline.colanet.train_chunk` and
:func:`pipeline.colanet.infer_chunk` validate their inputs, pack the
hyperparameters into two flat arrays (``fp`` floats, ``ip`` integers, indexed
by the ``F_*`` / ``I_*`` constants below) and call these kernels.

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
  current of each tick is recomputed from its column over that tick's
  arrival list, in the same ascending input order, and only on ticks where
  it is used (not blocked).  The result is bit-identical to recomputing
  every tick from the weights, as the reference does.
* Plasticity touches only neurons that spiked, got dopamine or release their
  free pool.

Randomness is counter-based (splitmix64 finaliser of a chained key), never a
stateful generator: results do not depend on chunking, threads or resume
point.  ``pipeline.colanet_reference`` reproduces the same hash with NumPy
``uint64`` arithmetic.
"""

import math

import numpy as np
from numba import njit, prange

#: "Never happened" time stamp: far enough in the past that every window test
#: fails, small enough that ``t - NEVER`` cannot overflow int64.
NEVER = -(1 << 40)

# --- packed hyperparameters ------------------------------------------------
F_LEAK = 0  # 1 - 1/tau
F_THETA0 = 1
F_KTHR = 2
F_SSTIM = 3
F_WMIN = 4
F_WMAX = 5
F_GAIN = 6  # resolved gain g
F_DH = 7
F_DOPAMINE = 8
F_RS = 9
F_FTHR = 10
N_FP = 11

I_TSYN = 0
I_ISI = 1
I_TDOP = 2
I_NSILENT = 3
I_M = 4
I_PRESENT = 5
I_PERIOD = 6
I_BLOCK = 7
I_LABEL = 8
I_FORCE = 9
I_DOPT = 10
I_DELAY = 11
I_FORCE_ALL = 12  # 1: forcing == "all"
I_BLOCK_COL = 13  # 1: blocking == "column"
I_CODER = 14  # 0 accumulator, 1 bernoulli
I_CARRY = 15
I_SEED = 16
I_BURST_SAMPLE = 17  # 1: burst_scope == "sample" (bursts end at the sample start)
N_IP = 18

#: Depth of the arrival history (bits of a uint64 word).
HISTORY = 64

# --- counter-based hash ----------------------------------------------------
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NOISE_DOMAIN = np.uint64(0x6E6F697365)  # "noise"
_CODER_DOMAIN = np.uint64(0x636F646572)  # "coder"
_SH11 = np.uint64(11)
_SH27 = np.uint64(27)
_SH30 = np.uint64(30)
_SH31 = np.uint64(31)
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
    """Top 53 bits of ``h`` as a float64 uniform in [0, 1)."""
    return np.float64(h >> _SH11) * _INV_2_53


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
def hash_uniforms(key, count):
    """``unit_float(absorb(key, i))`` for i in 0..count-1 (used by tests)."""
    key = np.uint64(key)
    out = np.empty(count)
    for i in range(count):
        out[i] = unit_float(absorb(key, np.uint64(i)))
    return out


# --- small helpers ----------------------------------------------------------
@njit(cache=True)
def weight_scalar(r, w_min, span):
    """w(r) = w_min + span * r+ / (span + r+), evaluated in float64 from a
    float32 resource and rounded to float32 (same expression order as the
    NumPy version)."""
    rp = np.float64(r)
    if rp < 0.0:
        rp = 0.0
    return np.float32(w_min + span * rp / (span + rp))


@njit(cache=True)
def theta_of_column(w, n, k_thr, gain):
    """theta_add = k_thr * (g * sum_j max(w_jn, 0)), summed in ascending j."""
    s = 0.0
    for j in range(w.shape[0]):
        v = np.float64(w[j, n])
        if v > 0.0:
            s += v
    return k_thr * (gain * s)


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


# --- input coding ------------------------------------------------------------
@njit(cache=True)
def encode_chunk(x, sat, sample_index, acc, coder, carry, fresh, seed, present, delay):
    """Input arrival patterns of a chunk.

    Returns ``pat`` (B, D) uint64: bit ``k + delay`` of ``pat[b, j]`` is set
    when input ``j`` spikes at presentation tick ``k`` of sample ``b``.
    Drive ``d_j = clip(x_j / sat, 0, 1)``.  Accumulator coder: per tick
    ``acc += d; if acc >= 1: spike, acc -= 1``; ``acc`` is zeroed at each
    sample start unless ``carry`` (and always when ``fresh``, as in
    inference); it is updated in place.  Bernoulli coder: spike when the
    counter-based uniform of (seed, sample, k, j) is below ``d_j``.
    """
    B, D = x.shape
    pat = np.zeros((B, D), np.uint64)
    d = np.empty(D)
    for b in range(B):
        for j in range(D):
            v = np.float64(x[b, j]) / sat
            if v <= 0.0:
                v = 0.0
            elif v > 1.0:
                v = 1.0
            d[j] = v
        if coder == 0:
            if fresh or carry == 0:
                for j in range(D):
                    acc[j] = 0.0
            for k in range(present):
                bit = _ONE << np.uint64(k + delay)
                for j in range(D):
                    acc[j] += d[j]
                    if acc[j] >= 1.0:
                        acc[j] -= 1.0
                        pat[b, j] |= bit
        else:
            for k in range(present):
                bit = _ONE << np.uint64(k + delay)
                key = coder_tick_key(seed, sample_index[b], k)
                for j in range(D):
                    if unit_float(absorb(key, np.uint64(j))) < d[j]:
                        pat[b, j] |= bit
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


# --- plasticity pieces (training only) ----------------------------------------
@njit(cache=True)
def stability_scale(stab):
    """min(2^-S, 1): stability makes a neuron less plastic."""
    scale = math.pow(2.0, -stab)
    return scale if scale < 1.0 else 1.0


@njit(cache=True)
def _update_column(n, dr, select_all, hm, cm, hm_not, cm_not, pat, bits0, r, w,
                   w_min, span, k_thr, gain):
    """One (strided) pass over neuron n's synapses, ascending j: add ``dr``
    (already scaled) to the resource of every selected synapse (all of them
    if ``select_all``, else those whose input arrived in the window (hm, cm)
    and not in the window (hm_not, cm_not)), refresh its weight, and
    recompute ``theta_add`` from the whole column.

    Returns ``(count of changed synapses, theta_add)``.  The caller marks the
    neuron's buffered currents stale when the count is positive.
    """
    s = 0.0
    cnt = 0
    for j in range(r.shape[0]):
        if select_all or (((bits0[j] & hm) | (pat[j] & cm)) != _ZERO
                          and ((bits0[j] & hm_not) | (pat[j] & cm_not)) == _ZERO):
            rr = np.float32(np.float64(r[j, n]) + dr)
            r[j, n] = rr
            wv = weight_scalar(rr, w_min, span)
            w[j, n] = wv
            cnt += 1
        else:
            wv = w[j, n]
        v = np.float64(wv)
        if v > 0.0:
            s += v
    return cnt, k_thr * (gain * s)


@njit(cache=True)
def _force_spike(n, t, isi, floor, t_first, t_spike, burst, u):
    """A teacher-forced spike: no vote, no block, no anti-Hebbian step; it
    marks the (possibly new) burst as forced."""
    if not (t - t_spike[n] < isi and t_spike[n] >= floor):
        t_first[n] = t
    burst[n] = 1
    t_spike[n] = t
    u[n] = 0.0


@njit(cache=True)
def _simulate_sample(train, e, b, pat, bits0, label, t0, sample_index, stream, fp, ip,
                     r, w, u, theta, stab, pool, t_last, t_first, t_spike, burst, last_ah,
                     block_until, block_by, t_out, cur, row64, stale, arr_ptr, arr_idx,
                     nkey, votes, record, rec):
    """One sample (P ticks) of one copy; see pipeline.colanet for the order.

    All neuron arrays are this copy's 1-D views (length N or C); ``r``/``w``
    are this copy's (D, N).  With ``train`` False no teacher, no dopamine and
    no plasticity run, and ``r``, ``w``, ``theta`` are only read.
    """
    D = w.shape[0]
    N = w.shape[1]
    C = block_until.shape[0]
    leak = fp[F_LEAK]
    theta0 = fp[F_THETA0]
    k_thr = fp[F_KTHR]
    s_stim = fp[F_SSTIM]
    w_min = fp[F_WMIN]
    span = fp[F_WMAX] - fp[F_WMIN]
    gain = fp[F_GAIN]
    d_h = fp[F_DH]
    dopamine = fp[F_DOPAMINE]
    r_s = fp[F_RS]
    f_thr = fp[F_FTHR]
    t_syn = ip[I_TSYN]
    isi = ip[I_ISI]
    t_dop = ip[I_TDOP]
    n_silent = ip[I_NSILENT]
    M = ip[I_M]
    P = ip[I_PERIOD]
    block_ticks = ip[I_BLOCK]
    label_tick = ip[I_LABEL]
    force_tick = ip[I_FORCE]
    dop_tick = ip[I_DOPT]
    force_all = ip[I_FORCE_ALL] != 0
    block_col = ip[I_BLOCK_COL] != 0
    seed = ip[I_SEED]
    # A spike continues a burst only if the previous one is recent and, with burst_scope
    # "sample", in this same sample (floor = the sample's first tick).
    floor = t0 if ip[I_BURST_SAMPLE] != 0 else NEVER

    # (1) sample start: potentials and lateral blocking are reset.
    for n in range(N):
        u[n] = 0.0
    for c in range(C):
        block_until[c] = NEVER
        block_by[c] = -1

    # Currents of every tick, one pass over the active rows (each read once,
    # converted once); per tick the inputs are summed in ascending order.
    pat_any = _ZERO
    for ka in range(P):
        for n in range(N):
            cur[ka, n] = 0.0
    for j in range(D):
        p = pat[j]
        if p == _ZERO:
            continue
        pat_any |= p
        for n in range(N):
            row64[n] = w[j, n]
        for ka in range(P):
            if (p >> np.uint64(ka)) & _ONE:
                for n in range(N):
                    cur[ka, n] += row64[n]
    # Neurons whose weights changed during this sample have stale buffered
    # currents: they are recomputed tick by tick (only when used, i.e. not
    # blocked) from the arrival lists, in the same ascending order.
    for n in range(N):
        stale[n] = False
    if train:
        pos = 0
        for ka in range(P):
            arr_ptr[ka] = pos
            if (pat_any >> np.uint64(ka)) & _ONE:
                for j in range(D):
                    if (pat[j] >> np.uint64(ka)) & _ONE:
                        arr_idx[pos] = j
                        pos += 1
        arr_ptr[P] = pos

    gate = False
    for k in range(P):
        t = t0 + k
        # (2) leak and noise
        key = noise_tick_key(seed, e, stream, sample_index, k)
        for n in range(N):
            u[n] = u[n] * leak + s_stim * unit_float(mix64(key ^ nkey[n]))
        # (3) input, gated by the column's block (the blocker is exempt)
        if (pat_any >> np.uint64(k)) & _ONE:
            for n in range(N):
                c = n // M
                if t < block_until[c] and n != block_by[c]:
                    continue
                if stale[n]:
                    acc = 0.0
                    for i in range(arr_ptr[k], arr_ptr[k + 1]):
                        acc += w[arr_idx[i], n]
                    cur[k, n] = acc
                u[n] += gain * cur[k, n]
        for n in range(N):
            if u[n] < 0.0:
                u[n] = 0.0
        # (4) unforced spikes: per column the most depolarised crossing neuron
        for c in range(C):
            best = -1
            best_u = -1.0
            for m in range(M):
                n = c * M + m
                if u[n] >= theta0 + theta[n] and u[n] > best_u:
                    best = n
                    best_u = u[n]
            if best < 0:
                continue
            n = best
            if t - t_spike[n] < isi and t_spike[n] >= floor:
                if burst[n] != 1:
                    burst[n] = 3
            else:
                burst[n] = 2
                t_first[n] = t
            t_spike[n] = t
            t_last[n] = t
            u[n] = 0.0
            votes[c] += 1
            t_out[c] = t
            if block_col:
                block_until[c] = t + block_ticks
                block_by[c] = n
            if record:
                rec[b, k, e, n] = True
            if train:
                # anti-Hebbian: synapses contributing now, not yet depressed
                # in this burst
                a = t_first[n] - t_syn
                hm, cm = window_masks(t0, t, a, t)
                hm_old = _ZERO
                cm_old = _ZERO
                if last_ah[n] >= t_first[n]:
                    hm_old, cm_old = window_masks(t0, t, a, last_ah[n])
                dr = d_h * stability_scale(stab[n])
                cnt, theta[n] = _update_column(n, dr, False, hm, cm, hm_old, cm_old, pat, bits0,
                                               r, w, w_min, span, k_thr, gain)
                pool[n] -= dr * cnt
                if cnt > 0:
                    stale[n] = True
                last_ah[n] = t
        if not train:
            continue
        # (5) teacher: GATE decision, forcing, dopamine
        if k == label_tick:
            gate = not (t_out[label] > t - block_ticks)
        if k == force_tick and gate:
            if force_all:
                for m in range(M):
                    n = label * M + m
                    if t_spike[n] != t:  # not if it spiked (unforced) this tick
                        _force_spike(n, t, isi, floor, t_first, t_spike, burst, u)
                        if record:
                            rec[b, k, e, n] = True
            else:
                chosen = -1
                chosen_u = -1.0
                for m in range(M):
                    n = label * M + m
                    if t_spike[n] != t and u[n] > chosen_u:
                        chosen_u = u[n]
                        chosen = n
                if chosen >= 0:
                    _force_spike(chosen, t, isi, floor, t_first, t_spike, burst, u)
                    if record:
                        rec[b, k, e, chosen] = True
        if k == dop_tick:
            for m in range(M):
                n = label * M + m
                if t - t_spike[n] <= t_dop:
                    hm, cm = window_masks(t0, t, t_first[n] - t_syn, t_spike[n])
                    dr = dopamine * stability_scale(stab[n])
                    cnt, th = _update_column(n, dr, False, hm, cm, _ZERO, _ZERO, pat, bits0,
                                             r, w, w_min, span, k_thr, gain)
                    pool[n] -= dr * cnt
                    if cnt > 0:
                        theta[n] = th
                        stale[n] = True
                if burst[n] == 1:
                    s = stab[n] - r_s * dopamine
                    stab[n] = s if s > 0.0 else 0.0
                else:
                    dev = abs(np.float64(t - t_first[n] - isi)) / isi
                    factor = 2.0 - dev
                    if factor < -1.0:
                        factor = -1.0
                    s = stab[n] + r_s * dopamine * factor
                    stab[n] = s if s > 0.0 else 0.0
        # (6) conservation: neurons outside a burst release their free pool
        for n in range(N):
            if not (t - t_spike[n] < isi and t_spike[n] >= floor) and abs(pool[n]) >= f_thr:
                delta = pool[n] / (D + n_silent)
                cnt, theta[n] = _update_column(n, delta, True, _ZERO, _ZERO, _ZERO, _ZERO, pat,
                                               bits0, r, w, w_min, span, k_thr, gain)
                pool[n] = 0.0
                stale[n] = True


@njit(cache=True)
def neuron_keys(N):
    """mix64(n + GOLDEN) for each neuron, the per-neuron half of the noise key."""
    out = np.empty(N, np.uint64)
    for n in range(N):
        out[n] = mix64(np.uint64(n) + _GOLDEN)
    return out


@njit(cache=True, parallel=True)
def train_kernel(pat, bits0, y, sample_index, t_start, fp, ip,
                 r, w, u, theta, stab, pool, t_last, t_first, t_spike, burst, last_ah,
                 block_until, block_by, t_out, record, rec):
    """Train all copies on a chunk (state arrays updated in place).

    Returns votes (B, E, C) int32: unforced spikes per class per copy.
    """
    B, D = pat.shape
    E = w.shape[0]
    N = w.shape[2]
    C = block_until.shape[1]
    P = ip[I_PERIOD]
    votes = np.zeros((B, E, C), np.int32)
    nkey = neuron_keys(N)
    for e in prange(E):
        cur = np.empty((P, N))
        row64 = np.empty(N)
        stale = np.empty(N, np.bool_)
        arr_ptr = np.empty(P + 1, np.int64)
        arr_idx = np.empty(P * D, np.int64)
        for b in range(B):
            _simulate_sample(True, e, b, pat[b], bits0[b], y[b], t_start + b * P,
                             sample_index[b], 0, fp, ip,
                             r[e], w[e], u[e], theta[e], stab[e], pool[e], t_last[e],
                             t_first[e], t_spike[e], burst[e], last_ah[e],
                             block_until[e], block_by[e], t_out[e], cur, row64, stale, arr_ptr, arr_idx,
                             nkey, votes[b, e], record, rec)
    return votes


#: Samples per parallel work item in inference (amortises the scratch arrays).
INFER_BLOCK = 8


@njit(cache=True, parallel=True)
def infer_kernel(pat, sample_index, fp, ip, w, theta, n_classes, record, rec):
    """Frozen-plasticity votes (B, E, C); every sample starts from a fresh
    neuron state (local ticks, t0 = 0), noise stream 1.  Reads ``w`` and
    ``theta`` only."""
    B, D = pat.shape
    E = w.shape[0]
    N = w.shape[2]
    C = n_classes
    P = ip[I_PERIOD]
    votes = np.zeros((B, E, C), np.int32)
    nkey = neuron_keys(N)
    n_blocks = (B + INFER_BLOCK - 1) // INFER_BLOCK
    bits0 = np.zeros(D, np.uint64)
    for item in prange(E * n_blocks):
        e = item // n_blocks
        blk = item % n_blocks
        cur = np.empty((P, N))
        row64 = np.empty(N)
        stale = np.empty(N, np.bool_)
        arr_ptr = np.zeros(P + 1, np.int64)  # arrival lists: training only
        arr_idx = np.zeros(1, np.int64)
        u = np.empty(N)
        theta_e = theta[e].copy()
        stab = np.zeros(N)
        pool = np.zeros(N)
        t_last = np.empty(N, np.int64)
        t_first = np.empty(N, np.int64)
        t_spike = np.empty(N, np.int64)
        last_ah = np.empty(N, np.int64)
        burst = np.empty(N, np.int8)
        block_until = np.empty(C, np.int64)
        block_by = np.empty(C, np.int32)
        t_out = np.empty(C, np.int64)
        we = w[e]
        for b in range(blk * INFER_BLOCK, min(B, (blk + 1) * INFER_BLOCK)):
            t_last[:] = NEVER
            t_first[:] = NEVER
            t_spike[:] = NEVER
            last_ah[:] = NEVER
            burst[:] = 0
            t_out[:] = NEVER
            _simulate_sample(False, e, b, pat[b], bits0, 0, 0, sample_index[b], 1, fp, ip,
                             we, we, u, theta_e, stab, pool, t_last, t_first, t_spike,
                             burst, last_ah, block_until, block_by, t_out, cur, row64,
                             stale, arr_ptr, arr_idx, nkey, votes[b, e], record, rec)
    return votes
