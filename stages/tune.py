"""`annsnn tune`: search CoLaNET's open parameters on a validation split, trials in parallel.

Trials run as dask tasks on worker processes (``--cluster local:N``, local:2 by default, or
``--scheduler ADDRESS``). One row per finished trial is appended to
``data/tune/<name>/trials.jsonl`` as it finishes, and a rerun resumes: finished trials are kept,
the rest are asked again and get the same parameters.
"""

from __future__ import annotations

import json
import math
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distributed import as_completed
from tqdm import tqdm

from pipeline.colanet import ColanetParams
from pipeline.cluster import connect
from pipeline.config import ClusterConfig, EmbedConfig, TrainConfig, TuneConfig
from pipeline.errors import UserError
from pipeline.lock import exclusive, shared
from pipeline.outputs import check_name, claim_folder
from pipeline.store import EmbeddingStore, absolute_location, store_name
from pipeline.streaming import check_split
from pipeline.tuning import (SEARCH_SPACE, TrialLog, ask_batch, baseline_validation, joint_score,
                             run_trial, trial_params)
from stages.train_snn import open_or_embed


def run_tune(embed_cfg: EmbedConfig, cfg: TuneConfig, base: ColanetParams,
             cluster: ClusterConfig = ClusterConfig(), *, data_given: bool = True
             ) -> list[dict[str, Any]]:
    """Run (or resume) the study; returns all finished trial rows, best first.

    With one store a trial's score is its validation accuracy. With ``cfg.stores`` (a joint
    study) every trial runs on every store and scores :func:`pipeline.tuning.joint_score`.
    """
    if cfg.name is not None:
        check_name(cfg.name, "--name")
    paths = ([open_or_embed(embed_cfg, cluster, data_given=data_given).path] if not cfg.stores
             else [p for p in cfg.stores.split(",") if p])
    if not paths:
        raise UserError(f"--stores {cfg.stores!r} names no store")
    with ExitStack() as readers:
        for p in paths:
            readers.enter_context(shared(p))  # no store may be replaced while trials read it
        stores = [EmbeddingStore.open(p) for p in paths]
        for s in stores:
            check_split(s, "train", needs_positive=True)
        return _run_locked(cfg, base, cluster, stores)


def _run_locked(cfg: TuneConfig, base: ColanetParams, cluster: ClusterConfig,
                stores: list[EmbeddingStore]) -> list[dict[str, Any]]:
    dims = {s.attrs["encoder"]["feature_dim"] for s in stores}
    name = cfg.name or ("joint-" + "-".join(store_name(s.path) for s in stores)
                        if len(stores) > 1 else store_name(stores[0].path))
    study_dir = Path(cfg.tune_dir) / name
    study = {"stores": [s.path for s in stores], "identity": [s.attrs["identity"] for s in stores],
             "space": {k: asdict(v) for k, v in SEARCH_SPACE.items()}, "base": base.to_dict(),
             **{k: getattr(cfg, k) for k in ("batch", "val_fraction", "search_seed", "startup")}}
    study = json.loads(json.dumps(study))
    study_file = study_dir / "study.json"
    claim_folder(study_dir, "study")
    with exclusive(study_dir):
        if study_file.exists():
            try:
                old = json.loads(study_file.read_text())
            except ValueError:
                raise UserError(f"{study_file}: damaged (not readable JSON); start the study "
                                f"afresh under another --name") from None
            if {k: v for k, v in old.items() if k != "probe"} != study:
                raise UserError(f"{study_file}: this study was started with other settings "
                                f"(stores, space, base parameters, batch, val fraction, search "
                                f"seed or startup); use --name NEW")
            study["probe"] = old.get("probe")
        with connect(cluster, default_local=2, stores=tuple(s.path for s in stores)) as client:
            return _run_study(cfg, base, stores, dims, study_dir, study, study_file, client)


