"""The search: parallel trials on a validation split, recorded as they finish, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.colanet import ColanetConfig
from pipeline.config import ClusterConfig, EmbedConfig, TuneConfig
from pipeline.errors import UserError
from pipeline.streaming import read_rows
from pipeline.tuning import (SEARCH_SPACE, TrialLog, base_values, baseline_validation,
                             cross_validate, fold_bounds, joint_score, run_trial, run_tune,
                             trial_params)
from tests.conftest import separable_store

BASE = ColanetConfig(m=3, e=1)


@pytest.fixture(scope="module")
def scheduler():
    """One LocalCluster of 2 worker processes for the module's studies (each study would start
    its own otherwise)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        yield ClusterConfig(scheduler=cluster.scheduler_address)


@pytest.fixture
def _tune(tmp_path, scheduler):
    def run(tmp_path, store, name="s", **kw):
        cfg = TuneConfig(tune_dir=str(tmp_path / "tune"), name=name, batch=2, startup=2, **kw)
        embed = EmbedConfig() if "stores" in kw else EmbedConfig(out=store.path)
        return run_tune(embed, cfg, BASE, scheduler).rows
    return run


def test_trial_scores_only_the_validation_tail_of_train(tmp_path):
    store = separable_store(tmp_path / "s.zarr", n_train=100)
    params = trial_params(BASE, {"gain_scale": 1.0, "sat_percentile": 98.0, "m": 4}, 48)
    assert params.m == 4 and params.gain == pytest.approx(BASE.gain_total / 48)
    assert (params.sat_percentile, params.sat_scope) == (98.0, BASE.sat_scope)
    row = run_trial(store.path, params, 0.25)
    assert row["n_fit"] == 75 and row["n_val"] == 25
    assert row["val_accuracy"] >= 0.9  # separable data, default dynamics
    again = run_trial(store.path, params, 0.25)
    assert {**again, "seconds": 0} == {**row, "seconds": 0}  # deterministic


def test_folds_cover_every_train_row_once():
    bounds = fold_bounds(103, 5)
    assert bounds[0] == 0 and bounds[-1] == 103
    assert set(np.diff(bounds)) <= {20, 21}
    for n, k in ((10, 1), (10, 11)):
        with pytest.raises(UserError, match="--folds"):
            fold_bounds(n, k)


def test_cross_validation_scores_each_fold_by_a_model_of_the_other_rows(tmp_path):
    """Every train row is scored once, by the estimator trained on the other folds in store
    order; the test split is not read. Checked against the folds scored by hand."""
    from pipeline.estimator import ColanetClassifier

    store = separable_store(tmp_path / "s.zarr", n_train=60, n_test=20, classes=3)
    row = run_trial(store.path, BASE, 0.25, folds=3)
    assert row == {**cross_validate(store.path, BASE, 3), "seconds": row["seconds"]}
    assert (row["n_val"], row["n_fit"], row["folds"]) == (60, 40, 3)
    x, y = read_rows(store, "train")
    right = 0
    for lo, hi in ((0, 20), (20, 40), (40, 60)):
        keep = np.r_[0:lo, hi:60]
        model = ColanetClassifier(**BASE.to_dict()).fit(x[keep], y[keep])
        right += int((model.predict(x[lo:hi]) == y[lo:hi]).sum())
    assert row["val_accuracy"] == right / 60
    # the baselines score the same folds; one fold = the tail when it is the tail's rows
    both = baseline_validation(store.path, 0.25, folds=3)
    assert set(both) == {"probe", "ncm"} and 0.5 < both["ncm"] <= 1.0
    assert baseline_validation(store.path, 0.25) == baseline_validation(store.path, 0.25, 1)


