"""Plain NumPy reference of the CoLaNET simulator, written for clarity.

Same model, same signatures and same results as the Numba kernels behind
:func:`pipeline.colanet.train_chunk` / :func:`pipeline.colanet.infer_chunk`
(identical spikes, votes and state arrays, bit for bit).  It exists for
differential tests and for reading: it simulates tick by tick, copy by copy,
and keeps the arrival history literally as the spec states it (one uint64 per
input, shifted left every global tick), whereas the kernels precompute
currents and split the history into "before this sample" and "this sample".

The model and its exact per-tick order are documented in
:mod:`pipeline.colanet`.  The counter-based hash is re-implemented here with
NumPy uint64 arithmetic (no Numba), so the reference does not depend on the
kernels.
"""

from __future__ import annotations

import math

import numpy as np

from .colanet import (NEVER, ColanetConfig, ColanetState, check_batch, copy_groups,
                      resting_arrays, weight_of)

HISTORY = 64

# --- counter-based hash (NumPy twin of colanet_kernels) -----------------------
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NOISE_DOMAIN = np.uint64(0x6E6F697365)
_CODER_DOMAIN = np.uint64(0x636F646572)
_BAG_DOMAIN = np.uint64(0x626167)
_SEEN_DOMAIN = np.uint64(0x7365656E)


