"""Tests of the CoLaNET simulator: the typed records (config, kernel parameters, the state's one
declaration, checkpoints) and the model's mechanics (coding, timing, blocking, forcing, dopamine),
each mechanism on both the Numba kernels and the NumPy reference. The exact comparison of kernels
and reference over every choice is tests/test_differential.py.

All deterministic; no timing assertions.
"""

import dataclasses
import json
import typing

import numba
import numpy as np
import pytest

from pipeline import colanet as cn
from pipeline import colanet_kernels as K
from pipeline import colanet_reference as ref


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


def coded(params, x):
    """The coder's inputs for ``params`` from the features ``x`` (B, D): ``x`` as view 0 and a
    fixed permutation of it as each further view, so that the views differ (the whitened
    coding's views are rotations; what the kernels need is ``n_views`` blocks of D inputs)."""
    rng = np.random.default_rng(99)
    return np.concatenate([x] + [x[:, rng.permutation(x.shape[1])]
                                 for _ in range(params.n_views - 1)], axis=1)


def assert_states_match(a, b):
    """Every state array and counter equal, bit for bit."""
    aa, bb = cn.state_arrays(a), cn.state_arrays(b)
    assert aa.keys() == bb.keys()
    for name in aa:
        np.testing.assert_array_equal(aa[name], bb[name], err_msg=name)


def trained_state(params, n_samples=12, n_classes=4, n_inputs=7):
    """A state after one chunk of training on prototype data (plasticity has acted)."""
    st = cn.init_state(params, n_inputs, n_classes)
    x, y, _ = prototype_data(0, n_samples, n_classes=n_classes, n_inputs=n_inputs, active=3)
    cn.train_chunk(params, st, coded(params, x), y, np.arange(n_samples), 1.0)
    return st


# --- parameters and records -----------------------------------------------------
def test_params_defaults_and_roundtrip():
    p = cn.ColanetConfig()
    assert p.period == 15 and p.m == 8 and p.e == 13
    assert p.resolved_gain(1280) == pytest.approx(1263.0 / 1280)
    assert cn.ColanetConfig(gain_total=640).resolved_gain(1280) == pytest.approx(0.5)
    assert cn.ColanetConfig(gain=0.25).resolved_gain(1280) == 0.25
    q = cn.ColanetConfig(coder="bernoulli", forcing="all", blocking="none", seed=7, gain=1.5)
    d = q.to_dict()
    assert cn.ColanetConfig.from_dict(json.loads(json.dumps(d))) == q
    with pytest.raises(ValueError, match="unknown keys"):
        cn.ColanetConfig.from_dict({"nope": 1})


@pytest.mark.parametrize("field,value", [
    ("tau", 0.5), ("theta0", -1.0), ("w_min", 0.1), ("w_max", -0.5), ("gain", -2.0),
    ("m", 0), ("e", 0), ("coder", "poisson"), ("forcing", "random"), ("blocking", "global"),
    ("label_tick", 15), ("force_tick", 5), ("silent_ticks", 60), ("input_delay", 6),
    ("d_h", 0.1), ("dopamine", -0.2), ("t_syn", 2.5), ("seed", -1), ("tau", float("nan")),
    ("gain_total", 0.0), ("burst_scope", "forever"), ("coding", "zca"),
        ("whiten_shrinkage", 0.0), ("whiten_shrinkage", 1.5),
    ("firing", "all"), ("theta_refresh", "never"), ("gate_scope", "column"), ("gate_ticks", -1),
    ("gate_ticks", 2.5), ("gate_ticks", True), ("syn_window", "t_syn-1"),
    ("block_span", "block_ticks+1"), ("views", 0), ("views", 14), ("views", 1.5),
    ("class_floor", -1), ("class_floor", 2.5), ("class_floor", 1001),
])
def test_params_validation_names_bad_value(field, value):
    with pytest.raises(ValueError, match=field):
        cn.ColanetConfig(**{field: value})


def test_every_field_has_a_help_text_and_round_trips():
    """Each ColanetConfig field carries its one-line help as Annotated metadata (the command
    line's option help); the frozen conversions, asdict, to_dict and from_dict work with it."""
    hints = typing.get_type_hints(cn.ColanetConfig, include_extras=True)
    for f in dataclasses.fields(cn.ColanetConfig):
        text = hints[f.name].__metadata__[0]
        assert isinstance(text, str) and 10 < len(text) and "\n" not in text, f.name
    assert typing.get_args(hints["gate_ticks"].__origin__) == (int, type(None))
    p = cn.ColanetConfig(tau=4, gain=np.float32(2), m=np.int64(3), gate_ticks=np.int64(7),
                         firing="all_above_threshold", theta_refresh="anti_hebbian",
                         gate_scope="sample", syn_window="t_syn", block_span="block_ticks",
                         coding="centred")
    assert type(p.tau) is float and type(p.gain) is float and type(p.m) is int
    assert type(p.gate_ticks) is int and p.resolved_gate_ticks == 7
    assert dataclasses.asdict(p) == p.to_dict()
    assert cn.ColanetConfig.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert cn.ColanetConfig(block_ticks=4).resolved_gate_ticks == 4  # None: block_ticks
    shipped = cn.ColanetConfig()
    assert (shipped.coding, shipped.firing, shipped.theta_refresh, shipped.gate_scope,
            shipped.gate_ticks, shipped.syn_window, shipped.block_span) == (
        "whitened", "column_argmax", "every_change", "window", None, "t_syn+1", "block_ticks-1")


def test_weight_resource_map_and_inverse():
    p = cn.ColanetConfig()
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


