"""Keep learning from a trained model, and add classes (``annsnn train-snn --init-from SOURCE``).

A run started with ``--init-from`` takes the model of a finished run (its folder, or a model file
``annsnn export`` wrote) and continues learning online on another store made with the **same
encoder** (model name, weights hash and feature width; anything else is refused), in a run folder
of its own (the source is only read, once, when the run starts):

* **Classes.** A class name the model knows keeps its column (its synapses and neuron state, bit
  for bit); a class name it does not know gets a new column after the known ones, fresh
  (:func:`pipeline.colanet.grow_classes`). The model's classes are the source's, in its order,
  then the store's new ones, in the store's order; the store's labels are mapped onto these
  columns (:func:`pipeline.training.label_columns`) for learning and evaluation, and the
  checkpoint, ``config.json``, ``metrics.json`` and an exported model name the columns by class.
  A known class the store lacks keeps its column untouched by teaching (no sample of it is shown;
  its neurons still take part in every sample, like any other column); the evaluation is over the
  store's eval split (its classes), and such a class is listed with no eval samples -- an answer
  naming it counts as an error.
* **The model is the source's.** The input coding (saturation levels, centre) is kept as it was
  measured on the source's data, so the inputs mean the same; the model configuration
  (:class:`pipeline.colanet.ColanetConfig`) must equal the source's -- a run asking for any other
  value is refused, naming each setting and the options to pass.
* **Sample ids** (the key of the simulator's noise) start above every id the source used
  (``next_sample_id`` of the source: :func:`pipeline.training.ids_used`, plus its own start if it
  was itself continued): row ``i`` of the new store's train split is presented with id
  ``first_id + split offset + i`` (+ the usual stride of later presentations), so no id repeats
  one of the source's.
* **Resume.** The run's checkpoint holds the whole grown state, its class list, its first id and
  the source's record: a killed run resumes from it like any run and never reads the source again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.colanet import ColanetConfig, ColanetState, grow_classes
from pipeline.errors import UserError
from pipeline.model_file import Model, read_model, run_model
from pipeline.store import EmbeddingStore
from pipeline.training import Progress, checkpoint_identity

#: What the source and the store must share: the features must come from the same encoder.
SAME_ENCODER = ("encoder", "weights_sha256", "feature_dim")


def source_model(source: str | Path) -> Model:
    """The model ``--init-from`` names: a finished run folder (:func:`run_model`) or a model file
    written by ``annsnn export`` (:func:`read_model`); refusals name it."""
    path = Path(source)
    if path.is_dir():
        return run_model(path)
    if path.is_file():
        return read_model(path)
    raise UserError(f"--init-from {source}: no run folder or model file there; pass the folder "
                    f"train-snn printed (data/runs/NAME) or a file `annsnn export` wrote")


def check_run_folder(source: str | Path, run_dir: str | Path) -> None:
    """Refuse a run folder that is the source itself: a continued model gets a folder of its own."""
    if Path(run_dir).resolve() == Path(source).resolve():
        raise UserError(f"--init-from {source}: the new run would write into its source; give it "
                        f"a folder of its own with --run NAME")


def same_source(record: dict[str, Any] | None, source: str | Path) -> bool:
    """Whether a run's record of its source (``Progress.source``) names ``source``."""
    return record is not None and record.get("run") == str(Path(source).resolve())


def start_from(source: str | Path, store: EmbeddingStore, config: ColanetConfig,
               run_dir: str | Path) -> tuple[ColanetState, Progress]:
    """The state and progress a run in ``run_dir`` on ``store`` starts from: the model of
    ``source`` grown to the store's new classes, with the source's coding, and sample ids after
    the source's (see the module docstring). Refused before anything is written: ``run_dir`` is
    the source, the source is not a finished model, was trained on another encoder's features or
    with another configuration than ``config``."""
    where = f"--init-from {source}"
    check_run_folder(source, run_dir)
    model = source_model(source)
    identity, want = model.source.get("identity") or {}, checkpoint_identity(store)
    if not identity:
        raise UserError(f"{where}: the model file has no record of the encoder it was trained on "
                        f"(a classifier saved from Python); continue a run folder or a file "
                        f"`annsnn export` wrote, or train a new model without --init-from")
    differ = [k for k in SAME_ENCODER if identity.get(k) != want[k]]
    if differ:
        raise UserError(f"{where}: trained on features of another encoder than the store "
                        f"{store.path} (" + "; ".join(f"{k} {identity.get(k)!r} there, "
                                                     f"{want[k]!r} here" for k in differ)
                        + f"); embed the new data with the source's encoder "
                          f"({identity.get('encoder')}, the same weights), or train a new model "
                          f"without --init-from")
    if model.config != config:
        src, now = model.config.to_dict(), config.to_dict()
        differ = sorted(k for k in src if src[k] != now[k])
        raise UserError(f"{where}: its model was trained with "
                        f"{', '.join(f'{k}={src[k]!r}' for k in differ)}; this run asks for "
                        f"{', '.join(f'{k}={now[k]!r}' for k in differ)}; a continued model keeps "
                        f"its configuration: pass {' '.join(_option(k, src[k]) for k in differ)} "
                        f"(the source's config.json, 'colanet'), or train a new model without "
                        f"--init-from")
    known = [str(c) for c in model.classes]
    classes = known + [c for c in store.class_names if c not in set(known)]
    progress = Progress.fresh(model.coding)
    progress.classes, progress.first_id = tuple(classes), model.next_sample_id
    progress.source = {"run": str(Path(source).resolve()), "store": model.source.get("store"),
                       "classes": len(known), "next_sample_id": model.next_sample_id,
                       "eval_split": model.source.get("eval_split"),
                       "snn_accuracy": model.source.get("snn_accuracy")}
    return grow_classes(config, model.state, len(classes)), progress


def _option(name: str, value: Any) -> str:
    """The command-line spelling of ``name=value`` (``without --gain`` for a None, a flag for a
    bool)."""
    flag = "--" + name.replace("_", "-")
    if value is None or value is False:
        return f"(without {flag})"
    return flag if value is True else f"{flag} {value}"
