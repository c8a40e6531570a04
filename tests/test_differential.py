"""Differential tests: the Numba kernels against the NumPy reference, compared exactly.

The model's named choices fall in two groups: the original ones (coder x carry_accumulator x forcing
x blocking x burst_scope) and the readings of the spec (firing x theta_refresh x gate_scope x
syn_window x block_span, plus the int gate_ticks). Every combination of one group is enumerated
while Hypothesis draws the other group's values (the full product, 1024 combinations, would take
too long), together with timing parameters, plasticity rates, sizes and data, on tiny networks;
plus explicit cases (the shipped defaults, the spec's settings and readings) that must exercise
every mechanism. Spikes, votes and every state array must be equal bit for bit: the kernels
reorganise the computation (buffered currents, split arrival history) but keep every float
operation and its order.

Deterministic: ``derandomize=True`` and no example database, so every run draws the same examples.
"""

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import colanet as cn
from pipeline import colanet_reference as ref
from tests.conftest import SPEC, SPEC_READINGS, exercised, nonnegative_data
from tests.conftest import assert_same_run as same_run

#: The original named choices, and the readings of the spec (ColanetConfig's docstring).
CHOICE_VALUES = {"coder": ("accumulator", "bernoulli"), "carry_accumulator": (False, True),
                 "forcing": ("most_depolarised", "all"), "blocking": ("column", "none"),
                 "burst_scope": ("sample", "continuous")}
READING_VALUES = {"firing": ("column_argmax", "all_above_threshold"),
                  "theta_refresh": ("every_change", "anti_hebbian"),
                  "gate_scope": ("window", "sample"), "syn_window": ("t_syn+1", "t_syn"),
                  "block_span": ("block_ticks-1", "block_ticks")}


def grid(values: dict) -> list[dict]:
    """Every combination of ``values`` (name -> its choices), as keyword dicts."""
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


def grid_id(choices: dict) -> str:
    return "-".join(str(v) for v in choices.values())


CHOICES = grid(CHOICE_VALUES)
READINGS = grid(READING_VALUES)


def assert_same_run(params, n_classes, x, y, chunks, x_test, sat, weight_spread=0.0, seed=0):
    """:func:`tests.conftest.assert_same_run` with the NumPy reference as the twin."""
    return same_run(params, n_classes, x, y, chunks, x_test, sat, twin_train=ref.train_chunk,
                    twin_infer=ref.infer_chunk, weight_spread=weight_spread, seed=seed)


@st.composite
def timings(draw):
    """Valid tick layouts: a period under the 64-tick history, arrivals inside it, the teacher's
    ticks inside it with force_tick >= label_tick; windows (t_syn) that may reach past the
    history."""
    present = draw(st.integers(1, 10))
    silent = draw(st.integers(0, 8))
    period = present + silent
    label_tick = draw(st.integers(0, period - 1))
    return dict(
        present_ticks=present, silent_ticks=silent,
        input_delay=draw(st.integers(0, silent)),
        label_tick=label_tick, force_tick=draw(st.integers(label_tick, period - 1)),
        dopamine_tick=draw(st.integers(0, period - 1)),
        block_ticks=draw(st.integers(0, 12)),
        t_syn=draw(st.integers(0, 70)), isi_max=draw(st.integers(1, 20)),
        t_dop=draw(st.integers(0, 20)), n_silent=draw(st.integers(0, 12)),
        f_thr=draw(st.floats(0.05, 3.0)),
    )


@st.composite
def rates(draw):
    """Threshold, gain, noise and plasticity rates in ranges where neurons fire and learn."""
    return dict(theta0=draw(st.floats(1.0, 9.0)), gain=draw(st.floats(0.5, 12.0)),
                s_stim=draw(st.floats(0.0, 2.0)),
                d_h=draw(st.floats(-0.8, 0.0)), dopamine=draw(st.floats(0.0, 1.0)),
                r_s=draw(st.floats(0.0, 0.5)), k_thr=draw(st.floats(0.0, 0.01)),
                theta_rise=draw(st.floats(0.0, 1.0)), theta_fall=draw(st.floats(0.0, 1.0)),
                seed=draw(st.integers(0, 2**40)))


@st.composite
def networks(draw):
    """Tiny networks (D <= 12, C <= 3, M <= 3, E <= 2) and a handful of samples in 1-3 chunks."""
    n_train = draw(st.integers(2, 6))
    cuts = sorted(draw(st.sets(st.integers(1, n_train - 1), max_size=2)))
    bounds = [0, *cuts, n_train]
    return dict(n_inputs=draw(st.integers(1, 12)), n_classes=draw(st.integers(1, 3)),
                m=draw(st.integers(1, 3)), e=draw(st.integers(1, 2)), n_train=n_train,
                chunks=list(zip(bounds[:-1], bounds[1:])), data_seed=draw(st.integers(0, 10_000)),
                sat_scale=draw(st.floats(0.3, 1.5)), sat_per_feature=draw(st.booleans()),
                weight_spread=draw(st.sampled_from([0.0, 0.3, 1.0, 1.6])))


