#!/usr/bin/env python3
"""Peer benchmark: a CoLaNET-sized spiking classifier simulated the way a user
would do it with Brian2 (runtime/Cython and cpp_standalone) and with plain NumPy,
so that another implementation (e.g. Numba) can be reported as a ratio.

Per sample: D=1536 rate-coded inputs (deterministic accumulator, 10 ticks on +
5 silent, dt=1 ms) -> all-to-all -> N=E*64*10 LIF neurons (u *= 1-1/tau, tau=5
ticks, thr 8.531, reset 0, floor 0, reset to 0 at each sample start),
on_pre v += g*w with g=40/1536. Plasticity stand-in: on a post spike, synapses
whose input spiked within the last 10 ticks get w += -0.01, clipped to
[-1.634, 1.714]. Dopamine-like rewards are omitted.

Per-tick order is Brian2's default schedule, mirrored by the NumPy reference:
decay -> threshold -> input events (+ plasticity for this tick's post spikes)
-> reset -> floor at 0. So input of tick t first counts at tick t+1.

Timing: runtime = Cython codegen; compile_s is the first net.run (codegen +
Cython compile, fresh cache dir, + the 1 warm-up sample), setup_s builds the
network (incl. compiling the synapse-creation code). standalone = cpp_standalone;
compile_s is device.build (codegen + make), run_s is the timed net.run measured
inside the binary (device._last_run_time; binary_s in the JSON is the whole
binary incl. creating 14.7 M synapses). numpy = the same dynamics, float64, one
gather-sum of the active input rows of W (D x N) per tick. Events/s = input
spikes x N. Each (mode, plasticity) runs in a fresh child process, so rssMB is
that run's peak (the standalone binary is a child); at large S the input spike
arrays dominate it for E=1.

Venv: python3 -m venv VENV && VENV/bin/pip install brian2 "numpy<2.4"
      (brian2 2.9.0 imports np.ndarray.ptp, which NumPy 2.4 no longer has)
Run:  VENV/bin/python peer_brian2.py --mode all --ensemble 15 --samples 1000 --out r.json
      add --winit=0,1 for a regime where L fires (the default init never reaches
      threshold, so the post-spike plasticity path is never exercised there).

This copy (bench/peer_brian2.py) is the team's tool from shared/tools/peer_brian2.py, kept so that
a clone can run it (make bench-peer; bench/snn.py --peer). Two options were added, nothing else
changed: --m (L neurons per class, N = E*64*m; default 10 as before) and --inputs FILE.npz (input
spikes given as arrays idx (int32) and ticks (int64, sample*15 + presentation tick), sorted by
tick then index, for at least warmup + samples samples: bench/snn.py passes the spikes of its own
coding so that both simulators see the same input).
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
import numpy as np

D, C, M = 1536, 64, 10
P_ON, P = 10, 15                  # presentation ticks, ticks per sample
TAU, THR, SAT = 5.0, 8.531, 2.0
GAIN = 40.0 / D
DW, WIN, WMIN, WMAX = -0.01, 10, -1.634, 1.714


def make_input(n_samples, seed, chunk=250):
    """Synthetic features -> accumulator spikes. Returns (input index, tick).
    Generated in chunks (each with its own seed) so memory stays small and
    sample k is the same whatever n_samples is."""
    idx, ticks = [], []
    for c0 in range(0, n_samples, chunk):
        rng = np.random.default_rng([seed, c0 // chunk])
        n = min(chunk, n_samples - c0)
        x = rng.exponential(0.5, size=(chunk, D))
        x[rng.random((chunk, D)) < 0.45] = 0.0
        x = x[:n]
        d = np.clip(x / SAT, 0.0, 1.0)
        a = np.zeros_like(d)                  # accumulator restarts each sample
        for k in range(P_ON):
            a += d
            s = a >= 1.0
            a[s] -= 1.0
            smp, j = np.nonzero(s)
            idx.append(j.astype(np.int32))
            ticks.append((smp + c0) * P + k)
    idx, ticks = np.concatenate(idx), np.concatenate(ticks)
    o = np.lexsort((idx, ticks))
    return idx[o], ticks[o].astype(np.int64)


def make_weights(n, winit, seed):
    return np.random.default_rng(seed + 1).uniform(winit[0], winit[1], size=(D, n))


def rss_mb():
    self_ = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return round(self_, 1), round(kids, 1)


def run_numpy(a, n, plastic, idx, ticks, W):
    T0, T = a.warmup * P, (a.warmup + a.samples) * P
    bounds = np.searchsorted(ticks, np.arange(T + 1))
    v = np.zeros(n)
    tpre = np.full(D, -10**9)
    nspk = np.zeros(n, np.int64)
    decay = 1.0 - 1.0 / TAU

    def sim(t_from, t_to):
        for t in range(t_from, t_to):
            if t % P == 0:
                v[:] = 0.0
            np.multiply(v, decay, out=v)
            spk = np.flatnonzero(v > THR)
            act = idx[bounds[t]:bounds[t + 1]]
            if act.size:
                v[:] += GAIN * W[act].sum(axis=0)       # dense rows of active inputs
                if plastic:
                    tpre[act] = t
            if plastic and spk.size:
                dw = np.where(t - tpre < WIN, DW, 0.0)
                W[:, spk] = np.clip(W[:, spk] + dw[:, None], WMIN, WMAX)
            v[spk] = 0.0
            nspk[spk] += 1
            np.maximum(v, 0.0, out=v)

    t0 = time.perf_counter(); sim(0, T0); t_warm = time.perf_counter() - t0
    t0 = time.perf_counter(); sim(T0, T); t_run = time.perf_counter() - t0
    return dict(run_s=t_run, warmup_s=t_warm, post_spikes=int(nspk.sum()),
                w_mean=float(W.mean()))


def run_brian2(a, n, plastic, idx, ticks, W, mode):
    import brian2 as b2
    from brian2 import ms, second
    work = tempfile.mkdtemp(prefix=f"b2_{mode}_")
    if mode == "standalone":
        b2.set_device("cpp_standalone", directory=os.path.join(work, "out"),
                      build_on_run=False)
        b2.prefs.devices.cpp_standalone.openmp_threads = a.threads
    else:
        b2.prefs.codegen.target = "cython"
        b2.prefs.codegen.runtime.cython.cache_dir = os.path.join(work, "cython")
    b2.defaultclock.dt = 1 * ms
    ns = dict(tau_eff=-1.0 / np.log(1.0 - 1.0 / TAU) * ms,   # exp(-dt/tau_eff) = 0.8
              thr=THR, g=GAIN, dw=DW, win=WIN * ms, wmin=WMIN, wmax=WMAX)
    t0 = time.perf_counter()
    inp = b2.SpikeGeneratorGroup(D, idx, ticks * ms, name="inp")
    L = b2.NeuronGroup(n, "dv/dt = -v/tau_eff : 1\nnspk : integer",
                       threshold="v > thr", reset="v = 0; nspk += 1",
                       method="exact", name="L")
    L.run_regularly("v = clip(v, 0, inf)", when="end", name="floor")
    L.run_regularly("v = 0", dt=P * ms, when="start", name="sample_reset")
    if plastic:
        S = b2.Synapses(inp, L, "w : 1\ntpre : second",
                        on_pre="v_post += g*w\ntpre = t",
                        on_post="w = clip(w + dw*int(t - tpre < win), wmin, wmax)",
                        name="S")
    else:
        S = b2.Synapses(inp, L, "w : 1", on_pre="v_post += g*w", name="S")
    S.connect()                                   # all-to-all, order i*n + j
    S.w = W.ravel()
    if plastic:
        S.tpre = -1 * second
    net = b2.Network(inp, L, S, *L.contained_objects)
    res = {}
    if mode == "runtime":
        res["setup_s"] = time.perf_counter() - t0   # incl. compiling synapse creation
        t0 = time.perf_counter()
        net.run(a.warmup * P * ms, namespace=ns)
        res["compile_s"] = time.perf_counter() - t0  # first run: codegen + Cython + warm-up
        t0 = time.perf_counter()
        net.run(a.samples * P * ms, namespace=ns)
        res["run_s"] = time.perf_counter() - t0
    else:
        net.run(a.warmup * P * ms, namespace=ns)
        net.run(a.samples * P * ms, namespace=ns)
        res["setup_s"] = time.perf_counter() - t0    # Python-side: record + write arrays
        t0 = time.perf_counter()
        b2.device.build(directory=os.path.join(work, "out"), compile=True, run=False)
        res["compile_s"] = time.perf_counter() - t0  # codegen + make (C++ compile)
        t0 = time.perf_counter()
        b2.device.run()
        res["binary_s"] = time.perf_counter() - t0   # whole binary: connect, load, runs
        res["run_s"] = float(b2.device._last_run_time)  # timed net.run inside binary
    res["post_spikes"] = int(np.asarray(L.nspk[:]).sum())
    res["w_mean"] = float(np.asarray(S.w[:]).mean())
    if mode == "runtime":                                 # check the assumed order
        assert S.j[n + 1] == 1 and S.i[n + 1] == 1
    subprocess.run(["rm", "-rf", work])
    return res


def child(a):
    n = a.ensemble * C * a.m
    plastic = a.plasticity == "on"
    nsamp = a.warmup + a.samples
    if a.inputs:
        with np.load(a.inputs) as f:
            idx, ticks = f["idx"].astype(np.int32), f["ticks"].astype(np.int64)
        if idx.size and idx.max() >= D:
            raise SystemExit(f"--inputs {a.inputs}: input indices must be < {D}")
        keep = ticks < nsamp * P
        idx, ticks = idx[keep], ticks[keep]
    else:
        idx, ticks = make_input(nsamp, a.seed)
    W = make_weights(n, a.winit, a.seed)
    in_spikes = int((ticks >= a.warmup * P).sum())
    load0 = os.getloadavg()[0]
    if a.mode == "numpy":
        res = run_numpy(a, n, plastic, idx, ticks, W)
    else:
        res = run_brian2(a, n, plastic, idx, ticks, W, a.mode)
    res.update(mode=a.mode, plastic=plastic, E=a.ensemble, M=a.m, N=n, inputs=a.inputs, synapses=D * n,
               samples=a.samples, threads=a.threads if a.mode == "standalone" else 1,
               winit=a.winit, input_spikes=in_spikes,
               in_spikes_per_sample=in_spikes / a.samples,
               samples_per_s=a.samples / res["run_s"],
               syn_events_per_s=in_spikes * n / res["run_s"],
               post_events=res["post_spikes"] * D,      # plasticity rows touched
               load1_before=load0, load1_after=os.getloadavg()[0])
    res["rss_self_mb"], res["rss_children_mb"] = rss_mb()
    return res


def wait_for_load(max_load, limit_s=900):
    t0 = time.time()
    while os.getloadavg()[0] > max_load and time.time() - t0 < limit_s:
        time.sleep(15)
    return os.getloadavg()[0]


def print_table(rows):
    hdr = ("mode", "E", "N", "plast", "thr", "S", "run_s", "smp/s", "Mev/s",
           "compile_s", "setup_s", "post_spk", "rssMB", "load")
    print("\n" + " ".join(f"{h:>10}" for h in hdr))
    for r in rows:
        if "error" in r:
            print(f"{r['mode']:>10} {r['E']:>10} {'':>10} {str(r['plastic']):>10}  ERROR {r['error'][-200:]}")
            continue
        vals = (r["mode"], r["E"], r["N"], "on" if r["plastic"] else "off", r["threads"],
                r["samples"], f"{r['run_s']:.2f}", f"{r['samples_per_s']:.2f}",
                f"{r['syn_events_per_s'] / 1e6:.1f}", f"{r.get('compile_s', 0):.1f}",
                f"{r.get('setup_s', 0):.1f}", r["post_spikes"],
                f"{max(r['rss_self_mb'], r['rss_children_mb']):.0f}",
                f"{r['load1_before']:.2f}")
        print(" ".join(f"{str(v):>10}" for v in vals))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=1000, help="timed samples")
    p.add_argument("--warmup", type=int, default=1, help="untimed samples first")
    p.add_argument("--ensemble", type=int, default=15, help="E (N = E*64*m)")
    p.add_argument("--m", type=int, default=M, help="L neurons per class")
    p.add_argument("--inputs", default=None, help="input spikes (.npz: idx, ticks) instead of "
                   "the synthetic ones")
    p.add_argument("--mode", default="all", choices=["runtime", "standalone", "numpy", "all"])
    p.add_argument("--plasticity", default="both", choices=["on", "off", "both"])
    p.add_argument("--threads", type=int, default=1, help="OpenMP threads, standalone")
    p.add_argument("--winit", default="-0.1,0.1", help="uniform weight init lo,hi")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-load", type=float, default=1.5, help="wait below this load1")
    p.add_argument("--out", default=None, help="JSON results path")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.winit = [float(s) for s in a.winit.split(",")]
    if a.child:
        print("RESULT " + json.dumps(child(a)), flush=True)
        return
    modes = ["runtime", "standalone", "numpy"] if a.mode == "all" else [a.mode]
    plast = ["on", "off"] if a.plasticity == "both" else [a.plasticity]
    rows = []
    for mode in modes:
        for pl in plast:
            load = wait_for_load(a.max_load)
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--mode", mode,
                   "--plasticity", pl, "--samples", str(a.samples), "--warmup", str(a.warmup),
                   "--ensemble", str(a.ensemble), "--threads", str(a.threads),
                   "--m", str(a.m)] + (["--inputs", os.path.abspath(a.inputs)] if a.inputs else []) + [
                   "--winit=" + ",".join(map(str, a.winit)), "--seed", str(a.seed)]
            print(f"[{time.strftime('%H:%M:%S')}] {mode} plasticity={pl} E={a.ensemble} "
                  f"S={a.samples} load1={load:.2f}", flush=True)
            pr = subprocess.run(cmd, capture_output=True, text=True)
            line = [l for l in pr.stdout.splitlines() if l.startswith("RESULT ")]
            if pr.returncode == 0 and line:
                rows.append(json.loads(line[-1][7:]))
                r = rows[-1]
                print(f"    run {r['run_s']:.2f}s  {r['samples_per_s']:.2f} samples/s  "
                      f"{r['syn_events_per_s'] / 1e6:.1f} M events/s  "
                      f"post spikes {r['post_spikes']}", flush=True)
            else:
                rows.append(dict(mode=mode, E=a.ensemble, plastic=pl == "on",
                                 error=(pr.stderr or pr.stdout)[-2000:]))
                print("    FAILED:", rows[-1]["error"][-500:], flush=True)
    print_table(rows)
    if a.out:
        meta = dict(argv=sys.argv, cpus=os.cpu_count(), numpy=np.__version__,
                    brian2=_b2_version(), time=time.strftime("%Y-%m-%d %H:%M:%S"))
        with open(a.out, "w") as f:
            json.dump(dict(meta=meta, results=rows), f, indent=1)


def _b2_version():
    try:
        from importlib.metadata import version
        return version("brian2")
    except Exception:
        return None


if __name__ == "__main__":
    main()
