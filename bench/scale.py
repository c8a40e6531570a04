"""Benchmark the scale-out path: embedding on 1 and 2 dask workers, stage two's peak memory as the
store grows, and a 1000-class configuration.

This one run, on this machine, measures:

* **embed throughput** (images/s of ``embed_store`` on a LocalCluster of 1, then 2, worker processes
  with one torch thread each, same data, model, batch and chunk size); workers are warmed up
  first (data listing and encoder loaded), so the figure is the steady embedding rate. Figure of
  merit: 2 workers / 1 worker. The single-process stage with all threads is printed beside it;
* **stage-two peak memory**: the whole ``train-snn`` stage (saturation levels, the online pass
  with checkpoints, the frozen evaluation; baselines skipped, as they load the split into
  memory) on synthetic stores of ``--memory-rows`` train rows, each in a fresh process; peak RSS
  from ``ru_maxrss``. Goal: flat, largest / smallest <= 1.1;
* **1000 classes**: the same stage on a synthetic store of ``--classes`` classes and ``--dim``
  features, with samples/s, peak memory and accuracy: in one process (all threads), then with
  ``--cluster local:W`` (``--workers``, 2 by default), where the copies train in W groups on W
  worker processes of cores / W threads each (:class:`pipeline.training.WorkerCopies`; the same
  model, bit for bit). Figure of merit: training samples/s on W workers / in one process. Both
  runs share this machine's cores, so the ratio shows what splitting the copies costs or gains
  here; on W machines each group would have a machine's cores to itself.

    python bench/scale.py [--limit 256] [--memory-rows 10000,1000000] [--workers 2] [--skip-embed]
                          [--skip-memory] [--skip-classes] [--out data/bench/scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from snn import Synthetic, machine_info  # noqa: E402

from pipeline.cluster import connect  # noqa: E402
from pipeline.colanet import ColanetConfig  # noqa: E402
from pipeline.config import ClusterConfig, EmbedConfig, TrainConfig  # noqa: E402
from pipeline.store import write_arrays  # noqa: E402
from pipeline.training import train_run  # noqa: E402

TARGET_MEMORY = 1.1
CHUNK = 256


# --- embedding on 1 and 2 workers ----------------------------------------------------------------
def embed_scaling(limit: int, batch: int, log) -> dict:
    # Imported here: the stage-two child processes measure their memory without torch loaded.
    from pipeline.embedding import embed_store, for_workers, worker_inputs

    cfg = EmbedConfig(data="digits", limit=limit, batch_size=batch, chunk_size=2 * batch, threads=1)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            with connect(ClusterConfig(cluster=f"local:{workers}")) as client:
                worker_cfg = for_workers(cfg)
                client.run(lambda: worker_inputs(worker_cfg) and None)  # warm-up, not timed
                summary = embed_store(EmbedConfig(**{**cfg.to_dict(), "out": f"{tmp}/w{workers}.zarr"}),
                                    ClusterConfig(scheduler=client.scheduler.address))
            runs[f"{workers}_workers"] = summary["images_per_s"]
            log(f"[embed] {workers} worker(s), 1 thread each: {summary['images_per_s']:.1f} img/s "
                f"({summary['images']} images, {summary['seconds']:.1f} s)")
        single = embed_store(EmbedConfig(**{**cfg.to_dict(), "threads": None,
                                          "out": f"{tmp}/single.zarr"}))
        runs["single_process_all_threads"] = single["images_per_s"]
        log(f"[embed] one process, all threads: {single['images_per_s']:.1f} img/s")
    return {"data": cfg.data, "model": cfg.model, "images": 2 * limit, "batch_size": batch,
            "chunk_size": cfg.chunk_size, "images_per_s": runs,
            "ratio_2_over_1": runs["2_workers"] / runs["1_workers"]}


# --- stage two in a fresh process ------------------------------------------------------------------
def train_child(store: str, runs: str, m: int, e: int, checkpoint_every: int,
                cluster: str) -> None:
    """Run in a fresh process: the whole train-snn stage (``cluster``: "none" or local:N); print
    JSON with its peak RSS (this process's: not the workers')."""
    started = time.perf_counter()
    metrics = train_run(store, ColanetConfig(m=m, e=e),
                        TrainConfig(runs_dir=runs, run="r", skip_baselines=True,
                                    checkpoint_every=checkpoint_every),
                        ClusterConfig(cluster=None if cluster == "none" else cluster))
    print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "wall_seconds": time.perf_counter() - started, "n_train": metrics["n_train"],
                      "n_test": metrics["n_test"], "seconds": metrics["seconds"],
                      "snn_accuracy": metrics["snn_accuracy"]}))


def run_stage(store: str, m: int, e: int, checkpoint_every: int, cluster: str = "none") -> dict:
    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--train-child", store, runs,
               str(m), str(e), str(checkpoint_every), cluster]
        # Linux hands the parent's peak RSS at fork to the child's ru_maxrss (it survives exec),
        # so the child is forked by a small shell rather than by this (large) process.
        cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"train-snn on {store} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def synthetic_store(path: str, n_train: int, n_test: int, dim: int, classes: int) -> str:
    gen = Synthetic(dim, classes)
    write_arrays(path, {"train": gen.sample(n_train, seed=1), "test": gen.sample(n_test, seed=2)},
                 [f"c{i}" for i in range(classes)], encoder={"model": "synthetic"},
                 source=f"bench/scale.py {n_train} {n_test} {dim} {classes}", chunk_size=CHUNK)
    return path


def memory_scaling(rows: list[int], dim: int, log) -> dict:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in rows:
            store = synthetic_store(f"{tmp}/rows-{n}.zarr", n, 2000, dim, 10)
            run = {"rows": n, **run_stage(store, m=10, e=1, checkpoint_every=10_000)}
            log(f"[memory] {n:,} train rows: peak RSS {run['maxrss_mb']:.1f} MB, "
                f"train {run['seconds']['train']:.1f} s, accuracy {run['snn_accuracy']:.3f}")
            runs.append(run)
    ratio = runs[-1]["maxrss_mb"] / runs[0]["maxrss_mb"]
    return {"dim": dim, "classes": 10, "m": 10, "e": 1, "chunk": CHUNK, "runs": runs,
            "ratio": ratio, "target": TARGET_MEMORY, "meets": ratio <= TARGET_MEMORY}


def many_classes(classes: int, dim: int, m: int, e: int, per_class: int, workers: int,
                 log) -> dict:
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(f"{tmp}/classes-{classes}.zarr", classes * per_class, 2 * classes,
                                dim, classes)
        for cluster in ("none", f"local:{workers}"):
            run = run_stage(store, m=m, e=e, checkpoint_every=10_000, cluster=cluster)
            run.update(train_samples_per_s=run["n_train"] / run["seconds"]["train"],
                       eval_samples_per_s=run["n_test"] / run["seconds"]["snn_eval"])
            log(f"[classes] {classes} classes, D {dim}, M {m}, E {e}, {cluster}: train "
                f"{run['train_samples_per_s']:.1f} samples/s, eval "
                f"{run['eval_samples_per_s']:.1f} samples/s, peak RSS {run['maxrss_mb']:.0f} MB "
                f"(this process), accuracy {run['snn_accuracy']:.3f}")
            runs[cluster] = run
    one, spread = runs["none"], runs[f"local:{workers}"]
    return {**one, "classes": classes, "dim": dim, "m": m, "e": e, "workers": workers,
            "on_workers": spread, "same_accuracy": spread["snn_accuracy"] == one["snn_accuracy"],
            "train_ratio_workers_over_one": spread["train_samples_per_s"]
            / one["train_samples_per_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=256, help="digits images per split to embed")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--memory-rows", default="10000,1000000")
    p.add_argument("--memory-dim", type=int, default=128)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--dim", type=int, default=1536, help="features of the 1000-class store (B3)")
    p.add_argument("--m", type=int, default=10)
    p.add_argument("--e", type=int, default=15)
    p.add_argument("--per-class", type=int, default=3, help="train samples per class")
    p.add_argument("--workers", type=int, default=2,
                   help="worker processes the 1000-class copies also train on")
    p.add_argument("--skip-embed", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-classes", action="store_true")
    p.add_argument("--out", default="data/bench/scale.json")
    p.add_argument("--train-child", nargs=6, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.train_child:
        store, runs, m, e, every, cluster = a.train_child
        train_child(store, runs, int(m), int(e), int(every), cluster)
        return

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    result: dict = {"machine": machine_info(os.cpu_count() or 1)}
    if not a.skip_embed:
        result["embed"] = embed_scaling(a.limit, a.batch_size, log)
    if not a.skip_memory:
        result["memory"] = memory_scaling([int(v) for v in a.memory_rows.split(",")],
                                          a.memory_dim, log)
    if not a.skip_classes:
        result["classes"] = many_classes(a.classes, a.dim, a.m, a.e, a.per_class, a.workers,
                                         log)
    result["wall_seconds"] = time.perf_counter() - started
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    if "embed" in result:
        r = result["embed"]["images_per_s"]
        print(f"embed ({result['embed']['images']} images): 1 worker {r['1_workers']:.1f} img/s, "
              f"2 workers {r['2_workers']:.1f} img/s, ratio {result['embed']['ratio_2_over_1']:.2f}; "
              f"one process, all threads {r['single_process_all_threads']:.1f} img/s")
    if "memory" in result:
        mem = result["memory"]
        parts = ", ".join(f"{r['rows']:,} rows {r['maxrss_mb']:.1f} MB" for r in mem["runs"])
        print(f"train-snn peak RSS (D {mem['dim']}, C 10, M 10, E 1): {parts}; ratio "
              f"{mem['ratio']:.3f} (goal <= {TARGET_MEMORY})")
    if "classes" in result:
        c = result["classes"]
        print(f"{c['classes']} classes (D {c['dim']}, M {c['m']}, E {c['e']}, {c['n_train']} train / "
              f"{c['n_test']} test): train {c['train_samples_per_s']:.1f} samples/s, eval "
              f"{c['eval_samples_per_s']:.1f} samples/s, peak RSS {c['maxrss_mb']:.0f} MB, "
              f"accuracy {c['snn_accuracy']:.3f}")
        w = c["on_workers"]
        print(f"  copies on {c['workers']} workers: train {w['train_samples_per_s']:.1f} "
              f"samples/s ({c['train_ratio_workers_over_one']:.2f}x one process), eval "
              f"{w['eval_samples_per_s']:.1f} samples/s, accuracy {w['snn_accuracy']:.3f} "
              f"({'the same' if c['same_accuracy'] else 'DIFFERENT'})")
    print(f"wall {result['wall_seconds']:.1f} s -> {a.out}")


if __name__ == "__main__":
    main()
