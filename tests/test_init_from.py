"""`annsnn train-snn --init-from`: keep learning from a trained model, and add classes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.checkpoint import load_checkpoint
from pipeline.colanet import (AXES, COUNTERS, STATE_ARRAYS, ColanetConfig, grow_classes, init_state,
                              sync_derived)
from pipeline.config import EmbedConfig, TrainConfig
from pipeline.errors import UserError
from pipeline.estimator import ColanetClassifier
from pipeline.incremental import start_from
from pipeline.model_file import export_run, run_model
from pipeline.store import write_arrays
from pipeline.streaming import read_rows
from stages.train_snn import run_train_snn
from tests.conftest import assert_refused, assert_same_checkpoint

# Store order: the first pass presents the rows as stored, so a model continued by hand (the
# estimator's partial_fit) sees the same sequence.
CFG = ColanetConfig(m=3, e=1, order="store")
DIM = 48


def make_store(path, names, seed, *, dim=DIM, model="synthetic", n_train=120, n_test=60):
    """A separable store whose classes are named ``names`` (``c<k>``): class ``c<k>`` has the same
    prototype in every store (one world of 6 classes), the samples are drawn with ``seed``."""
    world = np.random.default_rng(0)
    protos = world.random((6, DIM)) * (world.random((6, DIM)) < 0.3) * 3.0
    protos = protos[[int(n[1:]) for n in names], :dim]
    rng = np.random.default_rng(seed)

    def draw(n):
        y = rng.integers(0, len(names), n)
        return np.maximum(protos[y] + rng.normal(0, 0.3, (n, dim)), 0).astype(np.float32), y

    return write_arrays(path, {"train": draw(n_train), "test": draw(n_test)}, list(names),
                        encoder={"model": model}, source=f"test:{seed}:{','.join(names)}",
                        chunk_size=32)


def train(tmp_path, store, run, *, config=CFG, init_from=None, stop_after_samples=None,
          runs="runs"):
    cfg = TrainConfig(runs_dir=str(tmp_path / runs), run=run, checkpoint_every=25,
                      skip_baselines=True,
                      init_from=None if init_from is None else str(tmp_path / "runs" / init_from))
    return run_train_snn(EmbedConfig(out=store.path), cfg, config,
                         stop_after_samples=stop_after_samples)


@pytest.fixture
def source(tmp_path):
    """A finished run "a" on classes c0..c3."""
    store = make_store(tmp_path / "a.zarr", ["c0", "c1", "c2", "c3"], seed=1)
    train(tmp_path, store, "a")
    return store


def test_same_classes_continue_exactly_as_partial_fit_on_the_loaded_model(tmp_path, source):
    """Continuing on new samples of the same classes equals, bit for bit, the exported model
    loaded in Python and taught the new train rows with partial_fit (ids after the source's)."""
    new = make_store(tmp_path / "b.zarr", ["c0", "c1", "c2", "c3"], seed=2)
    m = train(tmp_path, new, "b", init_from="a")
    export_run(tmp_path / "runs" / "a", tmp_path / "a.npz")
    clf = ColanetClassifier.load(tmp_path / "a.npz")
    before = clf.state_.r.copy()
    x, y = read_rows(new, "train")
    clf.partial_fit(x, np.array(new.class_names)[y])
    arrays, meta = load_checkpoint(tmp_path / "runs" / "b" / "checkpoint.npz")
    np.testing.assert_array_equal(arrays["r"], clf.state_.r)
    assert not np.array_equal(arrays["r"], before)  # it did learn
    assert meta["classes"] == ["c0", "c1", "c2", "c3"] and meta["first_sample_id"] == 180
    assert m["snn_accuracy"] >= 0.9
    recorded = json.loads((tmp_path / "runs" / "b" / "config.json").read_text())
    assert recorded["init_from"]["run"] == str((tmp_path / "runs" / "a").resolve())
    assert recorded["classes"] == ["c0", "c1", "c2", "c3"]
    # The continued run exports with its own ids: further learning starts after them.
    assert run_model(tmp_path / "runs" / "b").next_sample_id == 180 + 180


def test_grow_classes_keeps_the_old_columns_and_adds_resting_ones():
    """Driven by STATE_ARRAYS: every array with a neuron or column axis grows, the rest is kept."""
    config = ColanetConfig(m=2, e=2)
    state = init_state(config, 5, 3)
    rng = np.random.default_rng(0)
    for name in STATE_ARRAYS:  # an arbitrary trained-looking state
        a = getattr(state, name)
        a[...] = (rng.random(a.shape) * 3).astype(a.dtype)
    state.t, state.n_seen = 1500, 100
    sync_derived(config, state)
    grown, fresh = grow_classes(config, state, 5), init_state(config, 5, 2)
    assert grown.n_classes == 5 and grown.r.shape == (2, 5, 10)
    for name, a in STATE_ARRAYS.items():
        axes, g = AXES[a.axes], getattr(grown, name)
        if "N" in axes or "C" in axes:
            cut = 6 if "N" in axes else 3
            np.testing.assert_array_equal(g[..., :cut], getattr(state, name), err_msg=name)
            np.testing.assert_array_equal(g[..., cut:], getattr(fresh, name), err_msg=name)
        else:
            np.testing.assert_array_equal(g, getattr(state, name), err_msg=name)
    assert (grown.t, grown.n_seen) == (1500, 100)
    assert grow_classes(config, state, 3).r.tolist() == state.r.tolist()
    with pytest.raises(ValueError, match="fewer"):
        grow_classes(config, state, 2)


def test_new_class_names_add_columns(tmp_path, source):
    """A store of two known and two new classes (and lacking two known ones): the old columns
    start as the source left them, the new ones at rest; after learning the class list grew and
    the new classes are recognised."""
    new = make_store(tmp_path / "b.zarr", ["c4", "c1", "c5", "c0"], seed=3)
    src = run_model(tmp_path / "runs" / "a")
    state, progress = start_from(tmp_path / "runs" / "a", new, CFG, tmp_path / "runs" / "b")
    assert progress.classes == ("c0", "c1", "c2", "c3", "c4", "c5")
    fresh = init_state(CFG, DIM, 2)
    for name, a in STATE_ARRAYS.items():
        axes, g = AXES[a.axes], getattr(state, name)
        cut = 4 * CFG.m if "N" in axes else 4 if "C" in axes else None
        old = g if cut is None else g[..., :cut]
        np.testing.assert_array_equal(old, getattr(src.state, name), err_msg=name)
        if cut is not None:
            np.testing.assert_array_equal(g[..., cut:], getattr(fresh, name), err_msg=name)
    assert [getattr(state, c) for c in COUNTERS] == [getattr(src.state, c) for c in COUNTERS]

    m = train(tmp_path, new, "b", init_from="a")
    names = [c["name"] for c in m["per_class"]]
    assert names == ["c0", "c1", "c2", "c3", "c4", "c5"]
    recall = {c["name"]: c["snn_recall"] for c in m["per_class"]}
    assert recall["c4"] > 0.8 and recall["c5"] > 0.8  # chance: 1/4 over the store's classes
    assert recall["c2"] is None and recall["c3"] is None  # not in the store: no eval samples
    assert {c["name"]: c["train_count"] for c in m["per_class"]}["c2"] == 0
    assert np.shape(m["confusion"]) == (6, 7)
    assert m["snn_accuracy"] >= 0.85
    arrays, meta = load_checkpoint(tmp_path / "runs" / "b" / "checkpoint.npz")
    assert arrays["r"].shape == (1, DIM, 6 * CFG.m) and meta["classes"] == names
    # The grown model answers on the source's test split too, by class name.
    exported = run_model(tmp_path / "runs" / "b")
    assert exported.classes.tolist() == names and exported.next_sample_id == 180 + 180


def test_refusals(tmp_path, source, capsys):
    runs = tmp_path / "runs"
    other_encoder = make_store(tmp_path / "e.zarr", ["c0", "c1"], seed=4, model="other")
    with pytest.raises(UserError, match=r"another encoder.*e\.zarr.*encoder 'synthetic' there, "
                                        r"'other' here"):
        train(tmp_path, other_encoder, "x", init_from="a")
    narrow = make_store(tmp_path / "n.zarr", ["c0", "c1"], seed=4, dim=40)
    with pytest.raises(UserError, match="feature_dim 48 there, 40 here"):
        train(tmp_path, narrow, "x", init_from="a")
    new = make_store(tmp_path / "b.zarr", ["c0", "c5"], seed=5)
    with pytest.raises(UserError, match=r"d_h=-0\.4362.*d_h=-0\.2.*pass --d-h -0\.4362"):
        train(tmp_path, new, "x", init_from="a", config=ColanetConfig(m=3, e=1, order="store",
                                                                     d_h=-0.2))
    with pytest.raises(UserError, match="write into its source.*--run NAME"):
        train(tmp_path, new, "a", init_from="a")
    assert train(tmp_path, source, "half", stop_after_samples=30) is None
    with pytest.raises(UserError, match="half: has no finished model|half: its checkpoint is not"):
        train(tmp_path, new, "x", init_from="half")
    assert not (runs / "x").exists()  # every refusal came before the run folder was made
    # On the command line: one line, exit status 2.
    assert_refused(["train-snn", "--out", other_encoder.path, "--init-from", runs / "a",
                    "--run", "x", "--runs-dir", runs, "--m", "3", "--e", "1", "--order", "store"],
                   capsys, "another encoder", r"e\.zarr")
    # A run's checkpoint started from another model (here: afresh) is not continued from this one.
    train(tmp_path, new, "plain")
    with pytest.raises(UserError, match="started afresh, not from --init-from"):
        train(tmp_path, new, "plain", init_from="a")


def test_killed_init_from_run_resumes_to_the_uninterrupted_result(tmp_path, source):
    """The checkpoint holds the whole grown state: a killed run resumes from it (the source is
    not read again: here it is gone) and ends with the uninterrupted run's arrays."""
    new = make_store(tmp_path / "b.zarr", ["c4", "c1", "c5", "c0"], seed=3)
    whole = train(tmp_path, new, "b", init_from="a")
    assert train(tmp_path, new, "b", init_from="a", runs="cut", stop_after_samples=40) is None
    # The source's folder is given under "runs": the cut run reads it from there.
    shutil.move(tmp_path / "runs" / "a", tmp_path / "a-moved")
    resumed = train(tmp_path, new, "b", init_from="a", runs="cut")
    assert_same_checkpoint(tmp_path / "runs" / "b" / "checkpoint.npz",
                           tmp_path / "cut" / "b" / "checkpoint.npz")
    assert resumed["snn_accuracy"] == whole["snn_accuracy"]
    assert resumed["per_class"] == whole["per_class"]