def test_state_is_derived_from_one_declaration():
    """ColanetState's fields, init_state, state_schema, the checkpoint's arrays and the kernels'
    view all come from STATE_ARRAYS; t_last_unforced (written, never read) is gone."""
    fields = [f.name for f in dataclasses.fields(cn.ColanetState)]
    assert fields == [*cn.STATE_ARRAYS, *cn.COUNTERS]
    assert "t_last_unforced" not in fields
    p = cn.ColanetConfig(m=3, e=2)
    st = cn.init_state(p, 7, 4)
    assert st.r.shape == (2, 7, 12) and st.r.dtype == np.float32
    assert np.all(np.abs(st.w) < 1e-6)
    schema = cn.state_schema(p, 7, 4)
    arrays = cn.state_arrays(st)
    assert list(arrays) == list(schema)
    for name, (shape, dtype) in schema.items():
        assert (arrays[name].shape, arrays[name].dtype) == (shape, dtype), name
    kept = ["r", "u", "stability", "theta_shift", "free_pool", "t_first", "t_spike",
            "last_ah_tick", "burst", "block_until", "block_by", "t_out", "arrival_bits", "acc",
            "t", "n_seen"]
    assert list(cn.checkpoint_schema(p, 7, 4)) == kept
    # Without threshold adaptation the shift stays zero: the checkpoint leaves it out, so files
    # from before it (which lack it) still read.
    still = cn.ColanetConfig(m=3, e=2, theta_rise=0.0, theta_fall=0.0)
    assert list(cn.checkpoint_schema(still, 7, 4)) == [n for n in kept if n != "theta_shift"]
    view = cn.kernel_state(st)
    assert view._fields == tuple(n for n in cn.STATE_ARRAYS if n not in ("arrival_bits", "acc"))
    assert all(getattr(view, name) is getattr(st, name) for name in view._fields)


def test_kernel_params_are_one_typed_record():
    p = cn.ColanetConfig(forcing="most_depolarised", blocking="column", coder="bernoulli",
                         burst_scope="continuous", carry_accumulator=True, tau=4.0)
    hp = cn.kernel_params(p, 64)
    for name, kind in typing.get_type_hints(K.KernelParams).items():
        assert type(getattr(hp, name)) is kind, name  # a stray numpy scalar would recompile
    assert hp.leak == 1.0 - 1.0 / 4.0 and hp.span == p.w_max - p.w_min
    assert hp.gain == p.resolved_gain(64) and hp.period == 15
    assert hp.bernoulli and hp.carry_accumulator and hp.block_column
    assert not (hp.force_all or hp.bursts_end_with_sample)
    shipped = cn.kernel_params(cn.ColanetConfig(), 64)
    assert shipped.force_all and shipped.bursts_end_with_sample
    assert not (shipped.bernoulli or shipped.carry_accumulator or shipped.block_column)
    # the readings of the spec: the defaults' windows, then the spec's
    assert (shipped.syn_lookback, shipped.block_span, shipped.gate_ticks) == (10, 10, 10)
    assert not (shipped.fire_all or shipped.theta_at_ah_only or shipped.gate_in_sample)
    spec = cn.kernel_params(cn.ColanetConfig(
        t_syn=7, block_ticks=4, gate_ticks=9, firing="all_above_threshold",
        theta_refresh="anti_hebbian", gate_scope="sample", syn_window="t_syn",
        block_span="block_ticks"), 64)
    assert (spec.syn_lookback, spec.block_span, spec.gate_ticks) == (6, 5, 9)
    assert spec.fire_all and spec.theta_at_ah_only and spec.gate_in_sample
    for name, kind in typing.get_type_hints(K.KernelParams).items():
        assert type(getattr(spec, name)) is kind, name


def test_full_state_roundtrip(tmp_path):
    p = cn.ColanetConfig(m=3, e=2)
    st = cn.init_state(p, 7, 4)
    derived = st.copy()  # init fills w and theta_add: exactly what w(r) and theta(w) give
    derived.w[...], derived.theta_add[...] = 1.0, -1.0
    cn.sync_derived(p, derived)
    assert_states_match(st, derived)
    st = trained_state(p, n_samples=6)
    np.savez(tmp_path / "s.npz", **cn.state_arrays(st))
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        back = cn.state_from_arrays(z)
    assert_states_match(st, back)
    assert back.t == 6 * p.period and back.n_seen == 6
    bad = cn.state_arrays(st)
    bad["r"] = bad["r"].astype(np.float64)
    with pytest.raises(ValueError, match="dtype"):
        cn.state_from_arrays(bad)


def test_checkpoint_rebuilds_weights_and_thresholds_exactly(tmp_path):
    """A checkpoint holds r but not w nor theta_add; rebuilt from r they equal, bit for bit,
    what the kernels left after training, and training resumed from it continues identically."""
    p = cn.ColanetConfig(m=3, e=2)
    st = trained_state(p)
    assert len(np.unique(st.w)) > 10 and len(np.unique(st.theta_add)) > 3  # plasticity acted
    arrays = cn.checkpoint_arrays(st)
    schema = cn.checkpoint_schema(p, 7, 4)
    assert list(arrays) == list(schema) and "w" not in arrays and "theta_add" not in arrays
    np.savez(tmp_path / "checkpoint.npz", **arrays)
    with np.load(tmp_path / "checkpoint.npz", allow_pickle=False) as z:
        assert {name: (z[name].shape, z[name].dtype) for name in z.files} == schema
        back = cn.state_from_checkpoint(z, p, 7, 4)
    np.testing.assert_array_equal(back.w, st.w)
    np.testing.assert_array_equal(back.theta_add, st.theta_add)
    assert_states_match(st, back)
    x, y, _ = prototype_data(9, 8, n_classes=4, n_inputs=7, active=3)
    x = coded(p, x)
    v_st, _ = cn.train_chunk(p, st, x, y, np.arange(12, 20), 1.0)
    v_back, _ = cn.train_chunk(p, back, x, y, np.arange(12, 20), 1.0)
    np.testing.assert_array_equal(v_st, v_back)
    assert_states_match(st, back)