def test_tune_folds_is_a_study_setting(tmp_path, _tune):
    with pytest.raises(ValueError, match="--folds 0"):
        TuneConfig(folds=0)
    with pytest.raises(ValueError, match="--folds 3"):
        TuneConfig(folds=3, snn_device="cuda")
    store = separable_store(tmp_path / "s.zarr", n_train=60, n_test=20)
    rows = _tune(tmp_path, store, name="cv", trials=2, folds=3)
    assert len(rows) == 2 and all(r["n_val"] == 60 and r["folds"] == 3 for r in rows)
    assert json.loads((tmp_path / "tune" / "cv" / "study.json").read_text())["folds"] == 3
    with pytest.raises(UserError, match="other settings"):
        _tune(tmp_path, store, name="cv", trials=2)
    with pytest.raises(UserError, match="--folds 61: must lie between 2 and the train split's 60"):
        _tune(tmp_path, store, name="many", trials=2, folds=61)
    assert not (tmp_path / "tune" / "many").exists()  # refused before anything is written
    # a study without --folds records no "folds": studies from before the option resume as they were
    _tune(tmp_path, store, name="tail", trials=2)
    assert "folds" not in json.loads((tmp_path / "tune" / "tail" / "study.json").read_text())


def test_study_records_trials_and_resumes_to_the_same_result(tmp_path, _tune):
    store = separable_store(tmp_path / "s.zarr", n_train=80, n_test=20)
    whole = _tune(tmp_path, store, name="whole", trials=4)
    assert len(whole) == 4 and whole[0]["val_accuracy"] >= whole[-1]["val_accuracy"]
    # an interrupted study: the first batch finished, one trial of the second one was lost
    _tune(tmp_path, store, name="cut", trials=4)
    log = tmp_path / "tune" / "cut" / "trials.jsonl"
    rows = log.read_text().splitlines()
    kept = [r for r in rows if json.loads(r)["number"] != 3]
    log.write_text("\n".join(kept) + "\n" + '{"number": 3, "tor')  # and a torn last line
    assert sorted(TrialLog(log).read()) == [0, 1, 2]
    resumed = _tune(tmp_path, store, name="cut", trials=4)
    strip = lambda rs: sorted((r["number"], json.dumps(r["values"]), r["val_accuracy"]) for r in rs)
    assert strip(resumed) == strip(whole)
    best = json.loads((tmp_path / "tune" / "cut" / "best.json").read_text())
    assert best["trial"] == whole[0]["number"] and "--m" in best["train_snn_args"]


def test_study_with_other_settings_is_refused(tmp_path, _tune):
    store = separable_store(tmp_path / "s.zarr", n_train=60, n_test=20)
    _tune(tmp_path, store, trials=2)
    with pytest.raises(UserError, match="other settings"):
        _tune(tmp_path, store, trials=2, val_fraction=0.3)


def test_damaged_records_are_scored_again_and_a_store_may_be_spelt_anew(tmp_path, _tune,
                                                                         monkeypatch):
    """Trial and base rows of the wrong shape (hand-edited) are scored again, as a torn line is;
    a study.json that is not an object is refused; ``./s.zarr/`` continues the study of
    ``s.zarr`` (one store, as its lock is one)."""
    monkeypatch.chdir(tmp_path)
    store = separable_store("s.zarr", n_train=60, n_test=20)
    whole = _tune(tmp_path, store, name="s", trials=2)
    study_dir = tmp_path / "tune" / "s"
    rows = (study_dir / "trials.jsonl").read_text().splitlines()
    damaged = json.dumps({**json.loads(rows[0]), "number": "0"})  # a number that is a string
    (study_dir / "trials.jsonl").write_text("\n".join(["{}", "[1, 2]", damaged, rows[1]]) + "\n")
    (study_dir / "base.json").write_text("[]")
    respelt = separable_store("./s.zarr/", n_train=60, n_test=20)
    again = _tune(tmp_path, respelt, name="s", trials=2)
    strip = lambda rs: sorted((r["number"], json.dumps(r["values"]), r["val_accuracy"]) for r in rs)
    assert strip(again) == strip(whole)
    assert isinstance(json.loads((study_dir / "base.json").read_text()), dict)
    (study_dir / "study.json").write_text("[]")
    with pytest.raises(UserError, match=r"study\.json: damaged"):
        _tune(tmp_path, store, name="s", trials=2)


