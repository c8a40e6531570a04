"""Stage one end to end: digits and generated ImageFolders, resume, refusal, bad images, inspect."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from PIL import Image

from pipeline.config import EmbedConfig
from pipeline.data import open_dataset
from pipeline.errors import UserError
from pipeline.store import EmbeddingStore, encoder_difference
from pipeline.embedding import embed_store
from stages.inspect import describe
from tests.conftest import assert_refused, assert_same_store, make_image_folder, run_cli

SMALL = dict(image_size=32, chunk_size=16, batch_size=8)


def test_digits_end_to_end(tmp_path):
    cfg = EmbedConfig(data="digits", limit=40, out=str(tmp_path / "d.zarr"), **SMALL)
    summary = embed_store(cfg)
    assert summary["images"] == 80 and summary["failures"] == 0 and summary["complete"]
    store = EmbeddingStore.open(cfg.out)
    assert store.splits == ["train", "test"]
    ds = open_dataset("digits", limit=40)
    for split in ("train", "test"):
        g = store.split(split)
        assert g["features"].shape == (40, 1280) and g["features"].dtype == np.float32
        np.testing.assert_array_equal(g["labels"][:], ds.splits[split].labels)
        feats = g["features"][:]
        assert np.isfinite(feats).all() and (feats != 0).any(axis=1).all()
    assert store.class_names == [str(i) for i in range(10)]
    assert store.attrs["encoder"]["preprocessing"]["input_size"] == [3, 32, 32]
    assert store.attrs["encoder"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]


def test_digits_split_is_stratified_and_seeded():
    a, b = open_dataset("digits"), open_dataset("digits")
    np.testing.assert_array_equal(a.splits["train"].ids, b.splits["train"].ids)
    assert len(a.splits["train"]) + len(a.splits["test"]) == 1797
    share = np.bincount(a.splits["test"].labels) / np.bincount(a.splits["train"].labels)
    assert np.allclose(share, 1 / 3, atol=0.02)  # test_fraction 0.25 -> test/train = 1/3 per class
    assert open_dataset("digits", seed=1).splits["train"].ids.tolist() != a.splits["train"].ids.tolist()


def test_store_is_plain_zarr_dask_and_xarray(tmp_path):
    out = tmp_path / "d.zarr"
    embed_store(EmbedConfig(data="digits", limit=20, out=str(out), **SMALL))
    g = zarr.open_group(str(out), mode="r")
    x = da.from_zarr(str(out), component="train/features")
    assert x.shape == (20, 1280) and x.chunks[0] == (16, 4)
    ds = xr.open_zarr(str(out), group="train", consolidated=False)
    assert ds["features"].dims == ("sample", "feature")
    np.testing.assert_array_equal(ds["labels"].values, g["train"]["labels"][:])


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    once = EmbedConfig(data="digits", limit=40, out=str(tmp_path / "once.zarr"), **SMALL)
    embed_store(once)
    twice = EmbedConfig(data="digits", limit=40, out=str(tmp_path / "twice.zarr"), **SMALL)
    first = embed_store(twice, stop_after_chunks=2)
    assert not first["complete"] and first["images"] == 32
    assert EmbeddingStore.open(twice.out).done_chunks("train").tolist() == [True, True, False]
    second = embed_store(twice)
    assert second["complete"] and second["images"] == 80 - 32  # finished chunks were skipped
    assert_same_store(once.out, twice.out)


def test_image_folder_with_a_corrupt_image(tmp_path):
    root = make_image_folder(tmp_path / "imgs")
    (root / "dog" / "broken.jpg").write_text("this is not a JPEG")
    out = tmp_path / "f.zarr"
    summary = embed_store(EmbedConfig(data=f"imagefolder:{root}", out=str(out), test_fraction=0.5,
                                    **SMALL))
    assert summary["failures"] == 1 and summary["failed"][0][0] == str(Path("dog", "broken.jpg"))
    store = EmbeddingStore.open(out)
    assert store.class_names == ["cat", "dog", "owl"]
    assert sum(store.split(s)["labels"].shape[0] for s in store.splits) == 19
    errors = {s: np.asarray(store.split(s)["errors"][:]) for s in store.splits}
    bad = [(s, i) for s, e in errors.items() for i in np.flatnonzero(e != "")]
    assert len(bad) == 1
    s, i = bad[0]
    assert "UnidentifiedImageError" in str(errors[s][i])
    assert not store.split(s)["features"][i].any()
    assert store.finished_rows(s).sum() == len(errors[s]) - 1
    with pytest.raises(UserError, match="broken.jpg"):
        embed_store(EmbedConfig(data=f"imagefolder:{root}", out=str(tmp_path / "g.zarr"),
                              strict=True, **SMALL))


def test_image_folder_with_split_folders(tmp_path):
    root = make_image_folder(tmp_path / "imgs", splits=("train", "val"), per_class=4)
    out = tmp_path / "s.zarr"
    embed_store(EmbedConfig(data=f"imagefolder:{root}", out=str(out), **SMALL))
    store = EmbeddingStore.open(out)
    assert store.splits == ["train", "val"]
    ids = np.asarray(store.split("val")["ids"][:]).astype(object)
    assert all(i.startswith("val/") for i in ids)


def test_csv_source(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=4)
    rows = ["path,label,split"] + [f"{c}/img{i}.{'png' if i % 2 else 'jpg'},{c},{'train' if i < 3 else 'test'}"
                                   for c in ("cat", "dog", "owl") for i in range(4)]
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    ds = open_dataset(f"csv:{root / 'list.csv'}")
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 9, "test": 3}
    (root / "bad.csv").write_text("path,label\n../../etc/passwd,cat\n")
    with pytest.raises(UserError, match="outside"):
        open_dataset(f"csv:{root / 'bad.csv'}")
    (root / "cols.csv").write_text("file,class\na.jpg,cat\n")
    with pytest.raises(UserError, match="path,label"):
        open_dataset(f"csv:{root / 'cols.csv'}")


def test_mismatched_store_is_refused_then_overwritten(tmp_path, image_folder):
    out = str(tmp_path / "m.zarr")
    base = EmbedConfig(data=f"imagefolder:{image_folder}", out=out, test_fraction=0.5, **SMALL)
    embed_store(base)
    with pytest.raises(UserError, match="encoder.*--overwrite"):
        embed_store(EmbedConfig(**{**base.to_dict(), "image_size": 48}))
    make_image_folder(image_folder, per_class=7)  # one more image per class: other data
    with pytest.raises(UserError, match="other data.*--overwrite"):
        embed_store(base)
    summary = embed_store(EmbedConfig(**{**base.to_dict(), "overwrite": True}))
    assert summary["complete"] and summary["images"] == 21


@pytest.mark.parametrize("spec, message", [
    ("nonsense", "unknown data source"),
    ("imagefolder:/no/such/folder", "no such folder"),
    ("csv:/no/such.csv", "no such CSV"),
])
def test_cli_bad_source_is_one_line(spec, message, tmp_path, capsys):
    out = assert_refused(["embed", "--data", spec, "--out", tmp_path / "x.zarr"], capsys, message)
    assert out.count("\n") == 1 and not (tmp_path / "x.zarr").exists()


def test_python_m_stages_prints_one_line_and_no_traceback(tmp_path):
    """The module entry point (a fresh interpreter, as a user runs it) says the same one line."""
    r = subprocess.run([sys.executable, "-m", "stages", "embed", "--data", "nonsense",
                        "--out", str(tmp_path / "x.zarr")], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "unknown data source" in r.stderr
    assert "Traceback" not in r.stderr


def test_empty_class_folder_is_refused(tmp_path):
    root = make_image_folder(tmp_path / "imgs")
    (root / "empty").mkdir()
    with pytest.raises(UserError, match="empty.*holds no images"):
        open_dataset(f"imagefolder:{root}")


def test_inspect_reports_layout_classes_and_statistics(tmp_path):
    out = tmp_path / "d.zarr"
    embed_store(EmbedConfig(data="digits", limit=20, out=str(out), **SMALL), stop_after_chunks=1)
    text = describe(out)
    assert "tf_efficientnet_lite0" in text and "input_size=[3, 32, 32]" in text
    assert "train       20  1280 float32" in text
    assert "1/2" in text and "0/2" in text  # train half done, test not started
    assert "(nothing embedded yet)" in text and "zeros" in text


def test_a_second_run_on_the_same_store_is_refused_naming_the_holder(tmp_path):
    import os

    from pipeline.lock import exclusive

    out = tmp_path / "d.zarr"
    cfg = EmbedConfig(data="digits", limit=10, out=str(out), **SMALL)
    with exclusive(out):  # as if another run held it
        with pytest.raises(UserError, match=f"in use by pid {os.getpid()}"):
            embed_store(cfg)
    assert embed_store(cfg)["complete"]  # released: the next run goes ahead


def test_version_is_the_installed_package_version(capsys):
    from importlib.metadata import version

    code, out = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"annsnn {version('annsnn')}"


def test_a_python_without_the_packages_gets_one_line_saying_what_to_run():
    """`python -m stages` with a Python that lacks annsnn's packages (here: ours without its
    site-packages, as the system python3 is on a fresh machine) is told to make the venv."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-S", "-m", "stages", "--version"], cwd=root,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert re.fullmatch(r"annsnn: this Python \(.+\) lacks numpy, numba, .*: run `make install`.*\n",
                        done.stderr), done.stderr


