"""Benchmark stage one: images/s of the whole stage against the encoder's bare forward pass.

Both are measured in this one run, on this machine, with the same model, input size, batch size
and thread count; the ratio (stage / bare) is the figure of merit (target >= 0.9 on the CPU).

    python bench/embed.py [--data digits] [--limit 256] [--batch-size 32] [--threads N]

Writes data/bench/embed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import EmbedConfig  # noqa: E402
from pipeline.data import open_dataset  # noqa: E402
from pipeline.encoder import load_encoder  # noqa: E402
from pipeline.embedding import embed_store  # noqa: E402


def bare_forward_images_per_s(cfg: EmbedConfig, n_images: int) -> float:
    """The bound: preprocessed tensors already in memory, forward passes only."""
    enc = load_encoder(cfg.model, cfg.weights, image_size=cfg.image_size, device=cfg.device)
    x = torch.randn(cfg.batch_size, *enc.data_config["input_size"])
    enc.embed(x)  # warm-up (allocator, kernels)
    batches = -(-n_images // cfg.batch_size)
    started = time.perf_counter()
    for _ in range(batches):
        enc.embed(x)
    if enc.device.type == "cuda":
        torch.cuda.synchronize()
    return batches * cfg.batch_size / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--limit", type=int, default=256, help="images per split")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="data/bench/embed.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = EmbedConfig(data=a.data, model=a.model, limit=a.limit, batch_size=a.batch_size,
                          workers=a.workers, threads=a.threads, device=a.device,
                          out=str(Path(tmp) / "bench.zarr"))
        embed_store(EmbedConfig(**{**cfg.to_dict(), "limit": a.batch_size,
                                 "out": str(Path(tmp) / "warm.zarr")}))  # warm caches and imports
        n = sum(min(a.limit, len(v)) for v in open_dataset(a.data).splits.values())
        # The bare pass runs before and after the stage; the faster one is the bound, so that a
        # busy moment on a shared machine cannot flatter the ratio.
        bare_before = bare_forward_images_per_s(cfg, n)
        summary = embed_store(cfg)
        stage = summary["images"] / summary["seconds"]
        bare = max(bare_before, bare_forward_images_per_s(cfg, n))
    result = {"data": a.data, "model": a.model, "images": summary["images"],
              "batch_size": a.batch_size, "threads": a.threads, "workers": a.workers,
              "device": "cuda" if torch.cuda.is_available() and a.device != "cpu" else "cpu",
              "machine": platform.processor() or platform.machine(),
              "stage_images_per_s": round(stage, 2), "bare_forward_images_per_s": round(bare, 2),
              "ratio": round(stage / bare, 3), "target": 0.9}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"stage {stage:.1f} img/s, bare forward {bare:.1f} img/s, ratio {stage / bare:.3f} "
          f"(target >= 0.9) -> {a.out}")


if __name__ == "__main__":
    main()
