"""Hostile cases, one class at a time: each asserts the exit status, that no traceback is printed,
the message, and that the user's files (and our stores) are unchanged.

The classes: outputs never land in a folder we did not create; one lock per real path, readers
included; a run records what it did and resumes only the same model; damage is named, never trained
on; every option is checked before anything is written; outputs stay valid JSON at any size.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.checkpoint import load_checkpoint
from pipeline.lock import exclusive, shared
from pipeline.store import EmbeddingStore, write_arrays
from tests.conftest import (assert_refused, assert_same_store, make_image_folder, run_cli,
                            separable_store, snapshot)

EMBED = ["--limit", "24", "--image-size", "32", "--chunk-size", "8", "--batch-size", "8",
         "--threads", "1"]
SNN = ["--m", "2", "--e", "1", "--numba-threads", "1", "--skip-baselines"]


def user_folder(root: Path) -> Path:
    """A folder of a user's own files (notes, a sub-folder)."""
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("my notes\n")
    (root / "photos").mkdir()
    (root / "photos" / "a.txt").write_text("keep me\n")
    return root


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run from an empty working folder, so default output paths land under tmp_path."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


# --- nothing of the user's is deleted or overwritten -----------------------------------------

@pytest.mark.parametrize("overwrite", [False, True])
def test_embed_out_at_a_user_folder_is_refused_untouched(tmp_path, capsys, overwrite):
    folder = user_folder(tmp_path / "mine")
    before = snapshot(tmp_path)
    assert_refused(["embed", *EMBED, "--out", folder, *(["--overwrite"] if overwrite else [])],
                   capsys, r"not an embedding store", r"nothing was written")
    assert snapshot(tmp_path) == before


def test_embed_out_at_the_working_folder_or_the_image_folder_is_refused(tmp_path, in_tmp, capsys):
    (in_tmp / "todo.txt").write_text("x")
    images = make_image_folder(tmp_path / "images")
    before = snapshot(tmp_path)
    assert_refused(["embed", *EMBED, "--out", "."], capsys, r"not an embedding store")
    assert_refused(["embed", *EMBED, "--data", f"imagefolder:{images}", "--out", images,
                    "--overwrite"], capsys, r"not an embedding store")
    assert snapshot(tmp_path) == before


def test_embed_out_at_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f.zarr").write_text("a file")
    before = snapshot(tmp_path)
    assert_refused(["embed", *EMBED, "--out", tmp_path / "f.zarr"], capsys, r"is a file")
    for argv in (["train-snn", "--out", tmp_path / "f.zarr", "--runs-dir", tmp_path / "runs"],
                 ["inspect", "--store", tmp_path / "f.zarr"]):  # it used to advise `embed` there
        assert_refused(argv, capsys, r"f\.zarr: is a file, not an embedding store")
    assert snapshot(tmp_path) == before


def test_a_zarr_store_of_someone_else_is_refused_even_with_overwrite(tmp_path, capsys):
    other = tmp_path / "theirs.zarr"
    zarr.open_group(str(other), mode="w").create_array("x", shape=(3,), dtype="int8")[:] = 1
    before = snapshot(tmp_path)
    assert_refused(["embed", *EMBED, "--out", other, "--overwrite"], capsys,
                   r"did not create")
    assert snapshot(tmp_path) == before


def test_import_and_train_snn_refuse_a_user_folder_too(tmp_path, capsys):
    folder = user_folder(tmp_path / "mine")
    npz = tmp_path / "e.npz"
    x = np.abs(np.random.default_rng(0).normal(size=(12, 4))).astype(np.float32)
    np.savez(npz, X_train=x, y_train=np.arange(12) % 2, classes=np.array(["a", "b"]))
    before = snapshot(tmp_path)
    assert_refused(["import", npz, "--out", folder, "--overwrite"], capsys, r"not an embedding store")
    # train-snn embeds a missing store first: that path refuses the folder the same way
    assert_refused(["train-snn", *EMBED, "--data", "digits", "--out", folder, "--runs-dir",
                    tmp_path / "runs", *SNN], capsys, r"not an embedding store")
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_only_what_the_store_holds_of_ours(tmp_path):
    store = separable_store(tmp_path / "s.zarr")
    (tmp_path / "s.zarr" / "README.txt").write_text("the user's note inside the store folder")
    x = np.ones((6, 16), np.float32)
    write_arrays(store.path, {"train": (x, np.arange(6) % 4)}, ["a", "b", "c", "d"],
                 encoder={"model": "other"}, source="other", overwrite=True)
    assert (tmp_path / "s.zarr" / "README.txt").read_text().startswith("the user's note")
    assert EmbeddingStore.open(store.path).splits == ["train"]  # the old test split is gone


