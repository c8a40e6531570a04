"""Stage two end to end on small synthetic stores: training, resume, refusals, outputs."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import numpy as np
import pytest

from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.colanet import ColanetConfig, encode_inputs
from pipeline.config import EmbedConfig, TrainConfig
from pipeline.errors import UserError
from pipeline.store import EmbeddingStore, write_arrays
from pipeline.streaming import (Batch, feature_saturation_levels, iter_batches, saturation_level,
                                zca_map)
from pipeline.training import Coding, _presented, ids_used, presentations
from stages.train_snn import run_train_snn
from tests.conftest import assert_same_checkpoint, run_cli, separable_store

SMALL = ColanetConfig(m=3, e=2)


def _run(tmp_path, store, params=SMALL, **train):
    cfg = TrainConfig(runs_dir=str(tmp_path / "runs"), run="r", checkpoint_every=25, **train)
    return run_train_snn(EmbedConfig(out=store.path), cfg, params)


def test_trains_evaluates_and_writes_the_run_folder(tmp_path):
    store = separable_store(tmp_path / "s.zarr")
    m = _run(tmp_path, store)
    run = tmp_path / "runs" / "r"
    for name in ("metrics.json", "config.json", "checkpoint.npz", "online_accuracy.png",
                 "confusion.png", "per_class_recall.png", "spike_raster.png", "weights.png"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "metrics.json").read_text())
    for key in ("snn_accuracy", "no_answer_rate", "probe_accuracy", "ncm_accuracy",
                "per_class_accuracy", "n_train", "n_test", "seconds"):
        assert key in saved
    assert m["n_train"] == 120 and m["n_test"] == 60
    assert set(m["seconds"]) >= {"train", "compile", "snn_eval"}  # compiling is not training
    assert m["snn_accuracy"] >= 0.9 and m["probe_accuracy"] >= 0.95
    assert json.loads((run / "config.json").read_text())["colanet"]["m"] == 3


def test_resume_gives_exactly_the_uninterrupted_weights(tmp_path):
    store = separable_store(tmp_path / "s.zarr")
    whole = _run(tmp_path, store)
    cfg = TrainConfig(runs_dir=str(tmp_path / "b"), run="r", checkpoint_every=25)
    assert run_train_snn(EmbedConfig(out=store.path), cfg, SMALL, stop_after_samples=40) is None
    _, meta = load_checkpoint(tmp_path / "b" / "r" / "checkpoint.npz")
    # Stretches are the store's chunks of 32 rows (never cut at checkpoints); class_floor presents
    # each of these rows about 1.7 times (4 classes of about 30 rows, raised to 50), so the first
    # stretch, rows 0-32, is past 40 samples.
    assert meta["cursor"] == 32
    resumed = run_train_snn(EmbedConfig(out=store.path), cfg, SMALL)
    assert_same_checkpoint(tmp_path / "runs" / "r" / "checkpoint.npz",
                           tmp_path / "b" / "r" / "checkpoint.npz")
    assert resumed["snn_accuracy"] == whole["snn_accuracy"]


@pytest.mark.parametrize("theta_refresh", ["every_change", "anti_hebbian"])
def test_resume_keeps_the_thresholds_of_either_theta_refresh(tmp_path, theta_refresh):
    """With theta_refresh="anti_hebbian" theta_add is state of its own: the checkpoint keeps it
    and a resumed run ends with the uninterrupted run's arrays."""
    store = separable_store(tmp_path / "s.zarr")
    config = ColanetConfig(m=3, e=2, theta_refresh=theta_refresh)
    _run(tmp_path / "whole", store, params=config)
    cfg = TrainConfig(runs_dir=str(tmp_path / "cut"), run="r", checkpoint_every=25)
    assert run_train_snn(EmbedConfig(out=store.path), cfg, config, stop_after_samples=40) is None
    run_train_snn(EmbedConfig(out=store.path), cfg, config)
    a = assert_same_checkpoint(tmp_path / "whole" / "runs" / "r" / "checkpoint.npz",
                               tmp_path / "cut" / "r" / "checkpoint.npz")
    assert ("theta_add" in a) == (theta_refresh == "anti_hebbian")


def test_checkpoint_of_another_store_or_params_is_refused(tmp_path):
    store = separable_store(tmp_path / "s.zarr")
    _run(tmp_path, store)
    other = separable_store(tmp_path / "o.zarr", dim=40, seed=1)
    with pytest.raises(UserError, match="another store.*feature_dim"):
        _run(tmp_path, other)
    with pytest.raises(UserError, match="other settings.*d_h"):
        _run(tmp_path, store, params=ColanetConfig(m=3, e=2, d_h=-0.2))
    # The coding is part of the model: another saturation is refused like another parameter.
    with pytest.raises(UserError, match="other settings.*sat_scope='feature'.*sat_scope='global'"):
        _run(tmp_path, store, params=ColanetConfig(m=3, e=2, sat_scope="global"))
    with pytest.raises(UserError, match="other settings.*sat_percentile"):
        _run(tmp_path, store, params=ColanetConfig(m=3, e=2, sat_percentile=97.0))
    with pytest.raises(UserError, match="other settings.*coding"):
        _run(tmp_path, store, params=ColanetConfig(m=3, e=2, coding="saturation"))
    assert _run(tmp_path, store, params=ColanetConfig(m=3, e=2, d_h=-0.2), restart=True)


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.array("{}"), payload=np.array([object()], dtype=object))
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(path)
    save_checkpoint(path, {"a": np.arange(3)}, {"k": 1})
    arrays, meta = load_checkpoint(path)
    assert meta == {"k": 1} and arrays["a"].tolist() == [0, 1, 2]


def test_saturation_level_matches_the_exact_percentile(tmp_path):
    store = separable_store(tmp_path / "s.zarr")
    x = np.concatenate([b.features for b in iter_batches(store, "train")])
    positive = np.sort(x[x > 0])
    sat = saturation_level(store.features("train"), 99)
    width = positive[-1] / 65536  # the histogram's bin
    k = 0.99 * len(positive)  # sat lies between the order statistics around the 99 % count
    assert positive[int(np.floor(k)) - 1] - width <= sat <= positive[int(np.ceil(k))] + width
    assert sat == pytest.approx(np.percentile(positive, 99), rel=0.01)


