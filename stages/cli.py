"""The command line: `annsnn embed|inspect|import|train-snn|tune|report|compare|export|predict ...`.

Also `python -m stages ...`. Options and their help are generated from the typed configs (each
field's ``Annotated`` text), so a config field and its flag never drift apart; a value a config
refuses is a one-line error.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.metadata
import os
import re
import sys
import typing

from pipeline.colanet import ColanetConfig
from pipeline.config import (STORE_FIELDS, ClusterConfig, EmbedConfig, ExportConfig, ImportConfig,
                             InspectConfig, PredictConfig, ReportConfig, TrainConfig, TuneConfig)
from pipeline.errors import UserError


def add_config_options(parser, config_type: type, omit: frozenset = frozenset()) -> None:
    """One option per field of ``config_type`` but those in ``omit`` (they keep their defaults)."""
    hints = typing.get_type_hints(config_type, include_extras=True)
    for f in (f for f in dataclasses.fields(config_type) if f.name not in omit):
        flag, hint = "--" + f.name.replace("_", "-"), hints[f.name]
        kind, text = (hint.__origin__, hint.__metadata__[0]) if hasattr(hint, "__metadata__") else (hint, "")
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=text + " (default: off)")
            continue
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        if f.default is dataclasses.MISSING:  # a field without a default is a required option
            parser.add_argument(flag, type=base, required=True, help=text + " (required)")
            continue
        # The default is shown once: the field's own words where its text says it (a None
        # default means something: "the model's own", "every image"), else its value.
        shown = "" if "default:" in text else f" (default: {f.default})"
        parser.add_argument(flag, type=base, default=f.default, help=text + shown)


def config_from_args(args: argparse.Namespace, config_type: type):
    """The typed config of the parsed options; a value it refuses becomes a one-line error, before
    anything runs."""
    try:
        return config_type(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_type)
                              if hasattr(args, f.name)})  # an option not offered: its default
    except ValueError as e:  # "ColanetConfig.tau=nan: why" is said as the option: "--tau nan: why"
        raise UserError(re.sub(r"^\w+\.(\w+)=('?)(.*?)\2: ",
                               lambda m: f"--{m[1].replace('_', '-')} {m[3]}: ", str(e))) from None


def _version() -> str:
    try:
        return importlib.metadata.version("annsnn")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="annsnn", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"annsnn {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str, *groups: tuple):  # (title, config type[, fields left out])
        p = sub.add_parser(name, help=text, allow_abbrev=False)  # --run is not --runs-dir
        for title, config_type, *omit in groups:
            add_config_options(p.add_argument_group(title) if title else p, config_type,
                               frozenset(*omit))
        return p

    command("embed", "stage one: cache encoder embeddings in a Zarr store", (None, EmbedConfig),
            ("cluster (default: this process)", ClusterConfig))
    command("inspect", "print what a store holds", (None, InspectConfig),
            ("the store embed writes", EmbedConfig,
             {f.name for f in dataclasses.fields(EmbedConfig)} - STORE_FIELDS))
    snn = command("train-snn", "stage two: train and evaluate CoLaNET on a store", (None, EmbedConfig),
                  ("run", TrainConfig), ("cluster for embedding and evaluation", ClusterConfig),
                  ("CoLaNET (see docs/accuracy.md and the spec)", ColanetConfig))
    tune = command("tune", "search CoLaNET parameters on a validation split", (None, EmbedConfig),
                   ("search", TuneConfig), ("cluster running the trials (default: local:2)",
                                            ClusterConfig), ("CoLaNET base parameters", ColanetConfig))
    for p in (snn, tune):
        p.set_defaults(data=None)  # None: not given (a missing --out store is then an error)
    report = command("report", "CoLaNET, linear probe and NCM on several stores, one table",
                     ("run", TrainConfig, {"run", "skip_baselines", "init_from"}),
                     ("CoLaNET", ColanetConfig), ("table", ReportConfig))
    report.add_argument("stores", nargs="+", help="store paths")
    imp = command("import", "make a store from an .npz of embeddings made elsewhere",
                  (None, ImportConfig))
    imp.add_argument("npz", help="file with X_<split>, y_<split> (train/val/test) and classes")
    command("export", "write a finished run's model to one file (ColanetClassifier.load reads it)",
            (None, ExportConfig))
    predict = command("predict", "answer images (or a store's features) with a trained model, "
                                 "as CSV", (None, PredictConfig))
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image files, folders (their images at any depth), "
                              "imagefolder:PATH, csv:PATH, or a store (its features, no encoder)")
    compare = command("compare", "finished runs side by side: the options that differ and "
                                 "their accuracy")
    compare.add_argument("runs", nargs="+", metavar="RUN",
                         help="run folders (data/runs/NAME: what train-snn printed)")
    return parser


#: Each command's entry point in stages/: ``(module, function)``, called with the parsed options,
#: a ``config(type)`` that builds a typed config from them, and whether --data was given.
ENTRY_POINTS = {"embed": ("embed", "main"), "inspect": ("inspect", "main"),
                "import": ("inspect", "main_import"), "train-snn": ("train_snn", "main"),
                "tune": ("tune", "main"), "report": ("report", "main"), "export": ("export", "main"),
                "predict": ("predict", "main"), "compare": ("compare", "main")}


def run(args: argparse.Namespace, data_given: bool) -> None:
    """Call the command's entry point (it calls one engine and prints the result)."""
    module, function = ENTRY_POINTS[args.command]
    entry = getattr(importlib.import_module(f"stages.{module}"), function)
    entry(args, lambda config_type: config_from_args(args, config_type), data_given)


def expand_home(value):
    """A leading ``~`` of a path option (also after ``imagefolder:``/``csv:``) as the shell would
    have expanded it: it does not in ``--out=~/x``, in ``ARGS="--out ~/x"`` or in a script."""
    if isinstance(value, list):
        return [expand_home(v) for v in value]
    if not isinstance(value, str):
        return value
    kind, sep, rest = value.partition(":")
    if sep and kind in ("imagefolder", "csv") and rest.startswith("~"):
        return f"{kind}:{os.path.expanduser(rest)}"
    return os.path.expanduser(value) if value.startswith("~") else value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, value in vars(args).items():
        setattr(args, name, expand_home(value))
    data_given = getattr(args, "data", None) is not None
    if hasattr(args, "data") and args.data is None:
        args.data = EmbedConfig.data
    try:
        run(args, data_given)
    except UserError as e:
        print(f"annsnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine refused (disk full, permissions): name the file and reason
        # No file named (a network store's host not found): name the output this run uses.
        out = getattr(args, "out", None)
        where = f"{e.filename}: " if e.filename else (f"--out {out}: " if out else "")
        print(f"annsnn {args.command}: error: {where}{e.strerror or e}; fix that and rerun "
              f"(finished work is kept)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"annsnn {args.command}: interrupted; finished work is kept, rerun to continue",
              file=sys.stderr)
        return 130
    return 0
