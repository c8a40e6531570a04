"""Checkpoint files: a damaged or foreign file is refused with one line pointing at --restart, the
written file gets an ordinary output's mode, and a killed writer's temporaries can be cleared."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.checkpoint import (check_arrays, load_checkpoint, remove_stale_temporaries,
                                 save_checkpoint)
from pipeline.errors import UserError
from tests.conftest import damage_zip_member

STATE = {"weights": np.arange(12, dtype=np.float32).reshape(3, 4),
         "counters": np.array([1, 2, 3], dtype=np.int64), "online_correct": np.ones(7, bool)}
SCHEMA = {"weights": ((3, 4), np.float32), "counters": ((3,), np.int64),
          "online_correct": ((None,), np.bool_)}
REPO = Path(__file__).resolve().parents[1]


def saved(folder: Path) -> Path:
    path = folder / "checkpoint.npz"
    save_checkpoint(path, STATE, {"cursor": 7, "params": {"m": 3}})
    return path


def refused(path: Path, *patterns: str) -> str:
    """``load_checkpoint(path)`` raises a one-line UserError naming the file and --restart."""
    with pytest.raises(UserError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert message.endswith("rerun with --restart to discard it and train afresh"), message
    for p in patterns:
        assert re.search(p, message), f"{p!r} not in {message!r}"
    return message


def test_a_saved_checkpoint_loads_back(tmp_path):
    arrays, meta = load_checkpoint(saved(tmp_path))
    assert meta == {"cursor": 7, "params": {"m": 3}} and sorted(arrays) == sorted(STATE)
    check_arrays(tmp_path / "checkpoint.npz", arrays, SCHEMA)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_a_truncated_checkpoint_is_refused(tmp_path, fraction):
    path = saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    refused(path, "not a readable checkpoint")


@pytest.mark.parametrize("head", [b"", b"PK\x03\x04", b"\x93NUMPY"])
def test_random_bytes_are_refused(tmp_path, head):
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(head + np.random.default_rng(0).bytes(4096))
    refused(path, "not a readable checkpoint")


def test_a_damaged_member_is_refused_when_read(tmp_path):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, meta=np.array("{}"), weights=np.zeros((64, 64), np.float32))
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(damage_zip_member(buffer.getvalue(), "weights.npy"))
    refused(path, r"not a readable checkpoint \(array 'weights': (zlib\.error|zipfile\.BadZipFile)")


def test_a_npy_file_is_refused(tmp_path):
    path = tmp_path / "checkpoint.npz"
    with open(path, "wb") as f:
        np.save(f, np.arange(3))
    refused(path, r"a \.npy array, not an \.npz")


@pytest.mark.parametrize("meta, pattern", [
    (np.array("{not json"), r"metadata \('meta'\) is not valid JSON \(json\.decoder\.JSONDecodeError"),
    (np.array(""), r"metadata \('meta'\) is not valid JSON"),
    (np.array("[1, 2]"), r"metadata \('meta'\) is a JSON list, not an object"),
    (np.array("null"), r"metadata \('meta'\) is a JSON NoneType, not an object"),
    (np.arange(3), r"metadata \('meta'\) is not a JSON string"),
    (np.array(["{}", "{}"]), r"metadata \('meta'\) is not a JSON string"),
    (None, r"checkpoint has no metadata \('meta'\)"),
], ids=["invalid-json", "empty", "list", "null", "numbers", "string-array", "missing"])
def test_bad_metadata_is_refused(tmp_path, meta, pattern):
    path = tmp_path / "checkpoint.npz"
    np.savez(path, weights=np.zeros(3), **({} if meta is None else {"meta": meta}))
    refused(path, pattern)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "checkpoint.npz"
    np.savez(path, meta=np.array("{}"), payload=np.array([object()], dtype=object))
    refused(path, r"array 'payload': ValueError: Object arrays cannot be loaded")


@pytest.mark.parametrize("change, pattern", [
    (lambda a: {**a, "weights": a["weights"][:2]},
     r"array 'weights' is \(2, 4\) float32, expected \(3, 4\) float32"),
    (lambda a: {**a, "weights": a["weights"].ravel()},
     r"array 'weights' is \(12,\) float32, expected \(3, 4\) float32"),
    (lambda a: {**a, "counters": a["counters"].astype(np.int32)},
     r"array 'counters' is \(3,\) int32, expected \(3,\) int64"),
    (lambda a: {k: v for k, v in a.items() if k != "counters"},
     r"lacks array 'counters' \(expected \(3,\) int64\)"),
    (lambda a: {**a, "extra": np.zeros(2)}, r"has unexpected array 'extra'"),
    (lambda a: {"weights": a["weights"].astype(np.float64)},
     r"array 'weights' is \(3, 4\) float64, expected \(3, 4\) float32 \(and 2 more\)"),
], ids=["short", "flattened", "dtype", "missing", "extra", "several"])
def test_arrays_that_do_not_fit_the_state_are_refused(tmp_path, change, pattern):
    path = tmp_path / "checkpoint.npz"
    with pytest.raises(UserError) as caught:
        check_arrays(path, change(dict(STATE)), SCHEMA)
    message = str(caught.value)
    assert message.startswith(f"{path}: checkpoint does not fit this run's state: "), message
    assert re.search(pattern, message), message
    assert message.endswith("rerun with --restart to discard it and train afresh")


def test_check_arrays_accepts_any_length_on_a_free_axis_and_extras_when_asked(tmp_path):
    arrays = {**STATE, "online_correct": np.ones(1000, bool)}
    check_arrays(tmp_path / "c.npz", arrays, SCHEMA)
    check_arrays(tmp_path / "c.npz", {**arrays, "extra": np.zeros(1)}, SCHEMA, allow_extra=True)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002, 0o077])
def test_a_saved_checkpoint_has_an_ordinary_output_files_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = saved(tmp_path)
        with open(tmp_path / "metrics.json", "w") as f:
            f.write("{}")
        save_checkpoint(path, STATE, {"cursor": 8})  # over an existing file, as every later save
    finally:
        os.umask(old)
    assert os.umask(old) == old  # saving left the process umask as it was
    assert (path.stat().st_mode & 0o777) == ((tmp_path / "metrics.json").stat().st_mode & 0o777)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    path = tmp_path / "checkpoint.npz"
    stale = [tmp_path / "checkpoint.npz.k3j_9x0a.tmp", tmp_path / "checkpoint.npz.x.tmp",
             tmp_path / "checkpoint.npz.a.b.tmp"]
    keep = [path, tmp_path / "notes.tmp", tmp_path / "checkpoint.npz.tmp",
            tmp_path / "checkpoint.npz..tmp", tmp_path / "other.npz.abc.tmp",
            tmp_path / "checkpoint.npz.abc.tmp.keep", tmp_path / "xcheckpoint.npz.abc.tmp",
            tmp_path / "metrics.json"]
    for p in stale + keep:
        p.write_bytes(b"x")
    (tmp_path / "checkpoint.npz.dir.tmp").mkdir()
    (tmp_path / "checkpoint.npz.dir.tmp" / "inside").write_bytes(b"x")
    outside = tmp_path / "outside" / "target.txt"
    outside.parent.mkdir()
    outside.write_bytes(b"x")
    (tmp_path / "checkpoint.npz.link.tmp").symlink_to(outside)
    before = {p.name for p in tmp_path.iterdir()}
    assert sorted(remove_stale_temporaries(path)) == sorted(stale)
    assert {p.name for p in tmp_path.iterdir()} == before - {p.name for p in stale}
    assert all(p.exists() for p in keep) and outside.exists()
    assert (tmp_path / "checkpoint.npz.dir.tmp" / "inside").exists()
    assert remove_stale_temporaries(path) == []
    assert remove_stale_temporaries(tmp_path / "missing" / "checkpoint.npz") == []


def test_a_writer_killed_before_the_rename_leaves_a_temporary_that_is_then_removed(tmp_path):
    path = saved(tmp_path)
    before = path.read_bytes()
    killed = ("import os, sys, numpy as np, pipeline.checkpoint as c\n"
              "os.replace = lambda *a: os.kill(os.getpid(), 9)\n"
              "c.save_checkpoint(sys.argv[1], {'weights': np.zeros(5)}, {'cursor': 9})\n")
    result = subprocess.run([sys.executable, "-c", killed, str(path)], cwd=REPO)
    assert result.returncode == -9
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith("checkpoint.npz.")
    assert remove_stale_temporaries(path) == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]
    assert path.read_bytes() == before
    assert load_checkpoint(path)[1]["cursor"] == 7
