"""Benchmark stage one: images/s of the whole stage against the encoder's bare forward pass.

By default on real-photo-like JPEGs (``bench/photos.py``: 200 images of 500x375 at quality 90,
seeded, written to a temporary ImageFolder): the stage (``embed_store``, what ``annsnn embed
--data imagefolder:DIR`` runs: listing, decode, timm's transform, forward, Zarr writes) against the
forward pass alone on the same images already decoded and transformed into tensors in memory, with
the same model, input size, batch size and thread count. The ratio (stage / bare) is the figure of
merit (target >= 0.9 on the CPU). Also printed: decode + transform alone (one process, one thread,
what one DataLoader worker does), and the CPU seconds in the kernel and the minor page faults per
image of the stage and of the bare pass (getrusage, this process and its finished children).
``--data digits`` (or any --data source) measures that source instead (8x8 digits: no decode cost).

    python bench/embed.py [--data photos] [--photos 200] [--photo-size 500x375] [--limit 256]
                          [--batch-size 32] [--workers N] [--threads N]

Writes data/bench/embed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import EmbedConfig  # noqa: E402
from pipeline.data import open_dataset  # noqa: E402
from pipeline.encoder import Encoder, load_encoder  # noqa: E402
from pipeline.embedding import embed_store  # noqa: E402

TARGET = 0.9


def usage() -> tuple[float, float, int]:
    """(seconds, kernel CPU seconds, minor page faults) so far, this process and its children."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return time.perf_counter(), me.ru_stime + kids.ru_stime, me.ru_minflt + kids.ru_minflt


def per_image(before, after, n: int) -> dict:
    return {"images_per_s": round(n / (after[0] - before[0]), 2),
            "system_ms_per_image": round(1e3 * (after[1] - before[1]) / n, 2),
            "minor_faults_per_image": round((after[2] - before[2]) / n)}


def decoded_batches(cfg: EmbedConfig, enc: Encoder) -> tuple[list[torch.Tensor], dict]:
    """Every image of the run decoded and transformed as the stage does it (one thread, as in a
    DataLoader worker), in batches of the run's size; and the rate of doing so."""
    ds = open_dataset(cfg.data, seed=cfg.split_seed, test_fraction=cfg.test_fraction,
                      limit=cfg.limit)
    ids = [i for split in ds.splits.values() for i in split.ids]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        before = usage()
        x = [enc.transform(ds.read_image(i)) for i in ids]
        rate = per_image(before, usage(), len(ids))
    finally:
        torch.set_num_threads(threads)
    b = cfg.batch_size
    return [torch.stack(x[i:i + b]) for i in range(0, len(x), b)], rate


def bare_forward(enc: Encoder, batches: list[torch.Tensor]) -> dict:
    """The bound: preprocessed tensors already in memory, forward passes only."""
    enc.embed(batches[0])  # warm-up (allocator, kernels)
    before = usage()
    for x in batches:
        enc.embed(x)
    if enc.device.type == "cuda":
        torch.cuda.synchronize()
    return per_image(before, usage(), sum(len(x) for x in batches))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="photos",
                   help="photos (generated JPEGs, the default) or any --data source")
    p.add_argument("--photos", type=int, default=200, help="how many JPEGs --data photos writes")
    p.add_argument("--photo-size", default="500x375", help="their WIDTHxHEIGHT")
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--limit", type=int, default=256, help="images per split")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=EmbedConfig().workers,
                   help="DataLoader processes (default: embed's)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="data/bench/embed.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data
        if data == "photos":
            from photos import write_photos  # bench/photos.py

            w, h = (int(v) for v in a.photo_size.lower().split("x"))
            data = "imagefolder:" + str(write_photos(Path(tmp) / "photos", a.photos, (w, h)))
        cfg = EmbedConfig(data=data, model=a.model, limit=a.limit, batch_size=a.batch_size,
                          workers=a.workers, threads=a.threads, device=a.device,
                          out=str(Path(tmp) / "bench.zarr"))
        embed_store(EmbedConfig(**{**cfg.to_dict(), "limit": a.batch_size,
                                 "out": str(Path(tmp) / "warm.zarr")}))  # warm caches and imports
        enc = load_encoder(cfg.model, cfg.weights, image_size=cfg.image_size, device=cfg.device)
        batches, decode = decoded_batches(cfg, enc)
        n = sum(len(x) for x in batches)
        # The bare pass runs before and after the stage; the faster one is the bound, so that a
        # busy moment on a shared machine cannot flatter the ratio.
        bare_runs = [bare_forward(enc, batches)]
        before = usage()
        summary = embed_store(cfg)
        stage = per_image(before, usage(), summary["images"])
        bare_runs.append(bare_forward(enc, batches))
    bare = max(bare_runs, key=lambda r: r["images_per_s"])
    ratio = stage["images_per_s"] / bare["images_per_s"]
    result = {"data": a.data, "photo_size": a.photo_size if a.data == "photos" else None,
              "model": a.model, "images": summary["images"], "batch_size": a.batch_size,
              "threads": a.threads, "workers": a.workers,
              "device": enc.device.type, "machine": platform.processor() or platform.machine(),
              "stage": stage, "bare_forward": bare, "bare_forward_runs": bare_runs,
              "decode_transform_one_thread": decode,
              "stage_images_per_s": stage["images_per_s"],
              "bare_forward_images_per_s": bare["images_per_s"],
              "ratio": round(ratio, 3), "target": TARGET}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"{a.data} ({n} images, batch {a.batch_size}, {a.threads} threads, {a.workers} workers): "
          f"stage {stage['images_per_s']:.1f} img/s, "
          f"bare forward {bare['images_per_s']:.1f} img/s, "
          f"ratio {ratio:.3f} (target >= {TARGET}); decode + transform alone "
          f"{decode['images_per_s']:.1f} img/s on one thread")
    print(f"  per image: stage {stage['system_ms_per_image']:.1f} ms in the kernel, "
          f"{stage['minor_faults_per_image']} minor faults; bare forward "
          f"{bare['system_ms_per_image']:.1f} ms, {bare['minor_faults_per_image']} -> {a.out}")


if __name__ == "__main__":
    main()