def test_a_half_created_store_of_ours_is_created_again(tmp_path):
    """A creation killed after the marker (zarr.json with our attribute) and before the format."""
    path = tmp_path / "s.zarr"
    g = zarr.open_group(str(path), mode="w-", attributes={"created_by": "annsnn"})
    g.create_group("train")
    store = separable_store(path)
    assert store.is_complete() and store.attrs["format"] == 1


@pytest.mark.parametrize("option,value", [("--run", "../escape"), ("--run", "a/b"), ("--run", ".."),
                                          ("--run", "/tmp/abs"), ("--run", " "),
                                          ("--run", "r ")])
def test_run_names_are_names_not_paths(tmp_path, capsys, option, value):
    store = separable_store(tmp_path / "s.zarr")
    before = snapshot(tmp_path)
    assert_refused(["train-snn", "--out", store.path, "--runs-dir", tmp_path / "runs", option,
                    value, *SNN], capsys, r"plain folder name")
    assert snapshot(tmp_path) == before


def test_tune_names_are_names_not_paths(tmp_path, capsys):
    store = separable_store(tmp_path / "s.zarr")
    before = snapshot(tmp_path)
    assert_refused(["tune", "--out", store.path, "--tune-dir", tmp_path / "t", "--name",
                    "../../x", "--trials", "1"], capsys, r"plain folder name")
    assert snapshot(tmp_path) == before


def test_a_run_folder_that_is_a_user_folder_is_refused_untouched(tmp_path, capsys):
    store = separable_store(tmp_path / "s.zarr")
    user_folder(tmp_path / "runs" / "notes")
    before = snapshot(tmp_path, locks=False)
    assert_refused(["train-snn", "--out", store.path, "--runs-dir", tmp_path / "runs", "--run",
                    "notes", *SNN], capsys, r"did not create", r"notes.txt")
    assert snapshot(tmp_path, locks=False) == before


def test_a_study_folder_that_is_a_user_folder_is_refused_untouched(tmp_path, capsys):
    store = separable_store(tmp_path / "s.zarr")
    user_folder(tmp_path / "t" / "mine")
    before = snapshot(tmp_path, locks=False)
    assert_refused(["tune", "--out", store.path, "--tune-dir", tmp_path / "t", "--name", "mine",
                    "--trials", "1"], capsys, r"did not create")
    assert snapshot(tmp_path, locks=False) == before


# --- one lock per real path, readers included --------------------------------------------------

def test_one_store_under_any_spelling_has_one_lock(tmp_path, in_tmp, capsys):
    store = separable_store(in_tmp / "s.zarr")
    os.symlink(in_tmp / "s.zarr", in_tmp / "link.zarr")
    before = snapshot(in_tmp / "s.zarr")
    with exclusive(store.path):
        for spelling in ("s.zarr/", "./s.zarr", str(in_tmp / "s.zarr"), "link.zarr"):
            assert_refused(["embed", *EMBED, "--out", spelling, "--overwrite"], capsys,
                           r"in use by pid")
    assert snapshot(in_tmp / "s.zarr") == before


def test_readers_share_a_store_and_keep_writers_out(tmp_path, capsys):
    store = separable_store(tmp_path / "s.zarr")
    before = snapshot(tmp_path / "s.zarr")
    with shared(store.path):  # as a running train-snn holds it
        with shared(store.path):
            pass  # a second reader (inspect, tune) is welcome
        assert_refused(["embed", *EMBED, "--out", store.path, "--overwrite"], capsys,
                       r"in use by pid.*cannot be written")
        npz = tmp_path / "e.npz"
        np.savez(npz, X_train=np.ones((6, 2), np.float32), y_train=np.arange(6) % 2,
                 classes=np.array(["a", "b"]))
        assert_refused(["import", npz, "--out", store.path, "--overwrite"], capsys, r"in use by")
    assert snapshot(tmp_path / "s.zarr") == before
    with exclusive(store.path):  # a writer keeps readers out
        assert_refused(["inspect", "--store", store.path], capsys, r"in use by pid.*cannot be read")
        assert_refused(["train-snn", "--out", store.path, "--runs-dir", tmp_path / "runs", *SNN],
                       capsys, r"in use by pid")
    assert not (tmp_path / "runs").exists()