def test_checkpoint_keeps_thresholds_when_they_are_state(tmp_path):
    """With theta_refresh "anti_hebbian" dopamine and conservation move the weights without
    refreshing theta_add, so it is no longer a function of r: the checkpoint stores it, and
    training resumed from the checkpoint continues identically."""
    p = cn.ColanetConfig(m=3, e=2, theta_refresh="anti_hebbian")
    st = trained_state(p)
    rebuilt = st.copy()
    cn.sync_derived(p, rebuilt)
    assert not np.array_equal(rebuilt.theta_add, st.theta_add)  # r alone would lose it
    assert "theta_add" not in cn.checkpoint_schema(cn.ColanetConfig(m=3, e=2), 7, 4)
    assert list(cn.checkpoint_schema(p, 7, 4)) == [
        "r", "u", "theta_add", "stability", "theta_shift", "free_pool", "t_first", "t_spike",
        "last_ah_tick", "burst", "block_until", "block_by", "t_out", "arrival_bits", "acc", "t",
        "n_seen"]
    arrays = cn.checkpoint_arrays(st, p)
    assert list(arrays) == list(cn.checkpoint_schema(p, 7, 4))
    np.savez(tmp_path / "checkpoint.npz", **arrays)
    with np.load(tmp_path / "checkpoint.npz", allow_pickle=False) as z:
        back = cn.state_from_checkpoint(z, p, 7, 4)
    assert_states_match(st, back)
    with pytest.raises(ValueError, match=r"missing arrays \['theta_add'\]"):
        cn.state_from_checkpoint(cn.checkpoint_arrays(st), p, 7, 4)  # saved without the config
    x, y, _ = prototype_data(9, 8, n_classes=4, n_inputs=7, active=3)
    x = coded(p, x)
    v_st, _ = cn.train_chunk(p, st, x, y, np.arange(12, 20), 1.0)
    v_back, _ = cn.train_chunk(p, back, x, y, np.arange(12, 20), 1.0)
    np.testing.assert_array_equal(v_st, v_back)
    assert_states_match(st, back)


@pytest.mark.parametrize("damage,message", [
    (lambda a: a.pop("stability"), r"missing arrays \['stability'\]"),
    (lambda a: a.update(r=a["r"].astype(np.float64)), "r is float64"),
    (lambda a: a.update(t_out=a["t_out"][:, :2]),
     r"t_out is int64 \(2, 2\), expected int64 \(2, 4\)"),
])
def test_checkpoint_refuses_damaged_arrays(damage, message):
    p = cn.ColanetConfig(m=3, e=2)
    arrays = cn.checkpoint_arrays(cn.init_state(p, 7, 4))
    damage(arrays)
    with pytest.raises(ValueError, match=message):
        cn.state_from_checkpoint(arrays, p, 7, 4)


def test_bad_inputs_are_refused():
    p = cn.ColanetConfig(m=2, e=1)
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
        cn.infer_chunk(cn.ColanetConfig(m=3, e=1), st, x, [0, 1], 1.0)


# --- randomness and coding -------------------------------------------------------
def test_hash_numpy_twin_matches_numba():
    for seed, e, stream, s, k in [(0, 0, 0, 0, 0), (3, 14, 1, 123456789, 9), (2**62, 2, 0, 2**40, 14)]:
        key = K.noise_tick_key(seed, e, stream, s, k)
        np.testing.assert_array_equal(K.hash_uniforms(np.uint64(key), 50), ref.noise_uniforms(seed, e, stream, s, k, 50))
        key = K.coder_tick_key(seed, s, k)
        np.testing.assert_array_equal(K.hash_uniforms(np.uint64(key), 50), ref.coder_uniforms(seed, s, k, 50))
    u = ref.noise_uniforms(0, 0, 0, 0, 0, 20000)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def test_stability_scale_numpy_twin_matches_numba():
    """min(2^-S, 1) rounds alike in both: the kernels' pow(2, -S) compiles to exp2, and libm's
    pow and exp2 differ by one ulp for about 0.1 % of S (the reference once used pow)."""
    stability = np.concatenate([np.linspace(0.0, 30.0, 3001),
                                np.random.default_rng(0).uniform(0.0, 5.0, 20000)])
    kernel = np.array([K.stability_scale(s) for s in stability])
    twin = np.array([min(ref.two_to_the(-s), 1.0) for s in stability])
    np.testing.assert_array_equal(kernel, twin)


def test_accumulator_coder_counts():
    p = cn.ColanetConfig()
    sat = 2.0
    x = np.array([[sat, sat / 2, 0.0, -1.0, 3 * sat, sat / 10]], np.float32)
    spikes = cn.encode_inputs(p, x, [0], sat)
    assert spikes.shape == (1, 10, 6)
    np.testing.assert_array_equal(spikes[0].sum(0), [10, 5, 0, 0, 10, 1])
    np.testing.assert_array_equal(spikes[0, :, 1], [0, 1] * 5)  # acc 0.5, 1.0 -> spike, ...
    np.testing.assert_array_equal(ref.encode_sample(p, x[0], sat, 0, np.zeros(6)), spikes[0])


def test_bernoulli_coder_is_counter_based():
    p = cn.ColanetConfig(coder="bernoulli", seed=5)
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


# --- training and inference invariances ------------------------------------------------
def test_inference_is_independent_of_order_and_chunking():
    p = cn.ColanetConfig(m=4, e=3)
    x, y, _ = prototype_data(2, 40)
    x = coded(p, x)
    st = cn.init_state(p, 20, 3)
    cn.train_chunk(p, st, x, y, np.arange(40), 1.0)
    idx = np.arange(1000, 1040)
    before = st.copy()
    whole = cn.infer_chunk(p, st, x, idx, 1.0)
    assert_states_match(st, before)  # inference reads the state only
    perm = np.random.default_rng(0).permutation(40)
    np.testing.assert_array_equal(cn.infer_chunk(p, st, x[perm], idx[perm], 1.0), whole[perm])
    pieces = np.concatenate([cn.infer_chunk(p, st, x[i:i + 9], idx[i:i + 9], 1.0) for i in range(0, 40, 9)])
    np.testing.assert_array_equal(pieces, whole)


