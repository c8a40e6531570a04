"""Runs a user can tell apart and compare: default names, report's reuse, `annsnn compare`."""

from __future__ import annotations

import json

import pytest

from pipeline.colanet import ColanetConfig
from pipeline.config import EmbedConfig, TrainConfig, TuneConfig
from pipeline.outputs import claim_folder
from pipeline.runs import MAX_NAME, comparison, readable_name, read_run, run_name
from pipeline.tables import format_table
from pipeline.tuning import study_name
from stages.train_snn import run_train_snn
from tests.conftest import assert_refused, run_cli, separable_store


def test_default_names_say_what_differs_from_the_defaults():
    store = "data/embeddings/digits-tf_efficientnet_lite0.zarr"
    assert run_name(store, ColanetConfig()) == "digits-tf_efficientnet_lite0"
    assert run_name(store, ColanetConfig(m=12, e=5)) == "digits-tf_efficientnet_lite0-m12-e5"
    assert (run_name(store, ColanetConfig(d_h=-0.2, coding="saturation", carry_accumulator=True,
                                          k_thr=0.001))
            == "digits-tf_efficientnet_lite0-k_thr0.001-d_h-0.2-carry_accumulator"
               "-coding=saturation")
    # a number is written so that it reads back as itself
    assert run_name(store, ColanetConfig(tau=4 / 3)).endswith("-tau1.3333333333333333")


def test_a_long_default_name_is_cut_and_stays_distinct():
    spec = dict(gain_total=640.0, d_h=-0.114, dopamine=0.227, r_s=0.159, k_thr=0.00107,
                s_stim=0.63, m=10, e=15, forcing="most_depolarised", blocking="column",
                sat_percentile=99.0, sat_scope="global", burst_scope="continuous",
                coding="saturation", order="store")
    a = run_name("s.zarr", ColanetConfig(**spec))
    b = run_name("s.zarr", ColanetConfig(**{**spec, "seed": 1}))
    assert len(a) <= MAX_NAME and len(b) <= MAX_NAME and a != b
    assert a.startswith("s-k_thr0.00107-s_stim0.63-gain_total640-d_h-0.114-") and "-more-" in a
    assert readable_name("p", {}) == "p"


def test_study_names_say_the_base_options_and_search_settings():
    stores = ["data/embeddings/a.zarr"]
    assert study_name(TuneConfig(), ColanetConfig(), stores) == "a"
    assert study_name(TuneConfig(batch=2, trials=9), ColanetConfig(m=3), stores) == "a-m3-batch2"
    assert study_name(TuneConfig(), ColanetConfig(), stores + ["b.zarr"]) == "joint-a-b"


def test_format_table_aligns_every_column():
    lines = format_table(["run", "x", "acc"], [["a", "1", "90.00%"], ["long-name", "12", "5%"]])
    assert lines == ["run" + " " * 9 + "x" + " " * 5 + "acc",
                     "a" + " " * 11 + "1" + " " * 2 + "90.00%",
                     "long-name" + " " * 2 + "12" + " " * 6 + "5%"]


