"""`annsnn predict`: a trained model's answers as CSV (the engine is :mod:`pipeline.predict`)."""

from __future__ import annotations

import sys

from pipeline.config import PredictConfig
from pipeline.predict import predict


def main(args, config, data_given: bool) -> None:
    s = predict(config(PredictConfig), args.inputs)
    where = f"; CSV: {s['out']}" if s["out"] else ""
    print(f"predicted {s['images']} images ({s['failures']} failed, {s['no_answer']} with no "
          f"answer) in {s['seconds']:.1f} s: start-up {s['startup_seconds']:.2f} s (model, "
          f"encoder, kernels), {s['seconds_per_image']:.3f} s per image{where}", file=sys.stderr)
