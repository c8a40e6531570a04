"""Hyperparameter search for CoLaNET on a validation split carved from the training split.

A study (:func:`run_tune`) runs its trials as dask tasks on worker processes (a LocalCluster of 2
by default, or ``--cluster``/``--scheduler``). One row per finished trial is appended to
``<tune dir>/<name>/trials.jsonl`` as it finishes, and a rerun resumes: finished trials are kept,
the rest are asked again and get the same parameters.

The test split is never read here. A trial trains one online pass on the first
``1 - val_fraction`` of the (seeded, shuffled) train rows and scores the rest with plasticity
frozen; with ``--folds K`` it is scored by K-fold validation on the whole train split instead
(:func:`cross_validate`). The strategy is Optuna's TPE sampler, asked for a batch of trials at a
time; its seed is ``seed + batch number`` and it sees the recorded history in trial order, so a
resumed search asks exactly what an uninterrupted one would have asked.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
from distributed import as_completed
from tqdm import tqdm

from pipeline.cluster import connect
from pipeline.colanet import ColanetConfig
from pipeline.config import ClusterConfig, EmbedConfig, TuneConfig
from pipeline.errors import UserError
from pipeline.lock import exclusive, shared
from pipeline.outputs import check_name, claim_folder
from pipeline.runs import changed_options, readable_name
from pipeline.store import EmbeddingStore, absolute_location, store_name
from pipeline.streaming import check_split, read_rows
from pipeline.training import (check_snn_device, ensure_store, fit_stream, new_model,
                               predict_stream)

if TYPE_CHECKING:
    from pipeline.estimator import ColanetClassifier


@dataclass(frozen=True)
class Knob:
    """One searched parameter: a float/int range (``log`` scale optional) or a set of choices."""

    kind: str  # "float" | "int" | "choice"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple = ()


# The spec's open parameters. gain_scale multiplies the base gain gain_total / D; the rest are
# ColanetConfig fields (sat_percentile and sat_scope: the coder's saturation level).
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
    "coding": Knob("choice", choices=("saturation", "centred", "on_off", "whitened")),
    "whiten_shrinkage": Knob("float", 0.5, 1.0),
    "order": Knob("choice", choices=("store", "balanced")),
    "theta_rise": Knob("float", 0.0, 2.0),
    "theta_fall": Knob("float", 0.0, 2.0),
}


#: The search settings a study records and a resumed one must share (``--trials`` may grow).
STUDY_SETTINGS = ("batch", "val_fraction", "search_seed", "startup", "folds")


def trial_params(base: ColanetConfig, values: dict[str, Any], n_features: int) -> ColanetConfig:
    """The model configuration of one trial: ``base`` with ``values`` applied (``gain_scale``
    times the base gain for the trial's inputs)."""
    fields = {k: v for k, v in values.items() if k != "gain_scale"}
    config = ColanetConfig.from_dict({**base.to_dict(), **fields})
    if "gain_scale" not in values:
        return config
    gain = values["gain_scale"] * base.resolved_gain(config.n_inputs(n_features))
    return ColanetConfig.from_dict({**config.to_dict(), "gain": gain})


def validation_rows(store: EmbeddingStore, val_fraction: float) -> int:
    """First validation row of the train split: rows before it fit, rows after it score."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction {val_fraction} must lie strictly between 0 and 1")
    n = store.split("train")["features"].shape[0]
    first = int(round(n * (1.0 - val_fraction)))
    if not 0 < first < n:
        part = "no validation row" if first >= n else "no row to fit on"
        raise UserError(f"--val-fraction {val_fraction}: leaves {part} of {store.path}'s {n} train "
                        f"rows; pick a fraction that leaves both (e.g. 0.2)")
    return first


def run_trial(store_path: str, config: ColanetConfig, val_fraction: float,
              numba_threads: int | None = None, passes: int = 1, device: str = "cpu",
              folds: int = 1) -> dict[str, Any]:
    """Train on the fit rows (``passes`` times), score the validation rows; a plain function for
    dask workers. ``device``: where the simulator runs (``"cpu"`` or ``"cuda"``, the same score).

    ``folds`` 1: the fit rows are the first ``1 - val_fraction`` of the train split, the rest
    score. ``folds`` K > 1 (:func:`cross_validate`): every train row scores once, by the model
    trained on the other folds; ``val_fraction`` is not used."""
    if numba_threads:
        import numba

        numba.set_num_threads(numba_threads)
    if folds > 1:
        return cross_validate(store_path, config, folds, passes)
    started = time.perf_counter()
    store = EmbeddingStore.open(store_path)
    first_val = validation_rows(store, val_fraction)
    state, progress = new_model(store, config, stop=first_val)
    for _ in fit_stream(store, config, state, progress, stop=first_val, passes=passes,
                        device=device):
        pass
    pred, labels = predict_stream(store, "train", config, state, progress.coding, start=first_val,
                                  device=device)
    total = max(len(pred), 1)
    return {"val_accuracy": int((pred == labels).sum()) / total,
            "no_answer_rate": 1 - int((pred >= 0).sum()) / total,
            "n_fit": first_val, "n_val": len(pred), "sat": float(np.median(progress.coding.sat)),
            "seconds": round(time.perf_counter() - started, 3)}


def fold_bounds(n_rows: int, folds: int) -> np.ndarray:
    """Row bounds of ``folds`` contiguous folds of ``n_rows`` rows: fold k is rows
    ``bounds[k]:bounds[k + 1]`` (sizes differ by one at most)."""
    if not 2 <= folds <= n_rows:
        raise UserError(f"--folds {folds}: must lie between 2 and the train split's {n_rows} "
                        f"rows; use fewer folds")
    return np.linspace(0, n_rows, folds + 1).round().astype(np.int64)


def split_rows(bounds: np.ndarray) -> Iterator[tuple[np.ndarray, slice]]:
    """For each scored block ``bounds[k]:bounds[k + 1]``: the other rows of ``0:bounds[-1]`` (in
    order: the rows a model learns) and the block (the rows it scores)."""
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        yield np.r_[0:lo, hi:int(bounds[-1])], slice(lo, hi)


def scored_bounds(store: EmbeddingStore, val_fraction: float, folds: int = 1) -> np.ndarray:
    """The train rows that score, as :func:`split_rows` bounds: the ``val_fraction`` tail, or with
    ``folds`` > 1 every row, in ``folds`` folds (:func:`fold_bounds`)."""
    n = store.split("train")["features"].shape[0]
    if folds > 1:
        return fold_bounds(n, folds)
    return np.array([validation_rows(store, val_fraction), n])


def fold_answers(x: np.ndarray, y: np.ndarray, params: dict[str, Any], bounds: np.ndarray
                 ) -> Iterator[tuple[ColanetClassifier, slice, np.ndarray, np.ndarray]]:
    """For each scored block of :func:`split_rows`: the estimator with ``params`` trained on the
    other rows, the block, which of its rows got a vote and which it answers right (bool arrays;
    no vote at all is an error, as the engine counts it)."""
    from pipeline.estimator import ColanetClassifier

    for fit, scored in split_rows(bounds):
        model = ColanetClassifier(**params).fit(x[fit], y[fit])
        votes = model.votes(x[scored]).sum(axis=1)
        voted = votes.sum(axis=1) > 0
        yield model, scored, voted, (model.classes_[votes.argmax(axis=1)] == y[scored]) & voted


def cross_validate(store_path: str, config: ColanetConfig, folds: int, passes: int = 1
                   ) -> dict[str, Any]:
    """K-fold validation on the train split (the test split is never read): for each fold, a
    model with ``config`` learns the other rows online in store order (``passes`` times) and
    scores the fold. Every train row is scored once, so the estimate rests on the whole split
    rather than on its tail: with 20 % tails, one sample is 0.2-0.4 points on the development
    stores and the tail's verdict on caltech51 was the opposite of the test split's
    (docs/accuracy.md, "Cross-validation"). The rows are read into memory; the model is
    :class:`pipeline.estimator.ColanetClassifier`, which learns as ``train-snn`` does."""
    started = time.perf_counter()
    x, y = read_rows(EmbeddingStore.open(store_path), "train")
    bounds = fold_bounds(len(y), folds)
    scores = fold_accuracy(x, y, {**config.to_dict(), "passes": passes}, bounds)
    return {**scores, "n_fit": int(len(y) - np.diff(bounds).max()), "n_val": len(y),
            "folds": folds, "seconds": round(time.perf_counter() - started, 3)}


def fold_accuracy(x: np.ndarray, y: np.ndarray, params: dict[str, Any], bounds: np.ndarray
                  ) -> dict[str, float]:
    """``val_accuracy`` and ``no_answer_rate`` of the estimator with ``params`` over the scored
    blocks of ``bounds``, each learned from the other rows (:func:`fold_answers`)."""
    right = answered = 0
    for _, _, voted, correct in fold_answers(x, y, params, bounds):
        answered += int(voted.sum())
        right += int(correct.sum())
    n_scored = int(bounds[-1] - bounds[0])
    return {"val_accuracy": right / n_scored, "no_answer_rate": 1 - answered / n_scored}


def baseline_validation(store_path: str, val_fraction: float, folds: int = 1
                        ) -> dict[str, float]:
    """Linear probe and nearest class mean fitted on the fit rows, scored on the validation rows
    (with ``folds`` > 1, on every fold as :func:`cross_validate` scores it)."""
    store = EmbeddingStore.open(store_path)
    x, y = read_rows(store, "train")
    return baseline_accuracy(x, y, scored_bounds(store, val_fraction, folds))


def baseline_accuracy(x: np.ndarray, y: np.ndarray, bounds: np.ndarray) -> dict[str, float]:
    """Accuracy of the linear probe (``probe``) and nearest class mean (``ncm``) over the scored
    blocks of ``bounds``, each fitted on the other rows."""
    from pipeline.baselines import linear_probe, nearest_class_mean

    right = {"probe": 0, "ncm": 0}
    for fit, scored in split_rows(bounds):
        for name, head in (("probe", linear_probe), ("ncm", nearest_class_mean)):
            right[name] += int((head(x[fit], y[fit], x[scored]) == y[scored]).sum())
    n_scored = int(bounds[-1] - bounds[0])
    return {name: count / n_scored for name, count in right.items()}


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
                if not _is_row(row) or type(row["number"]) is not int:
                    continue  # damaged by hand: the trial is run again, as a torn one is
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


# --- a study ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class StudyResult:
    """A study's outcome: every finished trial row, best first, and the row of the base
    parameters (the CoLaNET options given: the defaults unless changed), scored like a trial on
    the same split but never part of the search (``base.json`` in the study folder)."""

    rows: list[dict[str, Any]]
    base: dict[str, Any]
    study_dir: Path


def run_tune(embed_cfg: EmbedConfig, cfg: TuneConfig, base: ColanetConfig,
             cluster: ClusterConfig = ClusterConfig(), *, data_given: bool = True
             ) -> StudyResult:
    """Run (or resume) the study; returns its trials, best first, and the base row.

    With one store a trial's score is its validation accuracy. With ``cfg.stores`` (a joint
    study) every trial runs on every store and scores :func:`pipeline.tuning.joint_score`.
    """
    if cfg.name is not None:
        check_name(cfg.name, "--name")
    check_snn_device(cfg.snn_device)
    if cfg.stores is not None and embed_cfg.out:
        raise UserError(f"--stores {cfg.stores} and --out {embed_cfg.out}: --stores names every "
                        f"store of the study and --out names one; give one of them")
    paths = ([ensure_store(embed_cfg, cluster, data_given=data_given)] if cfg.stores is None
             else [p.strip() for p in cfg.stores.split(",") if p.strip()])
    if not paths:
        raise UserError(f"--stores {cfg.stores!r} names no store")
    resolved = [_store_key(p) for p in paths]
    twice = next((p for p, r in zip(paths, resolved) if resolved.count(r) > 1), None)
    if twice is not None:
        raise UserError(f"--stores {cfg.stores}: names the store {twice} twice; name each store "
                        f"once")
    with ExitStack() as readers:
        for p in paths:
            readers.enter_context(shared(p))  # no store may be replaced while trials read it
        stores = [EmbeddingStore.open(p) for p in paths]
        for s in stores:
            check_split(s, "train", needs_positive=True)
            # more --folds than train rows: refused before the study folder is made
            scored_bounds(s, cfg.val_fraction, cfg.folds)
        return _run_locked(cfg, base, cluster, stores)


def _run_locked(cfg: TuneConfig, base: ColanetConfig, cluster: ClusterConfig,
                stores: list[EmbeddingStore]) -> StudyResult:
    dims = {s.attrs["encoder"]["feature_dim"] for s in stores}
    name = cfg.name or study_name(cfg, base, [s.path for s in stores])
    study_dir = Path(cfg.tune_dir) / name
    study = {"stores": [s.path for s in stores], "identity": [s.attrs["identity"] for s in stores],
             "space": {k: asdict(v) for k, v in SEARCH_SPACE.items()}, "base": base.to_dict(),
             **{k: getattr(cfg, k) for k in STUDY_SETTINGS
                if k != "folds" or cfg.folds > 1}}  # a study from before --folds compares equal
    study = json.loads(json.dumps(study))
    study_file = study_dir / "study.json"
    claim_folder(study_dir, "study")
    with exclusive(study_dir):
        if study_file.exists():
            try:
                old = json.loads(study_file.read_text())
                if not isinstance(old, dict):
                    raise ValueError("not a JSON object")
            except ValueError:
                raise UserError(f"{study_file}: damaged (not readable JSON, or not a study's "
                                f"record); start the study afresh under another --name") from None
            if _settings(old) != _settings(study):
                raise UserError(f"{study_file}: this study was started with other settings "
                                f"(stores, space, base parameters, batch, val fraction, search "
                                f"seed, startup or folds); use --name NEW")
            probe = old.get("probe")
            if isinstance(probe, dict):  # keyed by the stores as they were spelt then
                probe = {now: probe.get(was) for was, now in zip(old["stores"], study["stores"])}
            study["probe"] = probe
        with connect(cluster, default_local=2, stores=tuple(s.path for s in stores)) as client:
            return _run_study(cfg, base, stores, dims, study_dir, study, study_file, client)


def study_name(cfg: TuneConfig, base: ColanetConfig, stores: list[str]) -> str:
    """The default study folder name: the store's name (``joint-A-B`` for several), then each
    base CoLaNET option and search setting that a resumed study must share (batch, val fraction,
    search seed, startup, folds) that differs from its default
    (:func:`pipeline.runs.readable_name`)."""
    prefix = ("joint-" + "-".join(store_name(p) for p in stores) if len(stores) > 1
              else store_name(stores[0]))
    search = {k: v for k, v in changed_options(cfg).items() if k in STUDY_SETTINGS}
    return readable_name(prefix, {**changed_options(base), **search})


def _run_study(cfg: TuneConfig, base: ColanetConfig, stores: list[EmbeddingStore], dims: set[int],
               study_dir: Path, study: dict[str, Any], study_file: Path,
               client) -> StudyResult:
    log = TrialLog(study_dir / "trials.jsonl")
    done = log.read()
    joint = len(stores) > 1
    if joint and not study.get("probe"):
        found = client.gather([client.submit(baseline_validation, absolute_location(s.path),
                                             cfg.val_fraction, cfg.folds) for s in stores])
        study["probe"] = {s.path: b["probe"] for s, b in zip(stores, found)}
    study_file.write_text(json.dumps(study, indent=2))
    base_file = study_dir / "base.json"
    base_row = _read_base(base_file)
    base_futures = {} if base_row is not None else {  # run beside the trials, once per study
        client.submit(run_trial, absolute_location(s.path), base, cfg.val_fraction,
                      cfg.numba_threads, folds=cfg.folds, pure=False): s.path for s in stores}
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
                    config = trial_params(base, values, s.attrs["encoder"]["feature_dim"])
                    futures[client.submit(run_trial, absolute_location(s.path), config,
                                          cfg.val_fraction, cfg.numba_threads, 1,
                                          cfg.snn_device, cfg.folds,
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
    if base_row is None:
        results = {path: future.result() for future, path in base_futures.items()}
        base_row = _trial_row("base", None, base_values(base), results, study.get("probe"))
        base_file.write_text(json.dumps(base_row, indent=2))
    rows = sorted(done.values(), key=lambda r: (-r["score"], r["number"]))
    if len(dims) == 1:
        best = trial_params(base, rows[0]["values"], dims.pop())
        (study_dir / "best.json").write_text(json.dumps(
            {"trial": rows[0]["number"], "score": rows[0]["score"],
             "val_accuracy": rows[0]["val_accuracy"], "colanet": best.to_dict(),
             "train_snn_args": train_snn_args(best)}, indent=2))
    return StudyResult(rows, base_row, study_dir)


def base_values(base: ColanetConfig) -> dict[str, Any]:
    """The searched parameters' values of the base configuration (``gain_scale`` 1: its gain)."""
    return {k: 1.0 if k == "gain_scale" else getattr(base, k) for k in SEARCH_SPACE}


