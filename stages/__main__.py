"""`python -m stages ...`: the `annsnn` command, with a one-line answer for a Python that lacks
what annsnn needs (e.g. the system python3 instead of .venv/bin/python)."""

from __future__ import annotations  # this file must run on an old Python to say so

import importlib.util
import sys

# What every subcommand imports before it can say anything (torch and timm load only to embed).
_NEEDED = ("numpy", "numba", "zarr", "dask", "sklearn", "matplotlib", "tqdm")


def _missing() -> str | None:
    if sys.version_info < (3, 10):
        return f"is Python {sys.version.split()[0]}, and annsnn needs 3.10 or later"
    absent = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
    return f"lacks {', '.join(absent)}" if absent else None


if __name__ == "__main__":
    lacking = _missing()
    if lacking:
        print(f"annsnn: this Python ({sys.executable}) {lacking}: run `make install`, then "
              f"`.venv/bin/python -m stages ...` (or `make embed`, `make train-snn`, ...)",
              file=sys.stderr)
        sys.exit(2)
    from stages.cli import main

    sys.exit(main())