def test_tune_refuses_a_store_twice_and_a_tail_with_no_rows(tmp_path, _tune):
    store = separable_store(tmp_path / "s.zarr", n_train=60, n_test=20)
    with pytest.raises(UserError, match="names the store .* twice"):
        _tune(tmp_path, store, stores=f"{store.path},{store.path}/", trials=1)
    with pytest.raises(UserError, match="--stores names every store of the study and --out names "
                                        "one; give one of them"):
        run_tune(EmbedConfig(out=store.path), TuneConfig(stores=store.path), BASE)
    with pytest.raises(UserError, match="names no store"):
        _tune(tmp_path, store, stores=" , ", trials=1)
    for fraction, part in ((0.001, "no validation row"), (0.999, "no row to fit on")):
        with pytest.raises(UserError, match=f"--val-fraction {fraction}: leaves {part}"):
            _tune(tmp_path, store, val_fraction=fraction, trials=1)
    assert not (tmp_path / "tune").exists()


def test_joint_study_scores_every_trial_on_every_store(tmp_path, _tune):
    a = separable_store(tmp_path / "a.zarr", n_train=60, n_test=10)
    b = separable_store(tmp_path / "b.zarr", n_train=60, n_test=10, dim=40, seed=3)
    rows = _tune(tmp_path, a, name="joint", trials=2, stores=f"{a.path} , {b.path},")  # as typed
    study = json.loads((tmp_path / "tune" / "joint" / "study.json").read_text())
    assert set(study["probe"]) == {a.path, b.path}
    for r in rows:
        assert set(r["per_store"]) == {a.path, b.path}
        # The formula written out here, not recomputed with the function under test.
        ratios = [(1 - r["per_store"][p]["val_accuracy"] + 0.005) / (1 - study["probe"][p] + 0.005)
                  for p in (a.path, b.path)]
        assert r["score"] == pytest.approx(-np.mean(np.log(ratios)))


def test_joint_score_is_parity_at_zero_and_relative():
    assert joint_score({"a": 0.9, "b": 0.99}, {"a": 0.9, "b": 0.99}) == 0
    twice = joint_score({"a": 0.795}, {"a": 0.8975})  # (0.205+0.005)/(0.1025+0.005) ~ 1.95
    assert twice == pytest.approx(-np.log(0.21 / 0.1075))


def test_the_base_parameters_are_scored_beside_the_trials_once(tmp_path, scheduler, capsys):
    from stages.tune import print_rows

    store = separable_store(tmp_path / "s.zarr", n_train=80, n_test=20)
    cfg = TuneConfig(tune_dir=str(tmp_path / "tune"), batch=2, startup=2, trials=2)
    study = run_tune(EmbedConfig(out=store.path), cfg, BASE, scheduler)
    assert study.study_dir == tmp_path / "tune" / "s-m3-e1-batch2-startup2"  # the default name
    alone = run_trial(store.path, BASE, cfg.val_fraction)
    assert {**study.base, "seconds": 0} == {"number": "base", "batch": None,
                                            "values": base_values(BASE), **alone, "seconds": 0,
                                            "score": alone["val_accuracy"]}
    assert base_values(BASE)["gain_scale"] == 1.0 and base_values(BASE)["m"] == 3
    recorded = (study.study_dir / "base.json").stat().st_mtime_ns
    more = run_tune(EmbedConfig(out=store.path), TuneConfig(**{**cfg.to_dict(), "trials": 4}),
                    BASE, scheduler)
    assert more.base == study.base and len(more.rows) == 4
    assert (study.study_dir / "base.json").stat().st_mtime_ns == recorded  # not scored again
    print_rows(more, top=3)
    lines = capsys.readouterr().out.strip().splitlines()
    table = lines[lines.index(next(x for x in lines if x.lstrip().startswith("#"))):]
    assert len(table) == 1 + 1 + 3 and table[1].split()[0] == "base"
    assert [t.split()[0] for t in table[2:]] == [str(r["number"]) for r in more.rows[:3]]
    assert len({len(t) for t in table}) == 1  # every column right-aligned: lines end together
    assert table[0].split()[7:] == list(SEARCH_SPACE)  # after: # score val acc no ans s