def test_streaming_resumes_mid_chunk_and_never_crosses_chunks(tmp_path):
    store = separable_store(tmp_path / "s.zarr", chunk=32)
    stretches = [(int(b.sample_id[0]), b.stop) for b in iter_batches(store, "train", start=10, max_rows=25)]
    assert stretches == [(10, 32), (32, 57), (57, 64), (64, 89), (89, 96), (96, 120)]


def test_non_finite_features_are_refused(tmp_path):
    store = separable_store(tmp_path / "s.zarr")
    store.split("train")["features"][5, 3] = np.nan
    with pytest.raises(UserError, match="row 5 holds NaN"):
        list(iter_batches(EmbeddingStore.open(store.path), "train"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_checkpoints_then_stops_and_rerun_resumes_exactly(tmp_path, monkeypatch, signum):
    store = separable_store(tmp_path / "s.zarr")
    _run(tmp_path / "whole", store)
    calls = {"n": 0}
    import pipeline.training as training

    real = training.train_chunk

    def signalling_train_chunk(*args, **kwargs):
        calls["n"] += 1
        # Call 1 compiles the simulator (compile_simulator); a signal arrives while the third
        # stretch is being learned.
        if calls["n"] == 4:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_chunk", signalling_train_chunk)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "cut", store)
    ckpt = tmp_path / "cut" / "runs" / "r" / "checkpoint.npz"
    _, meta = load_checkpoint(ckpt)
    assert meta["cursor"] == 96  # the stretch in flight (a 32-row chunk) was finished and saved
    monkeypatch.setattr(training, "train_chunk", real)
    _run(tmp_path / "cut", store)
    a, _ = load_checkpoint(tmp_path / "whole" / "runs" / "r" / "checkpoint.npz")
    b, _ = load_checkpoint(ckpt)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_sample_ids_are_unique_across_splits(tmp_path):
    store = separable_store(tmp_path / "s.zarr")
    train_ids = np.concatenate([b.sample_id for b in iter_batches(store, "train")])
    test_ids = np.concatenate([b.sample_id for b in iter_batches(store, "test")])
    assert train_ids.tolist() == list(range(120)) and test_ids.tolist() == list(range(120, 180))


def test_feature_saturation_levels_and_their_coding(tmp_path):
    store = separable_store(tmp_path / "s.zarr")
    x = np.concatenate([b.features for b in iter_batches(store, "train")])
    x[:, 7] = 0.0  # a feature that is never positive never spikes
    store.split("train")["features"][:] = x
    levels = feature_saturation_levels(store.features("train"), 90)
    assert np.isinf(levels[7])
    for j in (0, 3, 20):  # between the order statistics around the 90 % count, to a bin
        pos = np.sort(x[:, j][x[:, j] > 0])
        width, k = float(pos[-1]) / 1024, 0.9 * len(pos)
        assert pos[int(np.floor(k)) - 1] - width <= levels[j] <= pos[int(np.ceil(k))] + width
    params = ColanetConfig(m=2, e=1)
    spikes = encode_inputs(params, x[:5], np.arange(5), levels)
    finite = np.where(np.isinf(levels), 1.0, levels)
    same = encode_inputs(params, np.where(np.isinf(levels), 0, x[:5] / finite).astype(np.float32),
                         np.arange(5), 1.0)
    np.testing.assert_array_equal(spikes, same)
    assert not spikes[:, :, 7].any()
    m = _run(tmp_path, store, params=ColanetConfig(m=3, e=2, sat_scope="feature"))
    assert m["sat_scope"] == "feature" and m["snn_accuracy"] >= 0.9


@pytest.mark.parametrize("percentile", [0.5, 90.0, 100.0])
def test_feature_saturation_levels_do_not_depend_on_the_blocks(percentile):
    """The same levels, to the bit, from one in-memory array and from dask arrays cut into
    blocks of rows of any size (the counts are integers; a block is binned column by column in
    parallel). A column with one positive value is saturated at that value's bin; one with none
    never spikes; at the 100th percentile every level is its column's max."""
    import dask.array as da

    x = np.random.default_rng(3).normal(size=(203, 37)).astype(np.float32)
    x[:, 5] = 0.0
    x[:, 6] = -1.0
    x[17, 6] = 2.5
    whole = feature_saturation_levels(x, percentile)
    for rows in (1, 16, 64, 203):
        np.testing.assert_array_equal(feature_saturation_levels(da.from_array(x, chunks=(rows, 37)),
                                                                percentile), whole)
    assert np.isinf(whole[5]) and 0 < whole[6] <= 2.5
    if percentile == 100.0:
        np.testing.assert_allclose(np.delete(whole, 5), np.delete(x.max(axis=0), 5), rtol=1e-6)


def test_report_runs_each_store_once_per_parameter_set(tmp_path, capsys):
    from stages.report import print_report, run_report

    stores = [separable_store(tmp_path / "a.zarr").path, separable_store(tmp_path / "b.zarr", seed=2).path]
    cfg = TrainConfig(runs_dir=str(tmp_path / "runs"))
    rows = run_report(stores, cfg, SMALL)
    checkpoints = lambda: {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/checkpoint.npz")}  # noqa: E731
    before = checkpoints()
    again = run_report(stores, cfg, SMALL)  # finished runs: evaluated again, not retrained
    assert checkpoints() == before and len(before) == 2  # a retrained run rewrites its checkpoint
    assert [r["seconds"]["train"] for r in rows] == [r["seconds"]["train"] for r in again]
    assert [r["snn_accuracy"] for r in rows] == [r["snn_accuracy"] for r in again]
    run_folders = lambda: [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]  # noqa: E731
    assert len(run_folders()) == 2
    run_report(stores[:1], cfg, ColanetConfig(m=3, e=1))
    assert len(run_folders()) == 3
    # A run recorded before an option existed (its config.json lacks the key, its folder has the
    # default name of then) is reused when the option's earlier value is asked for, not trained
    # again under today's name.
    earlier = ColanetConfig(m=3, e=2, class_floor=0)
    run_report(stores[:1], cfg, earlier)
    (folder,) = [p for p in run_folders() if "class_floor0" in p.name]
    record = json.loads((folder / "config.json").read_text())
    del record["colanet"]["class_floor"]
    (folder / "config.json").write_text(json.dumps(record))
    folder.rename(folder.with_name("named-before-the-option"))
    before = checkpoints()
    run_report(stores[:1], cfg, earlier)
    assert checkpoints() == before and len(run_folders()) == 4
    print_report(rows)
    assert "a  " in capsys.readouterr().out


def _imbalanced_store(path):
    """Five classes: "rare" has 4 train rows, "unseen" no eval rows, and the first two train
    rows are skipped images (not usable)."""
    import zarr

    from pipeline.store import write_arrays

    rng = np.random.default_rng(3)
    protos = rng.random((5, 48)) * (rng.random((5, 48)) < 0.3) * 3.0

    def draw(y):
        return np.maximum(protos[y] + rng.normal(0, 0.3, (len(y), 48)), 0).astype(np.float32), y

    y_train = rng.permutation(np.r_[np.repeat([0, 1, 2, 3], 30), np.full(4, 4)])
    y_test = rng.permutation(np.repeat([0, 1, 2, 4], 12))
    store = write_arrays(path, {"train": draw(y_train), "test": draw(y_test)},
                         ["a", "b", "c", "unseen", "rare"], encoder={"model": "synthetic"},
                         source="imbalanced", chunk_size=32)
    zarr.open_group(store.path, mode="r+")["train"]["errors"][:2] = ["OSError: skipped"] * 2
    return store


def _usable_train_counts(store):
    """Counted here from the stored labels and skip reasons, not by the pipeline's helpers."""
    labels = np.asarray(store.split("train")["labels"][:])
    usable = np.asarray(store.split("train")["errors"][:]) == ""
    return [int(((labels == k) & usable).sum()) for k in range(len(store.class_names))]


@pytest.mark.parametrize("baselines", [True, False])
def test_per_class_entries_agree_with_the_confusion_matrix_and_train_labels(tmp_path, baselines):
    store = _imbalanced_store(tmp_path / "s.zarr")
    m = _run(tmp_path, store, ColanetConfig(m=3, e=1), skip_baselines=not baselines)
    saved = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    assert (tmp_path / "runs" / "r" / "per_class_recall.png").stat().st_size > 0
    per_class, confusion = saved["per_class"], np.asarray(saved["confusion"])
    assert [c["name"] for c in per_class] == store.class_names
    assert [c["train_count"] for c in per_class] == _usable_train_counts(store)
    assert sum(c["train_count"] for c in per_class) == m["n_train"] == 122
    for k, c in enumerate(per_class):
        n = confusion[k].sum()
        assert c["eval_count"] == n
        assert c["snn_recall"] == (None if n == 0 else pytest.approx(confusion[k, k] / n, abs=1e-6))
        assert saved["per_class_accuracy"][c["name"]] == (c["snn_recall"] or 0.0)
    assert per_class[3]["eval_count"] == 0 and per_class[3]["snn_recall"] is None
    methods = ["snn", "probe", "ncm"] if baselines else ["snn"]
    for c in per_class:
        assert {k for k in c if k.endswith("_recall")} == {f"{k}_recall" for k in methods}
        assert {k for k in c if k.endswith("_f1")} == {f"{k}_f1" for k in methods}
    for k, c in enumerate(per_class):  # precision: the confusion's column; no answer: the last
        predicted = confusion[:, k].sum()
        assert c["snn_precision"] == (None if predicted == 0 else
                                      pytest.approx(confusion[k, k] / predicted, abs=1e-6))
        p, r = c["snn_precision"], c["snn_recall"]
        assert c["snn_f1"] == (None if p is None or r is None else 0.0 if p + r == 0 else
                               pytest.approx(2 * p * r / (p + r), abs=1e-5))
    n = len(store.class_names)
    assert confusion.shape == (n, n + 1)
    assert confusion[:, n].sum() == round(saved["no_answer_rate"] * m["n_test"])
    for k in methods:  # recall weighted by eval count is the accuracy
        weighted = sum(c[f"{k}_recall"] * c["eval_count"] for c in per_class if c["eval_count"])
        assert weighted / m["n_test"] == pytest.approx(saved[f"{k}_accuracy"], abs=1e-5)
    if baselines:
        assert per_class[3]["probe_recall"] is None and per_class[3]["ncm_recall"] is None


def test_precision_f1_and_top_k_accuracy_by_hand():
    from pipeline.metrics import class_precision, f1_score, top_k_accuracy

    # Predicted as 0: samples of 0 and 1; as 1: one of 1; class 2 never predicted; -1 counts
    # as no prediction of any class.
    assert class_precision([0, 0, 1, 1, 2], [0, -1, 0, 1, 1], 3) == [0.5, 0.5, None]
    assert f1_score(0.5, 1.0) == pytest.approx(2 / 3, abs=1e-6)
    assert f1_score(0.0, 0.0) == 0.0 and f1_score(None, 1.0) is None
    ranked = np.array([[2, 0, -1], [1, -1, -1], [-1, -1, -1], [0, 1, 2]])
    assert top_k_accuracy(np.array([0, 0, 2, 2]), ranked) == 0.5  # rows 0 and 3
    assert top_k_accuracy(np.array([], np.int64), ranked[:0]) == 0.0


def test_metrics_record_the_model_speed_and_top5(tmp_path):
    store = separable_store(tmp_path / "s.zarr", classes=7)
    m = _run(tmp_path, store, skip_baselines=True)
    saved = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    assert saved["colanet"] == SMALL.to_dict()
    # each copy sees 48 inputs, of one view per copy: 2 x 48 coded inputs with their levels
    assert saved["resolved"]["n_inputs"] == 48 and saved["resolved"]["views"] == 2
    assert saved["resolved"]["sat_levels"] == 96
    assert saved["resolved"]["gain"] == pytest.approx(SMALL.gain_total / 48)
    config = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    finite = [v for v in config["coding"]["sat"] if v is not None]
    assert saved["resolved"]["inputs_never_spiking"] == 96 - len(finite)
    assert saved["resolved"]["sat_max"] == max(finite)
    assert saved["classes"] == store.class_names == [c["name"] for c in saved["per_class"]]
    # balanced order: at least every usable row once
    assert saved["train_presentations"] >= m["n_train"] == 120
    assert saved["train_samples_per_s"] == pytest.approx(
        saved["train_presentations"] / m["seconds"]["train"], rel=0.01)
    assert saved["eval_samples_per_s"] == pytest.approx(60 / m["seconds"]["snn_eval"], rel=0.01)
    assert saved["snn_accuracy"] <= saved["snn_top5_accuracy"] <= 1.0


def test_class_recall_and_the_worst_classes_order():
    from pipeline.metrics import class_recall, worst_classes

    # No answer (-1) is an error; a class with no samples has no recall.
    assert class_recall([0, 0, 1, 1, 1], [0, -1, 1, 1, 0], 3) == [0.5, 0.666667, None]
    entries = [{"name": n, "snn_recall": r}
               for n, r in [("a", 1.0), ("b", None), ("c", 0.25), ("d", 0.0), ("e", 0.25)]]
    assert [c["name"] for c in worst_classes(entries, 4)] == ["d", "c", "e", "a"]
    assert [c["name"] for c in worst_classes(entries, 9)][-1] == "b"
    assert worst_classes(entries, 0) == []


def _per_class_rows(out: str, names: list[str]) -> list[list[str]]:
    """The rows of the per-class table printed by `annsnn report` (one store)."""
    from itertools import takewhile

    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["class", "train"]) + 1
    return [line.split() for line in takewhile(lambda line: line.split()[:1] and
                                               line.split()[0] in names, lines[start:])]


def test_report_prints_the_worst_classes_first_up_to_the_limit(tmp_path, capsys):
    store = _imbalanced_store(tmp_path / "s.zarr")
    # The earlier defaults' coding and order: the rare class is absorbed (with today's it is not).
    argv = ["report", store.path, "--runs-dir", tmp_path / "runs", "--m", "3", "--e", "1",
            "--numba-threads", "1", "--order", "store", "--coding", "saturation"]
    code, out = run_cli([*argv, "--per-class", "2"], capsys)
    assert code == 0, out
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    per_class = json.loads((run / "metrics.json").read_text())["per_class"]
    rows = _per_class_rows(out, store.class_names)
    assert len(rows) == 2
    recalls = [c["snn_recall"] for c in per_class if c["snn_recall"] is not None]
    worst = min(recalls)
    assert worst < max(recalls)  # the rare class is absorbed: the order below means something
    by_name = {c["name"]: c for c in per_class}
    assert by_name[rows[0][0]]["snn_recall"] == worst
    assert by_name[rows[0][0]]["snn_recall"] <= by_name[rows[1][0]]["snn_recall"]
    assert rows[0][1:3] == [str(by_name[rows[0][0]]["train_count"]),
                            str(by_name[rows[0][0]]["eval_count"])]
    # More rows than classes: all of them, the class with no eval rows last.
    code, out = run_cli([*argv, "--per-class", "10"], capsys)
    rows = _per_class_rows(out, store.class_names)
    assert code == 0 and len(rows) == 5 and rows[-1][0] == "unseen" and rows[-1][3:] == ["-"] * 3
    printed = [float(r[3].rstrip("%")) for r in rows[:-1]]
    assert printed == sorted(printed) and printed[0] == pytest.approx(100 * worst, abs=0.01)
    code, out = run_cli([*argv, "--per-class", "0"], capsys)
    assert code == 0 and "SNN-probe" in out and "lowest SNN recall" not in out
    assert not any(line.split()[:2] == ["class", "train"] for line in out.splitlines())


def test_train_snn_embeds_a_missing_store_first(tmp_path):
    embed = EmbedConfig(data="digits", limit=30, image_size=32, chunk_size=16, batch_size=8,
                        out=str(tmp_path / "d.zarr"))
    m = run_train_snn(embed, TrainConfig(runs_dir=str(tmp_path / "runs"), skip_baselines=True),
                      ColanetConfig(m=2, e=1))
    assert EmbeddingStore.open(embed.out).is_complete()
    assert m["n_train"] == 30 and m["n_test"] == 30 and "probe_accuracy" not in m


def test_a_second_training_run_in_the_same_folder_is_refused(tmp_path):
    from pipeline.lock import exclusive

    store = separable_store(tmp_path / "s.zarr")
    with exclusive(tmp_path / "runs" / "r"):
        with pytest.raises(UserError, match="in use by pid"):
            _run(tmp_path, store)


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    import pipeline.checkpoint as checkpoint

    store = separable_store(tmp_path / "s.zarr")
    cfg = TrainConfig(runs_dir=str(tmp_path / "runs"), run="r", checkpoint_every=25)
    run_train_snn(EmbedConfig(out=store.path), cfg, SMALL, stop_after_samples=30)
    ckpt = tmp_path / "runs" / "r" / "checkpoint.npz"
    before = ckpt.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", no_space)
    with pytest.raises(UserError, match="No space left on device.*previous checkpoint is intact"):
        run_train_snn(EmbedConfig(out=store.path), cfg, SMALL)
    assert ckpt.read_bytes() == before
    assert [p.name for p in ckpt.parent.iterdir() if p.suffix == ".tmp"] == []


def test_a_second_pass_resumes_mid_pass_to_the_uninterrupted_weights(tmp_path):
    """Two passes: the second in a seeded order with new sample ids; killed in the middle of the
    second pass and resumed, the weights equal an uninterrupted run's; and they differ from one
    pass's."""
    store = separable_store(tmp_path / "s.zarr")
    config = ColanetConfig(m=3, e=2, order="store")  # 120 presentations a pass
    one = _run(tmp_path / "one", store, params=config)
    whole = _run(tmp_path / "whole", store, params=config, passes=2)
    cfg = TrainConfig(runs_dir=str(tmp_path / "cut" / "runs"), run="r", checkpoint_every=25,
                      passes=2)
    assert run_train_snn(EmbedConfig(out=store.path), cfg, config, stop_after_samples=170) is None
    _, meta = load_checkpoint(tmp_path / "cut" / "runs" / "r" / "checkpoint.npz")
    assert meta["pass_index"] == 1 and 0 < meta["cursor"] < 120  # stopped inside pass two
    resumed = run_train_snn(EmbedConfig(out=store.path), cfg, config)
    a, _ = load_checkpoint(tmp_path / "whole" / "runs" / "r" / "checkpoint.npz")
    b, _ = load_checkpoint(tmp_path / "cut" / "runs" / "r" / "checkpoint.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    c, _ = load_checkpoint(tmp_path / "one" / "runs" / "r" / "checkpoint.npz")
    assert not np.array_equal(a["r"], c["r"])
    assert whole["passes"] == resumed["passes"] == 2 and whole["n_train"] == one["n_train"] == 120
    assert len(a["online_correct"]) == 240


def test_centred_coding_subtracts_the_train_mean_and_is_stored_with_the_model(tmp_path):
    store = separable_store(tmp_path / "s.zarr")
    config = ColanetConfig(m=3, e=2, coding="centred")
    m = _run(tmp_path, store, params=config)
    _, meta = load_checkpoint(tmp_path / "runs" / "r" / "checkpoint.npz")
    x = store.split("train")["features"][:]
    np.testing.assert_allclose(meta["centre"], x.astype(np.float64).mean(axis=0), rtol=1e-6)
    recorded = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert recorded["colanet"]["coding"] == "centred" and len(recorded["coding"]["centre"]) == 48
    assert m["snn_accuracy"] >= 0.9  # separable data stays separable above the mean
    again = _run(tmp_path, store, params=config)  # resumed from the stored coding: same answers
    assert again["snn_accuracy"] == m["snn_accuracy"]


def test_on_off_coding_gives_each_feature_two_inputs_stored_with_the_model(tmp_path):
    """``coding="on_off"``: inputs ``[x - mean, mean - x]`` (2 D of them), levels measured on
    them, the model sized for them; the stored coding answers the same after a reload."""
    store = separable_store(tmp_path / "s.zarr")
    config = ColanetConfig(m=3, e=2, coding="on_off")
    m = _run(tmp_path, store, params=config)
    arrays, meta = load_checkpoint(tmp_path / "runs" / "r" / "checkpoint.npz")
    assert arrays["r"].shape[1] == 96 and meta["on_off"] is True and len(meta["sat"]) == 96
    coding = Coding.from_meta(meta)
    x = store.split("train")["features"][:5]
    v = coding.inputs(x)
    np.testing.assert_array_equal(v[:, :48], x - coding.centre)
    np.testing.assert_array_equal(v[:, 48:], coding.centre - x)
    np.testing.assert_allclose(coding.centre, store.split("train")["features"][:].mean(axis=0),
                               rtol=1e-5)
    # Levels of both halves, each of its own column (lazy column blocks once counted the off
    # half under the first 48 features: the off inputs got no level and never spiked).
    v = coding.inputs(store.split("train")["features"][:])
    for j in (0, 5, 48, 53, 95):
        pos = np.sort(v[:, j][v[:, j] > 0])
        width, k = float(pos[-1]) / 1024, config.sat_percentile / 100 * len(pos)
        above = pos[min(int(np.ceil(k)), len(pos) - 1)]
        assert pos[int(np.floor(k)) - 1] - width <= meta["sat"][j] <= above + width
    assert m["snn_accuracy"] >= 0.9
    assert _run(tmp_path, store, params=config)["snn_accuracy"] == m["snn_accuracy"]


def test_whitened_coding_decorrelates_the_signed_roots_and_is_stored_with_the_model(tmp_path):
    """``coding="whitened"``: inputs ``(sqrt±(x) - mean) W`` with ``W`` the inverse square root
    of the shrunk train covariance; the map travels in the checkpoint as an array, a row's
    inputs do not depend on the rows beside it, and a resumed run answers the same."""
    store = separable_store(tmp_path / "s.zarr")
    config = ColanetConfig(m=3, e=2, coding="whitened", whiten_shrinkage=0.5, views=1)
    m = _run(tmp_path, store, params=config)
    arrays, meta = load_checkpoint(tmp_path / "runs" / "r" / "checkpoint.npz")
    assert meta["whitened"] is True and arrays["coding_whiten"].shape == (48, 48)
    coding = Coding.from_meta(meta, arrays)
    assert "coding_whiten" not in arrays  # taken by the coding: the rest is the network
    x = store.split("train")["features"][:].astype(np.float64)
    roots = np.sign(x) * np.sqrt(np.abs(x))
    np.testing.assert_allclose(coding.centre, roots.mean(axis=0), rtol=1e-5, atol=1e-7)
    cov = np.cov(roots, rowvar=False)
    shrunk = 0.5 * cov + 0.5 * np.trace(cov) / 48 * np.eye(48)
    w = coding.whiten.astype(np.float64)
    np.testing.assert_allclose(w, w.T, atol=1e-5)
    np.testing.assert_allclose(w @ shrunk @ w, np.eye(48), atol=1e-4)
    v = coding.inputs(store.split("train")["features"][:])
    np.testing.assert_allclose(v, (roots - coding.centre) @ w, rtol=1e-4, atol=1e-4)
    alone = np.concatenate([coding.inputs(store.split("train")["features"][i:i + 1])
                            for i in range(7)])
    np.testing.assert_array_equal(alone, v[:7])  # the same bits whatever the batch
    recorded = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert recorded["coding"]["whitened"] is True and recorded["colanet"]["whiten_shrinkage"] == 0.5
    assert m["snn_accuracy"] >= 0.9
    assert _run(tmp_path, store, params=config)["snn_accuracy"] == m["snn_accuracy"]


def test_a_checkpoint_from_before_a_new_setting_resumes_with_its_default(tmp_path):
    """A checkpoint written before ``whiten_shrinkage`` existed lacks the key; it ran with the
    setting's default (no whitening), so it resumes instead of being refused."""
    store = separable_store(tmp_path / "s.zarr")
    config = dataclasses.replace(SMALL, coding="centred")  # the default then
    cfg = TrainConfig(runs_dir=str(tmp_path / "runs"), run="r", checkpoint_every=25)
    assert run_train_snn(EmbedConfig(out=store.path), cfg, config, stop_after_samples=50) is None
    path = tmp_path / "runs" / "r" / "checkpoint.npz"
    arrays, meta = load_checkpoint(path)
    del meta["config"]["whiten_shrinkage"], meta["whitened"]
    save_checkpoint(path, arrays, meta)
    resumed = run_train_snn(EmbedConfig(out=store.path), cfg, config)
    assert resumed["n_train"] == 120 and resumed["snn_accuracy"] == _run(
        tmp_path / "whole", store, params=config)["snn_accuracy"]


def test_a_checkpoint_from_before_threshold_adaptation_resumes_only_without_it(tmp_path):
    """A checkpoint written before theta_rise, theta_fall, views and class_floor existed lacks
    their keys, the theta_shift array and the views' rotations: it ran without adaptation on one
    view, with no floor, and (as every record before the twelfth round's default) with
    ``copy_share`` 1.0 recorded. A run with the new defaults is refused, naming the five
    settings, before anything is written; with those settings it resumes and finishes as an
    uninterrupted run of them does."""
    store = separable_store(tmp_path / "s.zarr")
    before = dataclasses.replace(SMALL, theta_rise=0.0, theta_fall=0.0, views=1, copy_share=1.0,
                                 class_floor=0)
    cfg = TrainConfig(runs_dir=str(tmp_path / "runs"), run="r", checkpoint_every=25)
    assert run_train_snn(EmbedConfig(out=store.path), cfg, before, stop_after_samples=50) is None
    path = tmp_path / "runs" / "r" / "checkpoint.npz"
    arrays, meta = load_checkpoint(path)
    assert "theta_shift" not in arrays  # nothing to keep without adaptation
    assert "coding_view_order" not in arrays  # nor rotations with one view
    for key in ("theta_rise", "theta_fall", "views", "class_floor"):
        del meta["config"][key]
    del meta["views"]
    save_checkpoint(path, arrays, meta)
    written = path.read_bytes()
    with pytest.raises(UserError, match=r"\(class_floor=0, copy_share=1\.0, theta_fall=0\.0, "
                                        r"theta_rise=0\.0, views=1; this run: class_floor=50, "
                                        r"copy_share=0\.8, theta_fall=0\.5, theta_rise=0\.5, "
                                        r"views=None\)"):
        run_train_snn(EmbedConfig(out=store.path), cfg, SMALL)
    assert path.read_bytes() == written
    resumed = run_train_snn(EmbedConfig(out=store.path), cfg, before)
    assert resumed["n_train"] == 120 and resumed["snn_accuracy"] == _run(
        tmp_path / "whole", store, params=before)["snn_accuracy"]


def test_balanced_presentations_repeat_small_classes_up_to_the_mean_class():
    """``order="balanced"``: a sample of class c is presented ``max(1, n_mean / n_c)`` times (the
    fraction by a seeded draw), every presentation with its own id; ``"store"`` presents each
    once in store order."""
    counts = np.array([10, 30, 20, 0])  # mean over classes with rows: 20
    np.testing.assert_array_equal(presentations(ColanetConfig(order="store"), counts), 1.0)
    np.testing.assert_array_equal(presentations(ColanetConfig(order="balanced", class_floor=0),
                                                counts), [2.0, 1.0, 1.0, 20.0])
    labels = np.repeat([0, 1, 2], [10, 30, 20])
    batch = Batch(features=np.arange(60, dtype=np.float32)[:, None], labels=labels,
                  sample_id=np.arange(60) + 1000, stop=60)
    balanced = ColanetConfig(order="balanced", class_floor=0)
    out = _presented(balanced, batch, 0, 5000, presentations(balanced, counts))
    shown = np.bincount(out.features[:, 0].astype(int), minlength=60)
    np.testing.assert_array_equal(shown, np.where(labels == 0, 2, 1))
    assert len(np.unique(out.sample_id)) == len(out.sample_id) == 70
    assert not np.array_equal(out.labels, np.sort(out.labels))  # shuffled
    again = _presented(balanced, batch, 0, 5000, presentations(balanced, counts))
    np.testing.assert_array_equal(again.sample_id, out.sample_id)
    # A fractional rate: each sample of class 0 is shown once or twice, about 1.5 times on average.
    half = np.array([1.5, 1.0, 1.0])
    shown = np.bincount(_presented(balanced, batch, 0, 5000, half).features[:, 0].astype(int),
                        minlength=60)[:10]
    assert set(shown) == {1, 2}
    store_order = _presented(ColanetConfig(order="store"), batch, 0, 5000, np.ones(3))
    assert store_order is batch


def test_a_class_floor_repeats_the_rows_of_classes_with_few():
    """``class_floor`` F: the balanced and equal orders read the mean class as ``max(n_mean,
    F)``, so where classes have few rows every row is repeated within the pass; where the mean
    class has F rows or more the presentations are what they were without it, to the bit; the
    store and sqrt orders do not read it."""
    counts = np.array([10, 30, 20, 0])  # mean over classes with rows: 20
    balanced = ColanetConfig(order="balanced", class_floor=50)
    np.testing.assert_allclose(presentations(balanced, counts), [5.0, 5 / 3, 2.5, 50.0])
    equal = ColanetConfig(order="equal", class_floor=50)
    np.testing.assert_allclose(presentations(equal, counts)[:3] * counts[:3], 50.0)
    for config in (balanced, equal, ColanetConfig(order="store", class_floor=50),
                   ColanetConfig(order="sqrt", class_floor=50)):
        without = dataclasses.replace(config, class_floor=0)
        np.testing.assert_array_equal(presentations(config, counts * 10),  # mean class 200
                                      presentations(without, counts * 10))
        if config.order in ("store", "sqrt"):
            np.testing.assert_array_equal(presentations(config, counts),
                                          presentations(without, counts))
    labels = np.repeat([0, 1, 2], [10, 30, 20])
    batch = Batch(features=np.arange(60, dtype=np.float32)[:, None], labels=labels,
                  sample_id=np.arange(60), stop=60)
    shown = np.bincount(_presented(balanced, batch, 0, 60, presentations(balanced, counts))
                        .features[:, 0].astype(int), minlength=60)
    assert set(shown[labels == 0]) == {5} and set(shown[labels == 2]) <= {2, 3}
    assert set(shown[labels == 1]) <= {1, 2} and 140 <= shown.sum() <= 160


def test_equal_and_sqrt_orders_equalise_the_classes_within_a_pass_of_n_presentations():
    """``order="equal"``: a sample of class c is presented ``n_mean / n_c`` times in expectation,
    so every class ``n_mean`` times a pass: a large class is subsampled afresh each pass (a
    sample 0 or 1 times), a small one repeated. ``"sqrt"``: ``1 / sqrt(n_c)`` scaled to N
    presentations. Both keep a pass at about N presentations, every id unique and below
    :func:`ids_used`."""
    counts = np.array([10, 30, 20, 0])  # mean over classes with rows: 20
    equal, sqrt = ColanetConfig(order="equal", class_floor=0), ColanetConfig(order="sqrt")
    np.testing.assert_allclose(presentations(equal, counts), [2.0, 2 / 3, 1.0, 20.0])
    r = presentations(sqrt, counts)
    np.testing.assert_allclose(r[:3] @ counts[:3], 60.0)
    np.testing.assert_allclose([r[0] / r[1], r[0] / r[2]], [np.sqrt(3), np.sqrt(2)])
    for config in (equal, sqrt):  # classes of equal size: each sample exactly once
        np.testing.assert_array_equal(presentations(config, np.array([7, 7, 0, 7]))[[0, 1, 3]],
                                      1.0)
    labels = np.repeat([0, 1, 2], [10, 30, 20])
    batch = Batch(features=np.arange(60, dtype=np.float32)[:, None], labels=labels,
                  sample_id=np.arange(60), stop=60)
    for config in (sqrt, equal):  # equal last: its counts are checked after the loop
        repeats = presentations(config, counts)
        passes = [_presented(config, batch, p, 60, repeats) for p in range(200)]
        shown = np.array([np.bincount(b.features[:, 0].astype(int), minlength=60)
                          for b in passes])  # (pass, row): presentations of each row
        for c in range(3):  # each sample floor(r_c) or ceil(r_c) times; the class r_c n_c a pass
            rows = shown[:, labels == c]
            assert set(np.unique(rows)) <= {np.floor(repeats[c]), np.ceil(repeats[c])}
            assert abs(rows.sum(axis=1).mean() - repeats[c] * counts[c]) < 1.0
        assert abs(shown.sum(axis=1).mean() - 60) < 1.5
        ids = np.concatenate([b.sample_id for b in passes])
        assert len(np.unique(ids)) == len(ids) and ids.max() < ids_used(60, 200, repeats)
        again = _presented(config, batch, 7, 60, repeats)  # the draw: keyed by seed, pass, stop
        np.testing.assert_array_equal(again.sample_id, passes[7].sample_id)
    # equal: every class 20 times a pass; the large class's samples sit out passes, other ones
    # each pass
    assert shown[:, labels == 1].min() == 0 and not np.array_equal(shown[0], shown[1])


@pytest.mark.parametrize("order", ["balanced", "sqrt", "equal"])
def test_balanced_order_resumes_to_the_uninterrupted_weights(tmp_path, order):
    """Class-balanced presentation, and the class-equal ones (the drawn classes are a little
    imbalanced): a run stopped mid-pass and resumed ends with the uninterrupted run's weights."""
    store = separable_store(tmp_path / "s.zarr")
    config = ColanetConfig(m=3, e=2, order=order)
    whole = _run(tmp_path / "whole", store, params=config)
    cfg = TrainConfig(runs_dir=str(tmp_path / "cut" / "runs"), run="r", checkpoint_every=25)
    assert run_train_snn(EmbedConfig(out=store.path), cfg, config, stop_after_samples=60) is None
    resumed = run_train_snn(EmbedConfig(out=store.path), cfg, config)
    a, _ = load_checkpoint(tmp_path / "whole" / "runs" / "r" / "checkpoint.npz")
    b, _ = load_checkpoint(tmp_path / "cut" / "runs" / "r" / "checkpoint.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert resumed["snn_accuracy"] == whole["snn_accuracy"]
    shown = len(a["online_correct"])
    if order in ("balanced", "equal"):  # 4 classes of about 30 rows, each raised to class_floor's
        assert abs(shown - 200) < 15  # 50 presentations: the rows repeated, about 4 x 50 of them
    else:
        assert abs(shown - 120) < 15  # other rows, about N of them


def test_a_resumed_run_says_where_it_resumes_and_a_trained_one_that_it_is_evaluated(tmp_path,
                                                                                        capsys):
    store = separable_store(tmp_path / "s.zarr")
    cfg = TrainConfig(runs_dir=str(tmp_path / "runs"), run="r", checkpoint_every=25)
    assert run_train_snn(EmbedConfig(out=store.path), cfg, SMALL, stop_after_samples=40) is None
    capsys.readouterr()
    run_train_snn(EmbedConfig(out=store.path), cfg, SMALL)
    err = capsys.readouterr().err
    assert "resuming" in err and "at train row 32 of 120 (pass 1 of 1)" in err
    run_train_snn(EmbedConfig(out=store.path), cfg, SMALL)
    assert "is trained; evaluating it again" in capsys.readouterr().err


def test_views_code_rotations_of_the_whitened_inputs_and_resume(tmp_path):
    """``views=3``: the coder codes three views of the whitened inputs side by side, the inputs
    themselves (as a one-view run codes them) and two seeded rotations of them (each row's
    length kept, its coordinates not); the rotations travel in the checkpoint beside the map,
    the levels cover the 144 coded inputs, config.json records the views, and a run stopped
    half way resumes to the uninterrupted run's state."""
    store = separable_store(tmp_path / "s.zarr")
    config = ColanetConfig(m=3, e=3, views=3)
    whole = _run(tmp_path / "whole", store, params=config)
    arrays, meta = load_checkpoint(tmp_path / "whole" / "runs" / "r" / "checkpoint.npz")
    assert arrays["coding_view_order"].shape == (2, 48) and meta["views"] == 3
    coding = Coding.from_meta(meta, arrays)
    assert "coding_view_blocks" not in arrays  # taken by the coding: the rest is the network
    assert coding.views == 3 and np.shape(coding.sat) == (144,)
    _run(tmp_path / "one", store, params=dataclasses.replace(config, views=1))
    arrays, meta = load_checkpoint(tmp_path / "one" / "runs" / "r" / "checkpoint.npz")
    one = Coding.from_meta(meta, arrays)
    assert one.views == 1 and "coding_view_order" not in arrays
    x = store.split("train")["features"][:]
    v, z = coding.inputs(x).astype(np.float64), one.inputs(x).astype(np.float64)
    np.testing.assert_array_equal(v[:, :48], z)
    for view in (1, 2):
        rotated = v[:, view * 48:(view + 1) * 48]
        np.testing.assert_allclose(np.linalg.norm(rotated, axis=1), np.linalg.norm(z, axis=1),
                                   rtol=1e-4)
        assert np.abs(rotated - z).max() > 0.1
    alone = np.concatenate([coding.inputs(x[i:i + 1]) for i in range(7)])
    np.testing.assert_array_equal(alone, v[:7].astype(np.float32))  # whatever the batch
    recorded = json.loads((tmp_path / "whole" / "runs" / "r" / "config.json").read_text())
    assert recorded["colanet"]["views"] == 3 and whole["snn_accuracy"] >= 0.9
    cfg = TrainConfig(runs_dir=str(tmp_path / "runs"), run="r", checkpoint_every=25)
    assert run_train_snn(EmbedConfig(out=store.path), cfg, config, stop_after_samples=50) is None
    resumed = run_train_snn(EmbedConfig(out=store.path), cfg, config)
    assert resumed["snn_accuracy"] == whole["snn_accuracy"]
    resumed_arrays, _ = load_checkpoint(tmp_path / "runs" / "r" / "checkpoint.npz")
    whole_arrays, _ = load_checkpoint(tmp_path / "whole" / "runs" / "r" / "checkpoint.npz")
    for name in ("r", "theta_shift", "arrival_bits", "acc", "coding_view_blocks"):
        np.testing.assert_array_equal(resumed_arrays[name], whole_arrays[name], name)


@pytest.mark.parametrize("views,damage,refusal", [
    (2, lambda a, m: a["coding_view_order"].__setitem__((0, 0), 1), "damaged"),  # no permutation
    (2, lambda a, m: a.pop("coding_view_blocks"), "damaged"),
    # A whitened run's checkpoint that lost its map and says so in its metadata: consistent on
    # its own, but not the coding its configuration codes with (the model file's check).
    (1, lambda a, m: (a.pop("coding_whiten"), m.update(whitened=False)),
     "checkpoint is inconsistent"),
])
def test_a_checkpoint_with_a_damaged_coding_is_refused(tmp_path, views, damage, refusal):
    """A checkpoint whose views' order is not a permutation, whose rotations are missing, or
    whose coding is not its configuration's, is refused naming the file, before anything is
    written."""
    store = separable_store(tmp_path / "s.zarr")
    config = ColanetConfig(m=3, e=2, views=views)
    cfg = TrainConfig(runs_dir=str(tmp_path / "runs"), run="r", checkpoint_every=25)
    assert run_train_snn(EmbedConfig(out=store.path), cfg, config, stop_after_samples=50) is None
    path = tmp_path / "runs" / "r" / "checkpoint.npz"
    arrays, meta = load_checkpoint(path)
    damage(arrays, meta)
    save_checkpoint(path, arrays, meta)
    before = path.read_bytes()
    with pytest.raises(UserError, match=f"{path}.*{refusal}"):
        run_train_snn(EmbedConfig(out=store.path), cfg, config)
    assert path.read_bytes() == before


def test_the_model_does_not_depend_on_checkpoint_every(tmp_path):
    """The balanced order shuffles a stretch at a time; stretches used to end at checkpoints too,
    so --checkpoint-every changed the model, and a resume with another value changed it again."""
    store = separable_store(tmp_path / "s.zarr")
    config = ColanetConfig(m=3, e=2)
    runs = []
    for every, stop in ((7, None), (1000, None), (7, 20)):
        cfg = TrainConfig(runs_dir=str(tmp_path / f"r{every}-{stop}"), run="r",
                          checkpoint_every=every, skip_baselines=True)
        if stop is not None:  # stopped with checkpoints every 7, resumed with every 1000
            assert run_train_snn(EmbedConfig(out=store.path), cfg, config,
                                 stop_after_samples=stop) is None
            cfg = TrainConfig(**{**cfg.to_dict(), "checkpoint_every": 1000})
        run_train_snn(EmbedConfig(out=store.path), cfg, config)
        runs.append(tmp_path / f"r{every}-{stop}" / "r" / "checkpoint.npz")
    assert_same_checkpoint(runs[0], runs[1])
    assert_same_checkpoint(runs[0], runs[2])


def test_a_feature_constant_on_the_train_split_never_spikes(tmp_path):
    """Whitening gave a never-active feature (116 of digits' 1,280) a large gain on its rounding
    residue and the coder a level of about 1e-15 to match: it spiked at full rate on noise, 17 %
    of digits' input drive, and the noise moved with the store's chunk size. Its row and column
    of the map are now zero and its level inf, whatever the chunks."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 8)).astype(np.float32)
    x[:, 3] = 0.0
    cov = np.cov(np.sqrt(x), rowvar=False)
    live = np.delete(np.arange(8), 3)
    w = zca_map(cov, 0.95)
    assert not w[3].any() and not w[:, 3].any()
    np.testing.assert_array_equal(w[np.ix_(live, live)], zca_map(cov[np.ix_(live, live)], 0.95))
    one_row = zca_map(np.zeros((3, 3)), 0.95)  # nothing varies: the shrinkage alone, as before
    assert one_row[0, 0] > 0 and np.array_equal(one_row, one_row[0, 0] * np.eye(3))
    y = np.arange(64) % 2
    config = ColanetConfig(m=2, e=1)
    for chunk in (16, 32):
        store = write_arrays(tmp_path / f"c{chunk}.zarr", {"train": (x, y)}, ["a", "b"],
                             encoder={"model": "synthetic"}, source="dead", chunk_size=chunk)
        sat = Coding.measure(store, config).sat
        assert np.isinf(sat[3]) and np.isfinite(np.delete(sat, 3)).all(), sat