def test_a_tilde_the_shell_left_alone_is_the_home_folder(tmp_path, monkeypatch, capsys):
    """``--out=~/x`` (the shell expands no ``~`` after ``=``), or ``ARGS="--out ~/x"`` through make,
    means the home folder, never a folder named ``~`` here."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    assert_refused(["inspect", "--store=~/missing.zarr"], capsys, re.escape(str(home / "missing.zarr")))
    assert_refused(["embed", "--data=imagefolder:~/no-photos"], capsys, re.escape(str(home / "no-photos")))
    assert not (tmp_path / "~").exists()


def test_embed_says_a_finished_store_is_already_complete_and_where_it_resumes(tmp_path, capsys):
    out = tmp_path / "d.zarr"
    argv = ["embed", "--data", "digits", "--limit", "40", "--image-size", "32", "--chunk-size",
            "8", "--out", out]
    embed_store(EmbedConfig(data="digits", limit=40, image_size=32, chunk_size=8, out=str(out)),
                stop_after_chunks=2)
    capsys.readouterr()
    code, text = run_cli(argv, capsys)
    done = re.search(r"resuming: 2 of (\d+) chunks done, embedding the other (\d+)", text)
    assert code == 0 and done and int(done[1]) - 2 == int(done[2]), text
    code, text = run_cli(argv, capsys)
    assert code == 0 and "already complete: nothing to embed" in text, text
    assert "continuing with the store's" not in text
    # A changed --chunk-size cannot apply to a store already laid out: said, not silently ignored.
    code, text = run_cli(argv[:-3] + ["16", "--out", out], capsys)
    assert code == 0 and "continuing with the store's --chunk-size 8 (not 16)" in text, text
    assert EmbeddingStore.open(out).chunk_rows("train") == 8


def _photo_folder(root: Path, count: int = 10) -> Path:
    """Small photo-like JPEGs (gradient, shapes, noise) in two classes, and one broken file."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:60, 0:80]
    for i in range(count):
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        img = np.stack([xx * 3, yy * 4, (xx + yy) * 2], axis=-1) + rng.normal(0, 20, (60, 80, 3))
        img[10 + i:30 + i, 20:40] = rng.uniform(0, 255, 3)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
    (root / "c1" / "broken.jpg").write_bytes(b"\xff\xd8 not the rest of a JPEG")
    return root


