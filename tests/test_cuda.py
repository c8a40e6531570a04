"""The CUDA kernels (``--snn-device cuda``) against the CPU kernels, compared exactly.

Runs on every machine: without a GPU under Numba's CUDA simulator (tests/conftest.py sets
``NUMBA_ENABLE_CUDASIM=1`` unless it is already set), on a GPU with ``NUMBA_ENABLE_CUDASIM=0``
(README, "GPU"). The reference is the CPU kernel itself, not stored numbers, so a change to the
model's steps that reaches one device and not the other shows here. Networks are tiny (the
simulator runs every GPU thread as a Python thread): D 12, C 3, M 2, E 2, a few samples, with the
columns cut into several blocks and fewer threads than neurons, so the kernels' column groups and
strided loops are exercised too.
"""

import functools
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline import colanet as cn
from tests.conftest import (SPEC, SPEC_READINGS, assert_refused, assert_same_run, exercised,
                            nonnegative_data, separable_store)

colanet_cuda = pytest.importorskip("pipeline.colanet_cuda")

N_INPUTS, N_SILENT, N_CLASSES = 12, 3, 3


@pytest.fixture(autouse=True)
def few_threads(monkeypatch):
    """At most 4 threads per block: the 3 columns of 2 neurons are cut into a group of 2 columns
    and one of 1, each its own block (a test may ask for fewer)."""
    monkeypatch.setattr(colanet_cuda, "MAX_THREADS", 4)


def data(n):
    x, y = nonnegative_data(0, n, N_CLASSES, N_INPUTS)
    x[:, -N_SILENT:] = 0.0  # inputs that never spike: only conservation moves their synapses
    return x, y, float(np.percentile(x[x > 0], 99))


def assert_same_on_both_devices(params, x, y, chunks, x_test, sat):
    """:func:`tests.conftest.assert_same_run` with the kernels on the GPU as the twin."""
    return assert_same_run(params, N_CLASSES, x, y, chunks, x_test, sat,
                           twin_train=functools.partial(cn.train_chunk, device="cuda"),
                           twin_infer=functools.partial(cn.infer_chunk, device="cuda"))


def test_plasticity_on_matches_cpu_kernels():
    """The spec's settings and readings (column blocks, every neuron above threshold fires, the
    most depolarised is forced, theta at the anti-Hebbian step only, continuous bursts), long
    enough to use every mechanism; chunks of several samples and of one."""
    params = cn.ColanetConfig(m=2, e=2, **SPEC, **SPEC_READINGS)
    x, y, sat = data(16)
    votes, spikes, state = assert_same_on_both_devices(params, x[:14], y[:14],
                                                       [(0, 9), (9, 10), (10, 14)], x[14:], sat)
    exercised(params, state, votes, spikes, N_SILENT)


@pytest.mark.parametrize("name,choices", [
    ("shipped defaults", {}),
    ("bernoulli coder, spec readings", {"coder": "bernoulli", "seed": 3, **SPEC_READINGS}),
    ("carried accumulator, spec settings", {**SPEC, "carry_accumulator": True,
                                            "burst_scope": "sample"}),
    ("bagging, spec readings", {"copy_share": 0.6, **SPEC_READINGS}),
    ("random subspaces, spec settings", {"input_share": 0.5, "seed": 4, **SPEC}),
    ("random subspaces", {"input_share": 0.6, "seed": 2}),
    ("two views, random subspaces", {"views": 2, "input_share": 0.8, "seed": 1}),
])
def test_other_choices_match_cpu_kernels(name, choices, monkeypatch):
    """The other values of every named choice (gate window, every_change thresholds, forcing
    all, no blocks, bursts ending with the sample, the Bernoulli coder, a carried accumulator);
    one thread per block, so each block is one column and every loop over its neurons strides."""
    monkeypatch.setattr(colanet_cuda, "MAX_THREADS", 1)
    params = cn.ColanetConfig(m=2, e=2, **choices)
    x, y, sat = data(6)
    votes, spikes, _ = assert_same_on_both_devices(params, x[:4], y[:4], [(0, 3), (3, 4)], x[4:],
                                                   sat)
    assert spikes.sum() > 0


