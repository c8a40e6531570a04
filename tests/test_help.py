"""Every option of every command explains itself in one line with its default shown once; the
README's Python examples import what exists."""

from __future__ import annotations

import argparse
import ast
import importlib
import re
from pathlib import Path

import pytest

from stages.cli import ENTRY_POINTS, build_parser


def _commands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_command_has_an_entry_point():
    assert set(_commands()) == set(ENTRY_POINTS)


@pytest.mark.parametrize("command", sorted(ENTRY_POINTS))
def test_every_option_has_one_line_of_help_and_its_default_once(command):
    parser = _commands()[command]
    options = [a for a in parser._actions
               if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert options or command == "compare"
    for action in options:
        name, text = action.option_strings[0], action.help or ""
        assert text.strip() and "\n" not in text, f"{command} {name}: no one-line help"
        mentions = len(re.findall("default", text, re.IGNORECASE))
        if action.required:
            assert mentions == 0 and text.endswith("(required)"), f"{command} {name}: {text!r}"
        else:
            assert mentions == 1 and "default:" in text, f"{command} {name}: {text!r}"
    # and as printed: the rendered help mentions a default once per optional option
    rendered = parser.format_help()
    optional = [a for a in options if not a.required]
    assert len(re.findall("default", rendered, re.IGNORECASE)) == len(optional) + sum(
        len(re.findall("default", g.title or "", re.IGNORECASE)) for g in parser._action_groups)
    for action in parser._actions:  # positional arguments say what they take, too
        assert (action.help or "").strip(), f"{command} {action.dest}: no help"


def test_inspect_offers_only_the_options_that_find_a_store():
    options = {s for a in _commands()["inspect"]._actions for s in a.option_strings}
    assert options == {"-h", "--help", "--store", "--data", "--model", "--out", "--embeddings-dir"}


def test_every_import_in_the_readmes_python_examples_resolves():
    """A README example whose import names a function that was renamed fails for every reader
    (the cluster example imported the removed stages.embed.run_embed); the examples themselves need
    stores a fresh clone makes first, so their imports are checked here."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks
    checked = 0
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in ("pipeline",
                                                                                  "stages"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
                    checked += 1
    assert checked >= 3
