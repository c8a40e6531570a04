"""`annsnn report`: CoLaNET beside a linear probe and nearest class mean on several stores.

Each store's run is a finished run of the same configuration when there is one (evaluated again,
not retrained), else a run folder with the default name (:func:`pipeline.runs.run_name`: the
store's name and the options that differ from the defaults), so a changed parameter set trains
afresh beside the others.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pipeline.colanet import ColanetConfig
from pipeline.config import EmbedConfig, ReportConfig, TrainConfig
from pipeline.errors import UserError
from pipeline.metrics import worst_classes
from pipeline.runs import find_finished_run, run_name
from pipeline.store import EmbeddingStore, store_exists, store_name
from pipeline.tables import format_table
from pipeline.training import check_snn_device, ensure_store, train_run


def main(args, config, data_given: bool) -> None:
    run_cfg = config(TrainConfig)  # no --run, --skip-baselines, --init-from: its own fresh runs
    per_class = config(ReportConfig).per_class  # refused before anything runs
    print_report(run_report(args.stores, run_cfg, config(ColanetConfig)), per_class)


def run_report(stores: list[str], train_cfg: TrainConfig, params: ColanetConfig) -> list[dict[str, Any]]:
    check_snn_device(train_cfg.snn_device)  # before finishing any store
    for store in stores:  # every store, before any is finished or trained on
        if not store_exists(store):
            raise UserError(f"{store}: no store here; make it with `annsnn embed` or `annsnn import`")
        EmbeddingStore.open(store)  # refuses a damaged one, naming the file
    rows = []
    for store in stores:
        path = ensure_store(EmbedConfig(out=store), data_given=False)  # finished as it records
        name = find_finished_run(train_cfg.runs_dir, path, params, passes=train_cfg.passes,
                                 eval_split=train_cfg.eval_split) or run_name(path, params)
        rows.append(train_run(path, params, replace(train_cfg, run=name)))
    return rows


def print_report(rows: list[dict[str, Any]], per_class: int = 10) -> None:
    """The store table, then per store its ``per_class`` classes of lowest SNN recall."""
    print(f"\n{'store':<42} {'train':>6} {'eval':>10} {'SNN':>7} {'no ans':>7} {'probe':>7} "
          f"{'NCM':>7} {'SNN-probe':>10} {'train s':>8}")
    for m in rows:
        print(f"{store_name(m['store'])[:42]:<42} {m['n_train']:>6} {m['n_test']:>5} {m['eval_split']:>4} "
              f"{m['snn_accuracy']:>7.2%} {m['no_answer_rate']:>7.2%} {m['probe_accuracy']:>7.2%} "
              f"{m['ncm_accuracy']:>7.2%} {100 * (m['snn_accuracy'] - m['probe_accuracy']):>+9.2f}p "
              f"{m['seconds']['train']:>8.1f}")
    if per_class > 0:
        for m in rows:
            print_worst_classes(m, per_class)


def print_worst_classes(m: dict[str, Any], limit: int) -> None:
    """One run's per-class table: at most ``limit`` classes, lowest SNN recall first."""
    entries = m.get("per_class") or []
    shown = worst_classes(entries, limit)
    print(f"\n{store_name(m['store'])}: {len(shown)} of {len(entries)} classes, lowest SNN recall "
          f"first ({m['eval_split']} split; per_class_recall.png in {m['run_dir']})")
    pct = lambda r: "-" if r is None else f"{r:.2%}"  # noqa: E731  (None: no samples, or not run)
    rows = [[c["name"], c["train_count"], c["eval_count"], pct(c["snn_recall"]),
             pct(c.get("probe_recall")), pct(c.get("ncm_recall"))] for c in shown]
    print("\n".join(format_table(["class", "train", "eval", "SNN", "probe", "NCM"], rows)))
