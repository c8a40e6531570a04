"""`annsnn import`: every bad ``.npz`` is refused with one line naming the file and the array,
before anything is written; a good one still becomes a store."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.store import EmbeddingStore, write_arrays
from tests.conftest import assert_refused, run_cli, snapshot, damage_zip_member


def valid_arrays() -> dict[str, np.ndarray]:
    """Two splits of three classes, 4 features: what a well-formed file holds."""
    rng = np.random.default_rng(0)
    return {"X_train": rng.normal(size=(12, 4)).astype(np.float32), "y_train": np.arange(12) % 3,
            "X_test": rng.normal(size=(6, 4)).astype(np.float32), "y_test": np.arange(6) % 3,
            "classes": np.array(["cat", "dog", "owl"])}


def npz_of(**changes) -> Callable[[Path], Path]:
    """A maker of ``data.npz``: the valid arrays with ``changes`` applied (None drops a key)."""
    def make(folder: Path) -> Path:
        arrays = {**valid_arrays(), **changes}
        path = folder / "data.npz"
        np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
        return path
    return make


def with_change(key: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], Path]:
    return npz_of(**{key: change(valid_arrays()[key])})


def set_item(index, value):
    def change(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.result_type(a, np.asarray(value)))
        a[index] = value
        return a
    return change


def npy_file(folder: Path) -> Path:
    path = folder / "features.npy"
    np.save(path, valid_arrays()["X_train"])
    return path


def text_file(folder: Path) -> Path:
    path = folder / "notes.npz"
    path.write_text("X_train,y_train\n1,2\n")
    return path


def truncated_npz(folder: Path) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, **valid_arrays())
    path = folder / "cut.npz"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def corrupt_member(compressed: bool) -> Callable[[Path], Path]:
    """A file whose zip directory is intact but one member's bytes are damaged: only reading that
    member (numpy decodes them lazily) finds it."""
    def make(folder: Path) -> Path:
        buffer = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(buffer, **valid_arrays())
        path = folder / "damaged.npz"
        path.write_bytes(damage_zip_member(buffer.getvalue(), "X_train.npy"))
        return path
    return make


def case(make_file: Callable[[Path], Path], pattern: str, name: str):
    return pytest.param(make_file, pattern, id=name)


REFUSALS = [
    case(npy_file, r"features\.npy: is a \.npy file \(one array\), not an \.npz; .*np\.savez",
         "npy-file"),
    case(text_file, r"notes\.npz: not an \.npz \(not a zip archive\)", "not-a-zip"),
    case(truncated_npz, r"cut\.npz: not a readable \.npz \(zipfile\.BadZipFile.*save it again",
         "truncated-zip"),
    case(corrupt_member(False), r"array 'X_train' cannot be read \(zipfile\.BadZipFile: Bad CRC",
         "bad-crc-member"),
    case(corrupt_member(True), r"array 'X_train' cannot be read \(zlib\.error.*corrupt",
         "bad-deflate-member"),
    case(with_change("X_train", lambda x: x[:, 0]), r"X_train has shape \(12,\).*2-D", "X-1d"),
    case(with_change("y_train", lambda y: y[:, None]), r"y_train has shape \(12, 1\); flatten it",
         "y-column"),
    case(with_change("y_train", lambda y: np.stack([y, y])), r"y_train has shape \(2, 12\)", "y-2d"),
    case(with_change("y_train", lambda y: y[:10]), r"X_train has 12 rows but y_train has 10",
         "length-mismatch"),
    case(npz_of(X_train=np.zeros((0, 4), np.float32), y_train=np.zeros(0, np.int64)),
         r"X_train has shape \(0, 4\), no rows", "zero-rows"),
    case(npz_of(X_train=np.zeros((12, 0), np.float32), X_test=np.zeros((6, 0), np.float32)),
         r"X_train has shape \(12, 0\), no features", "zero-columns"),
    case(with_change("X_train", lambda x: x + 1j), r"X_train has dtype complex64; .*real numbers",
         "X-complex"),
    case(with_change("X_train", lambda x: x > 0), r"X_train has dtype bool; .*real numbers", "X-bool"),
    case(with_change("X_train", lambda x: x.astype(object)), r"array 'X_train' holds Python objects",
         "X-object"),
    case(with_change("X_train", lambda x: x.astype(str)), r"X_train has dtype <U\d+; .*real numbers",
         "X-string"),
    case(with_change("y_train", lambda y: y.astype(np.float64)),
         r"y_train has dtype float64 \(integral values\); save labels as integers", "y-float-integral"),
    case(with_change("y_train", lambda y: y + 0.5), r"y_train has dtype float64; save labels as integ",
         "y-float"),
    case(with_change("y_train", lambda y: y.astype(complex)),
         r"y_train has dtype complex128; save labels as integers", "y-complex"),
    case(with_change("y_train", lambda y: y > 0), r"y_train has dtype bool; save labels as integers",
         "y-bool"),
    case(with_change("y_train", lambda y: y.astype(str)),
         r"y_train has dtype <U\d+; save labels as integers", "y-string"),
    case(with_change("y_test", set_item(3, 3)), r"y_test row 3 holds label 3, outside 0\.\.2",
         "label-too-big"),
    case(with_change("y_train", set_item(5, -1)), r"y_train row 5 holds label -1, outside 0\.\.2",
         "label-negative"),
    case(with_change("X_train", set_item((4, 2), np.nan)), r"X_train row 4 column 2 holds nan",
         "X-nan"),
    case(with_change("X_test", set_item((2, 1), -np.inf)), r"X_test row 2 column 1 holds -inf",
         "X-inf"),
    case(with_change("X_train", lambda x: set_item((7, 0), 1e300)(x.astype(np.float64))),
         r"X_train row 7 column 0 holds 1e\+300 \(beyond float32's range\)", "X-overflow"),
    # Finite in float32, but no embedding: sums over a split would overflow downstream.
    case(with_change("X_train", set_item((3, 1), 1e38)),
         r"X_train row 3 column 1 holds 1e\+38, beyond the 1e\+06 that is read as an embedding",
         "X-huge"),
    case(npz_of(classes=np.array([["cat", "dog"], ["owl", "elk"]])),
         r"classes has shape \(2, 2\); it must be 1-D", "classes-2d"),
    case(npz_of(classes=np.array([], dtype=str)), r"classes holds 0 names; .*at least two",
         "classes-empty"),
    case(npz_of(classes=np.array(["cat", "dog", "cat"])), r"classes names 'cat' twice",
         "classes-duplicate"),
    case(npz_of(classes=np.array(["cat", " ", "owl"])), r"classes\[1\] is ' ', an empty name",
         "classes-empty-name"),
    case(npz_of(classes=np.array(["cat", "d\udcffg", "owl"])),
         r"classes\[1\] is 'd\\udcffg', which holds a lone surrogate, not text", "classes-surrogate"),
    case(npz_of(classes=np.array(["cat"]), y_train=np.zeros(12, int), y_test=np.zeros(6, int)),
         r"classes holds 1 name; .*at least two", "one-class"),
    case(npz_of(classes=np.array([0.5, 1.5, 2.5])), r"classes has dtype float64; save class names",
         "classes-float"),
    case(npz_of(X_tets=valid_arrays()["X_test"]), r"unknown array 'X_tets'; did you mean 'X_test'\?",
         "typo-key"),
    case(npz_of(weights=np.zeros(3)), r"unknown array 'weights'; expected X_<split>", "unknown-key"),
    case(npz_of(X_test=None), r"has y_test but no X_test", "y-without-X"),
    case(npz_of(classes=None), r"needs X_train, y_train and classes", "no-classes"),
    case(npz_of(X_test=np.zeros((6, 5), np.float32)),
         r"different feature widths \(X_train 4, X_test 5\)", "widths-differ"),
]


@pytest.mark.parametrize("make_file, pattern", REFUSALS)
def test_a_bad_npz_is_refused_before_anything_is_written(tmp_path, capsys, make_file, pattern):
    path = make_file(tmp_path)
    before = snapshot(tmp_path)
    out = tmp_path / "s.zarr"
    message = assert_refused(["import", path, "--out", out], capsys, "^annsnn import: error: "
                             + re.escape(str(path)) + ": ", pattern)
    assert len(message.strip().splitlines()) == 1, message
    assert not out.exists()
    assert snapshot(tmp_path) == before  # the input is unchanged and nothing else was written


def test_a_missing_file_is_refused(tmp_path, capsys):
    assert_refused(["import", tmp_path / "none.npz", "--out", tmp_path / "s.zarr"], capsys,
                   r"none\.npz: no such file")
    assert not (tmp_path / "s.zarr").exists()


def test_a_valid_npz_becomes_a_store(tmp_path, capsys):
    path = npz_of()(tmp_path)
    code, out = run_cli(["import", path, "--out", tmp_path / "s.zarr", "--model", "m"], capsys)
    assert code == 0, out
    store = EmbeddingStore.open(tmp_path / "s.zarr")
    arrays = valid_arrays()
    assert store.class_names == ["cat", "dog", "owl"] and sorted(store.splits) == ["test", "train"]
    for split in ("train", "test"):
        x = np.asarray(store.split(split)["features"][:])
        y = np.asarray(store.split(split)["labels"][:])
        assert sorted(map(tuple, x.tolist())) == sorted(map(tuple, arrays[f"X_{split}"].tolist()))
        assert sorted(y.tolist()) == sorted(arrays[f"y_{split}"].tolist())


def test_integer_features_unsigned_labels_and_byte_names_are_accepted(tmp_path, capsys):
    path = npz_of(X_train=np.arange(48, dtype=np.int16).reshape(12, 4),
                  y_train=(np.arange(12) % 3).astype(np.uint8), X_test=None, y_test=None,
                  classes=np.array([b"cat", b"dog", b"owl"]))(tmp_path)
    code, out = run_cli(["import", path, "--out", tmp_path / "s.zarr"], capsys)
    assert code == 0, out
    store = EmbeddingStore.open(tmp_path / "s.zarr")
    assert store.class_names == ["cat", "dog", "owl"] and store.splits == ["train"]


def test_inspect_shows_class_names_whole_and_escaped(tmp_path, capsys):
    """A line break or a terminal's escape sequence in a class name is shown as its escape (it
    used to split the table's row or reach the terminal), and long names are never cut."""
    names = ["a\nb", "\x1b[31mred\x1b[0m", "L" * 30 + "1", "L" * 30 + "2"]
    y = np.arange(16) % 4
    x = (np.eye(4, 6)[y] + 0.5).astype(np.float32)
    store = write_arrays(tmp_path / "s.zarr", {"train": (x, y), "test": (x, y)}, names,
                         encoder={"model": "synthetic"}, source="names")
    code, out = run_cli(["inspect", "--store", store.path], capsys)
    assert code == 0 and "\x1b" not in out, out
    assert_refused(["inspect", "--store", store.path, "--out", tmp_path / "other.zarr"], capsys,
                   "both name the store to inspect; give one of them")
    table = out[out.index("class counts"):].splitlines()[1:6]
    assert [line.split()[0] for line in table] == [
        "class", "a\\nb", "\\x1b[31mred\\x1b[0m", "L" * 30 + "1", "L" * 30 + "2"], table
