"""Benchmark stage two on a GPU (``--snn-device cuda``): training samples/s and the 1.28 M-sample
projection at 1,000 classes, after checking that the GPU gives the CPU kernels' votes and state.

On the synthetic pooled-ReLU6-like features of ``bench/snn.py`` (M 10, E 15):

1. bit identity: ``--check-samples`` training samples and as many inference samples at the paper
   size, on the CPU kernels and on the GPU from the same state: votes, spikes and every state
   array must be equal (a difference is printed by name; the run goes on to the timings);
2. training samples/s at the paper size (D 1536, C 64) with the state kept on the GPU between
   chunks (:class:`pipeline.colanet_cuda.DeviceEnsemble`), timed over ``--samples`` samples after
   one untimed chunk (compilation), input coding on the host included; and the same through
   ``train_chunk(device="cuda")``, which copies the state to the GPU and back every chunk (what
   ``train-snn --snn-device cuda`` does today); goal: >= 10,000 samples/s;
3. the same resident rate at 1,000 classes (D 1536, C 1000) and its projection: one pass over
   1.28 M samples (ImageNet's train split) in minutes; goal: under 10 minutes.

Without a usable GPU it prints "no GPU: not measured here" and the reason, and exits 0. Under
Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) it runs ``--sizes tiny`` only, to check the script
(the rates then mean nothing).

    python bench/gpu.py [--samples 8192] [--chunk 1024] [--check-samples 32]
                        [--sizes paper,thousand] [--out data/bench/gpu.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import colanet as cn  # noqa: E402
from pipeline import colanet_kernels as K  # noqa: E402
from pipeline.streaming import array_batches  # noqa: E402
from pipeline.training import Coding  # noqa: E402
from snn import Synthetic  # noqa: E402  (bench/snn.py: the same features)

SIZES = {"paper": (1536, 64), "thousand": (1536, 1000), "tiny": (12, 3)}  # (D inputs, C classes)
M, E = 10, 15
PASS_SAMPLES = 1_281_167  # ImageNet-1k's train split
GOAL_RATE, GOAL_MINUTES = 10_000.0, 10.0


def model(size: str) -> cn.ColanetConfig:
    return cn.ColanetConfig(m=2 if size == "tiny" else M, e=2 if size == "tiny" else E)


def features(params, n_inputs, n_classes, n, seed):
    """``n`` synthetic samples coded as the training engine codes them for ``params`` (the
    coding measured on them, views and all), as bench/snn.py does: ``(x, y, sat)``, ``x`` the
    coder's ``n_views`` blocks of inputs."""
    x, y = Synthetic(n_inputs, n_classes).sample(n, seed=seed)
    coding = Coding.measured(params, lambda: array_batches(x, y), x, "synthetic features")
    return coding.inputs(x), y, coding.sat


def check_identity(G, params, n_inputs, n_classes, n) -> list[str]:
    """Train ``n`` samples and infer ``n`` on both devices from one state; the names of what
    differs (empty: identical)."""
    x, y, sat = features(params, n_inputs, n_classes, 2 * n, seed=1)
    cpu = cn.init_state(params, params.n_inputs(n_inputs), n_classes)
    gpu = cpu.copy()
    ids = np.arange(n)
    v_cpu, _, rec_cpu = cn.train_chunk(params, cpu, x[:n], y[:n], ids, sat, record=True)
    v_gpu, _, rec_gpu = cn.train_chunk(params, gpu, x[:n], y[:n], ids, sat, record=True,
                                       device="cuda")
    differs = [name for name, a, b in [("train votes", v_cpu, v_gpu),
                                       ("train spikes", rec_cpu, rec_gpu)]
               if not np.array_equal(a, b)]
    gpu_arrays = cn.state_arrays(gpu)
    differs += [f"state.{name}" for name, a in cn.state_arrays(cpu).items()
                if not np.array_equal(a, gpu_arrays[name])]
    test_ids = np.arange(n, 2 * n)
    if not np.array_equal(cn.infer_chunk(params, cpu, x[n:], test_ids, sat),
                          cn.infer_chunk(params, cpu, x[n:], test_ids, sat, device="cuda")):
        differs.append("inference votes")
    return differs