def test_the_last_holder_removes_the_lock_file(tmp_path, capsys):
    store = separable_store(tmp_path / "s.zarr")
    lock = Path(f"{os.path.realpath(store.path)}.lock")
    with exclusive(store.path):
        assert lock.exists()
    assert not lock.exists()
    with shared(store.path):
        with shared(store.path):
            pass
        assert lock.exists()  # the first reader still holds it: its file stays
        assert_refused(["embed", *EMBED, "--out", store.path, "--overwrite"], capsys, r"in use by")
    assert not lock.exists()
    code, out = run_cli(["train-snn", "--out", store.path, "--runs-dir", tmp_path / "runs",
                         "--run", "r", *SNN], capsys)
    assert code == 0, out
    assert sorted(p.name for p in tmp_path.rglob("*.lock")) == []


def test_a_lock_file_removed_before_it_is_locked_is_taken_anew(tmp_path, monkeypatch):
    """A process that opened the lock file just before its finishing holder removed it must not
    hold that removed file beside a newcomer holding the path's new one."""
    import fcntl

    import pipeline.lock as lock_module

    store = separable_store(tmp_path / "s.zarr")
    lock = Path(f"{os.path.realpath(store.path)}.lock")
    real_flock, removed = fcntl.flock, []

    def flock_after_removal(fd, op):
        if not removed:  # the holder finishes between our open and our flock
            removed.append(os.fstat(fd).st_ino)
            lock.unlink()
        return real_flock(fd, op)

    monkeypatch.setattr(lock_module.fcntl, "flock", flock_after_removal)
    with exclusive(store.path):
        assert removed and lock.exists()  # a new file at the path, not the removed one
        with open(lock) as f:  # the path's current file is the one held: a newcomer is refused
            with pytest.raises(BlockingIOError):
                real_flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert not lock.exists()


# --- what a run records is what it did -------------------------------------------------------

def test_a_refused_resume_writes_nothing(tmp_path, capsys):
    store = separable_store(tmp_path / "s.zarr")
    runs = tmp_path / "runs"
    args = ["train-snn", "--out", store.path, "--runs-dir", runs, "--run", "r", *SNN]
    code, out = run_cli(args + ["--checkpoint-every", "20"], capsys)
    assert code == 0, out
    config = json.loads((runs / "r" / "config.json").read_text())
    assert (config["colanet"]["sat_scope"], config["colanet"]["sat_percentile"]) == ("feature", 97.29)
    assert len(config["coding"]["sat"]) == 48  # the resolved coding: one level per feature
    before = snapshot(runs, locks=False)
    assert_refused(args + ["--sat-scope", "global"], capsys, r"other settings.*sat_scope")
    assert_refused(args + ["--sat-percentile", "90"], capsys, r"other settings.*sat_percentile")
    assert_refused(args + ["--d-h", "-0.3"], capsys, r"other settings.*d_h")
    assert snapshot(runs, locks=False) == before


def test_a_store_records_its_device_and_refuses_another(tmp_path, capsys):
    out = tmp_path / "d.zarr"
    code, text = run_cli(["embed", *EMBED, "--out", out, "--device", "cpu"], capsys)
    assert code == 0, text
    g = zarr.open_group(str(out), mode="r+")
    assert g.attrs["compute"] == {"device": "cpu", "precision": "float32"}
    g.attrs["compute"] = {"device": "cuda", "precision": "float16-autocast"}  # as if made on a GPU
    g["train"]["done"][0] = False
    before = snapshot(out)
    assert_refused(["embed", *EMBED, "--out", out, "--device", "cpu"], capsys,
                   r"computed on cuda \(float16-autocast\).*--device cuda")
    assert snapshot(out) == before


