"""Tests of the CoLaNET simulator: Numba kernels against the NumPy reference,
and the model's mechanics (coding, timing, blocking, forcing, dopamine).

All deterministic; no timing assertions.
"""


import numba
import numpy as np
import pytest

from pipeline import colanet as cn
from pipeline import colanet_kernels as K
from pipeline import colanet_reference as ref

FLOAT_RTOL = 1e-5


# --- helpers -----------------------------------------------------------------
def prototype_data(seed, n, n_classes=3, n_inputs=20, active=8, noise=0.1, dead=0):
    """Separable-ish data: each class a sparse positive prototype plus noise.
    The last ``dead`` features are always 0 (their synapses only move by
    conservation)."""
    rng = np.random.default_rng(seed)
    protos = np.zeros((n_classes, n_inputs))
    live = n_inputs - dead
    for c in range(n_classes):
        idx = rng.choice(live, active, replace=False)
        protos[c, idx] = rng.uniform(0.5, 1.0, active)
    y = rng.integers(0, n_classes, n)
    x = protos[y] + noise * rng.random((n, n_inputs))
    if dead:
        x[:, live:] = 0.0
    return x.astype(np.float32), y, protos


def assert_states_match(a, b, exact=False):
    aa, bb = cn.state_arrays(a), cn.state_arrays(b)
    assert aa.keys() == bb.keys()
    for name in aa:
        if aa[name].dtype.kind == "f" and not exact:
            np.testing.assert_allclose(aa[name], bb[name], rtol=FLOAT_RTOL, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(aa[name], bb[name], err_msg=name)


def run_both(params, x, y, sat, chunks, n_classes):
    """Train kernel and reference on the same chunks; return both results."""
    D = x.shape[1]
    s_fast = cn.init_state(params, D, n_classes)
    s_ref = s_fast.copy()
    out = {"fast": ([], [], s_fast), "ref": ([], [], s_ref)}
    for lo, hi in chunks:
        sl = slice(lo, hi)
        idx = np.arange(lo, hi)
        v, _, rec = cn.train_chunk(params, s_fast, x[sl], y[sl], idx, sat, record=True)
        out["fast"][0].append(v)
        out["fast"][1].append(rec)
        v, _, rec = ref.train_chunk(params, s_ref, x[sl], y[sl], idx, sat, record=True)
        out["ref"][0].append(v)
        out["ref"][1].append(rec)
    return {k: (np.concatenate(v), np.concatenate(r), s) for k, (v, r, s) in out.items()}


# --- parameters and records -----------------------------------------------------
def test_params_defaults_and_roundtrip():
    p = cn.ColanetParams()
    assert p.period == 15 and p.m == 19 and p.e == 13
    assert p.resolved_gain(1280) == pytest.approx(746.6 / 1280)
    assert cn.ColanetParams(gain_total=640).resolved_gain(1280) == pytest.approx(0.5)
    assert cn.ColanetParams(gain=0.25).resolved_gain(1280) == 0.25
    q = cn.ColanetParams(coder="bernoulli", forcing="all", blocking="none", seed=7, gain=1.5)
    d = q.to_dict()
    import json
    assert cn.ColanetParams.from_dict(json.loads(json.dumps(d))) == q
    with pytest.raises(ValueError, match="unknown keys"):
        cn.ColanetParams.from_dict({"nope": 1})


@pytest.mark.parametrize("field,value", [
    ("tau", 0.5), ("theta0", -1.0), ("w_min", 0.1), ("w_max", -0.5), ("gain", -2.0),
    ("m", 0), ("e", 0), ("coder", "poisson"), ("forcing", "random"), ("blocking", "global"),
    ("label_tick", 15), ("force_tick", 5), ("silent_ticks", 60), ("input_delay", 6),
    ("d_h", 0.1), ("dopamine", -0.2), ("t_syn", 2.5), ("seed", -1), ("tau", float("nan")),
    ("gain_total", 0.0), ("burst_scope", "forever"),
])
def test_params_validation_names_bad_value(field, value):
    with pytest.raises(ValueError, match=field):
        cn.ColanetParams(**{field: value})


def test_weight_resource_map_and_inverse():
    p = cn.ColanetParams()
    w = np.linspace(p.w_min, p.w_max - 0.05, 41).astype(np.float32)
    np.testing.assert_allclose(cn.weight_of(cn.resource_of(w, p), p), w, rtol=1e-5, atol=1e-5)
    assert cn.weight_of(np.float32(-3.0), p) == np.float32(p.w_min)
    assert cn.weight_of(np.float32(0.0), p) == np.float32(p.w_min)
    r = np.linspace(0, 100, 50, dtype=np.float32)
    assert np.all(np.diff(cn.weight_of(r, p)) > 0)
    assert cn.weight_of(np.float32(1e9), p) <= np.float32(p.w_max)
    assert abs(float(cn.weight_of(cn.resource_of(0.0, p), p))) < 1e-6
    # the kernels' scalar map is the same expression
    span = p.w_max - p.w_min
    for rv in r[::7]:
        assert K.weight_scalar(rv, p.w_min, span) == cn.weight_of(rv, p)
    with pytest.raises(ValueError):
        cn.resource_of(p.w_max, p)


def test_init_state_and_checkpoint_roundtrip(tmp_path):
    p = cn.ColanetParams(m=3, e=2)
    st = cn.init_state(p, 7, 4)
    assert st.r.shape == (2, 7, 12) and st.r.dtype == np.float32
    assert np.all(np.abs(st.w) < 1e-6)
    derived = st.copy()  # init fills w and theta_add: exactly what w(r) and theta(w) give
    derived.w[...], derived.theta_add[...] = 1.0, -1.0
    cn.sync_derived(p, derived)
    assert_states_match(st, derived, exact=True)
    x, y, _ = prototype_data(0, 6, n_classes=4, n_inputs=7, active=3)
    cn.train_chunk(p, st, x, y, np.arange(6), 1.0)
    np.savez(tmp_path / "s.npz", **cn.state_arrays(st))
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        back = cn.state_from_arrays(z)
    assert_states_match(st, back, exact=True)
    assert back.t == 6 * p.period and back.n_seen == 6
    bad = cn.state_arrays(st)
    bad["r"] = bad["r"].astype(np.float64)
    with pytest.raises(ValueError, match="dtype"):
        cn.state_from_arrays(bad)


def test_bad_inputs_are_refused():
    p = cn.ColanetParams(m=2, e=1)
    st = cn.init_state(p, 5, 3)
    x = np.ones((2, 5), np.float32)
    with pytest.raises(ValueError, match="non-finite"):
        cn.train_chunk(p, st, np.where(np.eye(2, 5) > 0, np.nan, x), [0, 1], [0, 1], 1.0)
    with pytest.raises(ValueError, match="labels"):
        cn.train_chunk(p, st, x, [0, 3], [0, 1], 1.0)
    with pytest.raises(ValueError, match="x must be"):
        cn.infer_chunk(p, st, np.ones((2, 4)), [0, 1], 1.0)
    with pytest.raises(ValueError, match="sat"):
        cn.infer_chunk(p, st, x, [0, 1], 0.0)
    with pytest.raises(ValueError, match="params want"):
        cn.infer_chunk(cn.ColanetParams(m=3, e=1), st, x, [0, 1], 1.0)


# --- randomness and coding -------------------------------------------------------
def test_hash_numpy_twin_matches_numba():
    for seed, e, stream, s, k in [(0, 0, 0, 0, 0), (3, 14, 1, 123456789, 9), (2**62, 2, 0, 2**40, 14)]:
        key = K.noise_tick_key(seed, e, stream, s, k)
        np.testing.assert_array_equal(K.hash_uniforms(np.uint64(key), 50), ref.noise_uniforms(seed, e, stream, s, k, 50))
        key = K.coder_tick_key(seed, s, k)
        np.testing.assert_array_equal(K.hash_uniforms(np.uint64(key), 50), ref.coder_uniforms(seed, s, k, 50))
    u = ref.noise_uniforms(0, 0, 0, 0, 0, 20000)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def test_accumulator_coder_counts():
    p = cn.ColanetParams()
    sat = 2.0
    x = np.array([[sat, sat / 2, 0.0, -1.0, 3 * sat, sat / 10]], np.float32)
    spikes = cn.encode_inputs(p, x, [0], sat)
    assert spikes.shape == (1, 10, 6)
    np.testing.assert_array_equal(spikes[0].sum(0), [10, 5, 0, 0, 10, 1])
    np.testing.assert_array_equal(spikes[0, :, 1], [0, 1] * 5)  # acc 0.5, 1.0 -> spike, ...
    np.testing.assert_array_equal(ref.encode_sample(p, x[0], sat, 0, np.zeros(6)), spikes[0])


def test_bernoulli_coder_is_counter_based():
    p = cn.ColanetParams(coder="bernoulli", seed=5)
    rng = np.random.default_rng(1)
    x = rng.random((20, 300)).astype(np.float32)
    idx = np.arange(100, 120)
    whole = cn.encode_inputs(p, x, idx, 1.0)
    parts = np.concatenate([cn.encode_inputs(p, x[:7], idx[:7], 1.0), cn.encode_inputs(p, x[7:], idx[7:], 1.0)])
    np.testing.assert_array_equal(whole, parts)
    for b in (0, 13):
        np.testing.assert_array_equal(ref.encode_sample(p, x[b], 1.0, idx[b], np.zeros(300)), whole[b])
    # rate follows the drive; the spikes depend on the sample id, not its position
    assert abs(whole.mean() - x.mean()) < 0.02
    assert not np.array_equal(cn.encode_inputs(p, x[:1], [7], 1.0), whole[:1])


def test_window_masks_match_literal_history():
    """The kernels' split history (before-sample word + sample pattern) answers
    "arrived in [a, b]" exactly like the literal 64-tick shift register."""
    rng = np.random.default_rng(3)
    T, D, P = 200, 5, 15
    arr = rng.random((T, D)) < 0.3

    def literal(t):
        bits = np.zeros(D, np.uint64)
        for p in range(min(64, t + 1)):
            bits |= arr[t - p].astype(np.uint64) << np.uint64(p)
        return bits

    for t0 in (0, 30, 120):
        bits0 = literal(t0 - 1) if t0 > 0 else np.zeros(D, np.uint64)
        pat = np.zeros(D, np.uint64)
        for ka in range(P):
            pat |= arr[t0 + ka].astype(np.uint64) << np.uint64(ka)
        for _ in range(60):
            t = t0 + int(rng.integers(0, P))
            a = t - int(rng.integers(-2, 90))
            b = a + int(rng.integers(-1, 40))
            hm, cm = K.window_masks(t0, t, a, b)
            fast = ((bits0 & hm) | (pat & cm)) != 0
            np.testing.assert_array_equal(fast, ref.arrived_in(literal(t), t, a, b))


# --- kernels against the reference ---------------------------------------------------
@pytest.mark.parametrize("overrides", [
    {},
    {"coder": "bernoulli", "seed": 3},
    {"forcing": "all"},
    {"blocking": "none", "carry_accumulator": True},
    {"silent_ticks": 10, "gain": 8.0},
    {"burst_scope": "continuous"},
])
def test_training_and_inference_match_reference(overrides):
    p = cn.ColanetParams(m=4, e=2, **overrides)
    x, y, _ = prototype_data(0, 30, dead=4)
    sat = float(np.percentile(x[x > 0], 99))
    res = run_both(p, x, y, sat, [(0, 10), (10, 25), (25, 30)], 3)
    v_fast, rec_fast, s_fast = res["fast"]
    v_ref, rec_ref, s_ref = res["ref"]
    np.testing.assert_array_equal(v_fast, v_ref)
    np.testing.assert_array_equal(rec_fast, rec_ref)
    assert_states_match(s_fast, s_ref)
    # the run exercised the model: votes, forced spikes, weight changes
    assert v_fast.sum() > 0 and rec_fast.sum() > v_fast.sum()
    r0 = cn.resource_of(0.0, p)
    assert np.any(s_fast.r != r0)
    if overrides.get("burst_scope", "sample") == "sample":  # bursts end: conservation ran
        assert np.any(s_fast.r[:, -4:, :] != r0)
    # inference
    x_te, _, _ = prototype_data(1, 12, dead=4)
    before = cn.state_arrays(s_fast.copy())
    vi_fast, ri_fast = cn.infer_chunk(p, s_fast, x_te, np.arange(500, 512), sat, record=True)
    vi_ref, ri_ref = ref.infer_chunk(p, s_ref, x_te, np.arange(500, 512), sat, record=True)
    np.testing.assert_array_equal(vi_fast, vi_ref)
    np.testing.assert_array_equal(ri_fast, ri_ref)
    assert vi_fast.sum() > 0
    for name, arr in cn.state_arrays(s_fast).items():
        np.testing.assert_array_equal(arr, before[name], err_msg=name)


def test_inference_is_independent_of_order_and_chunking():
    p = cn.ColanetParams(m=4, e=3)
    x, y, _ = prototype_data(2, 40)
    st = cn.init_state(p, 20, 3)
    cn.train_chunk(p, st, x, y, np.arange(40), 1.0)
    idx = np.arange(1000, 1040)
    whole = cn.infer_chunk(p, st, x, idx, 1.0)
    perm = np.random.default_rng(0).permutation(40)
    np.testing.assert_array_equal(cn.infer_chunk(p, st, x[perm], idx[perm], 1.0), whole[perm])
    pieces = np.concatenate([cn.infer_chunk(p, st, x[i:i + 9], idx[i:i + 9], 1.0) for i in range(0, 40, 9)])
    np.testing.assert_array_equal(pieces, whole)


def test_training_chunking_invariance():
    p = cn.ColanetParams(m=4, e=2, coder="bernoulli")
    x, y, _ = prototype_data(4, 40)
    one = cn.init_state(p, 20, 3)
    four = one.copy()
    v_one, _ = cn.train_chunk(p, one, x, y, np.arange(40), 1.0)
    v_four = np.concatenate([cn.train_chunk(p, four, x[i:i + 10], y[i:i + 10], np.arange(i, i + 10), 1.0)[0]
                             for i in range(0, 40, 10)])
    np.testing.assert_array_equal(v_one, v_four)
    assert_states_match(one, four, exact=True)


def test_same_results_with_one_and_two_threads():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has a single thread here")
    p = cn.ColanetParams(m=4, e=5)
    x, y, _ = prototype_data(5, 30)
    results = []
    old = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            st = cn.init_state(p, 20, 3)
            v, _ = cn.train_chunk(p, st, x, y, np.arange(30), 1.0)
            vi = cn.infer_chunk(p, st, x, np.arange(30, 60), 1.0)
            results.append((v, vi, st))
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert_states_match(results[0][2], results[1][2], exact=True)


# --- mechanics: forcing, dopamine, stability, blocking --------------------------------
def _quiet_setup(**overrides):
    """8 inputs all spiking on every presentation tick (arrivals at local
    ticks 1..10), a gain too small for any input-driven spike: only the
    teacher makes L neurons spike (forcing one neuron unless overridden)."""
    p = cn.ColanetParams(**{"m": 4, "e": 1, "gain": 1e-3, "forcing": "most_depolarised",
                            **overrides})
    x = np.ones((1, 8), np.float32)
    return p, x


def _noise_only_u(p, st, sample_index, k_end):
    """Potentials of copy 0 at local tick k_end with no spike before it."""
    N, D = st.n_neurons, st.n_inputs
    g = p.resolved_gain(D)
    u = np.zeros(N)
    for k in range(k_end + 1):
        u = u * (1.0 - 1.0 / p.tau) + p.s_stim * ref.noise_uniforms(p.seed, 0, 0, sample_index, k, N)
        if 1 <= k <= 10:
            u = u + g * np.cumsum(st.w[0].astype(np.float64), axis=0)[-1]
        u = np.maximum(u, 0.0)
    return u


@pytest.mark.parametrize("impl", [cn, ref])
def test_forced_spike_at_13_and_dopamine_at_14_in_label_column(impl):
    p, x = _quiet_setup()
    st = cn.init_state(p, 8, 3)
    r0 = st.r.copy()
    u13 = _noise_only_u(p, st, 42, 13)
    votes, st, rec = impl.train_chunk(p, st, x, [2], [42], 1.0, record=True)
    assert votes.sum() == 0
    forced = 8 + int(np.argmax(u13[8:12]))  # most depolarised of column 2
    spikes = np.argwhere(rec[0, :, 0, :])
    np.testing.assert_array_equal(spikes, [[13, forced]])
    assert st.burst[0, forced] == 1 and st.t_first[0, forced] == 13 and st.t_spike[0, forced] == 13
    # dopamine at 14: window [13 - t_syn, 13] holds arrivals 3..10 of all 8 inputs
    expect = (r0[0, :, forced].astype(np.float64) + p.dopamine).astype(np.float32)
    np.testing.assert_array_equal(st.r[0, :, forced], expect)
    others = np.ones(12, bool)
    others[forced] = False
    np.testing.assert_array_equal(st.r[0][:, others], r0[0][:, others])
    assert st.free_pool[0, forced] == pytest.approx(-8 * p.dopamine)
    assert np.all(st.stability == 0.0)  # forced and silent neurons only lose stability
    # t_dop = 0: the dopamine of tick 14 no longer reaches the spike of tick 13
    p0, _ = _quiet_setup(t_dop=0)
    st0 = cn.init_state(p0, 8, 3)
    impl.train_chunk(p0, st0, x, [2], [42], 1.0)
    np.testing.assert_array_equal(st0.r, r0)
    assert st0.burst[0, forced] == 1


@pytest.mark.parametrize("impl", [cn, ref])
def test_forcing_all(impl):
    p, x = _quiet_setup(forcing="all")
    st = cn.init_state(p, 8, 3)
    _, st, rec = impl.train_chunk(p, st, x, [1], [0], 1.0, record=True)
    spikes = np.argwhere(rec[0, :, 0, :])
    np.testing.assert_array_equal(spikes, [[13, n] for n in range(4, 8)])
    assert np.all(st.r[0, :, 4:8] > st.r[0, :, 0:1])


@pytest.mark.parametrize("impl", [cn, ref])
def test_timely_unforced_answer_consolidates(impl):
    """A strong neuron of the label's column fires on every arrival tick
    (1..10): 10 votes, the GATE stays silent (no forcing), one anti-Hebbian
    step per synapse, dopamine potentiates, stability grows by
    r_s * Dp * (2 - |14 - 1 - isi_max| / isi_max)."""
    p = cn.ColanetParams(m=4, e=1, gain=2.0)
    st = cn.init_state(p, 8, 3)
    st.r[0, :, 8] = cn.resource_of(1.0, p)
    cn.sync_derived(p, st)
    r_strong = st.r[0, :, 8].copy()
    votes, st, rec = impl.train_chunk(p, st, np.ones((1, 8), np.float32), [2], [0], 1.0, record=True)
    np.testing.assert_array_equal(votes[0, 0], [0, 0, 10])
    np.testing.assert_array_equal(np.argwhere(rec[0, :, 0, :]), [[k, 8] for k in range(1, 11)])
    assert st.burst[0, 8] == 3 and st.t_first[0, 8] == 1 and st.t_spike[0, 8] == 10
    after_ah = (r_strong.astype(np.float64) + p.d_h).astype(np.float32)
    np.testing.assert_array_equal(st.r[0, :, 8], (after_ah.astype(np.float64) + p.dopamine).astype(np.float32))
    assert st.stability[0, 8] == pytest.approx(p.r_s * p.dopamine * (2 - 3 / 10))
    assert st.free_pool[0, 8] == pytest.approx(-8 * (p.d_h + p.dopamine))
    assert np.all(np.delete(st.stability[0], 8) == 0.0)


@pytest.mark.parametrize("impl", [cn, ref])
def test_column_blocking(impl):
    """Neurons A (w 1.7) and B (w 1.45) of column 0 both cross threshold at
    tick 1; A, more depolarised, fires and blocks the column: B's input is
    gated and it never fires.  Without blocking B fires too."""
    fired = {}
    for blocking in ("column", "none"):
        p = cn.ColanetParams(m=2, e=1, gain=1.5, blocking=blocking)
        st = cn.init_state(p, 4, 2)
        st.r[0, :, 0] = cn.resource_of(1.7, p)
        st.r[0, :, 1] = cn.resource_of(1.45, p)
        cn.sync_derived(p, st)
        votes, rec = impl.infer_chunk(p, st, np.ones((3, 4), np.float32), [0, 1, 2], 1.0, record=True)
        assert rec[:, 1:11, 0, 0].sum() >= 3 * 5
        fired[blocking] = rec[:, :, 0, 1].sum()
        if blocking == "column":
            assert rec[:, 1:11, 0, 0].all()  # the blocker is exempt: fires on every arrival
            np.testing.assert_array_equal(votes[:, 0, 0], 10)
    assert fired["column"] == 0
    assert fired["none"] > 0


def test_readout():
    votes = np.array([
        [[0, 2, 1], [0, 1, 0]],  # class 1
        [[1, 0, 1], [0, 0, 0]],  # tie 0/2 -> lowest
        [[0, 0, 0], [0, 0, 0]],  # no answer
    ], np.int32)
    pred, answered = cn.readout(votes)
    np.testing.assert_array_equal(pred, [1, 0, -1])
    np.testing.assert_array_equal(answered, [True, True, False])


# --- learning ---------------------------------------------------------------------------
def test_separable_toy_problem_is_learned():
    """4 well-separated positive prototypes in 64-d plus noise, one online
    pass, default dynamics (burst_scope "sample").  With burst_scope
    "continuous" and 5 silent ticks a neuron that fires late in one sample and
    early in the next never leaves its burst (isi_max = 10), so its
    anti-Hebbian step and conservation stall and this toy is learned only to
    40-80 %: the reason for the default."""
    p = cn.ColanetParams(m=5, e=3)
    rng = np.random.default_rng(0)
    C, D = 4, 64
    protos = np.zeros((C, D))
    for c in range(C):
        protos[c, rng.choice(D, 16, replace=False)] = rng.uniform(0.5, 1.0, 16)

    def draw(n):
        y = rng.integers(0, C, n)
        return (protos[y] + 0.1 * rng.random((n, D))).astype(np.float32), y

    x_tr, y_tr = draw(400)
    x_te, y_te = draw(200)
    sat = float(np.percentile(x_tr[x_tr > 0], 99))
    st = cn.init_state(p, D, C)
    cn.train_chunk(p, st, x_tr, y_tr, np.arange(400), sat)
    pred, answered = cn.readout(cn.infer_chunk(p, st, x_te, np.arange(10_000, 10_200), sat))
    assert answered.mean() >= 0.95
    assert (pred == y_te).mean() >= 0.95