def _read_base(path: Path) -> dict[str, Any] | None:
    """The base row a study recorded; None when there is none yet (or it was cut short by a
    kill: it is scored again, with the same result)."""
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not _is_row(row):
        return None  # damaged by hand: scored again
    row.setdefault("score", row["val_accuracy"])
    return row


def _settings(study: dict[str, Any]) -> dict[str, Any]:
    """What must match for a study to be continued: its record without the probe scores, each
    store as the one store it names (``d.zarr``, ``./d.zarr/`` and its absolute path alike, as
    their lock is one)."""
    out = {k: v for k, v in study.items() if k != "probe"}
    stores = out.get("stores")
    if isinstance(stores, list) and all(isinstance(p, str) for p in stores):
        out["stores"] = [_store_key(p) for p in stores]
    return out


def _store_key(path: str) -> str:
    """The store a path names, whatever its spelling (``d.zarr``, ``./d.zarr/``, absolute)."""
    return absolute_location(path).rstrip("/")


def _is_row(row: Any) -> bool:
    """Whether a recorded trial (or base) row has what a study reads and prints of it."""
    return (isinstance(row, dict) and isinstance(row.get("number"), (int, str))
            and isinstance(row.get("values"), dict)
            and all(isinstance(row.get(k), (int, float))
                    for k in ("val_accuracy", "no_answer_rate", "seconds")))


def _trial_row(number: int | str, batch: int | None, values: dict[str, Any],
               results: dict[str, dict], probe: dict[str, float] | None) -> dict[str, Any]:
    """One trials.jsonl row (``number`` "base", ``batch`` None: the base row): a single store's
    result, or per-store results and the joint score."""
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


def train_snn_args(config: ColanetConfig) -> str:
    """The train-snn options that reproduce ``config`` (those off the defaults)."""
    default = ColanetConfig().to_dict()
    parts = []
    for k, v in config.to_dict().items():
        if v != default[k]:
            flag = "--" + k.replace("_", "-")
            parts.append(flag if v is True else f"{flag} {v:.6g}" if isinstance(v, float) else f"{flag} {v}")
    return " ".join(parts)