def resident_rate(G, params, n_inputs, n_classes, samples, chunk) -> dict:
    """Training samples/s with the state on the GPU between chunks (coding on the host
    included), after one untimed chunk."""
    x, y, sat = features(params, n_inputs, n_classes, samples + chunk, seed=2)
    x, sat = cn.per_feature_coding(x, sat)  # per-feature levels as train_chunk resolves them
    state = cn.init_state(params, params.n_inputs(n_inputs), n_classes)
    hp = cn.kernel_params(params, params.n_inputs(n_inputs))
    ensemble = G.DeviceEnsemble(cn.kernel_state(state))
    acc, bits, t = state.acc.copy(), state.arrival_bits.copy(), 0
    seconds, answered, input_spikes = 0.0, 0, 0
    for lo in range(0, samples + chunk, chunk):
        hi = min(lo + chunk, samples + chunk)
        started = time.perf_counter()
        ids = np.arange(lo, hi)
        pat = K.encode_chunk(x[lo:hi], sat, ids, acc, hp, False)
        bits0 = K.history_chunk(bits, pat, params.period)
        votes = G.train_on_device(hp, ensemble, pat, bits0, y[lo:hi], ids, t)  # synchronises
        t += (hi - lo) * params.period
        if lo >= chunk:  # the first chunk compiles
            seconds += time.perf_counter() - started
            answered += int((votes.sum(axis=(1, 2)) > 0).sum())
            input_spikes += int(np.unpackbits(pat.view(np.uint8)).sum())  # set arrival bits
    return {"samples": samples, "chunk": chunk, "seconds": round(seconds, 3),
            "samples_per_s": round(samples / seconds, 1), "answered": answered,
            "input_spikes_per_sample": round(input_spikes / samples, 1)}


def copying_rate(params, n_inputs, n_classes, samples, chunk) -> dict:
    """Training samples/s through ``train_chunk(device="cuda")`` (the state goes to the GPU and
    back every chunk)."""
    x, y, sat = features(params, n_inputs, n_classes, samples + chunk, seed=3)
    state = cn.init_state(params, params.n_inputs(n_inputs), n_classes)
    seconds = 0.0
    for lo in range(0, samples + chunk, chunk):
        hi = min(lo + chunk, samples + chunk)
        started = time.perf_counter()
        cn.train_chunk(params, state, x[lo:hi], y[lo:hi], np.arange(lo, hi), sat, device="cuda")
        if lo >= chunk:
            seconds += time.perf_counter() - started
    return {"samples": samples, "seconds": round(seconds, 3),
            "samples_per_s": round(samples / seconds, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=8192, help="timed training samples per size")
    p.add_argument("--chunk", type=int, default=1024, help="samples per kernel launch")
    p.add_argument("--check-samples", type=int, default=32,
                   help="samples of the bit-identity check (paper size; 0: skip it)")
    p.add_argument("--sizes", default="paper,thousand", help=f"comma-separated of {sorted(SIZES)}")
    p.add_argument("--out", default="data/bench/gpu.json")
    args = p.parse_args()

    from pipeline import colanet_cuda as G

    problem = G.device_problem()
    if problem:
        print(f"no GPU: not measured here ({problem})")
        return 0
    sizes = args.sizes.split(",")
    if G.SIMULATED:
        print("NUMBA_ENABLE_CUDASIM=1: Numba's CUDA simulator, not a GPU; running the tiny size "
              "only, to check this script (its rates mean nothing)")
        sizes, args.samples, args.chunk = ["tiny"], min(args.samples, 4), min(args.chunk, 2)
        args.check_samples = min(args.check_samples, 3)
        device = "CUDA simulator"
    else:
        from numba import cuda

        device = cuda.get_current_device().name
        device = device.decode() if isinstance(device, bytes) else str(device)
    report = {"device": device, "m": M, "e": E, "sizes": {}}
    print(f"device: {device}")
    if args.check_samples:
        size = "tiny" if G.SIMULATED else "paper"
        differs = check_identity(G, model(size), *SIZES[size], args.check_samples)
        report["identical_to_cpu"] = not differs
        print(f"bit identity with the CPU kernels ({size}, {args.check_samples} samples): "
              + ("identical" if not differs else "DIFFERS in " + ", ".join(differs)))
    for size in sizes:
        n_inputs, n_classes = SIZES[size]
        params = model(size)
        row = {"n_inputs": n_inputs, "n_classes": n_classes,
               "resident": resident_rate(G, params, n_inputs, n_classes, args.samples,
                                         args.chunk)}
        rate = row["resident"]["samples_per_s"]
        line = (f"{size} (D {n_inputs}, C {n_classes}, M {params.m}, E {params.e}, "
                f"{row['resident']['input_spikes_per_sample']:.0f} input spikes a sample): "
                f"{rate:,.0f} training samples/s, state on the GPU")
        if size == "paper":
            row["copying"] = copying_rate(params, n_inputs, n_classes, args.samples, args.chunk)
            line += (f" (goal >= {GOAL_RATE:,.0f}); {row['copying']['samples_per_s']:,.0f}/s "
                     f"copying the state every chunk")
        if size in ("thousand", "tiny"):
            minutes = PASS_SAMPLES / rate / 60
            row["pass_minutes_projected"] = round(minutes, 2)
            line += (f"; one pass over {PASS_SAMPLES:,} samples projected at {minutes:.1f} min "
                     f"(goal < {GOAL_MINUTES:.0f})")
        report["sizes"][size] = row
        print(line)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