SMALL = ColanetConfig(m=3, e=2)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two finished runs with default names on one store: SMALL, and SMALL with e=1."""
    tmp = tmp_path_factory.mktemp("runs")
    store = separable_store(tmp / "s.zarr", n_train=60, n_test=20)
    cfg = TrainConfig(runs_dir=str(tmp / "runs"), checkpoint_every=1000)
    a = run_train_snn(EmbedConfig(out=store.path), cfg, SMALL, data_given=False)
    b = run_train_snn(EmbedConfig(out=store.path), cfg, ColanetConfig(m=3, e=1), data_given=False)
    return tmp, store, a, b


def test_train_snn_names_its_run_after_the_store_and_the_changed_options(two_runs):
    tmp, _, a, b = two_runs
    assert a["run_dir"] == str(tmp / "runs" / "s-m3-e2")
    assert b["run_dir"] == str(tmp / "runs" / "s-m3-e1")


def test_compare_shows_the_differing_options_and_the_figures(two_runs, capsys):
    tmp, _, a, b = two_runs
    code, out = run_cli(["compare", a["run_dir"], b["run_dir"]], capsys)
    assert code == 0, out
    header, *rows = out.strip().splitlines()
    assert header.split() == ["run", "store", "e", "SNN", "probe", "NCM", "no", "answer",
                              "train", "s"]
    for line, m, e in zip(rows, (a, b), ("2", "1")):
        cells = line.split()
        assert cells[:3] == [m["run_dir"], "s", e]
        assert cells[3:7] == [f"{100 * m[k]:.2f}%" for k in
                              ("snn_accuracy", "probe_accuracy", "ncm_accuracy", "no_answer_rate")]
        assert cells[7] == f"{m['seconds']['train']:.1f}"
    assert len({len(line) for line in (header, *rows)}) == 1  # aligned: all end together
    # `annsnn compare data/runs/*` also names each run's lock file: left out
    everything = sorted(str(p) for p in (tmp / "runs").iterdir())
    assert any(p.endswith(".lock") for p in everything)
    code, again = run_cli(["compare", *everything], capsys)
    assert code == 0 and sorted(again.splitlines()) == sorted(out.splitlines())


def test_compare_of_runs_written_before_metrics_held_the_model(two_runs, tmp_path):
    """An older run: config.json without the newer CoLaNET fields, metrics.json without
    probe or NCM; the missing options read as their defaults, the missing figures as '-'."""
    _, _, a, _ = two_runs
    run = claim_folder(tmp_path / "old", "run")
    config = json.loads(open(a["run_dir"] + "/config.json").read())
    del config["colanet"]["block_span"]
    config["colanet"]["m"] = 5
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.json").write_text(json.dumps({"snn_accuracy": 0.5, "no_answer_rate": 0.0,
                                                  "seconds": {"train": 1.0}}))
    header, rows = comparison([read_run(a["run_dir"]), read_run(run)])
    assert header[2:3] == ["m"] and "block_span" not in header
    assert rows[1][2:] == ["5", "50.00%", "-", "-", "0.00%", "1.0"]


def test_compare_refuses_what_is_not_a_finished_run(two_runs, tmp_path, capsys):
    _, _, a, _ = two_runs
    assert_refused(["compare", a["run_dir"], str(tmp_path / "nothing")], capsys,
                   "nothing: no such folder", "data/runs/NAME")
    (tmp_path / "file.txt").write_text("mine")
    assert_refused(["compare", str(tmp_path / "file.txt")], capsys,
                   "file.txt: a file, not a folder")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert_refused(["compare", str(tmp_path / "mine")], capsys, "not a run folder of annsnn")
    claim_folder(tmp_path / "unfinished", "run")
    assert_refused(["compare", str(tmp_path / "unfinished")], capsys,
                   "not a finished run", "train-snn")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    from pipeline.lock import exclusive

    with exclusive(a["run_dir"]):  # as a train-snn continuing it holds it
        assert_refused(["compare", a["run_dir"]], capsys, "in use by pid")


def test_report_reuses_a_finished_run_of_the_same_configuration(two_runs):
    from stages.report import run_report

    tmp, store, a, _ = two_runs
    mine = run_train_snn(EmbedConfig(out=store.path),
                         TrainConfig(runs_dir=str(tmp / "mine"), run="my-run"), SMALL,
                         data_given=False)
    before = sorted(p.name for p in (tmp / "mine").iterdir())
    (row,) = run_report([store.path], TrainConfig(runs_dir=str(tmp / "mine")), SMALL)
    assert row["run_dir"] == mine["run_dir"] and row["snn_accuracy"] == mine["snn_accuracy"]
    assert sorted(p.name for p in (tmp / "mine").iterdir()) == before  # nothing trained anew
    # with the default-named run there too, that one is chosen
    (row,) = run_report([store.path], TrainConfig(runs_dir=str(tmp / "runs")), SMALL)
    assert row["run_dir"] == a["run_dir"]
