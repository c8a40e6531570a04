"""Hyperparameter search for CoLaNET on a validation split carved from the training split.

The test split is never read here. A trial trains one online pass on the first
``1 - val_fraction`` of the (seeded, shuffled) train rows and scores the rest with plasticity
frozen. The strategy is Optuna's TPE sampler, asked for a batch of trials at a time; its seed is
``seed + batch number`` and it sees the recorded history in trial order, so a resumed search asks
exactly what an uninterrupted one would have asked.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.colanet import ColanetParams, infer_chunk, init_state, readout, train_chunk
from pipeline.errors import UserError
from pipeline.store import EmbeddingStore
from pipeline.streaming import coding_levels, iter_batches, read_rows


@dataclass(frozen=True)
class Knob:
    """One searched parameter: a float/int range (``log`` scale optional) or a set of choices."""

    kind: str  # "float" | "int" | "choice"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple = ()


# The spec's open parameters. gain_scale multiplies the base gain gain_total / D; sat_percentile and
# sat_scope set the coder's saturation level (TrainConfig); the rest are ColanetParams fields.
CODING_KEYS = ("sat_percentile", "sat_scope")
SEARCH_SPACE: dict[str, Knob] = {
    "gain_scale": Knob("float", 0.25, 4.0, log=True),
    "sat_percentile": Knob("float", 90.0, 99.9),
    "sat_scope": Knob("choice", choices=("global", "feature")),
    "m": Knob("int", 3, 30),
    "e": Knob("int", 1, 15),
    "d_h": Knob("float", -0.6, -0.01, log=False),
    "dopamine": Knob("float", 0.03, 1.5, log=True),
    "r_s": Knob("float", 0.0, 0.6),
    "k_thr": Knob("float", 1e-4, 1e-2, log=True),
    "s_stim": Knob("float", 0.0, 2.0),
    "forcing": Knob("choice", choices=("most_depolarised", "all")),
    "blocking": Knob("choice", choices=("column", "none")),
    "coder": Knob("choice", choices=("accumulator", "bernoulli")),
}


def trial_params(base: ColanetParams, values: dict[str, Any], n_inputs: int,
                 base_coding: dict[str, Any] | None = None) -> tuple[ColanetParams, dict[str, Any]]:
    """ColanetParams and coding (sat_percentile, sat_scope) of one trial: ``base`` and
    ``base_coding`` with ``values`` applied."""
    fields = {k: v for k, v in values.items() if k != "gain_scale" and k not in CODING_KEYS}
    if "gain_scale" in values:
        fields["gain"] = values["gain_scale"] * base.resolved_gain(n_inputs)
    params = ColanetParams.from_dict({**base.to_dict(), **fields})
    from pipeline.config import TrainConfig

    default = TrainConfig()
    coding = {"sat_percentile": default.sat_percentile, "sat_scope": default.sat_scope,
              **(base_coding or {})}
    coding.update({k: values[k] for k in CODING_KEYS if k in values})
    return params, coding


def validation_rows(store: EmbeddingStore, val_fraction: float) -> int:
    """First validation row of the train split: rows before it fit, rows after it score."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction {val_fraction} must lie strictly between 0 and 1")
    n = store.split("train")["features"].shape[0]
    return int(round(n * (1.0 - val_fraction)))


def run_trial(store_path: str, params: ColanetParams, coding: dict[str, Any],
              val_fraction: float, numba_threads: int | None = None) -> dict[str, Any]:
    """Train on the fit rows, score the validation rows; a plain function for dask workers."""
    if numba_threads:
        import numba

        numba.set_num_threads(numba_threads)
    started = time.perf_counter()
    store = EmbeddingStore.open(store_path)
    first_val = validation_rows(store, val_fraction)
    sat = coding_levels(store, "train", coding["sat_percentile"], coding["sat_scope"],
                        stop=first_val)
    state = init_state(params, store.attrs["encoder"]["feature_dim"], len(store.class_names))
    for b in iter_batches(store, "train", stop=first_val):
        _, state = train_chunk(params, state, b.features, b.labels, b.sample_id, sat)
    correct = answered = total = 0
    for b in iter_batches(store, "train", start=first_val):
        pred, ok = readout(infer_chunk(params, state, b.features, b.sample_id, sat))
        correct += int((pred == b.labels).sum())
        answered += int(ok.sum())
        total += len(pred)
    return {"val_accuracy": correct / max(total, 1), "no_answer_rate": 1 - answered / max(total, 1),
            "n_fit": first_val, "n_val": total, "sat": float(np.median(sat)),
            "seconds": round(time.perf_counter() - started, 3)}


def baseline_validation(store_path: str, val_fraction: float) -> dict[str, float]:
    """Linear probe and nearest class mean fitted on the fit rows, scored on the validation rows."""
    from pipeline.baselines import linear_probe, nearest_class_mean

    store = EmbeddingStore.open(store_path)
    first = validation_rows(store, val_fraction)
    xf, yf = read_rows(store, "train", stop=first)
    xv, yv = read_rows(store, "train", start=first)
    return {"probe": float((linear_probe(xf, yf, xv) == yv).mean()),
            "ncm": float((nearest_class_mean(xf, yf, xv) == yv).mean())}


ERROR_FLOOR = 0.005  # keeps the ratio finite where an error is 0 (half a point)


def joint_score(val_accuracy: dict[str, float], probe: dict[str, float]) -> float:
    """Objective over several stores: minus the mean log ratio of SNN to probe validation error.

    0 is parity on every store; -0.69 is twice the probe's error on average. Each store counts by
    its relative error, so one hard data set does not outweigh the others' absolute points.
    """
    return -float(np.mean([np.log((1 - val_accuracy[s] + ERROR_FLOOR) / (1 - probe[s] + ERROR_FLOOR))
                           for s in val_accuracy]))


class TrialLog:
    """``trials.jsonl``: one JSON row per finished trial, appended and flushed as it finishes.

    A row cut short by a kill is ignored on reading (it is rerun).
    """

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict[int, dict[str, Any]]:
        rows = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line
                row.setdefault("score", row["val_accuracy"])  # rows written before joint studies
                rows[row["number"]] = row
        return rows

    def append(self, row: dict[str, Any]) -> None:
        import os

        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def optuna_distributions(space: dict[str, Knob]):
    import optuna.distributions as d

    out = {}
    for name, k in space.items():
        if k.kind == "float":
            out[name] = d.FloatDistribution(k.low, k.high, log=k.log)
        elif k.kind == "int":
            out[name] = d.IntDistribution(int(k.low), int(k.high), log=k.log)
        else:
            out[name] = d.CategoricalDistribution(list(k.choices))
    return out


def ask_batch(history: list[dict[str, Any]], space: dict[str, Knob], batch: int, size: int,
              seed: int, startup: int) -> list[dict[str, Any]]:
    """The parameters of batch number ``batch``: a TPE sampler seeded with ``seed + batch`` that
    has been told ``history`` (finished trials, in trial order)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = optuna_distributions(space)
    sampler = optuna.samplers.TPESampler(seed=seed + batch, n_startup_trials=startup,
                                         multivariate=True, constant_liar=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for row in history:
        study.add_trial(optuna.trial.create_trial(
            params={k: row["values"][k] for k in dists if k in row["values"]},
            distributions={k: v for k, v in dists.items() if k in row["values"]},
            value=row["score"]))
    asked = []
    for _ in range(size):
        trial = study.ask(dists)
        asked.append(dict(trial.params))
    return asked