def test_training_chunking_invariance():
    p = cn.ColanetConfig(m=4, e=2, coder="bernoulli")
    x, y, _ = prototype_data(4, 40)
    x = coded(p, x)
    one = cn.init_state(p, 20, 3)
    four = one.copy()
    v_one, _ = cn.train_chunk(p, one, x, y, np.arange(40), 1.0)
    v_four = np.concatenate([cn.train_chunk(p, four, x[i:i + 10], y[i:i + 10], np.arange(i, i + 10), 1.0)[0]
                             for i in range(0, 40, 10)])
    np.testing.assert_array_equal(v_one, v_four)
    assert_states_match(one, four)


def test_same_results_with_one_and_two_threads():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has a single thread here")
    p = cn.ColanetConfig(m=4, e=5)
    x, y, _ = prototype_data(5, 30)
    x = coded(p, x)
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
    assert_states_match(results[0][2], results[1][2])


@pytest.mark.parametrize("share", [1.0, 0.7])
def test_copy_groups_learn_and_vote_as_the_whole_ensemble(share):
    """Copies trained as separate groups (as on different workers) give exactly the whole
    ensemble's votes and state: noise and bagging are keyed by the ensemble index, not the
    group's own; a group keyed from 0 instead would differ."""
    p = cn.ColanetConfig(m=4, e=5, copy_share=share, seed=2, views=1)  # views: below
    x, y, _ = prototype_data(6, 40)
    whole = cn.init_state(p, 20, 3)
    groups = cn.copy_groups(p.e, 2)
    assert groups == [range(0, 3), range(3, 5)]
    parts = [cn.copy_group(whole, g) for g in groups]
    votes = [cn.train_chunk(p, whole, x[:25], y[:25], np.arange(25), 1.0)[0]]
    votes.append(cn.train_chunk(p, whole, x[25:], y[25:], np.arange(25, 40), 1.0)[0])
    group_votes = [np.concatenate([cn.train_chunk(p, part, x[a:b], y[a:b], np.arange(a, b), 1.0,
                                                  copies=g)[0] for a, b in ((0, 25), (25, 40))])
                   for g, part in zip(groups, parts)]
    np.testing.assert_array_equal(np.concatenate(group_votes, axis=1), np.concatenate(votes))
    joined = cn.init_state(p, 20, 3)
    for g, part in zip(groups, parts):
        cn.put_copy_group(joined, part, g)
    assert_states_match(joined, whole)
    test_x, test_ids = x[:10] * 0.9, np.arange(100, 110)
    np.testing.assert_array_equal(
        np.concatenate([cn.infer_chunk(p, part, test_x, test_ids, 1.0, copies=g)
                        for g, part in zip(groups, parts)], axis=1),
        cn.infer_chunk(p, whole, test_x, test_ids, 1.0))
    # keyed by the group's own indices, the second group would learn something else
    own = cn.copy_group(cn.init_state(p, 20, 3), groups[1])
    cn.train_chunk(dataclasses.replace(p, e=2), own, x, y, np.arange(40), 1.0)
    assert not np.array_equal(own.r, parts[1].r)


def test_copy_groups_refuse_a_range_outside_the_ensemble():
    p = cn.ColanetConfig(m=2, e=3)
    st = cn.copy_group(cn.init_state(p, 4, 2), range(1, 3))
    x = np.ones((1, 4), np.float32)
    with pytest.raises(ValueError, match="copies"):
        cn.train_chunk(p, st, x, [0], [0], 1.0, copies=range(2, 4))
    with pytest.raises(ValueError, match="E=2.*want 3 copies"):
        cn.train_chunk(p, st, x, [0], [0], 1.0)  # a group is not the whole ensemble
    assert [len(g) for g in cn.copy_groups(13, 2)] == [7, 6]
    assert cn.copy_groups(2, 5) == [range(0, 1), range(1, 2)]


# --- mechanics: forcing, dopamine, stability, blocking --------------------------------
def _quiet_setup(**overrides):
    """8 inputs all spiking on every presentation tick (arrivals at local
    ticks 1..10), a gain too small for any input-driven spike: only the
    teacher makes L neurons spike (forcing one neuron unless overridden)."""
    p = cn.ColanetConfig(**{"m": 4, "e": 1, "gain": 1e-3, "forcing": "most_depolarised",
                            "views": 1, **overrides})
    x = np.ones((1, 8), np.float32)
    return p, x


