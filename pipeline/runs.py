"""Run folders a user can tell apart and compare: readable default names, finding a finished run
of a configuration, and the comparison table of several runs (``annsnn compare``).

A default name is the store's name followed by each option that differs from its default, in the
config's field order: ``digits-tf_efficientnet_lite0`` for the defaults,
``digits-tf_efficientnet_lite0-m12-e5`` or ``...-coding=saturation`` otherwise (numbers follow
the name, choices after ``=``, a switch that is on is its name).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pipeline.colanet import ColanetConfig, recorded_settings
from pipeline.errors import UserError, short_reason
from pipeline.lock import lock_path, shared
from pipeline.outputs import marked_kind
from pipeline.store import absolute_location, store_name

MAX_NAME = 120  # characters of a default name; longer: the first options and a hash of them all


def changed_options(config: Any, default: Any | None = None) -> dict[str, Any]:
    """The fields of a config dataclass whose value differs from ``default`` (its type's defaults
    when not given), in field order."""
    default = type(config)() if default is None else default
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(default, f.name)}


def option_text(value: Any) -> str:
    """A value as a name shows it: ``12``, ``0.5``, ``0.0007989`` (the shortest text that reads
    back as the same number), ``none``."""
    if value is None:
        return "none"
    if isinstance(value, float):
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    return str(value)


def readable_name(prefix: str, changed: dict[str, Any]) -> str:
    """``prefix`` and one part per changed option (see the module docstring); past
    :data:`MAX_NAME` characters, the parts that fit, how many more and a hash of all of them."""
    parts = [name if value is True else f"{name}=false" if value is False
             else f"{name}={value}" if isinstance(value, str) else f"{name}{option_text(value)}"
             for name, value in changed.items()]
    name = "-".join([prefix, *parts])
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
    kept = [prefix]
    for part in parts:
        if len("-".join([*kept, part])) + len(f"-and-{len(parts)}-more-{digest}") > MAX_NAME:
            break
        kept.append(part)
    return "-".join([*kept, f"and-{len(parts) - len(kept) + 1}-more-{digest}"])


def run_name(store: str | Path, config: ColanetConfig) -> str:
    """The default run folder name of ``config`` trained on ``store``."""
    return readable_name(store_name(store), changed_options(config))


def find_finished_run(runs_dir: str | Path, store: str | Path, config: ColanetConfig, *,
                      passes: int, eval_split: str | None) -> str | None:
    """The name of a finished run folder under ``runs_dir`` (``metrics.json`` written) that
    trained ``config`` on ``store`` from scratch with ``passes`` and ``eval_split``, with the
    baselines (a run recorded before an option existed counts with the value it ran with:
    :func:`recorded_settings`): the default-named one first, else the first by name; None when
    there is none."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return None
    wanted = absolute_location(store)
    default = run_name(store, config)
    for folder in sorted(runs_dir.iterdir(), key=lambda p: (p.name != default, p.name)):
        if marked_kind(folder) != "run" or not (folder / "metrics.json").is_file():
            continue
        try:
            recorded = json.loads((folder / "config.json").read_text())
            run = recorded["run"]
            same = (absolute_location(recorded["store"]) == wanted
                    and recorded_settings(recorded["colanet"]) == config.to_dict()
                    and recorded.get("init_from") is None and run.get("passes", 1) == passes
                    and run.get("eval_split") == eval_split and not run.get("skip_baselines"))
        except (OSError, KeyError, TypeError, ValueError, AttributeError):
            continue  # unreadable: not a run to reuse (train-snn names the problem there)
        if same:
            return folder.name
    return None


# --- annsnn compare -------------------------------------------------------------------------------

def without_lock_files(paths: list[str]) -> list[str]:
    """``paths`` less the lock files of the folders among them (``data/runs/*`` names each run
    folder's lock file beside it)."""
    locks = {lock_path(p) for p in paths if Path(p).is_dir()}
    return [p for p in paths if Path(os.path.realpath(p)) not in locks]


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """A finished run folder's ``config.json`` and ``metrics.json`` (read under its shared lock:
    a run in training is refused); anything else is refused naming the folder."""
    path = Path(run_dir)
    hint = "pass run folders (data/runs/NAME: what train-snn printed)"
    if not path.is_dir():
        what = "a file, not a folder" if path.exists() else "no such folder"
        raise UserError(f"{run_dir}: {what}; {hint}")
    if marked_kind(path) != "run":
        raise UserError(f"{run_dir}: not a run folder of annsnn; {hint}")
    with shared(path):
        if not (path / "metrics.json").is_file():
            raise UserError(f"{run_dir}: not a finished run (no metrics.json: its training did "
                            f"not finish); finish it with `annsnn train-snn` with the run's "
                            f"options (it resumes), then compare")
        try:
            config = json.loads((path / "config.json").read_text())
            metrics = json.loads((path / "metrics.json").read_text())
            colanet = recorded_settings(config["colanet"])  # older runs: what they ran with
            run = config["run"]
            for value in (metrics["snn_accuracy"], metrics["no_answer_rate"],
                          metrics["seconds"]["train"]):
                float(value)  # the table's figures are there and numbers
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{run_dir}: config.json or metrics.json is unreadable "
                            f"({short_reason(e)}); train-snn with the run's options and "
                            f"--restart writes them afresh") from None
    return {"run": str(run_dir).rstrip("/") or str(run_dir), "store": config.get("store", ""),
            "options": {**colanet, "passes": run.get("passes", 1)}, "metrics": metrics}


def comparison(runs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the comparison of :func:`read_run` records: run, store, each option
    whose value differs between the runs (CoLaNET's and ``passes``), SNN accuracy, linear probe,
    nearest class mean, no-answer rate, training seconds ("-": not measured)."""
    keys = list(dict.fromkeys(k for r in runs for k in r["options"]))
    differing = [k for k in keys if len({json.dumps(r["options"].get(k)) for r in runs}) > 1]
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    header = ["run", "store", *differing, "SNN", "probe", "NCM", "no answer", "train s"]
    rows = []
    for r in runs:
        m = r["metrics"]
        rows.append([r["run"], store_name(r["store"]) if r["store"] else "-",
                     *(option_text(r["options"].get(k)) for k in differing),
                     pct(m["snn_accuracy"]), pct(m.get("probe_accuracy")),
                     pct(m.get("ncm_accuracy")), pct(m["no_answer_rate"]),
                     f"{m['seconds']['train']:.1f}"])
    return header, rows