def mix64(z):
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def absorb(h, x):
    """Chain key component(s) ``x`` into hash ``h``: ``mix64(h ^ mix64(x + GOLDEN))``."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return mix64(np.uint64(h) ^ mix64(x + _GOLDEN))


def unit_float(h):
    """Top 53 bits as float64 uniforms in [0, 1)."""
    return (np.asarray(h, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def noise_uniforms(seed, copy, stream, sample_index, k, n_neurons):
    """U[0,1) noise of every neuron at one (copy, stream, sample, local tick)."""
    h = absorb(_NOISE_DOMAIN, seed)
    for part in (copy, stream, sample_index, k):
        h = absorb(h, part)
    return unit_float(absorb(h, np.arange(n_neurons)))


def coder_uniforms(seed, sample_index, k, n_inputs):
    """U[0,1) of the Bernoulli coder for every input at one (sample, tick)."""
    h = absorb(_CODER_DOMAIN, seed)
    for part in (sample_index, k):
        h = absorb(h, part)
    return unit_float(absorb(h, np.arange(n_inputs)))


def sitting_out(seed, n_copies, sample_index, copy_share):
    """Bagging: which copies sit training sample ``sample_index`` out (bool (E,))."""
    h = absorb(_BAG_DOMAIN, seed)
    out = np.array([unit_float(absorb(absorb(h, e), sample_index)) >= copy_share
                    for e in range(n_copies)])
    return out & (copy_share < 1.0)


def view_slices(p: ColanetConfig, n_copies: int, n_inputs: int) -> list[slice]:
    """The coded inputs each copy sees: copy e of view v (the copies in ``views`` contiguous
    groups, :func:`pipeline.colanet.copy_groups`) sees ``v D .. (v+1) D - 1``."""
    groups = copy_groups(n_copies, p.n_views)
    return [slice(v * n_inputs, (v + 1) * n_inputs)
            for v, group in enumerate(groups) for _ in group]


def seen_inputs(seed, n_copies, n_inputs, input_share):
    """Random subspaces: which inputs each copy sees (bool (E, D)): input j when the uniform of
    (seed, e, j) is ``< input_share``; every input with ``input_share`` 1."""
    if input_share >= 1.0:
        return np.ones((n_copies, n_inputs), bool)
    h = absorb(_SEEN_DOMAIN, seed)
    return np.array([unit_float(absorb(absorb(h, e), np.arange(n_inputs))) < input_share
                     for e in range(n_copies)])


# --- coding -----------------------------------------------------------------
def drive(x_row, sat):
    """d_j = clip(x_j / sat, 0, 1)."""
    return np.clip(x_row.astype(np.float64) / sat, 0.0, 1.0)


def encode_sample(p: ColanetConfig, x_row, sat, sample_index, acc):
    """Input spikes of one sample, (present_ticks, D) bool, index = emission
    tick.  The accumulator ``acc`` is updated in place (the caller decides
    whether it starts at zero)."""
    d = drive(x_row, sat)
    spikes = np.zeros((p.present_ticks, d.size), bool)
    for k in range(p.present_ticks):
        if p.coder == "accumulator":
            acc += d
            fired = acc >= 1.0
            acc[fired] -= 1.0
            spikes[k] = fired
        else:
            spikes[k] = coder_uniforms(p.seed, sample_index, k, d.size) < d
    return spikes


# --- arrival history ----------------------------------------------------------
def arrived_in(bits, t, a, b):
    """Which inputs arrived at a global tick in [a, b], seen at tick ``t``
    (bit p of ``bits`` = arrival at t - p).  The window is clipped to the
    64-tick history."""
    lo = int(max(t - b, 0))
    hi = int(min(t - a, HISTORY - 1))
    if lo > hi:
        return np.zeros(bits.shape, bool)
    width = hi - lo + 1
    mask = np.uint64(0xFFFFFFFFFFFFFFFF) if width == 64 else (np.uint64((1 << width) - 1) << np.uint64(lo))
    return (bits & mask) != 0


# --- plasticity helpers ---------------------------------------------------------
def two_to_the(x: float) -> float:
    """``2^x`` evaluated as the kernels do, by ``exp2``: LLVM compiles their
    ``math.pow(2.0, x)`` into ``exp2(x)``, and libm's ``pow`` and ``exp2`` round
    differently (by one ulp) for about 0.1 % of arguments."""
    return math.exp2(x) if hasattr(math, "exp2") else float(np.exp2(x))  # math.exp2: Python 3.11+


#: Partial sums of :func:`positive_weight_sum` (``colanet_kernels.SUM_LANES``).
SUM_LANES = 8


def positive_weight_sum(w_col):
    """``sum_j max(w_j, 0)`` in float64, in the kernels' fixed order: the weights zero-padded
    to a multiple of 8 and read as rows of 8; lane ``l`` sums column ``l`` in ascending j
    (``np.cumsum`` adds sequentially), and the 8 lanes combine as
    ``((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))``."""
    v = np.maximum(np.asarray(w_col, dtype=np.float64), 0.0)
    v = np.concatenate([v, np.zeros((-v.size) % SUM_LANES)]).reshape(-1, SUM_LANES)
    s = np.cumsum(v, axis=0)[-1] if v.shape[0] else np.zeros(SUM_LANES)
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


def _theta_add(p, st, e, n, gain):
    """theta_add of neuron n of copy e from its weights and shift:
    k_thr * (g * sum_j max(w_j, 0)) + theta_shift, the sum by :func:`positive_weight_sum`."""
    return p.k_thr * (gain * positive_weight_sum(st.w[e, :, n])) + st.theta_shift[e, n]


def _shift_threshold(p, st, e, n, delta, gain):
    """Threshold adaptation: theta_shift += delta; theta_add is rebuilt from the weights and
    the shift (theta_refresh "every_change") or moves by delta ("anti_hebbian")."""
    st.theta_shift[e, n] += delta
    if p.theta_refresh == "anti_hebbian":
        st.theta_add[e, n] += delta
    else:
        st.theta_add[e, n] = _theta_add(p, st, e, n, gain)


def _change_resources(p, st, e, n, selected, dr_base, gain):
    """dr = dr_base * min(2^-S, 1) on the selected synapses of neuron n,
    mirrored into the free pool; weights and theta_add follow."""
    scale = min(two_to_the(-st.stability[e, n]), 1.0)
    dr = dr_base * scale
    idx = np.flatnonzero(selected)
    r_new = (st.r[e, idx, n].astype(np.float64) + dr).astype(np.float32)
    st.r[e, idx, n] = r_new
    st.w[e, idx, n] = weight_of(r_new, p)
    st.free_pool[e, n] -= dr * idx.size
    return idx.size


# --- one sample ----------------------------------------------------------------
def _run_sample(p, st, spikes, label, sample_index, gain, train, stream, votes, rec):
    """Simulate one sample for every copy of ``st`` (in place) but, in training, those that sit
    it out (:func:`sitting_out`).

    ``spikes`` (present_ticks, D) emitted input spikes; ``votes`` (E, C) is
    filled; ``rec`` (P, E, N) bool or None records L spikes."""
    E, D, N = st.r.shape
    C = st.block_until.shape[1]
    M = p.m
    P = p.period
    leak = 1.0 - 1.0 / p.tau
    arrivals = np.zeros((P, p.n_views * D), bool)
    arrivals[p.input_delay:p.input_delay + p.present_ticks] = spikes
    t0 = st.t
    gate = np.zeros(E, bool)
    # bagging: a copy that sits this training sample out skips it whole (state unchanged)
    absent = sitting_out(p.seed, E, sample_index, p.copy_share) if train else np.zeros(E, bool)
    # random subspaces: the inputs a copy does not see never arrive at it, now or in its history
    seen = seen_inputs(p.seed, E, D, p.input_share)
    # views: copy e sees its view's block of the coded inputs (arrivals and history)
    view = view_slices(p, E, D)
    # Readings of the spec (ColanetConfig's docstring): a contribution window starts `lookback`
    # ticks before the burst's first spike; a block lasts until t + block_span; the GATE's window.
    lookback = p.t_syn - 1 if p.syn_window == "t_syn" else p.t_syn
    block_span = p.block_ticks + 1 if p.block_span == "block_ticks" else p.block_ticks
    theta_at_ah_only = p.theta_refresh == "anti_hebbian"
    # A spike continues a burst only if the previous one is recent and, with burst_scope
    # "sample", in this same sample.
    floor = t0 if p.burst_scope == "sample" else NEVER

    def in_burst(e, n, t):
        return t - st.t_spike[e, n] < p.isi_max and st.t_spike[e, n] >= floor

    def fire(e, u, n, c, t, k):
        """An unforced spike of neuron n (column c) at tick t (local k)."""
        if in_burst(e, n, t):
            if st.burst[e, n] != 1:
                st.burst[e, n] = 3
        else:
            st.burst[e, n] = 2
            st.t_first[e, n] = t
        st.t_spike[e, n] = t
        u[n] = 0.0
        votes[e, c] += 1
        st.t_out[e, c] = t
        if p.blocking == "column":
            st.block_until[e, c] = t + block_span
            st.block_by[e, c] = n
        if rec is not None:
            rec[k, e, n] = True
        if train:
            # anti-Hebbian: contributed now, not yet depressed in this burst
            a = st.t_first[e, n] - lookback
            contributed = arrived_in(st.arrival_bits[view[e]], t, a, t) & seen[e]
            if st.last_ah_tick[e, n] >= st.t_first[e, n]:
                contributed &= ~arrived_in(st.arrival_bits[view[e]], t, a,
                                           st.last_ah_tick[e, n])
            # theta_add follows the weights if one moved (theta_refresh "every_change") or
            # is recomputed here in any case ("anti_hebbian")
            if _change_resources(p, st, e, n, contributed, p.d_h, gain) or theta_at_ah_only:
                st.theta_add[e, n] = _theta_add(p, st, e, n, gain)
            st.last_ah_tick[e, n] = t

    for k in range(P):
        t = t0 + k
        # global arrival history: one shift per tick, bit 0 = this tick
        st.arrival_bits[:] = (st.arrival_bits << np.uint64(1)) | arrivals[k].astype(np.uint64)
        for e in range(E):
            if absent[e]:
                continue
            active = np.flatnonzero(arrivals[k, view[e]] & seen[e])
            u = st.u[e]
            # (1) sample start
            if k == 0:
                u[:] = 0.0
                st.block_until[e, :] = NEVER
                st.block_by[e, :] = -1
            # (2) leak and noise
            u[:] = u * leak + p.s_stim * noise_uniforms(p.seed, e, stream, sample_index, k, N)
            # (3) input, summed in ascending input order, gated by blocks
            if active.size:
                current = gain * np.cumsum(st.w[e][active].astype(np.float64), axis=0)[-1]
                for n in range(N):
                    c = n // M
                    blocked = t < st.block_until[e, c] and n != st.block_by[e, c]
                    if not blocked:
                        u[n] += current[n]
            np.maximum(u, 0.0, out=u)
            # (4) unforced spikes: the most depolarised crossing neuron per column (firing
            # "all_above_threshold": every crossing neuron, the most depolarised one last, so
            # that it sets the block)
            for c in range(C):
                cols = np.arange(c * M, (c + 1) * M)
                crossing = cols[u[cols] >= p.theta0 + st.theta_add[e, cols]]
                if crossing.size == 0:
                    continue
                best = crossing[np.argmax(u[crossing])]  # argmax: first of ties
                spikers = [best]
                if p.firing == "all_above_threshold":
                    spikers = [n for n in crossing if n != best] + [best]
                for n in spikers:
                    fire(e, u, n, c, t, k)
            if not train:
                continue
            # (5) teacher
            y = label
            column_y = np.arange(y * M, (y + 1) * M)
            if k == p.label_tick:
                if p.gate_scope == "sample":  # silenced by any answer of this sample
                    gate[e] = st.t_out[e, y] < t0
                else:  # silenced by an answer within the last gate_ticks ticks
                    gate[e] = not (st.t_out[e, y] > t - p.resolved_gate_ticks)
            if k == p.force_tick and gate[e]:
                eligible = column_y[st.t_spike[e, column_y] != t]
                if eligible.size:
                    if p.forcing == "all":
                        forced = eligible
                    else:
                        forced = eligible[[np.argmax(u[eligible])]]
                    for n in forced:
                        if not in_burst(e, n, t):
                            st.t_first[e, n] = t
                        st.burst[e, n] = 1
                        st.t_spike[e, n] = t
                        u[n] = 0.0
                        if p.theta_fall != 0.0:
                            _shift_threshold(p, st, e, n, -p.theta_fall, gain)
                        if rec is not None:
                            rec[k, e, n] = True
            if k == p.dopamine_tick:
                for n in column_y:
                    if t - st.t_spike[e, n] <= p.t_dop:
                        contributed = arrived_in(st.arrival_bits[view[e]], t,
                                                 st.t_first[e, n] - lookback,
                                                 st.t_spike[e, n]) & seen[e]
                        moved = _change_resources(p, st, e, n, contributed, p.dopamine, gain)
                        if moved and not theta_at_ah_only:
                            st.theta_add[e, n] = _theta_add(p, st, e, n, gain)
                    if st.burst[e, n] == 1:
                        st.stability[e, n] = max(0.0, st.stability[e, n] - p.r_s * p.dopamine)
                    else:
                        dev = abs(float(t - st.t_first[e, n] - p.isi_max)) / p.isi_max
                        factor = max(2.0 - dev, -1.0)
                        st.stability[e, n] = max(st.stability[e, n] + p.r_s * p.dopamine * factor, 0.0)
                # threshold adaptation: a spike in this sample outside column y got no dopamine
                if p.theta_rise != 0.0:
                    for n in range(N):
                        if n // M != y and st.t_spike[e, n] >= t0:
                            _shift_threshold(p, st, e, n, p.theta_rise, gain)
            # (6) conservation
            for n in range(N):
                if not in_burst(e, n, t) and abs(st.free_pool[e, n]) >= p.f_thr:
                    delta = st.free_pool[e, n] / (D + p.n_silent)
                    st.r[e, :, n] = (st.r[e, :, n].astype(np.float64) + delta).astype(np.float32)
                    st.w[e, :, n] = weight_of(st.r[e, :, n], p)
                    st.free_pool[e, n] = 0.0
                    if not theta_at_ah_only:
                        st.theta_add[e, n] = _theta_add(p, st, e, n, gain)
    st.t = t0 + P


def train_chunk(params: ColanetConfig, state: ColanetState, x, y, sample_index, sat, record=False):
    """Reference twin of :func:`pipeline.colanet.train_chunk` (state updated in
    place).  Returns ``(votes, state)`` or, with ``record``, ``(votes, state,
    spikes)`` with spikes (B, P, E, N) bool (forced spikes included)."""
    x, y, sample_index, sat = check_batch(params, state, x, sample_index, sat, y)
    B, D = x.shape[0], state.n_inputs
    E, N, C, P = state.n_copies, state.n_neurons, state.n_classes, params.period
    gain = params.resolved_gain(D)
    votes = np.zeros((B, E, C), np.int32)
    rec = np.zeros((B, P, E, N), bool) if record else None
    for b in range(B):
        if not params.carry_accumulator:
            state.acc[:] = 0.0
        spikes = encode_sample(params, x[b], sat, sample_index[b], state.acc)
        _run_sample(params, state, spikes, int(y[b]), int(sample_index[b]), gain, True, 0,
                    votes[b], None if rec is None else rec[b])
        state.n_seen += 1
    if record:
        return votes, state, rec
    return votes, state


def infer_chunk(params: ColanetConfig, state: ColanetState, x, sample_index, sat, record=False):
    """Reference twin of :func:`pipeline.colanet.infer_chunk`: frozen
    plasticity, a fresh neuron state per sample (local ticks from 0), noise
    stream 1; ``state`` is not modified (the weights are shared read-only)."""
    x, _, sample_index, sat = check_batch(params, state, x, sample_index, sat)
    B, D = x.shape[0], state.n_inputs
    E, N, C, P = state.n_copies, state.n_neurons, state.n_classes, params.period
    gain = params.resolved_gain(D)
    votes = np.zeros((B, E, C), np.int32)
    rec = np.zeros((B, P, E, N), bool) if record else None
    for b in range(B):
        scratch = ColanetState(**{
            **resting_arrays(E, D, C, N, x.shape[1]),
            "r": state.r, "w": state.w, "theta_add": state.theta_add,  # read only: no plasticity
        })
        spikes = encode_sample(params, x[b], sat, sample_index[b], scratch.acc)
        _run_sample(params, scratch, spikes, 0, int(sample_index[b]), gain, False, 1,
                    votes[b], None if rec is None else rec[b])
    if record:
        return votes, rec
    return votes
