"""`annsnn train-snn`: stage two on a store (the engine is :mod:`pipeline.training`)."""

from __future__ import annotations

from typing import Any

from pipeline.colanet import ColanetConfig
from pipeline.config import ClusterConfig, EmbedConfig, TrainConfig
from pipeline.training import check_snn_device, ensure_store, train_run


def run_train_snn(embed_cfg: EmbedConfig, run_cfg: TrainConfig, config: ColanetConfig,
                  cluster: ClusterConfig = ClusterConfig(), *, data_given: bool = True,
                  stop_after_samples: int | None = None) -> dict[str, Any] | None:
    """Embed the store if needed, then train, evaluate and write the run folder."""
    check_snn_device(run_cfg.snn_device)  # before embedding: a missing GPU is said at once
    return train_run(ensure_store(embed_cfg, cluster, data_given=data_given), config, run_cfg,
                     cluster, stop_after_samples=stop_after_samples)


def main(args, config, data_given: bool) -> None:
    print_table(run_train_snn(config(EmbedConfig), config(TrainConfig), config(ColanetConfig),
                              config(ClusterConfig), data_given=data_given))


def print_table(metrics: dict[str, Any]) -> None:
    rows = [("CoLaNET (SNN)", metrics["snn_accuracy"], f"{metrics['no_answer_rate']:.2%}")]
    if "probe_accuracy" in metrics:
        rows += [("linear probe", metrics["probe_accuracy"], "-"),
                 ("nearest class mean", metrics["ncm_accuracy"], "-")]
    print(f"\n{metrics['store']}: trained on {metrics['n_train']} samples, "
          f"evaluated on {metrics['n_test']} ({metrics['eval_split']})")
    print(f"{'classifier':<20} {'accuracy':>9} {'no answer':>10}")
    for name, acc, none in rows:
        print(f"{name:<20} {acc:>9.2%} {none:>10}")
    s = metrics["seconds"]
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s.items()))
    print(f"run folder: {metrics['run_dir']} (open report.html: metrics, plots, configuration)")