def test_a_missing_out_store_is_an_error_not_an_embed_of_the_digits(tmp_path, in_tmp, capsys):
    assert_refused(["train-snn", "--out", tmp_path / "typo.zarr", *SNN], capsys,
                   r"no store here; run `annsnn embed --out", r"--data")
    assert_refused(["tune", "--out", tmp_path / "typo.zarr", "--trials", "1"], capsys,
                   r"no store here")
    assert not (tmp_path / "typo.zarr").exists() and list(in_tmp.iterdir()) == []


def test_an_unfinished_store_is_finished_with_its_own_config(tmp_path, capsys):
    from pipeline.config import EmbedConfig
    from pipeline.embedding import embed_store

    whole, cut = tmp_path / "whole.zarr", tmp_path / "cut.zarr"
    cfg = dict(data="digits", limit=24, image_size=32, chunk_size=8, batch_size=8, threads=1)
    embed_store(EmbedConfig(**cfg, out=str(whole)))
    embed_store(EmbedConfig(**cfg, out=str(cut)), stop_after_chunks=2)
    # No embed options on this command line: the store's own (image size 32, limit 24) finish it.
    code, out = run_cli(["train-snn", "--out", cut, "--runs-dir", tmp_path / "runs", *SNN], capsys)
    assert code == 0, out
    assert_same_store(whole, cut)


# --- damage is detected and named, never trained on -------------------------------------------

def _chunk_file(store: EmbeddingStore, split: str, chunk: int) -> Path:
    return Path(store.path, split, "features", "c", str(chunk), "0")


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_damaged_chunk_is_named_and_embed_redoes_exactly_it(tmp_path, capsys, damage):
    whole, hurt = tmp_path / "whole.zarr", tmp_path / "hurt.zarr"
    for out in (whole, hurt):
        code, text = run_cli(["embed", *EMBED, "--out", out], capsys)
        assert code == 0, text
    store = EmbeddingStore.open(hurt)
    f = _chunk_file(store, "train", 1)
    if damage == "missing":
        f.unlink()
    else:
        f.write_bytes(f.read_bytes()[:20])
    code, report = run_cli(["inspect", "--store", hurt], capsys)
    assert code == 0 and "train chunk 1:" in report, report
    before = snapshot(hurt)
    assert_refused(["train-snn", "--out", hurt, "--runs-dir", tmp_path / "runs", *SNN], capsys,
                   r"split 'train' chunk 1 (is damaged|cannot be decoded)")
    assert snapshot(hurt) == before and not (tmp_path / "runs").exists()
    code, text = run_cli(["embed", *EMBED, "--out", hurt, "--verify"], capsys)
    assert code == 0 and "chunk 1 is damaged" in text, text
    assert_same_store(whole, hurt)


