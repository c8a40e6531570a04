"""CoLaNET: the spiking classifier of stage two (typed records and public API).

The algorithm is ``shared/spec/colanet.md``; this module fixes every choice
the spec leaves open so that the Numba kernels (:mod:`pipeline.colanet_kernels`)
and the plain NumPy reference (:mod:`pipeline.colanet_reference`) compute the
*same* thing: identical spikes and votes, weights equal to float rounding.

Network
-------
``E`` independent copies (ensemble).  Each copy has ``C`` columns (one per
class) of ``M`` plastic L neurons, ``N = C * M``; neuron ``n`` belongs to
column ``n // M``.  Every input ``j`` (``D`` of them) feeds every L neuron
through a plastic synapse with resource ``r`` and weight ``w(r)``.  OUT and
GATE neurons of each column are logic, not simulated membranes.

Time
----
A sample occupies ``P = present_ticks + silent_ticks`` (15) global ticks;
local tick ``k = 0..P-1``, global tick ``t = t0 + k`` with ``t0 = state.t`` at
the sample's start (``state.t`` advances continuously over samples).  Input
spikes are emitted at local ticks ``0..present_ticks-1`` and arrive at the L
neurons ``input_delay`` ticks later (ticks 1..10 with the defaults).

Rate coding
-----------
``d_j = clip(x_j / sat, 0, 1)`` (0 for ``x_j <= 0``).

* ``coder="accumulator"``: ``acc_j`` (float64) is zeroed at each sample start
  unless ``carry_accumulator``; each presentation tick ``acc_j += d_j`` and,
  if ``acc_j >= 1``, input ``j`` spikes and ``acc_j -= 1``.  A feature at
  ``sat`` spikes 10 times, one at ``sat/2`` five times, one ``<= 0`` never.
* ``coder="bernoulli"``: spike when ``U(seed, sample_index, k, j) < d_j``.

All randomness is a counter-based hash (splitmix64 finaliser of a chained
key, 53-bit float), never a stateful generator, so results do not depend on
chunking, threads or resume point.  Noise is keyed by
``(seed, copy, stream, sample_index, k, n)`` with stream 0 in training and 1
in inference.  ``sample_index`` is the sample's global id: give a sample
seen in a second epoch a new id if it should get new noise.

Per tick, per copy, in this order
---------------------------------
1. ``k == 0``: ``u = 0`` for all neurons; column blocks are cleared.
2. Leak and noise: ``u = u * (1 - 1/tau) + s_stim * U(...)``.
3. Input: if inputs arrive this tick and the neuron's column is not blocked
   (``t < block_until[c]``, the neuron that set the block is exempt):
   ``u += g * I`` with ``I = sum_j w[j, n]`` over the arriving inputs in
   ascending ``j``, accumulated in float64.  Then ``u = max(u, 0)``.
4. Unforced spikes: in each column, among neurons with
   ``u >= theta0 + theta_add`` only the most depolarised fires (ties: lowest
   index); the others keep their ``u``.  A spike sets ``u = 0``, is one OUT
   vote for its column (``t_out[c] = t``) and, with ``blocking="column"``,
   sets ``block_until[c] = t + block_ticks`` with the spiker exempt.
   Burst bookkeeping: the neuron is *in a burst* when ``t - t_spike < isi_max``
   and, with ``burst_scope="sample"`` (default), ``t_spike >= t0`` (its last
   spike was in this sample: bursts end with their sample, like ``u`` and the
   blocks).  In a burst the spike continues it (status 3, or stays 1 if the
   burst is forced), else a burst starts (status 2, ``t_first = t``);
   ``t_spike = t_last_unforced = t``.
   Training: anti-Hebbian step (below).
5. Teacher (training only), label ``y``:
   at ``label_tick`` GATE y fires unless ``t_out[y] > t - block_ticks``;
   if it fired, at ``force_tick`` the most depolarised L neuron of column y
   (ties: lowest index; ``forcing="all"``: every one) that did not spike in
   step 4 of this tick is forced: ``u = 0``, ``t_spike = t``, burst status 1
   (forced), ``t_first = t`` if it was not in a burst; no vote, no block, no
   anti-Hebbian step.
   At ``dopamine_tick`` every L neuron of column y receives dopamine
   ``Dp = dopamine`` (step below).
6. Conservation (training only) for every neuron.

Plasticity (training only)
--------------------------
"Input j arrived in [a, b]" is a test on the arrival history, which keeps the
last 64 ticks: windows reaching further back are clipped to ``[t - 63, t]``.
Every resource change is ``dr * min(2^-S, 1)`` and is mirrored into the
neuron's free pool (``F -= dr * count``); touched weights are recomputed,
``w = w(r)``, and ``theta_add = k_thr * (g * sum_j max(w_jn, 0))``.

* Anti-Hebbian, at each unforced spike: inputs that arrived in
  ``[t_first - t_syn, t]`` and not in ``[t_first - t_syn, last_ah_tick]``
  (when ``last_ah_tick >= t_first``, i.e. already depressed in this burst) get
  ``dr = d_h``; then ``last_ah_tick = t``.
* Dopamine: if ``t - t_spike <= t_dop`` the inputs that arrived in
  ``[t_first - t_syn, t_spike]`` get ``dr = Dp``.  Then stability: if the
  neuron's last burst is forced ``S = max(0, S - r_s*Dp)``, else
  ``S = max(0, S + r_s*Dp*max(2 - |t - t_first - isi_max| / isi_max, -1))``.
* Conservation, at the end of every tick: a neuron out of a burst (see
  step 4) with ``|F| >= f_thr`` gets
  ``r[:, n] += F / (D + n_silent)`` on all its synapses and ``F = 0``.

Synaptic resource: ``w(r) = w_min + span * r+ / (span + r+)`` with
``span = w_max - w_min``; inverse ``r(w) = (w - w_min) * span / (w_max - w)``.
Synapses start at ``r = r(0)`` (weight 0).

Precision: ``r``, ``w`` float32 (changes are done in float64 and rounded),
``u``, ``theta_add``, ``S``, ``F`` and currents float64.

Readout: votes per class summed over copies; argmax (ties: lowest class); a
sample with no vote at all is "not answered".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import colanet_kernels as K

NEVER = K.NEVER

_CODERS = ("accumulator", "bernoulli")
_FORCINGS = ("most_depolarised", "all")
_BLOCKINGS = ("column", "none")
_BURST_SCOPES = ("sample", "continuous")

_FLOAT_FIELDS = ("tau", "theta0", "k_thr", "s_stim", "w_min", "w_max", "gain_total", "d_h",
                 "dopamine", "r_s", "f_thr")
_INT_FIELDS = ("t_syn", "isi_max", "t_dop", "n_silent", "m", "e", "present_ticks", "silent_ticks",
               "block_ticks", "label_tick", "force_tick", "dopamine_tick", "input_delay", "seed")


@dataclass(frozen=True)
class ColanetParams:
    """Hyperparameters of a CoLaNET ensemble (defaults: the spec's table).

    Equations (details and the exact per-tick order: module docstring):

    * L neuron:  ``u <- u (1 - 1/tau) + s_stim U[0,1) + g sum_j w_jn s_j``,
      spike when ``u >= theta0 + theta_add``, then ``u = 0``; ``u >= 0``.
    * Weight of resource: ``w(r) = w_min + (w_max-w_min) r+ / (w_max-w_min + r+)``.
    * Threshold growth: ``theta_add = k_thr * sum_j max(g w_jn, 0)``.
    * Anti-Hebbian: ``dr = d_h`` on contributed synapses at unforced spikes.
    * Dopamine: ``dr = dopamine`` on contributed synapses of column y's
      neurons that spiked within ``t_dop`` ticks.
    * Every ``dr`` is scaled by ``min(2^-S, 1)`` and mirrored ``F -= dr``.
    * Stability: ``S -= r_s Dp`` (forced) or
      ``S += r_s Dp max(2 - |t - t_first - isi_max|/isi_max, -1)``, ``S >= 0``.
    * Conservation: ``r_jn += F / (D + n_silent)`` when ``|F| >= f_thr`` and the
      neuron is out of a burst.

    ``gain=None`` means ``gain_total / n_inputs`` (see :meth:`resolved_gain`).

    Defaults: the spec's table, except those chosen on validation data by
    ``bench/defaults.py`` (see docs/accuracy.md): ``gain_total`` 746.6 (spec:
    640), ``d_h``, ``dopamine``, ``r_s``, ``k_thr``, ``s_stim``, ``m`` 19,
    ``e`` 13, ``forcing="all"``, ``blocking="none"`` and
    ``burst_scope="sample"``.
    Named choices: ``coder`` ("accumulator" | "bernoulli"),
    ``carry_accumulator`` (keep the accumulator across training samples),
    ``forcing`` ("most_depolarised" | "all"), ``blocking`` ("column" |
    "none"), ``burst_scope`` ("sample": a burst ends when its sample ends, as
    the potential and the blocks are reset there | "continuous": spikes less
    than ``isi_max`` apart chain across samples, as in the sources), ``seed``
    (key of all counter-based randomness).
    """

    tau: float = 5.0
    theta0: float = 8.531
    k_thr: float = 0.002181
    s_stim: float = 1.249
    w_min: float = -1.634
    w_max: float = 1.714
    gain: float | None = None
    gain_total: float = 746.6
    d_h: float = -0.4686
    dopamine: float = 0.6426
    t_syn: int = 10
    isi_max: int = 10
    t_dop: int = 15
    r_s: float = 0.0713
    n_silent: int = 9
    f_thr: float = 1.0
    m: int = 19
    e: int = 13
    present_ticks: int = 10
    silent_ticks: int = 5
    block_ticks: int = 10
    label_tick: int = 11
    force_tick: int = 13
    dopamine_tick: int = 14
    input_delay: int = 1
    coder: str = "accumulator"
    carry_accumulator: bool = False
    forcing: str = "all"
    blocking: str = "none"
    burst_scope: str = "sample"
    seed: int = 0

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"ColanetParams.{name}={getattr(self, name)!r}: {why}")

        for name in _FLOAT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                bad(name, "must be a number")
            if not np.isfinite(v):
                bad(name, "must be finite")
            object.__setattr__(self, name, float(v))
        for name in _INT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                bad(name, "must be an integer")
            object.__setattr__(self, name, int(v))
        if self.gain is not None:
            if isinstance(self.gain, bool) or not isinstance(self.gain, (int, float, np.integer, np.floating)):
                bad("gain", "must be a positive number or None (None: gain_total / n_inputs)")
            if not (np.isfinite(self.gain) and self.gain > 0):
                bad("gain", "must be a positive finite number or None")
            object.__setattr__(self, "gain", float(self.gain))
        if not isinstance(self.carry_accumulator, (bool, np.bool_)):
            bad("carry_accumulator", "must be a bool")
        object.__setattr__(self, "carry_accumulator", bool(self.carry_accumulator))
        if self.tau < 1.0:
            bad("tau", "must be >= 1 (leak factor 1 - 1/tau in [0, 1))")
        if self.theta0 <= 0:
            bad("theta0", "must be > 0")
        if self.k_thr < 0:
            bad("k_thr", "must be >= 0")
        if self.s_stim < 0:
            bad("s_stim", "must be >= 0")
        if not self.w_min < 0:
            bad("w_min", "must be < 0 (synapses start at weight 0)")
        if not self.w_max > 0:
            bad("w_max", "must be > 0 (synapses start at weight 0)")
        if self.d_h > 0:
            bad("d_h", "must be <= 0 (anti-Hebbian depression)")
        if self.dopamine < 0:
            bad("dopamine", "must be >= 0 (only positive dopamine in this version)")
        if self.r_s < 0:
            bad("r_s", "must be >= 0")
        if self.gain_total <= 0:
            bad("gain_total", "must be > 0")
        if self.f_thr <= 0:
            bad("f_thr", "must be > 0")
        for name in ("t_syn", "t_dop", "n_silent", "block_ticks", "input_delay", "silent_ticks", "seed"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if self.seed >= 2**63:
            bad("seed", "must be < 2**63")
        for name in ("isi_max", "m", "e", "present_ticks"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        if self.period >= K.HISTORY:
            bad("silent_ticks", f"period present_ticks + silent_ticks = {self.period} must be < {K.HISTORY}")
        if self.present_ticks - 1 + self.input_delay >= self.period:
            bad("input_delay", f"last arrival (tick {self.present_ticks - 1 + self.input_delay}) "
                               f"must fall inside the period of {self.period} ticks")
        for name in ("label_tick", "force_tick", "dopamine_tick"):
            if not 0 <= getattr(self, name) < self.period:
                bad(name, f"must be a local tick in [0, {self.period})")
        if self.force_tick < self.label_tick:
            bad("force_tick", f"must be >= label_tick={self.label_tick} (GATE decides first)")
        if self.coder not in _CODERS:
            bad("coder", f"must be one of {_CODERS}")
        if self.forcing not in _FORCINGS:
            bad("forcing", f"must be one of {_FORCINGS}")
        if self.blocking not in _BLOCKINGS:
            bad("blocking", f"must be one of {_BLOCKINGS}")
        if self.burst_scope not in _BURST_SCOPES:
            bad("burst_scope", f"must be one of {_BURST_SCOPES}")

    @property
    def period(self) -> int:
        """Ticks per sample: ``present_ticks + silent_ticks``."""
        return self.present_ticks + self.silent_ticks

    def resolved_gain(self, n_inputs: int) -> float:
        """Input gain ``g``: ``gain`` if set, else ``gain_total / n_inputs``."""
        if n_inputs < 1:
            raise ValueError(f"n_inputs={n_inputs!r}: must be >= 1")
        return self.gain if self.gain is not None else self.gain_total / n_inputs

    def to_dict(self) -> dict:
        """JSON-friendly dict of all fields (stored in checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ColanetParams":
        """Inverse of :meth:`to_dict`; unknown keys are refused, missing keys
        take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"ColanetParams.from_dict: unknown keys {unknown}")
        return cls(**d)


def weight_of(r, params: ColanetParams):
    """Weight of resource, ``w(r) = w_min + span r+ / (span + r+)``, computed in
    float64 and returned as float32 (array or scalar)."""
    span = params.w_max - params.w_min
    rp = np.maximum(np.asarray(r, dtype=np.float64), 0.0)
    return (params.w_min + span * rp / (span + rp)).astype(np.float32)


def resource_of(w, params: ColanetParams):
    """Resource of weight, ``r(w) = (w - w_min) span / (w_max - w)``, the
    inverse of :func:`weight_of` on ``w_min <= w < w_max`` (float32).
    Weights at or above ``w_max`` are refused."""
    span = params.w_max - params.w_min
    w = np.asarray(w, dtype=np.float64)
    if np.any(w >= params.w_max) or np.any(~np.isfinite(w)):
        raise ValueError(f"resource_of: weights must be finite and < w_max={params.w_max}")
    return ((w - params.w_min) * span / (params.w_max - w)).astype(np.float32)


@dataclass
class ColanetState:
    """All mutable state of an ensemble, as NumPy arrays (plus two int counters).

    Shapes: ``E`` copies, ``D`` inputs, ``C`` classes, ``N = C*M`` neurons.

    * ``r``, ``w`` (E, D, N) float32: resources and cached weights ``w(r)``,
      input-major so that one input spike adds one contiguous row.
    * per neuron (E, N): ``u`` potential, ``theta_add``, ``stability`` S,
      ``free_pool`` F (float64); ``t_last_unforced``, ``t_first`` (start of the
      current/last burst), ``t_spike`` (last spike of any kind),
      ``last_ah_tick`` (previous anti-Hebbian step) int64; ``burst`` int8
      (0 none, 1 forced, 2 started, 3 continued).
    * per column (E, C): ``block_until`` int64, ``block_by`` int32 (the
      neuron exempt from the block), ``t_out`` int64 (last OUT spike).
    * per input (D,), shared by all copies: ``arrival_bits`` uint64 (bit p =
      arrival p ticks before the next tick ``t``), ``acc`` float64.
    * ``t``: next global tick; ``n_seen``: samples trained.

    Time stamps that never happened hold ``NEVER`` (a large negative tick).
    """

    r: np.ndarray
    w: np.ndarray
    u: np.ndarray
    theta_add: np.ndarray
    stability: np.ndarray
    free_pool: np.ndarray
    t_last_unforced: np.ndarray
    t_first: np.ndarray
    t_spike: np.ndarray
    last_ah_tick: np.ndarray
    burst: np.ndarray
    block_until: np.ndarray
    block_by: np.ndarray
    t_out: np.ndarray
    arrival_bits: np.ndarray
    acc: np.ndarray
    t: int = 0
    n_seen: int = 0

    @property
    def n_copies(self) -> int:
        return self.r.shape[0]

    @property
    def n_inputs(self) -> int:
        return self.r.shape[1]

    @property
    def n_neurons(self) -> int:
        return self.r.shape[2]

    @property
    def n_classes(self) -> int:
        return self.block_until.shape[1]

    def copy(self) -> "ColanetState":
        """Deep copy."""
        return state_from_arrays({k: v.copy() for k, v in state_arrays(self).items()})


_STATE_DTYPES = {
    "r": np.float32, "w": np.float32, "u": np.float64, "theta_add": np.float64,
    "stability": np.float64, "free_pool": np.float64, "t_last_unforced": np.int64,
    "t_first": np.int64, "t_spike": np.int64, "last_ah_tick": np.int64, "burst": np.int8,
    "block_until": np.int64, "block_by": np.int32, "t_out": np.int64,
    "arrival_bits": np.uint64, "acc": np.float64,
}


def state_schema(params: ColanetParams, n_inputs: int, n_classes: int
                 ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array :func:`state_arrays` gives for this model size (the
    checkpoint's contract: a file that differs is refused before it is used)."""
    E, D, C, N = params.e, n_inputs, n_classes, n_classes * params.m
    shapes = {"r": (E, D, N), "w": (E, D, N), "block_until": (E, C), "block_by": (E, C),
              "t_out": (E, C), "arrival_bits": (D,), "acc": (D,)}
    schema = {name: (shapes.get(name, (E, N)), np.dtype(dt)) for name, dt in _STATE_DTYPES.items()}
    return {**schema, "t": ((), np.dtype(np.int64)), "n_seen": ((), np.dtype(np.int64))}


def init_state(params: ColanetParams, n_inputs: int, n_classes: int) -> ColanetState:
    """Fresh ensemble: every synapse at ``r = r(0)`` (weight 0), all neuron
    state zero, all time stamps ``NEVER``, ``t = 0``."""
    if n_inputs < 1:
        raise ValueError(f"n_inputs={n_inputs!r}: must be >= 1")
    if n_classes < 1:
        raise ValueError(f"n_classes={n_classes!r}: must be >= 1")
    E, D, C, N = params.e, n_inputs, n_classes, n_classes * params.m
    r0 = np.float32(resource_of(0.0, params))
    # Every synapse alike: fill r, w and theta_add from one value each (no E x D x N float64
    # temporaries: at 1000 classes and 15 copies the arrays hold 230 M synapses each).
    r = np.full((E, D, N), r0, np.float32)
    w = np.full((E, D, N), weight_of(r[:1, :1, :1], params)[0, 0, 0], np.float32)
    st = ColanetState(r=r, w=w, **resting_dynamics(E, N, C, D))
    st.theta_add[...] = K.theta_of_column(w[0], 0, params.k_thr, params.resolved_gain(D))
    return st


def resting_dynamics(E: int, N: int, C: int, D: int) -> dict[str, np.ndarray]:
    """Every non-synaptic state array at rest: zero potentials, pools and stability, no burst, no
    block, every time stamp ``NEVER``, an empty arrival history."""
    return dict(
        u=np.zeros((E, N)), theta_add=np.zeros((E, N)), stability=np.zeros((E, N)),
        free_pool=np.zeros((E, N)),
        t_last_unforced=np.full((E, N), NEVER, np.int64), t_first=np.full((E, N), NEVER, np.int64),
        t_spike=np.full((E, N), NEVER, np.int64), last_ah_tick=np.full((E, N), NEVER, np.int64),
        burst=np.zeros((E, N), np.int8),
        block_until=np.full((E, C), NEVER, np.int64), block_by=np.full((E, C), -1, np.int32),
        t_out=np.full((E, C), NEVER, np.int64),
        arrival_bits=np.zeros(D, np.uint64), acc=np.zeros(D),
    )


def sync_derived(params: ColanetParams, state: ColanetState) -> None:
    """Recompute the cached weights ``w = w(r)`` and ``theta_add`` from ``r``
    (in place), e.g. after editing resources by hand."""
    g = params.resolved_gain(state.n_inputs)
    for e in range(state.n_copies):  # one copy at a time bounds the float64 temporaries
        state.w[e] = weight_of(state.r[e], params)
    for e in range(state.n_copies):
        for n in range(state.n_neurons):
            state.theta_add[e, n] = K.theta_of_column(state.w[e], n, params.k_thr, g)


def state_arrays(state: ColanetState) -> dict:
    """The state as a dict of arrays (for ``np.savez``; counters as 0-d int64)."""
    out = {name: getattr(state, name) for name in _STATE_DTYPES}
    out["t"] = np.array(state.t, np.int64)
    out["n_seen"] = np.array(state.n_seen, np.int64)
    return out


def state_from_arrays(arrays) -> ColanetState:
    """Inverse of :func:`state_arrays` (accepts an ``np.load`` result); checks
    names, dtypes and that the shapes agree."""
    names = set(_STATE_DTYPES) | {"t", "n_seen"}
    missing = sorted(names - set(arrays.keys()))
    if missing:
        raise ValueError(f"state_from_arrays: missing arrays {missing}")
    kw = {}
    for name, dt in _STATE_DTYPES.items():
        a = np.asarray(arrays[name])
        if a.dtype != dt:
            raise ValueError(f"state_from_arrays: {name} has dtype {a.dtype}, expected {np.dtype(dt)}")
        kw[name] = np.ascontiguousarray(a)
    st = ColanetState(**kw, t=int(arrays["t"]), n_seen=int(arrays["n_seen"]))
    _check_state_shapes(st)
    return st


def _check_state_shapes(st: ColanetState) -> None:
    if st.r.ndim != 3:
        raise ValueError(f"state.r must be (E, D, N), got shape {st.r.shape}")
    E, D, N = st.r.shape
    C = st.block_until.shape[1] if st.block_until.ndim == 2 else -1
    want = {"r": (E, D, N), "w": (E, D, N), "block_until": (E, C), "block_by": (E, C),
            "t_out": (E, C), "arrival_bits": (D,), "acc": (D,)}
    for name in ("u", "theta_add", "stability", "free_pool", "t_last_unforced", "t_first",
                 "t_spike", "last_ah_tick", "burst"):
        want[name] = (E, N)
    for name, shape in want.items():
        if getattr(st, name).shape != shape:
            raise ValueError(f"state.{name} has shape {getattr(st, name).shape}, expected {shape}")
    if C < 1 or N % C:
        raise ValueError(f"state: {N} neurons do not split into {C} columns")


def pack_params(params: ColanetParams, n_inputs: int):
    """Hyperparameters as the kernels' flat arrays ``(fp float64, ip int64)``."""
    fp = np.zeros(K.N_FP)
    fp[K.F_LEAK] = 1.0 - 1.0 / params.tau
    fp[K.F_THETA0] = params.theta0
    fp[K.F_KTHR] = params.k_thr
    fp[K.F_SSTIM] = params.s_stim
    fp[K.F_WMIN] = params.w_min
    fp[K.F_WMAX] = params.w_max
    fp[K.F_GAIN] = params.resolved_gain(n_inputs)
    fp[K.F_DH] = params.d_h
    fp[K.F_DOPAMINE] = params.dopamine
    fp[K.F_RS] = params.r_s
    fp[K.F_FTHR] = params.f_thr
    ip = np.zeros(K.N_IP, np.int64)
    ip[K.I_TSYN] = params.t_syn
    ip[K.I_ISI] = params.isi_max
    ip[K.I_TDOP] = params.t_dop
    ip[K.I_NSILENT] = params.n_silent
    ip[K.I_M] = params.m
    ip[K.I_PRESENT] = params.present_ticks
    ip[K.I_PERIOD] = params.period
    ip[K.I_BLOCK] = params.block_ticks
    ip[K.I_LABEL] = params.label_tick
    ip[K.I_FORCE] = params.force_tick
    ip[K.I_DOPT] = params.dopamine_tick
    ip[K.I_DELAY] = params.input_delay
    ip[K.I_FORCE_ALL] = params.forcing == "all"
    ip[K.I_BLOCK_COL] = params.blocking == "column"
    ip[K.I_CODER] = _CODERS.index(params.coder)
    ip[K.I_CARRY] = params.carry_accumulator
    ip[K.I_SEED] = params.seed
    ip[K.I_BURST_SAMPLE] = params.burst_scope == "sample"
    return fp, ip


def check_batch(params: ColanetParams, state: ColanetState, x, sample_index, sat, y=None):
    """Validate and convert a chunk: returns ``(x float32 (B,D), y int64 (B,)
    or None, sample_index int64 (B,), sat float)``; raises ValueError with the
    offending value otherwise."""
    _check_state_shapes(state)
    E, D, N = state.r.shape
    C = state.n_classes
    if E != params.e or N != C * params.m:
        raise ValueError(f"state has E={E}, N={N}, C={C}; params want e={params.e}, m={params.m} "
                         f"(N = C*m = {C * params.m})")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != D:
        raise ValueError(f"x must be (B, {D}), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"x has a non-finite value {x[tuple(bad)]} at (row {bad[0]}, feature {bad[1]})")
    B = x.shape[0]
    sample_index = np.ascontiguousarray(sample_index, dtype=np.int64)
    if sample_index.shape != (B,):
        raise ValueError(f"sample_index must be ({B},), got shape {sample_index.shape}")
    if B and sample_index.min() < 0:
        raise ValueError(f"sample_index must be >= 0, got {sample_index.min()}")
    x, sat = per_feature_coding(x, sat)
    if y is not None:
        y = np.ascontiguousarray(y, dtype=np.int64)
        if y.shape != (B,):
            raise ValueError(f"y must be ({B},), got shape {y.shape}")
        if B and (y.min() < 0 or y.max() >= C):
            raise ValueError(f"labels must be in [0, {C}), got min {y.min()} max {y.max()}")
    return x, y, sample_index, sat


def per_feature_coding(x: np.ndarray, sat) -> tuple[np.ndarray, float]:
    """Resolve the saturation level: a positive scalar is used as is; a (D,) vector of per-feature
    levels (``inf`` for a feature that is never positive) divides the features, ``x_j / sat_j``,
    and leaves a level of 1, so the coder computes ``d_j = clip(x_j / sat_j, 0, 1)``."""
    levels = np.asarray(sat, dtype=np.float64)
    if levels.ndim == 0:
        sat = float(levels)
        if not (np.isfinite(sat) and sat > 0):
            raise ValueError(f"sat={sat!r}: must be a positive finite number")
        return x, sat
    if levels.shape != (x.shape[1],) or np.isnan(levels).any() or (levels <= 0).any():
        raise ValueError(f"per-feature sat must be ({x.shape[1]},) positive levels, got shape "
                         f"{levels.shape}")
    return (x / levels).astype(np.float32), 1.0


def encode_inputs(params: ColanetParams, x, sample_index, sat) -> np.ndarray:
    """Input spikes of each sample from a fresh accumulator, as emitted:
    (B, present_ticks, D) bool, index ``k`` = presentation tick (they arrive
    at the L neurons at ``k + input_delay``)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be (B, D), got shape {x.shape}")
    sample_index = np.ascontiguousarray(sample_index, dtype=np.int64)
    x, sat = per_feature_coding(x, sat)
    pat = K.encode_chunk(x, sat, sample_index, np.zeros(x.shape[1]),
                         _CODERS.index(params.coder), 0, True, params.seed,
                         params.present_ticks, params.input_delay)
    ks = np.arange(params.present_ticks, dtype=np.uint64) + np.uint64(params.input_delay)
    return ((pat[:, None, :] >> ks[None, :, None]) & np.uint64(1)).astype(bool)


def train_chunk(params: ColanetParams, state: ColanetState, x, y, sample_index, sat, record=False):
    """Train on a chunk of samples, in order, updating ``state`` in place.

    ``x`` (B, D) features, ``y`` (B,) labels in [0, C), ``sample_index`` (B,)
    global sample ids (key of the coder's and the noise's randomness), ``sat``
    the coder's saturation level.  Returns ``(votes, state)`` with votes
    (B, E, C) int32 = unforced OUT spikes per class per copy; with
    ``record=True`` returns ``(votes, state, spikes)``, spikes (B, P, E, N)
    bool = every L spike (forced ones included) at local tick k.
    Splitting a chunk into several calls gives the identical result.
    """
    x, y, sample_index, sat = check_batch(params, state, x, sample_index, sat, y)
    B, D = x.shape
    E, N, P = state.n_copies, state.n_neurons, params.period
    fp, ip = pack_params(params, D)
    pat = K.encode_chunk(x, sat, sample_index, state.acc, ip[K.I_CODER], ip[K.I_CARRY], False,
                         params.seed, params.present_ticks, params.input_delay)
    bits0 = K.history_chunk(state.arrival_bits, pat, P)
    rec = np.zeros((B, P, E, N) if record else (1, 1, 1, 1), bool)
    votes = K.train_kernel(pat, bits0, y, sample_index, np.int64(state.t), fp, ip,
                           state.r, state.w, state.u, state.theta_add, state.stability,
                           state.free_pool, state.t_last_unforced, state.t_first, state.t_spike,
                           state.burst, state.last_ah_tick, state.block_until, state.block_by,
                           state.t_out, record, rec)
    state.t += B * P
    state.n_seen += B
    if record:
        return votes, state, rec
    return votes, state


def infer_chunk(params: ColanetParams, state: ColanetState, x, sample_index, sat, record=False):
    """Votes (B, E, C) int32 with plasticity frozen; ``state`` is not modified.

    Each sample starts from a fresh neuron state (u = 0, no burst, no block,
    accumulator 0) and uses noise stream 1, so predictions do not depend on
    order or chunking.  With ``record=True`` returns ``(votes, spikes)``.
    """
    x, _, sample_index, sat = check_batch(params, state, x, sample_index, sat)
    B, D = x.shape
    E, N, P = state.n_copies, state.n_neurons, params.period
    fp, ip = pack_params(params, D)
    pat = K.encode_chunk(x, sat, sample_index, np.zeros(D), ip[K.I_CODER], 0, True,
                         params.seed, params.present_ticks, params.input_delay)
    rec = np.zeros((B, P, E, N) if record else (1, 1, 1, 1), bool)
    votes = K.infer_kernel(pat, sample_index, fp, ip, state.w, state.theta_add,
                           state.n_classes, record, rec)
    if record:
        return votes, rec
    return votes


def readout(votes):
    """Ensemble answer from votes (B, E, C): ``(pred (B,) int64, answered (B,)
    bool)``; votes summed over copies, argmax with ties to the lowest class,
    ``pred = -1`` where no copy voted at all."""
    votes = np.asarray(votes)
    if votes.ndim != 3:
        raise ValueError(f"votes must be (B, E, C), got shape {votes.shape}")
    total = votes.sum(axis=1)
    answered = total.sum(axis=1) > 0
    pred = np.where(answered, np.argmax(total, axis=1), -1).astype(np.int64)
    return pred, answered