def _run_study(cfg: TuneConfig, base: ColanetParams, stores: list[EmbeddingStore], dims: set[int],
               study_dir: Path, study: dict[str, Any], study_file: Path,
               client) -> list[dict[str, Any]]:
    log = TrialLog(study_dir / "trials.jsonl")
    done = log.read()
    joint = len(stores) > 1
    if joint and not study.get("probe"):
        found = client.gather([client.submit(baseline_validation, absolute_location(s.path),
                                             cfg.val_fraction) for s in stores])
        study["probe"] = {s.path: b["probe"] for s, b in zip(stores, found)}
    study_file.write_text(json.dumps(study, indent=2))
    with tqdm(total=cfg.trials, initial=sum(n < cfg.trials for n in done), unit="trial",
              desc=f"tune {study_dir.name}", dynamic_ncols=True) as bar:
        for batch in range(math.ceil(cfg.trials / cfg.batch)):
            numbers = [n for n in range(batch * cfg.batch, (batch + 1) * cfg.batch)
                       if n < cfg.trials]
            if all(n in done for n in numbers):
                continue
            history = [done[n] for n in sorted(done) if n < batch * cfg.batch]
            asked = ask_batch(history, SEARCH_SPACE, batch, len(numbers), cfg.search_seed,
                              cfg.startup)
            futures, parts = {}, {}
            for n, values in zip(numbers, asked):
                if n in done:
                    continue
                parts[n] = {}
                for s in stores:
                    params, coding = trial_params(base, values, s.attrs["encoder"]["feature_dim"])
                    futures[client.submit(run_trial, absolute_location(s.path), params, coding,
                                          cfg.val_fraction, cfg.numba_threads,
                                          pure=False)] = (n, values, s.path)
            for future in as_completed(list(futures)):
                n, values, path = futures[future]
                parts[n][path] = future.result()
                if len(parts[n]) < len(stores):
                    continue
                row = _trial_row(n, batch, values, parts[n], study.get("probe"))
                log.append(row)
                done[n] = row
                bar.update(1)
                bar.set_postfix(best=f"{max(r['score'] for r in done.values()):.4f}")
    rows = sorted(done.values(), key=lambda r: (-r["score"], r["number"]))
    if len(dims) == 1:
        best_params, best_coding = trial_params(base, rows[0]["values"], dims.pop())
        (study_dir / "best.json").write_text(json.dumps(
            {"trial": rows[0]["number"], "score": rows[0]["score"],
             "val_accuracy": rows[0]["val_accuracy"], **best_coding,
             "colanet": best_params.to_dict(),
             "train_snn_args": train_snn_args(best_params, best_coding)}, indent=2))
    return rows


def _trial_row(number: int, batch: int, values: dict[str, Any], results: dict[str, dict],
               probe: dict[str, float] | None) -> dict[str, Any]:
    """One trials.jsonl row: a single store's result, or per-store results and the joint score."""
    if len(results) == 1:
        (result,) = results.values()
        return {"number": number, "batch": batch, "values": values, **result,
                "score": result["val_accuracy"]}
    acc = {p: r["val_accuracy"] for p, r in results.items()}
    return {"number": number, "batch": batch, "values": values, "per_store": results,
            "val_accuracy": float(sum(acc.values()) / len(acc)),
            "no_answer_rate": float(sum(r["no_answer_rate"] for r in results.values()) / len(acc)),
            "seconds": round(sum(r["seconds"] for r in results.values()), 3),
            "score": joint_score(acc, probe)}


def train_snn_args(params: ColanetParams, coding: dict[str, Any]) -> str:
    """The train-snn options that reproduce ``params`` and ``coding`` (those off the defaults)."""
    default = ColanetParams().to_dict()
    coding_default = TrainConfig()
    parts = [f"--{k.replace('_', '-')} {v:.6g}" if isinstance(v, float) else f"--{k.replace('_', '-')} {v}"
             for k, v in coding.items() if v != getattr(coding_default, k)]
    for k, v in params.to_dict().items():
        if v != default[k]:
            flag = "--" + k.replace("_", "-")
            parts.append(flag if v is True else f"{flag} {v:.6g}" if isinstance(v, float) else f"{flag} {v}")
    return " ".join(parts)


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