def drawn(values: dict):
    """One value of each of ``values``' choices, drawn by Hypothesis."""
    return st.fixed_dictionaries({name: st.sampled_from(v) for name, v in values.items()})


#: gate_ticks: None (block_ticks) or a window of its own, around the default label tick.
GATE_TICKS = st.one_of(st.none(), st.integers(0, 16))

SETTINGS = settings(max_examples=6, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("choices", CHOICES, ids=grid_id)
@SETTINGS
@given(readings=drawn(READING_VALUES), gate_ticks=GATE_TICKS, timing=timings(), rate=rates(),
       net=networks())
def test_kernels_equal_reference_over_every_choice(choices, readings, gate_ticks, timing, rate,
                                                   net):
    """Every combination of the original choices, with the readings drawn."""
    compare_on_drawn_case({**choices, **readings, "gate_ticks": gate_ticks}, timing, rate, net)


@pytest.mark.parametrize("readings", READINGS, ids=grid_id)
@SETTINGS
@given(choices=drawn(CHOICE_VALUES), gate_ticks=GATE_TICKS, timing=timings(), rate=rates(),
       net=networks())
def test_kernels_equal_reference_over_every_reading(readings, choices, gate_ticks, timing, rate,
                                                    net):
    """Every combination of the readings of the spec, with the original choices drawn."""
    compare_on_drawn_case({**choices, **readings, "gate_ticks": gate_ticks}, timing, rate, net)


def compare_on_drawn_case(choices, timing, rate, net):
    params = cn.ColanetConfig(m=net["m"], e=net["e"], **choices, **timing, **rate)
    # the coder's inputs: n_views blocks (the shipped default: one view per copy)
    x, y = nonnegative_data(net["data_seed"], net["n_train"] + 3, net["n_classes"],
                            net["n_inputs"] * params.n_views)
    if net["sat_per_feature"]:  # one level per feature, inf where a feature is never positive
        peak = x.max(axis=0)
        sat = np.where(peak > 0, net["sat_scale"] * peak, np.inf)
    else:
        sat = net["sat_scale"] * float(x.max()) if x.max() > 0 else 1.0
    assert_same_run(params, net["n_classes"], x[:-3], y[:-3], net["chunks"], x[-3:], sat,
                    net["weight_spread"], net["data_seed"])


@pytest.mark.parametrize("name,choices", [
    ("spec settings", SPEC),
    ("spec settings, bursts end with the sample", {**SPEC, "burst_scope": "sample"}),
    ("shipped defaults", {}),
    ("shipped defaults, bernoulli coder", {"coder": "bernoulli", "seed": 3}),
    ("spec settings and readings", {**SPEC, **SPEC_READINGS}),
    ("shipped defaults, spec readings", SPEC_READINGS),
    ("shipped defaults, bagging", {"copy_share": 0.6, "seed": 5}),
    ("shipped defaults, random subspaces", {"input_share": 0.5, "seed": 4}),
    ("spec settings, random subspaces and bagging", {**SPEC, "input_share": 0.6,
                                                    "copy_share": 0.7, "seed": 1}),
    ("shipped defaults, two views", {"views": 2, "seed": 2}),
])
def test_plasticity_on_matches_reference(name, choices):
    """Explicit cases with plasticity fully on (teacher, dopamine, stability, conservation), run
    long enough to use all of it; the kernels must equal the reference exactly."""
    params = cn.ColanetConfig(m=3, e=2, **choices)
    n_inputs, n_silent = 12, 3
    x, y = nonnegative_data(0, 30, 3, n_inputs)
    x[:, -n_silent:] = 0.0  # inputs that never spike: only conservation moves their synapses
    sat = float(np.percentile(x[x > 0], 99))
    votes, spikes, state = assert_same_run(params, 3, x[:24], y[:24], [(0, 7), (7, 20), (20, 24)],
                                           x[24:], sat)
    exercised(params, state, votes, spikes, n_silent)


def test_plasticity_on_matches_reference_with_several_sum_lanes_blocks():
    """The shipped defaults on 29 inputs (three full blocks of the threshold sum's 8 lanes and a
    tail of 5; the other cases have at most one block): still exactly the reference."""
    params = cn.ColanetConfig(m=3, e=2)
    n_inputs, n_silent = 29, 4
    x, y = nonnegative_data(1, 22, 3, n_inputs * params.n_views)  # each view 29 inputs
    x[:, -n_silent:] = 0.0
    sat = float(np.percentile(x[x > 0], 99))
    votes, spikes, state = assert_same_run(params, 3, x[:18], y[:18], [(0, 5), (5, 18)], x[18:],
                                           sat)
    exercised(params, state, votes, spikes, n_silent)