def test_a_damaged_zarr_json_or_attributes_are_named(tmp_path, capsys):
    store = separable_store(tmp_path / "s.zarr")
    meta = Path(store.path, "zarr.json")
    good = meta.read_text()
    meta.write_text(good[: len(good) // 2])
    for cmd in (["inspect", "--store", store.path],
                ["train-snn", "--out", store.path, "--runs-dir", tmp_path / "runs", *SNN]):
        assert_refused(cmd, capsys, r"zarr\.json: damaged", r"--overwrite")
    doc = json.loads(good)
    del doc["attributes"]["dataset"]
    meta.write_text(json.dumps(doc))
    assert_refused(["inspect", "--store", store.path], capsys, r"damaged attributes.*dataset")
    assert not (tmp_path / "runs").exists()


@pytest.mark.filterwarnings("ignore:Object at .* is not recognized:UserWarning")
@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_a_damaged_zarr_json_of_an_array_or_split_is_named(tmp_path, capsys, damage):
    """Every reader opens the splits' arrays: a metadata file of theirs that is gone or not JSON
    is named in one line (it used to surface as a KeyError or JSONDecodeError from zarr)."""
    for target in ("train/features", "test"):
        store = separable_store(tmp_path / f"{target.replace('/', '-')}.zarr")
        meta = Path(store.path, target, "zarr.json")
        if damage == "deleted":
            meta.unlink()
        else:
            meta.write_text("garbage")
        before = snapshot(Path(store.path))
        named = (r"train/features/zarr\.json: missing or damaged" if target == "train/features"
                 else r"test/zarr\.json: missing or damaged|a split's zarr\.json is damaged")
        for cmd in (["inspect", "--store", store.path],
                    ["train-snn", "--out", store.path, "--runs-dir", tmp_path / "runs", *SNN],
                    ["report", store.path, "--runs-dir", tmp_path / "runs", "--e", "2"]):
            assert_refused(cmd, capsys, named, r"--overwrite")
        assert snapshot(Path(store.path)) == before and not (tmp_path / "runs").exists()


def test_a_deleted_labels_chunk_is_named(tmp_path, capsys):
    """A labels chunk file that is gone reads as the fill value -1: the refusal names the file."""
    store = separable_store(tmp_path / "s.zarr")
    chunk = Path(store.path, "train", "labels", "c", "0")
    chunk.unlink()
    assert_refused(["train-snn", "--out", store.path, "--runs-dir", tmp_path / "runs", *SNN],
                   capsys, r"row 0 has a label outside the 4 classes \(-1: the file "
                           r"train/labels/c/0 is missing\).*--overwrite")
    assert not (tmp_path / "runs").exists()


def test_a_refused_writer_is_told_the_holder_still_running(tmp_path, capsys):
    """Readers share the lock: one that has ended must not be named while another still reads."""
    store = separable_store(tmp_path / "s.zarr")
    np.savez(tmp_path / "x.npz", X_train=np.ones((6, 2), np.float32), y_train=np.arange(6) % 2,
             classes=np.array(["a", "b"]))
    reader = ("from pipeline.lock import shared\n"
              f"with shared({store.path!r}): pass")
    with shared(store.path):  # as a running train-snn holds it
        done = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True,
                              timeout=120, cwd=Path(__file__).resolve().parents[1])
        assert done.returncode == 0, done.stderr  # a reader came and went meanwhile
        out = assert_refused(["import", tmp_path / "x.npz", "--out", store.path, "--overwrite"],
                             capsys, rf"in use by pid {os.getpid()} ")
        assert "more reader" not in out


@pytest.mark.parametrize("damage", ["truncated", "wrong shape", "bad meta"])
def test_a_damaged_checkpoint_is_named_with_restart(tmp_path, capsys, damage):
    store = separable_store(tmp_path / "s.zarr")
    runs = tmp_path / "runs"
    args = ["train-snn", "--out", store.path, "--runs-dir", runs, "--run", "r", *SNN]
    assert run_cli(args, capsys)[0] == 0
    ckpt = runs / "r" / "checkpoint.npz"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:300])
    else:
        arrays, meta = load_checkpoint(ckpt)
        if damage == "wrong shape":
            arrays["u"] = arrays["u"][:, :1]
        else:
            meta["cursor"] = "soon"
        np.savez(ckpt, meta=np.array(json.dumps(meta)), **arrays)
    before = snapshot(runs, locks=False)
    assert_refused(args, capsys, r"checkpoint\.npz", r"--restart")
    assert snapshot(runs, locks=False) == before
    code, out = run_cli(args + ["--restart"], capsys)
    assert code == 0, out


def _nan(split, x):
    x[3, 2] = np.nan
    return x


def _inf(split, x):
    x[5, 1] = np.inf if split == "train" else x[5, 1]
    return x


def _neg_inf(split, x):
    x[5, 1] = -np.inf if split == "train" else x[5, 1]
    return x


def _huge(split, x):
    x[4, 0] = 1e30 if split == "train" else x[4, 0]
    return x


def _all_zero(split, x):
    return np.zeros_like(x) if split == "train" else x


def _negative(split, x):
    return -x - 1 if split == "train" else x


def _identical(split, x):
    return np.ones_like(x) if split == "train" else x


@pytest.mark.parametrize("scope", ["feature", "global"])
@pytest.mark.parametrize("edit,pattern", [
    (_nan, r"split 'train' row \d+ holds NaN or infinite"),
    (_inf, r"split 'train' row \d+ holds NaN or infinite"),
    (_neg_inf, r"split 'train' row \d+ holds NaN or infinite"),
    (_huge, r"split 'train' row \d+ holds a feature of 1e\+30, beyond the 1e\+06"),
    (_all_zero, r"split 'train' has no positive feature"),
    (_negative, r"split 'train' has no positive feature"),
    # The SNN used to train, then nearest class mean crashed (zero variance) on every rerun.
    (_identical, r"split 'train': every usable row holds the same features"),
])
def test_garbage_features_are_refused_before_training(tmp_path, capsys, edit, pattern, scope):
    store = separable_store(tmp_path / "s.zarr", transform=edit)
    assert_refused(["train-snn", "--out", store.path, "--runs-dir", tmp_path / "runs",
                    "--sat-scope", scope, *SNN], capsys, pattern)
    assert not (tmp_path / "runs").exists()


