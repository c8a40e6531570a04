"""`annsnn tune`: the study's table (the engine is :mod:`pipeline.tuning`)."""

from __future__ import annotations

from typing import Any

from pipeline.colanet import ColanetConfig
from pipeline.config import ClusterConfig, EmbedConfig, TuneConfig
from pipeline.runs import option_text
from pipeline.tables import format_table
from pipeline.tuning import SEARCH_SPACE, StudyResult, run_tune


def main(args, config, data_given: bool) -> None:
    print_rows(run_tune(config(EmbedConfig), config(TuneConfig), config(ColanetConfig),
                        config(ClusterConfig), data_given=data_given))


def print_rows(study: StudyResult, top: int = 5) -> None:
    """The base parameters as row 0, then the ``top`` best trials, one aligned table."""
    rows = study.rows
    print(f"\n{len(rows)} trials in {study.study_dir}; the base parameters (the CoLaNET options "
          f"given: the defaults unless changed) and the best {min(top, len(rows))} by score "
          f"(validation accuracy, or the joint score of several stores):")
    for line in format_table(*tune_table(study.base, rows[:top]), left=0):
        print(line)


def tune_table(base: dict[str, Any], rows: list[dict[str, Any]]
               ) -> tuple[list[str], list[list[str]]]:
    """Header and rows: the base row first, then ``rows``; each searched parameter a column."""
    keys = list(SEARCH_SPACE)
    value = lambda v: f"{v:.4g}" if isinstance(v, float) else option_text(v)  # noqa: E731
    header = ["#", "score", "val acc", "no ans", "s", *keys]
    return header, [[str(r["number"]), f"{r['score']:.4f}", f"{r['val_accuracy']:.4f}",
                     f"{r['no_answer_rate']:.3f}", f"{r['seconds']:.1f}",
                     *(value(r["values"].get(k)) for k in keys)] for r in [base, *rows]]