def test_bagging_matches_cpu_kernels():
    """copy_share 0.6: a copy sits out its own draw of the training samples (the whole sample,
    every block of the copy alike) and keeps its state for the next; the CPU's votes, spikes and
    state, with some (copy, sample) pairs sitting out and the others learning."""
    params = cn.ColanetConfig(m=2, e=2, copy_share=0.6, seed=5, **SPEC, **SPEC_READINGS)
    x, y, sat = data(10)
    votes, spikes, _ = assert_same_on_both_devices(params, x[:8], y[:8], [(0, 5), (5, 8)], x[8:],
                                                   sat)
    hp = cn.kernel_params(params, N_INPUTS // params.n_views)
    out = np.array([[colanet_cuda.K.sits_out(hp, e, i) for e in range(params.e)]
                    for i in range(8)])
    assert out.any() and not out.all()
    assert not votes[out].any() and not spikes.transpose(0, 2, 1, 3)[out].any()
    assert spikes.transpose(0, 2, 1, 3)[~out].any()


def test_without_a_spike_record_the_votes_are_the_same():
    """``record=False`` passes no record array (None) to the kernels."""
    params = cn.ColanetConfig(m=2, e=2, **SPEC)
    x, y, sat = data(5)
    cpu = cn.init_state(params, N_INPUTS // params.n_views, N_CLASSES)
    gpu = cpu.copy()
    v_cpu, _ = cn.train_chunk(params, cpu, x[:3], y[:3], np.arange(3), sat)
    v_gpu, _ = cn.train_chunk(params, gpu, x[:3], y[:3], np.arange(3), sat, device="cuda")
    np.testing.assert_array_equal(v_gpu, v_cpu)
    np.testing.assert_array_equal(gpu.r, cpu.r)
    ids = np.arange(3, 5)
    np.testing.assert_array_equal(cn.infer_chunk(params, cpu, x[3:], ids, sat, device="cuda"),
                                  cn.infer_chunk(params, cpu, x[3:], ids, sat))


def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    """``--snn-device cuda`` where numba.cuda finds no GPU: train-snn and tune stop before any
    work with one line saying what to do; an unknown device is refused as an option."""
    store = separable_store(tmp_path / "s.zarr", n_train=8, n_test=4, dim=6, classes=2)
    monkeypatch.setattr(colanet_cuda, "device_problem", lambda: "numba.cuda finds no GPU")
    for argv in (["train-snn", "--runs-dir", tmp_path / "runs"],
                 ["tune", "--tune-dir", tmp_path / "tune"]):
        assert_refused([*argv, "--out", store, "--snn-device", "cuda"], capsys,
                       r"--snn-device cuda: numba.cuda finds no GPU; run with --snn-device cpu")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tune").exists()
    assert_refused(["train-snn", "--out", store, "--snn-device", "tpu"], capsys,
                   r"--snn-device tpu: must be cpu or cuda")


#: Compiles the kernels to PTX for an H100 (sm_90) with numba-cuda and NVVM, no GPU needed (the
#: compiler asks the current device for its compute capability only to pick a default: it is
#: given one). Prints the number of fused multiply-adds in the kernels' own code (libdevice's
#: pow is a function of its own and uses fma on purpose).
PTX_SCRIPT = r"""
import re, types, numpy as np
import numba.cuda.dispatcher as dispatcher
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
from numba import cuda, typeof
from pipeline import colanet as cn, colanet_cuda as G
p = cn.ColanetConfig(m=2, e=2)
st = cn.init_state(p, 12, 3)
B, P, N, C = 2, p.period, st.n_neurons, 3
arr = G.Arrivals(np.zeros((B, 12), np.uint64), np.zeros(B, np.uint64), np.zeros((B, P), np.int32),
                 np.zeros((B, P, 12), np.int32), np.zeros(B, np.int64), np.zeros(N, np.uint64),
                 np.zeros((2, 12), np.uint64))
none = np.zeros((0, 0, 0, 0), bool)
train = G.TrainChunk(np.zeros((B, 12), np.uint64), np.zeros(B, np.int64),
                     np.zeros((B, 2, C), np.int32), none)
S = 2 * 4
train_scratch = G.TrainScratch(np.zeros((2, P, N)), np.zeros((2, N), bool),
                               np.zeros((2, N, 12), np.float32), np.zeros((2, N, 12), np.float32),
                               np.zeros((S, 12), np.int64), np.zeros((S, 5), np.uint64),
                               np.zeros((S, 1), np.int64), np.zeros(1, np.int64),
                               np.zeros((2, 12), np.uint64), np.zeros((2, 12), np.uint64))
infer = G.InferChunk(st.w, st.theta_add, np.zeros((B, 2, C), np.int32),
                     np.zeros((B, P, 2, N), bool))
infer_scratch = G.InferScratch(np.zeros((1, N)), np.zeros((1, C), np.int64),
                               np.zeros((1, C), np.int32), np.zeros((1, P, N)))
hp = typeof(cn.kernel_params(p, 12))
# The training kernel without a spike record (the steps get None), inference with one (an array):
# both ways a record reaches the step functions, at the cost of one compilation each.
train_kernel, infer_kernel = G.KERNELS[False][0], G.KERNELS[True][1]
for kernel, sig in [(train_kernel, (hp, typeof(cn.kernel_state(st)), typeof(arr), typeof(train),
                                    typeof(train_scratch), typeof(0), typeof(0))),
                    (infer_kernel, (hp, typeof(arr), typeof(infer), typeof(infer_scratch),
                                    typeof(0))),
                    (G.arrival_lists_kernel, (typeof(arr),))]:
    ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
    # The kernel's own functions: every PTX function but libdevice's (__internal_*, __nv_*).
    functions = re.split(r"\n(?=(?:\.visible |\.weak )?\.(?:entry|func))", ptx)
    own = [f for f in functions if not re.search(r"__(internal|nv)_", f.split("\n", 1)[0])]
    print(kernel.py_func.__name__, "fma", sum(f.count("fma.rn") for f in own))
"""


def test_kernels_compile_for_a_gpu_without_fused_multiply_add():
    """The kernels (and the CPU step functions they call) compile for sm_90, and NVVM fuses no
    multiply-add in them (it would round once where the CPU rounds twice). Needs NVVM (the CUDA
    toolkit: CUDA_HOME or the pip nvidia packages), not a GPU; skipped without it."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    run = subprocess.run([sys.executable, "-c", PTX_SCRIPT], capture_output=True, text=True,
                         env=env, cwd=Path(__file__).parent.parent, timeout=600)
    if run.returncode and re.search(r"NVVM|libnvvm|CUDA_HOME|nvvm", run.stderr):
        pytest.skip(f"no NVVM to compile with: {run.stderr.strip().splitlines()[-1][:200]}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["train_chunk_kernel", "fma", "0", "infer_chunk_kernel", "fma",
                                  "0", "arrival_lists_kernel", "fma", "0"]


def test_the_learning_and_predicting_loops_run_on_the_device_asked_for(tmp_path):
    """fit_stream and predict_stream (what train-snn, report and tune run) pass ``device`` down:
    the online results, the state and the test predictions are the CPU's."""
    from pipeline import training

    store = separable_store(tmp_path / "s.zarr", n_train=6, n_test=3, dim=6, classes=2, chunk=4)
    config = cn.ColanetConfig(m=2, e=1)
    runs = {}
    for device in ("cpu", "cuda"):
        state, progress = training.new_model(store, config)
        for _ in training.fit_stream(store, config, state, progress, max_rows=4, device=device):
            pass
        pred, _ = training.predict_stream(store, "test", config, state, progress.coding,
                                          device=device)
        runs[device] = state, progress, pred
    (cpu, cpu_progress, cpu_pred), (gpu, gpu_progress, gpu_pred) = runs["cpu"], runs["cuda"]
    np.testing.assert_array_equal(gpu_progress.online_correct, cpu_progress.online_correct)
    np.testing.assert_array_equal(gpu_pred, cpu_pred)
    gpu_arrays = cn.state_arrays(gpu)
    for name, array in cn.state_arrays(cpu).items():
        np.testing.assert_array_equal(gpu_arrays[name], array, err_msg=f"state.{name}")


def test_the_gpu_benchmark_codes_per_feature_levels_as_training_does():
    """bench/gpu.py's resident loop handed the per-feature levels (the shipped sat_scope) to the
    coder unresolved: a TypingError right after its identity check, on a GPU as here."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        import gpu
    finally:
        sys.path.pop(0)
    params = gpu.model("tiny")
    assert params.sat_scope == "feature"
    rate = gpu.resident_rate(colanet_cuda, params, N_INPUTS, N_CLASSES, samples=2, chunk=2)
    assert rate["samples"] == 2 and rate["input_spikes_per_sample"] > 0
