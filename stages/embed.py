"""`annsnn embed`: stage one's summary line (the engine is :mod:`pipeline.embedding`)."""

from __future__ import annotations

from typing import Any

from pipeline.config import ClusterConfig, EmbedConfig
from pipeline.embedding import embed_store
from pipeline.store import storable_text


def main(args, config, data_given: bool) -> None:
    print_summary(embed_store(config(EmbedConfig), config(ClusterConfig)))


def print_summary(summary: dict[str, Any]) -> None:
    if summary.get("already_complete"):
        print(f"store {summary['store']} is already complete: nothing to embed "
              f"(`annsnn inspect --store {summary['store']}` shows what it holds)")
        return
    state = "complete" if summary["complete"] else "incomplete (rerun to continue)"
    print(f"embedded {summary['images']} images in {summary['seconds']:.1f} s "
          f"({summary['images_per_s']:.1f} images/s), {summary['failures']} failures; "
          f"store {summary['store']} is {state}")
    for line in storable_text([f"{p}: {r}" for p, r in summary["failed"][:10]]):
        print(f"  skipped {line}")
