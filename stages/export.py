"""`annsnn export`: a finished run's model as one file (the engine is :mod:`pipeline.model_file`)."""

from __future__ import annotations

from pipeline.config import ExportConfig
from pipeline.model_file import export_run


def main(args, config, data_given: bool) -> None:
    cfg = config(ExportConfig)
    s = export_run(cfg.run, cfg.out, overwrite=cfg.overwrite)
    print(f"{s['out']}: the model of {s['run']} ({s['classes']} classes, {s['n_features']} "
          f"features; {s['eval_split']} accuracy {s['snn_accuracy']:.2%}); load it with "
          f"pipeline.ColanetClassifier.load")