def test_a_split_with_no_usable_rows_is_refused(tmp_path, capsys):
    store = separable_store(tmp_path / "s.zarr")
    g = zarr.open_group(store.path, mode="r+")
    n_test = g["test"]["errors"].shape[0]
    g["test"]["errors"][:] = np.full(n_test, "UnidentifiedImageError: cannot identify image")
    assert_refused(["train-snn", "--out", store.path, "--runs-dir", tmp_path / "runs", *SNN],
                   capsys, r"split 'test' has no usable rows")
    assert not (tmp_path / "runs").exists()


# --- every option is checked before anything is written ----------------------------------------

BAD_OPTIONS = [
    (["embed", "--threads", "-1"], r"--threads -1"),
    (["embed", "--threads", "0"], r"--threads 0"),
    (["embed", "--image-size", "-5"], r"--image-size -5"),
    (["embed", "--image-size", "0"], r"--image-size 0"),
    (["embed", "--split-seed", "-1"], r"--split-seed -1"),
    (["embed", "--split-seed", str(2**32)], r"--split-seed 4294967296"),
    (["embed", "--test-fraction", "0"], r"--test-fraction 0"),
    (["embed", "--test-fraction", "1.5"], r"--test-fraction 1.5"),
    (["embed", "--chunk-size", "0"], r"--chunk-size 0"),
    (["embed", "--batch-size", "-2"], r"--batch-size -2"),
    (["embed", "--limit", "0"], r"--limit 0"),
    (["embed", "--workers", "-1"], r"--workers -1"),
    (["embed", "--device", "tpu"], r"--device tpu"),
    (["embed", "--cluster", "local:0"], r"--cluster 'local:0'"),
    (["train-snn", "--cluster", "local:100000"], r"--cluster local:100000: starts at most 256"),
    (["train-snn", "--present-ticks", "1000000000"], r"--present-ticks 1000000000: period"),
    (["train-snn", "--numba-threads", "4096"], r"--numba-threads 4096"),
    (["train-snn", "--numba-threads", "0"], r"--numba-threads 0"),
    (["train-snn", "--checkpoint-every", "0"], r"--checkpoint-every 0"),
    (["train-snn", "--sat-percentile", "0"], r"--sat-percentile 0"),
    (["train-snn", "--sat-scope", "row"], r"--sat-scope row"),
    (["train-snn", "--eval-split", "holdout"], r"--eval-split holdout"),
    (["train-snn", "--m", "0"], r"--m 0: must be >= 1"),
    (["train-snn", "--tau", "nan"], r"--tau nan: must be finite"),
    (["train-snn", "--coding", "zscore"], r"--coding zscore"),
    (["tune", "--val-fraction", "0"], r"--val-fraction 0"),
    (["tune", "--val-fraction", "1"], r"--val-fraction 1"),
    (["tune", "--trials", "0"], r"--trials 0"),
    (["tune", "--numba-threads", "-1"], r"--numba-threads -1"),
    (["tune", "--search-seed", "-4"], r"--search-seed -4"),
    (["report", "x.zarr", "--per-class", "-1"], r"--per-class -1: must be 0 or more"),
    # report names its own runs: no --run (nor read as an abbreviation of --runs-dir)
    (["report", "x.zarr", "--run", "r"], r"unrecognized arguments: --run r"),
    (["import", "x.npz", "--chunk-size", "0"], r"--chunk-size 0"),
    (["import", "x.npz", "--split-seed", "-1"], r"--split-seed -1"),
]