@pytest.mark.parametrize("impl", [cn, ref])
@pytest.mark.parametrize("refresh", ["every_change", "anti_hebbian"])
def test_threshold_falls_at_forced_spikes_and_rises_at_unrewarded_ones(impl, refresh):
    """Threshold adaptation: each forced spike lowers its neuron's threshold by theta_fall; at
    dopamine_tick every neuron outside the label column that fired in the sample raises it by
    theta_rise, once however often it fired; theta_add includes the shift. Off (0, 0), nothing
    moves."""
    rise, fall = 0.25, 0.75
    # Only the teacher acts: the label column's four neurons are forced once, at force_tick.
    p, x = _quiet_setup(theta_refresh=refresh, forcing="all", theta_rise=rise, theta_fall=fall)
    st = cn.init_state(p, 8, 3)
    impl.train_chunk(p, st, x, [2], [0], 1.0)
    expected = np.zeros((1, 12))
    expected[0, 8:12] = -fall
    np.testing.assert_array_equal(st.theta_shift, expected)
    if refresh == "every_change":  # the weight part plus the shift, as a resume rebuilds it
        np.testing.assert_array_equal(
            st.theta_add[0], K.theta_of_weights(st.w[0], p.k_thr, p.resolved_gain(8))
            + st.theta_shift[0])
    # Noise alone crosses a tiny threshold: every neuron fires from tick 0 on, several times;
    # the label column answered, so the GATE stays silent and nothing is forced.
    loud = cn.ColanetConfig(m=4, e=1, gain=1e-3, theta0=1e-3, s_stim=1.0, theta_rise=rise,
                            theta_fall=fall, theta_refresh=refresh)
    st = cn.init_state(loud, 8, 3)
    votes, _ = impl.train_chunk(loud, st, x, [1], [0], 1.0)
    assert np.all(votes[0, 0] > 1)  # each column voted more than once
    np.testing.assert_array_equal(st.theta_shift[0], np.where(np.arange(12) // 4 == 1, 0.0, rise))
    off = dataclasses.replace(loud, theta_rise=0.0, theta_fall=0.0)
    st = cn.init_state(off, 8, 3)
    impl.train_chunk(off, st, x, [1], [0], 1.0)
    assert not st.theta_shift.any()


def test_threshold_adaptation_is_validated_and_earlier_records_read_without_it():
    """theta_rise and theta_fall are >= 0; a record (config.json, checkpoint, model file) from
    before them ran without adaptation, which is what it reads back as."""
    for name in ("theta_rise", "theta_fall"):
        with pytest.raises(ValueError, match=f"{name}=-0.1: must be >= 0"):
            cn.ColanetConfig(**{name: -0.1})
    shipped = cn.ColanetConfig()
    assert shipped.theta_rise == shipped.theta_fall == 0.5
    old = {k: v for k, v in shipped.to_dict().items() if k not in ("theta_rise", "theta_fall")}
    earlier = cn.ColanetConfig.from_recorded(old)
    assert earlier.theta_rise == earlier.theta_fall == 0.0
    assert cn.ColanetConfig.from_recorded(shipped.to_dict()) == shipped


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
    p = cn.ColanetConfig(m=4, e=1, gain=2.0)
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
def test_a_copy_sitting_a_sample_out_neither_learns_nor_votes(impl):
    """copy_share < 1 (bagging): each copy sits out its own seeded draw of the training samples,
    about the share asked; a sample sat out leaves that copy's whole state as it was."""
    p, x = _quiet_setup(forcing="all", e=4, copy_share=0.5, seed=1)
    out = np.array([[ref.sitting_out(p.seed, p.e, i, p.copy_share)[e] for e in range(p.e)]
                    for i in range(400)])
    assert 0.4 < out.mean() < 0.6 and len({tuple(c) for c in out.T}) == p.e  # copies differ
    sample = int(np.flatnonzero(out[:, 1] & ~out[:, 0])[0])  # copy 0 learns it, copy 1 does not
    st = cn.init_state(p, 8, 3)
    before = st.copy()
    votes, st, rec = impl.train_chunk(p, st, x, [1], [sample], 1.0, record=True)
    assert rec[0, :, 1, :].sum() == 0 and votes[0, 1].sum() == 0
    for name in cn.STATE_ARRAYS:
        if cn.AXES[cn.STATE_ARRAYS[name].axes][0] == "E":
            np.testing.assert_array_equal(getattr(st, name)[1], getattr(before, name)[1], name)
    assert rec[0, :, 0, :].sum() > 0 and not np.array_equal(st.r[0], before.r[0])
    # copy_share 1: nobody ever sits out
    assert not ref.sitting_out(0, 4, 7, 1.0).any()


@pytest.mark.parametrize("impl", [cn, ref])
def test_a_copy_learns_and_votes_only_from_the_inputs_it_sees(impl):
    """input_share < 1 (random subspaces): copy e sees its own seeded share of the inputs (the
    kernels' words and the reference's masks agree); it learns and votes exactly as it would
    with the other inputs silent, and the copies differ."""
    p = cn.ColanetConfig(m=4, e=3, input_share=0.5, seed=3, views=1)
    x, y, _ = prototype_data(8, 30)
    seen = ref.seen_inputs(p.seed, p.e, 20, p.input_share)
    hp = cn.kernel_params(p, 20)
    words = np.empty(20, np.uint64)
    for e in range(p.e):
        assert K.seen_words(hp, e, words)  # some input unseen
        np.testing.assert_array_equal(words != 0, seen[e])
    assert 0.2 < seen.mean() < 0.8 and len({tuple(s) for s in seen}) == p.e
    subspaces = cn.init_state(p, 20, 3)
    v_sub, _ = impl.train_chunk(p, subspaces, x, y, np.arange(30), 1.0)
    everything = dataclasses.replace(p, input_share=1.0)
    for e in range(p.e):  # the same copy, all inputs seen, the unseen ones silent
        silent = cn.init_state(everything, 20, 3)
        v, _ = impl.train_chunk(everything, silent, x * seen[e], y, np.arange(30), 1.0)
        np.testing.assert_array_equal(v_sub[:, e], v[:, e])
        for name in ("r", "theta_add", "stability", "free_pool", "t_spike"):
            np.testing.assert_array_equal(getattr(subspaces, name)[e], getattr(silent, name)[e],
                                          name)
        np.testing.assert_array_equal(
            impl.infer_chunk(p, subspaces, x, np.arange(30, 60), 1.0)[:, e],
            impl.infer_chunk(everything, silent, x * seen[e], np.arange(30, 60), 1.0)[:, e])
    assert not K.seen_words(cn.kernel_params(everything, 20), 0, words) and (words != 0).all()


def test_views_need_the_whitened_coding():
    with pytest.raises(ValueError, match="views.*coding='whitened'"):
        cn.ColanetConfig(views=2, coding="centred")
    assert cn.ColanetConfig(views=13).n_coded(20) == 260
    assert cn.ColanetConfig(views=3, coding="whitened").n_inputs(20) == 20


def test_each_copy_sees_the_view_of_its_group():
    """The kernels' view of each copy (:func:`K.view_start`) is its group's in copy_groups, and
    the reference's slices agree; a group of copies (``first_copy``) keeps its ensemble view."""
    for e in (1, 2, 5, 13):
        for views in range(1, e + 1):
            p = cn.ColanetConfig(e=e, views=views)
            starts = [K.view_start(cn.kernel_params(p, 7), copy, 7) for copy in range(e)]
            expected = [v * 7 for v, group in enumerate(cn.copy_groups(e, views)) for _ in group]
            assert starts == expected
            assert [s.start for s in ref.view_slices(p, e, 7)] == expected
    p = cn.ColanetConfig(e=5, views=3)
    assert K.view_start(cn.kernel_params(p, 7, first_copy=3), 1, 7) == 14  # copy 4: view 2


@pytest.mark.parametrize("impl", [cn, ref])
def test_a_copy_learns_and_votes_only_from_its_view(impl):
    """views 3, five copies (groups 0..1, 2..3, 4): the coded inputs are three blocks of 20, and
    each copy learns and votes exactly as the same copy of a one-view ensemble given its
    group's block alone; a group of copies trained on its own does the same."""
    p = cn.ColanetConfig(m=4, e=5, views=3, seed=3)
    x, y, _ = prototype_data(8, 30)
    rng = np.random.default_rng(0)
    coded = np.concatenate([x, x[:, rng.permutation(20)], 1.0 - x], axis=1).astype(np.float32)
    viewed = cn.init_state(p, 20, 3)
    assert viewed.acc.shape == viewed.arrival_bits.shape == (60,) and viewed.r.shape[1] == 20
    v_all, _ = impl.train_chunk(p, viewed, coded, y, np.arange(30), 1.0)
    i_all = impl.infer_chunk(p, viewed, coded, np.arange(30, 60), 1.0)
    one = dataclasses.replace(p, views=1)
    for view, group in enumerate(cn.copy_groups(5, 3)):
        alone = cn.init_state(one, 20, 3)
        block = coded[:, view * 20:(view + 1) * 20]
        v, _ = impl.train_chunk(one, alone, block, y, np.arange(30), 1.0)
        for e in group:
            np.testing.assert_array_equal(v_all[:, e], v[:, e])
            for name in ("r", "theta_add", "stability", "free_pool", "t_spike", "theta_shift"):
                np.testing.assert_array_equal(getattr(viewed, name)[e], getattr(alone, name)[e],
                                              name)
            np.testing.assert_array_equal(
                i_all[:, e], impl.infer_chunk(one, alone, block, np.arange(30, 60), 1.0)[:, e])
    assert len({v_all[:, e].tobytes() for e in range(5)}) == 5  # the copies differ
    if impl is cn:  # copies 2..4 (views 1 and 2) trained as a group of their own
        group = cn.copy_group(cn.init_state(p, 20, 3), range(2, 5))
        v_group, _ = cn.train_chunk(p, group, coded, y, np.arange(30), 1.0, copies=range(2, 5))
        np.testing.assert_array_equal(v_group, v_all[:, 2:5])
        np.testing.assert_array_equal(group.r, viewed.r[2:5])
    with pytest.raises(ValueError, match=r"x must be \(B, 60\)"):
        impl.train_chunk(p, viewed, x, y, np.arange(30), 1.0)


@pytest.mark.parametrize("impl", [cn, ref])
def test_column_blocking(impl):
    """Neurons A (w 1.7) and B (w 1.45) of column 0 both cross threshold at
    tick 1; A, more depolarised, fires and blocks the column: B's input is
    gated and it never fires.  Without blocking B fires too."""
    fired = {}
    for blocking in ("column", "none"):
        p = cn.ColanetConfig(m=2, e=1, gain=1.5, blocking=blocking)
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


# --- mechanics: the readings of the spec (docs/accuracy.md), default against the spec's ------
def _two_neuron_column(impl, w_a, w_b, x, **overrides):
    """Inference of one column of two neurons, A (all 4 weights ``w_a``) and B (``w_b``), with
    no noise and g = 1.5, on the features ``x`` (sat 1): the local ticks at which each fires."""
    p = cn.ColanetConfig(**{"m": 2, "e": 1, "gain": 1.5, "s_stim": 0.0, **overrides})
    st = cn.init_state(p, 4, 1)
    st.r[0, :, 0] = cn.resource_of(w_a, p)
    st.r[0, :, 1] = cn.resource_of(w_b, p)
    cn.sync_derived(p, st)
    votes, rec = impl.infer_chunk(p, st, np.full((1, 4), x, np.float32), [0], 1.0, record=True)
    ticks = [list(np.flatnonzero(rec[0, :, 0, n])) for n in (0, 1)]
    assert votes[0, 0, 0] == len(ticks[0]) + len(ticks[1])  # every unforced spike is a vote
    return ticks


@pytest.mark.parametrize("impl", [cn, ref])
def test_firing_most_depolarised_or_all_above_threshold(impl):
    """Inputs arrive on ticks 1..10; A's current is 1.5*4*1.7 = 10.2, B's 1.5*4*1.45 = 8.7,
    both above theta0 + theta_add (about 8.55). "column_argmax": one spike per tick, A at tick 1
    (more depolarised), then B (u 0.8*8.7 + 8.7 = 15.66 > A's 10.2) and so on, alternating.
    "all_above_threshold" (spec): both fire on every arrival tick; with column blocking both
    fire at tick 1, A (the most depolarised) sets the block and B's input is gated after it."""
    argmax = _two_neuron_column(impl, 1.7, 1.45, 1.0, blocking="none")
    assert argmax == [[1, 3, 5, 7, 9], [2, 4, 6, 8, 10]]
    every = _two_neuron_column(impl, 1.7, 1.45, 1.0, blocking="none", firing="all_above_threshold")
    assert every == [list(range(1, 11)), list(range(1, 11))]
    blocked = _two_neuron_column(impl, 1.7, 1.45, 1.0, blocking="column",
                                 firing="all_above_threshold")
    assert blocked == [list(range(1, 11)), [1]]
    assert _two_neuron_column(impl, 1.7, 1.45, 1.0, blocking="column") == [list(range(1, 11)), []]


@pytest.mark.parametrize("impl", [cn, ref])
def test_block_spans_block_ticks_minus_one_or_block_ticks(impl):
    """Features at sat/2 arrive on ticks 2, 4, 6, 8, 10; A's current is 1.5*4*1.6 = 9.6 (fires
    alone), B's 1.5*4*1.2 = 7.2 (fires only on two inputs: 0.64*7.2 + 7.2 = 11.8); block_ticks 2.
    "block_ticks-1": A fires at 2 and blocks until 4, exclusive, gating tick 3 only: B takes its
    second input at tick 4 and fires (more depolarised than A), and so on. "block_ticks" (spec):
    A's block reaches tick 4, B's input stays gated, and A fires on every arrival."""
    today = _two_neuron_column(impl, 1.6, 1.2, 0.5, blocking="column", block_ticks=2)
    assert today == [[2, 6, 10], [4, 8]]
    spec = _two_neuron_column(impl, 1.6, 1.2, 0.5, blocking="column", block_ticks=2,
                              block_span="block_ticks")
    assert spec == [[2, 4, 6, 8, 10], []]


@pytest.mark.parametrize("impl", [cn, ref])
def test_theta_add_refreshed_after_every_change_or_at_anti_hebbian_steps(impl):
    """The strong neuron of test_timely_unforced_answer_consolidates: an anti-Hebbian step at
    tick 1 (later spikes of the burst depress nothing new), dopamine at 14. "every_change":
    theta_add follows the final weights; "anti_hebbian" (spec): it is recomputed at each of the
    10 unforced spikes and still holds the weights after the anti-Hebbian step."""
    theta = {}
    for refresh in ("every_change", "anti_hebbian"):
        p = cn.ColanetConfig(m=4, e=1, gain=2.0, theta_refresh=refresh)
        st = cn.init_state(p, 8, 3)
        st.r[0, :, 8] = cn.resource_of(1.0, p)
        cn.sync_derived(p, st)
        after_ah = (st.r[0, :, 8].astype(np.float64) + p.d_h).astype(np.float32)
        after_dopamine = (after_ah.astype(np.float64) + p.dopamine).astype(np.float32)
        votes, st = impl.train_chunk(p, st, np.ones((1, 8), np.float32), [2], [0], 1.0)
        assert votes[0, 0, 2] == 10
        np.testing.assert_array_equal(st.r[0, :, 8], after_dopamine)
        theta[refresh] = st.theta_add[0, 8]
        positive = {w: np.maximum(cn.weight_of(r, p).astype(np.float64), 0.0).sum()
                    for w, r in (("ah", after_ah), ("dopamine", after_dopamine))}
    assert theta["every_change"] == pytest.approx(p.k_thr * 2.0 * positive["dopamine"], rel=1e-12)
    assert theta["anti_hebbian"] == pytest.approx(p.k_thr * 2.0 * positive["ah"], rel=1e-12)
    assert theta["anti_hebbian"] < theta["every_change"]


@pytest.mark.parametrize("impl", [cn, ref])
def test_theta_add_not_refreshed_by_dopamine_nor_conservation(impl):
    """Only the teacher acts (gain too small for unforced spikes): dopamine at 14 potentiates
    the forced neurons; at the next sample's start, out of their burst, conservation spreads
    their pool back. "every_change" refreshes theta_add each time; "anti_hebbian" (spec) keeps
    the initial one, as no unforced spike occurs (no threshold adaptation: it would move
    theta_add at the forced spikes)."""
    for refresh in ("every_change", "anti_hebbian"):
        p, x = _quiet_setup(theta_refresh=refresh, forcing="all", theta_rise=0.0, theta_fall=0.0)
        st = cn.init_state(p, 8, 3)
        theta0 = st.theta_add.copy()
        impl.train_chunk(p, st, x, [2], [0], 1.0)
        moved = st.r[0, 0, 8:12] != cn.init_state(p, 8, 3).r[0, 0, 8:12]
        assert moved.all() and np.all(st.free_pool[0, 8:12] < -1.0)  # dopamine, pool to spread
        after_dopamine = st.theta_add.copy()
        impl.train_chunk(p, st, x, [0], [1], 1.0)
        assert np.all(st.free_pool[0, 8:12] == 0.0)  # conserved at the second sample
        rebuilt = K.theta_of_weights(st.w[0], p.k_thr, p.resolved_gain(8))
        if refresh == "every_change":
            assert np.all(after_dopamine[0, 8:12] > theta0[0, 8:12])
            np.testing.assert_array_equal(st.theta_add[0], rebuilt)
        else:
            np.testing.assert_array_equal(after_dopamine, theta0)
            np.testing.assert_array_equal(st.theta_add, theta0)
            assert np.all(rebuilt[8:12] != theta0[0, 8:12])


@pytest.mark.parametrize("impl", [cn, ref])
def test_gate_silenced_by_a_recent_answer_or_any_answer_of_the_sample(impl):
    """One presentation tick (inputs arrive at tick 1 only): the strong neuron 2 of the label's
    column 1 answers at tick 1 and never again. At label_tick 11, gate_scope "window" with
    gate_ticks None (= block_ticks 10) lets GATE 1 fire (1 > 11 - 10 is false): both neurons
    of column 1 are forced at 13 (forcing "all"); gate_ticks 11 silences it (1 > 0); gate_scope
    "sample" (spec) silences it whatever gate_ticks says: column 1 answered in this sample."""
    def spikes(**overrides):
        p = cn.ColanetConfig(**{"m": 2, "e": 1, "gain": 2.0, "s_stim": 0.0, "present_ticks": 1,
                                "silent_ticks": 14, **overrides})
        st = cn.init_state(p, 8, 2)
        st.r[0, :, 2] = cn.resource_of(1.0, p)
        cn.sync_derived(p, st)
        votes, _, rec = impl.train_chunk(p, st, np.ones((1, 8), np.float32), [1], [0], 1.0,
                                         record=True)
        assert votes[0, 0].tolist() == [0, 1]
        return np.argwhere(rec[0, :, 0, :]).tolist()

    assert spikes() == [[1, 2], [13, 2], [13, 3]]  # GATE fires: forcing "all" of column 1
    assert spikes(gate_ticks=10) == [[1, 2], [13, 2], [13, 3]]
    assert spikes(gate_ticks=11) == [[1, 2]]
    assert spikes(gate_scope="sample") == [[1, 2]]
    assert spikes(gate_scope="sample", gate_ticks=1) == [[1, 2]]
    assert spikes(block_ticks=11) == [[1, 2]]  # gate_ticks None follows block_ticks


@pytest.mark.parametrize("impl", [cn, ref])
def test_contribution_window_spans_t_syn_plus_one_or_t_syn_ticks(impl):
    """Features at sat/2 last arrive at tick 10; the teacher forces column 2 at tick 13 and
    dopamine (tick 14) rewards the inputs that arrived within the window before the spike.
    With t_syn 3, "t_syn+1" is [10, 13]: every input contributed and is potentiated; "t_syn"
    (spec) is [11, 13]: none did, nothing changes."""
    for window, contributed in (("t_syn+1", True), ("t_syn", False)):
        p, _ = _quiet_setup(forcing="all", t_syn=3, syn_window=window)
        st = cn.init_state(p, 8, 3)
        r0 = st.r.copy()
        _, st, rec = impl.train_chunk(p, st, np.full((1, 8), 0.5, np.float32), [2], [0], 1.0,
                                      record=True)
        np.testing.assert_array_equal(np.argwhere(rec[0, :, 0, :]), [[13, n] for n in range(8, 12)])
        if contributed:
            expect = (r0[0, :, 8:12].astype(np.float64) + p.dopamine).astype(np.float32)
            np.testing.assert_array_equal(st.r[0, :, 8:12], expect)
        else:
            np.testing.assert_array_equal(st.r, r0)
        np.testing.assert_array_equal(st.r[0, :, :8], r0[0, :, :8])


def test_readout():
    votes = np.array([
        [[0, 2, 1], [0, 1, 0]],  # class 1
        [[1, 0, 1], [0, 0, 0]],  # tie 0/2 -> lowest
        [[0, 0, 0], [0, 0, 0]],  # no answer
    ], np.int32)
    pred, answered = cn.readout(votes)
    np.testing.assert_array_equal(pred, [1, 0, -1])
    np.testing.assert_array_equal(answered, [True, True, False])


def test_ranked_classes_order_votes_and_never_rank_a_class_without_one():
    votes = np.array([
        [[0, 2, 1, 0], [0, 1, 0, 0]],  # 1 (3 votes), 2 (1); 0 and 3 have none
        [[1, 0, 1, 0], [0, 0, 0, 1]],  # three tied at 1 vote: lowest class first
        [[0, 0, 0, 0], [0, 0, 0, 0]],  # no vote: nothing ranked
    ], np.int32)
    ranked = cn.ranked_classes(votes, 6)  # more places than classes: padded with -1
    np.testing.assert_array_equal(ranked, [[1, 2, -1, -1, -1, -1],
                                           [0, 2, 3, -1, -1, -1],
                                           [-1, -1, -1, -1, -1, -1]])
    np.testing.assert_array_equal(cn.ranked_classes(votes, 1)[:, 0], cn.readout(votes)[0])


# --- learning ---------------------------------------------------------------------------
def test_separable_toy_problem_is_learned():
    """4 well-separated positive prototypes in 64-d plus noise, one online
    pass, default dynamics (burst_scope "sample").  With burst_scope
    "continuous" and 5 silent ticks a neuron that fires late in one sample and
    early in the next never leaves its burst (isi_max = 10), so its
    anti-Hebbian step and conservation stall and this toy is learned only to
    40-80 %: the reason for the default."""
    p = cn.ColanetConfig(m=5, e=3)
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
    cn.train_chunk(p, st, coded(p, x_tr), y_tr, np.arange(400), sat)
    pred, answered = cn.readout(cn.infer_chunk(p, st, coded(p, x_te), np.arange(10_000, 10_200),
                                               sat))
    assert answered.mean() >= 0.95
    assert (pred == y_te).mean() >= 0.95


def test_positive_weight_sum_is_the_lane_order_in_kernels_and_reference():
    """The threshold's sum adds in 8 fixed lanes (lane l: the w_j with j % 8 == l, ascending;
    combined pairwise), in the kernels and the reference alike; rounding shows the order: with
    one huge weight in lane 0, a sequential sum loses every later 1.0, the lanes keep them."""
    rng = np.random.default_rng(4)
    for size in [*range(0, 41), 1536, 1283]:
        w = (rng.standard_normal(size) * np.exp(rng.uniform(-20, 20, size))).astype(np.float32)
        assert K.positive_weight_sum(w) == ref.positive_weight_sum(w), size
    w = np.ones(8 * 101, np.float32)
    w[0] = 2.0 ** 60  # ulp 256: a lone 1.0 added to it rounds away
    sequential = 0.0
    for v in w.astype(np.float64):
        sequential += v
    assert sequential == 2.0 ** 60
    lanes = 2.0 ** 60 + 768.0  # s1..s7 = 101 each: s0 + s1 rounds to 2^60, + 202 -> +256, + 404 -> +768
    assert K.positive_weight_sum(w) == ref.positive_weight_sum(w) == lanes
    cols = rng.standard_normal((13, 5)).astype(np.float32)
    np.testing.assert_array_equal(K.theta_of_weights(cols, 0.5, 3.0),
                                  [0.5 * (3.0 * ref.positive_weight_sum(cols[:, n])) for n in range(5)])


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (8, 5), (21, 16), (64, 40)])
def test_neuron_major_copies_round_trip(shape):
    """The kernels' neuron-major copies (strips of 8 inputs, and a tail) are exact transposes."""
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    a_t = np.empty(shape[::-1], np.float32)
    K.to_neuron_major(a, a_t)
    np.testing.assert_array_equal(a_t, a.T)
    back = np.empty_like(a)
    K.to_input_major(a_t, back)
    np.testing.assert_array_equal(back, a)