def test_decoding_workers_do_not_change_the_store(tmp_path):
    """DataLoader workers decode ahead by default; the store (features, errors, done flags) is
    the one a single process writes, bit for bit, whatever their number."""
    root = _photo_folder(tmp_path / "photos")
    outs = {}
    for workers in (0, 2):
        outs[workers] = tmp_path / f"w{workers}.zarr"
        summary = embed_store(EmbedConfig(data=f"imagefolder:{root}", out=str(outs[workers]),
                                          workers=workers, image_size=48, chunk_size=4,
                                          batch_size=3, test_fraction=0.5))
        assert summary["images"] == 11 and summary["failures"] == 1
    assert EmbedConfig().workers > 0  # decoding overlaps the forward pass by default
    assert_same_store(outs[0], outs[2])


def test_an_encoder_difference_names_the_preprocessing_setting_that_differs():
    """The whole preprocessing record, cut at 80 characters, named nothing useful."""
    pre = {"crop_pct": 0.875, "input_size": [3, 224, 224], "interpolation": "bicubic",
           "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    have = {"model": "lite0", "weights_sha256": "a" * 64, "preprocessing": pre}
    want = {**have, "preprocessing": {**pre, "input_size": [3, 96, 96]}}
    assert encoder_difference(have, want) == ("lite0 (preprocessing.input_size=[3, 224, 224])",
                                              "lite0 (preprocessing.input_size=[3, 96, 96])")
    assert encoder_difference(have, dict(have)) is None
    assert encoder_difference(have, {**have, "weights_sha256": "b" * 64}) == (
        "lite0 (weights_sha256=aaaaaaaaaaaa)", "lite0 (weights_sha256=bbbbbbbbbbbb)")