@pytest.mark.parametrize("argv,pattern", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_a_bad_option_is_refused_before_anything_is_written(tmp_path, in_tmp, capsys, argv, pattern):
    np.savez(in_tmp / "x.npz", X_train=np.ones((4, 2), np.float32), y_train=np.arange(4) % 2,
             classes=np.array(["a", "b"]))
    before = snapshot(tmp_path)
    assert_refused(argv, capsys, pattern)
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_refused_before_anything_is_written(tmp_path, in_tmp, capsys):
    before = snapshot(tmp_path)
    assert_refused(["embed", *EMBED, "--device", "cuda"], capsys, r"--device cuda: torch sees no CUDA")
    assert snapshot(tmp_path) == before


def test_a_rejected_data_value_creates_no_folder(tmp_path, in_tmp, capsys):
    assert_refused(["embed", "--data", "imagefolder:/no/such/folder"], capsys, r"no such folder")
    assert_refused(["embed", "--data", "tfds:mnist"], capsys, r"unknown data source")
    assert list(in_tmp.iterdir()) == []


# --- outputs stay valid at any size -------------------------------------------------------------

def test_metrics_are_strict_json_and_a_big_confusion_goes_to_npy(tmp_path):
    from pipeline.metrics import classification_metrics, write_metrics

    y = np.arange(1200) % 1000
    snn = classification_metrics(y, np.where(y % 7 == 0, -1, y), 1000)
    written = write_metrics(tmp_path, {"snn_accuracy": snn["accuracy"], "confusion": snn["confusion"]})
    assert written["confusion"] == "confusion.npy"
    assert np.load(tmp_path / "confusion.npy").shape == (1000, 1001)
    json.loads((tmp_path / "metrics.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    with pytest.raises(ValueError):
        write_metrics(tmp_path, {"snn_accuracy": float("nan"), "confusion": np.zeros((2, 3))})


def test_the_per_class_plot_of_a_thousand_classes_names_only_the_worst(tmp_path, monkeypatch):
    import matplotlib.axes

    from pipeline import plots

    rng = np.random.default_rng(0)
    per_class = [{"name": f"c{i}", "train_count": int(n), "eval_count": 5,
                  "snn_recall": float(rng.random()), "probe_recall": float(rng.random())}
                 for i, n in enumerate(rng.integers(0, 2000, 1000))]
    per_class[0].update(train_count=0, eval_count=0, snn_recall=None, probe_recall=None)
    labels = []
    monkeypatch.setattr(matplotlib.axes.Axes, "annotate", lambda self, *a, **k: labels.append(a))
    plots.per_class_recall(per_class, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
    assert [a[0] for a in labels] == [str(rank) for rank in range(1, 11)] * 2  # numbered, listed
    labels.clear()
    plots.per_class_recall(per_class[1:20], tmp_path / "few.png")  # few classes: named points
    assert len(labels) == 2 * 19


def test_a_killed_writers_temporary_is_removed_and_modes_are_consistent(tmp_path, capsys):
    store = separable_store(tmp_path / "s.zarr")
    runs = tmp_path / "runs"
    args = ["train-snn", "--out", store.path, "--runs-dir", runs, "--run", "r", *SNN]
    assert run_cli(args + ["--checkpoint-every", "20"], capsys)[0] == 0
    stale = runs / "r" / "checkpoint.npz.k1l2ed.tmp"
    stale.write_bytes(b"half a checkpoint")
    (runs / "r" / "mine.tmp").write_bytes(b"not ours")
    assert run_cli(args + ["--restart"], capsys)[0] == 0
    assert not stale.exists() and (runs / "r" / "mine.tmp").exists()
    modes = {p.name: p.stat().st_mode & 0o777 for p in (runs / "r").iterdir() if p.is_file()}
    assert modes["checkpoint.npz"] == modes["metrics.json"] == modes["config.json"], modes



def test_a_forked_child_does_not_keep_its_parents_lock(tmp_path):
    """A DataLoader worker is a fork of the embed run: if it outlives a killed run for a moment,
    the rerun must not find the store locked by it."""
    out = tmp_path / "s.zarr"
    ready, up = os.pipe()
    with exclusive(out):
        child = os.fork()
        if child == 0:  # the child holds a copy of every other descriptor; it just lingers
            os.write(up, b"1")  # after the fork hooks ran
            time.sleep(60)
            os._exit(0)
    assert os.read(ready, 1) == b"1"
    os.close(ready), os.close(up)
    try:
        with exclusive(out):  # the parent has let go: the lingering child does not hold the lock
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_a_split_or_folder_that_is_not_there_says_what_to_pass(tmp_path, capsys):
    store = separable_store(tmp_path / "s.zarr")  # train and test
    assert_refused(["train-snn", "--out", store.path, "--runs-dir", tmp_path / "runs",
                    "--eval-split", "val", *SNN], capsys,
                   r"has no split 'val' \(it has train, test\); name one it has")
    assert not (tmp_path / "runs").exists()
    (tmp_path / "photos").write_text("a file")
    assert_refused(["embed", "--data", f"imagefolder:{tmp_path / 'photos'}", "--out",
                    tmp_path / "p.zarr"], capsys, r"photos: a file, not a folder")
    assert not (tmp_path / "p.zarr").exists()


def test_an_os_error_without_a_file_names_the_output(tmp_path, capsys, monkeypatch):
    """A network store whose host is not found raises an OSError naming no file: the message
    names the run's --out instead of the bare reason."""
    import stages.cli

    def unreachable(args, data_given):
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(stages.cli, "run", unreachable)
    assert_refused(["embed", "--out", "ftp://x/y.zarr"], capsys,
                   r"error: --out ftp://x/y\.zarr: Name or service not known; fix that")


def test_a_train_split_of_one_class_is_refused_before_anything_is_written(tmp_path, capsys):
    """`embed --limit 1` can leave one row a split: the linear probe used to crash after the SNN
    had trained and written its run folder."""
    rng = np.random.default_rng(0)
    x = rng.random((8, 6)).astype(np.float32)
    store = write_arrays(tmp_path / "one.zarr", {"train": (x, np.zeros(8, int)),
                                                 "test": (x, np.arange(8) % 2)},
                         ["cat", "dog"], encoder={"model": "synthetic"}, source="one-class")
    for argv in (["train-snn", "--out", store.path, "--runs-dir", tmp_path / "runs", *SNN],
                 ["report", store.path, "--runs-dir", tmp_path / "runs", "--e", "1"]):
        assert_refused(argv, capsys, r"split 'train' holds usable rows of one class only \('cat'\)")
    assert not (tmp_path / "runs").exists()


def test_class_names_of_any_text_train_plot_and_report(tmp_path, capsys):
    """Class names are data: matplotlib's $math$ ("money$$" used to raise in the plots on every
    rerun), HTML and control characters, and a user's file that is not UTF-8 in the run folder
    (the page's file list used to raise) leave a finished run with its plots and page."""
    rng = np.random.default_rng(0)
    names = ["money$$", "$_$", "<b>&", "a\nb"]
    y = np.arange(48) % 4
    x = (rng.random((48, 8)) + np.eye(4, 8)[y] * 2).astype(np.float32)
    store = write_arrays(tmp_path / "s.zarr", {"train": (x, y), "test": (x, y)}, names,
                         encoder={"model": "synthetic"}, source="names")
    argv = ["train-snn", "--out", store.path, "--runs-dir", tmp_path / "runs", "--run", "r", *SNN]
    code, out = run_cli(argv, capsys)
    assert code == 0, out
    run = tmp_path / "runs" / "r"
    assert {"metrics.json", "confusion.png", "per_class_recall.png", "report.html"} <= set(
        p.name for p in run.iterdir())
    (run / os.fsdecode(b"notes\xff.txt")).write_text("mine\n")
    code, out = run_cli(argv, capsys)  # evaluated again: the page lists the user's file
    assert code == 0, out
    page = (run / "report.html").read_text(encoding="utf-8")
    assert 'href="notes%FF.txt"' in page and "notes\\xff.txt" in page
    assert "<b>&" not in page and "&lt;b&gt;&amp;" in page


def test_a_plot_that_fails_costs_the_run_no_result(tmp_path, capsys, monkeypatch):
    """metrics.json marks a finished run: a plot that raised used to leave none, on every rerun."""
    from pipeline import plots

    def broken(*args, **kwargs):
        raise ValueError("a name the plot cannot draw")

    monkeypatch.setattr(plots, "confusion_matrix", broken)
    store = separable_store(tmp_path / "s.zarr")
    code, out = run_cli(["train-snn", "--out", store.path, "--runs-dir", tmp_path / "runs",
                         "--run", "r", *SNN], capsys)
    assert code == 0, out
    assert "a plot could not be drawn (ValueError: a name the plot cannot draw)" in out
    assert (tmp_path / "runs" / "r" / "metrics.json").is_file()
    assert (tmp_path / "runs" / "r" / "report.html").is_file()
