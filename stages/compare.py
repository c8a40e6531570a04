"""`annsnn compare`: finished runs side by side (the engine is :mod:`pipeline.runs`)."""

from __future__ import annotations

from pipeline.runs import comparison, read_run, without_lock_files
from pipeline.tables import format_table


def main(args, config, data_given: bool) -> None:
    runs = [read_run(r) for r in without_lock_files(args.runs)]
    print("\n".join(format_table(*comparison(runs), left=2)))
