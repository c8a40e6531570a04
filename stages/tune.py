"""`annsnn tune`: the study's table (the engine is :mod:`pipeline.tuning`)."""

from __future__ import annotations

from typing import Any

from pipeline.colanet import ColanetConfig
from pipeline.config import ClusterConfig, EmbedConfig, TuneConfig
from pipeline.tuning import SEARCH_SPACE, run_tune


def main(args, config, data_given: bool) -> None:
    print_rows(run_tune(config(EmbedConfig), config(TuneConfig), config(ColanetConfig),
                        config(ClusterConfig), data_given=data_given))


def print_rows(rows: list[dict[str, Any]], top: int = 5) -> None:
    keys = list(SEARCH_SPACE)
    print(f"\n{len(rows)} trials; best {min(top, len(rows))} by score (validation accuracy, or "
          f"the joint score of several stores):")
    print(f"{'#':>4} {'score':>8} {'val acc':>8} {'no ans':>7} {'s':>6}  " + "  ".join(keys))
    for r in rows[:top]:
        vals = "  ".join(f"{r['values'][k]:.4g}" if isinstance(r["values"][k], float)
                         else str(r["values"][k]) for k in keys)
        print(f"{r['number']:>4} {r['score']:>8.4f} {r['val_accuracy']:>8.4f} {r['no_answer_rate']:>7.3f} "
              f"{r['seconds']:>6.1f}  {vals}")
