"""Scale past one machine: dask.distributed embedding and inference, fsspec URL stores.

A LocalCluster of two worker processes stands in for a cluster and is reached by its scheduler
address, the way a user reaches a real one (``--scheduler``). The kill harness covers a killed
distributed embed (``tests/test_kill.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from distributed import LocalCluster

from pipeline.cluster import connect
from pipeline.colanet import ColanetConfig
from pipeline.config import ClusterConfig, EmbedConfig, TrainConfig
from pipeline.errors import UserError
from pipeline.store import EmbeddingStore, store_exists
from pipeline.embedding import embed_store
from stages.inspect import describe
from pipeline.training import evaluate, fit_stream, new_model
from stages.train_snn import run_train_snn
from tests.conftest import assert_same_checkpoint, assert_same_store, make_image_folder
from tests.conftest import separable_store

SMALL = dict(image_size=32, chunk_size=8, batch_size=4)


@pytest.fixture(scope="module")
def scheduler():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        yield ClusterConfig(scheduler=cluster.scheduler_address)


def test_cluster_embed_equals_single_process(tmp_path, scheduler):
    root = make_image_folder(tmp_path / "imgs", per_class=10)
    (root / "dog" / "broken.jpg").write_text("not an image")
    cfg = EmbedConfig(data=f"imagefolder:{root}", threads=1, **SMALL)
    serial = embed_store(EmbedConfig(**{**cfg.to_dict(), "out": str(tmp_path / "one.zarr")}))
    spread = embed_store(EmbedConfig(**{**cfg.to_dict(), "out": str(tmp_path / "two.zarr")}), scheduler)
    assert spread["complete"] and spread["images"] == serial["images"] == 31
    assert spread["failures"] == serial["failures"] == 1
    assert_same_store(tmp_path / "one.zarr", tmp_path / "two.zarr")


def test_relative_paths_reach_workers_with_another_working_folder(tmp_path, scheduler,
                                                                 monkeypatch):
    """Remote workers do not share this process's working folder: data and store paths are sent
    as absolute paths."""
    import os

    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "imgs", per_class=4)
    cfg = EmbedConfig(data="imagefolder:imgs", out="rel.zarr", threads=1, **SMALL)
    with connect(scheduler) as client:
        client.run(os.chdir, "/")
        try:
            summary = embed_store(cfg, scheduler)
        finally:
            client.run(os.chdir, str(tmp_path))
    assert summary["complete"] and summary["images"] == 12
    assert EmbeddingStore.open(tmp_path / "rel.zarr").finished_rows("train").all()
    with connect(scheduler) as client:
        client.run(os.chdir, "/")
        try:  # the cluster evaluation reads the relative store too
            metrics = run_train_snn(EmbedConfig(out="rel.zarr"),
                                    TrainConfig(runs_dir="runs", skip_baselines=True),
                                    ColanetConfig(m=2, e=1), scheduler)
        finally:
            client.run(os.chdir, str(tmp_path))
    assert metrics["n_test"] == 3  # a quarter of the 12 images


def test_config_sent_to_workers_names_absolute_paths(tmp_path, monkeypatch):
    from pipeline.embedding import for_workers

    monkeypatch.chdir(tmp_path)
    sent = [for_workers(EmbedConfig(data=d, weights=w)) for d, w in
            [("csv:list.csv", "b3.pth"), ("list.csv", "package"), ("digits", "hub"),
             ("imagefolder:s3://bucket/imgs", "none")]]
    assert [(c["data"], c["weights"]) for c in sent] == [
        (f"csv:{tmp_path}/list.csv", f"{tmp_path}/b3.pth"), (f"{tmp_path}/list.csv", "package"),
        ("digits", "hub"), ("imagefolder:s3://bucket/imgs", "none")]


def test_store_started_here_is_finished_on_the_cluster_identically(tmp_path, scheduler):
    """The store records the batch size and torch thread count its chunks are computed with, so
    workers (one thread each by default) still compute a chunk exactly as the first run did."""
    cfg = EmbedConfig(data="digits", limit=24, **SMALL)  # threads: torch's default here
    embed_store(EmbedConfig(**{**cfg.to_dict(), "out": str(tmp_path / "whole.zarr")}))
    mixed = EmbedConfig(**{**cfg.to_dict(), "out": str(tmp_path / "mixed.zarr")})
    assert not embed_store(mixed, stop_after_chunks=2)["complete"]
    assert embed_store(mixed, scheduler)["images"] == 48 - 16
    assert_same_store(tmp_path / "whole.zarr", tmp_path / "mixed.zarr")


def test_cluster_inference_equals_serial(tmp_path, scheduler):
    store = separable_store(tmp_path / "s.zarr", n_train=150, n_test=90, chunk=16)
    params = ColanetConfig(m=3, e=3)
    state, progress = new_model(store, params)
    for _ in fit_stream(store, params, state, progress):
        pass
    assert progress.cursor == 150
    serial = evaluate(store, "test", params, state, progress.coding, k=3)
    with connect(scheduler) as client:
        spread = evaluate(store, "test", params, state, progress.coding, client, k=3)
    np.testing.assert_array_equal(serial[0], spread[0])  # each row's 3 classes of most votes
    np.testing.assert_array_equal(serial[1], spread[1])
    assert spread[0].shape == (90, 3) and (serial[0][:, 0] == serial[1]).mean() > 0.8


def test_copies_trained_on_cluster_workers_equal_one_process(tmp_path, scheduler, capsys):
    """train-snn with a cluster trains groups of copies on its workers: the checkpoint (the whole
    state), the online accuracy and the metrics are those of one process, bit for bit, bagging
    included; a run stopped here resumes on the cluster to the same end."""
    store = separable_store(tmp_path / "s.zarr", n_train=100, n_test=40, chunk=16)
    params = ColanetConfig(m=3, e=3, copy_share=0.8)

    def train(runs: str, cluster=ClusterConfig(), **stop):
        return run_train_snn(EmbedConfig(out=store.path),
                             TrainConfig(runs_dir=str(tmp_path / runs), checkpoint_every=32),
                             params, cluster, **stop)

    here = train("a")
    capsys.readouterr()
    there = train("b", scheduler)
    assert "training 3 copies as 2 groups on 2 dask workers (copies 0-1, 2)" in \
        capsys.readouterr().err
    assert_same_checkpoint(Path(here["run_dir"]) / "checkpoint.npz",
                           Path(there["run_dir"]) / "checkpoint.npz")
    for key in ("snn_accuracy", "online_train_accuracy", "no_answer_rate", "confusion",
                "probe_accuracy"):
        assert here[key] == there[key], key
    assert train("c", stop_after_samples=40) is None
    resumed = train("c", scheduler)
    assert_same_checkpoint(Path(here["run_dir"]) / "checkpoint.npz",
                           Path(resumed["run_dir"]) / "checkpoint.npz")
    assert resumed["online_train_accuracy"] == here["online_train_accuracy"]


def test_a_lost_worker_stops_training_with_one_line_and_the_checkpoint_stays(tmp_path):
    """A worker that dies takes its group of copies' state with it: learning and collecting then
    stop with a UserError that says the last checkpoint is intact (nothing is recomputed from
    stale inputs)."""
    import os
    import time

    from distributed import Client

    from pipeline import colanet as cn
    from pipeline.training import WorkerCopies

    params = ColanetConfig(m=2, e=3)
    state = cn.init_state(params, 8, 2)
    x = np.random.default_rng(0).random((5, params.n_views * 8)).astype(np.float32)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        copies = WorkerCopies(client, params, state, threads=1)
        assert copies.learn(x, np.zeros(5, np.int64), np.arange(5), 1.0).shape == (5, 2, 2)
        victim = copies.workers[1]
        with pytest.raises(OSError):  # the worker exits before it can answer
            client.run(os._exit, 1, workers=[victim])
        deadline = time.monotonic() + 60
        while victim in client.scheduler_info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(UserError, match="dask worker holding copies .* was lost.*"
                                            "checkpoint is intact"):
            copies.learn(x, np.zeros(5, np.int64), np.arange(5, 10), 1.0)
        with pytest.raises(UserError, match="was lost"):
            copies.collect(state)


def test_store_on_a_memory_fsspec_url_embeds_trains_and_matches_local(tmp_path):
    url = "memory://annsnn-test/digits.zarr"
    cfg = EmbedConfig(data="digits", limit=16, threads=1, **SMALL)
    assert not store_exists(url)
    embed_store(EmbedConfig(**{**cfg.to_dict(), "out": url}))
    embed_store(EmbedConfig(**{**cfg.to_dict(), "out": str(tmp_path / "local.zarr")}))
    assert store_exists(url) and EmbeddingStore.open(url).is_complete()
    assert "torch_threads=1" in describe(url)  # inspect reads a URL store too
    assert_same_store(url, tmp_path / "local.zarr")
    assert embed_store(EmbedConfig(**{**cfg.to_dict(), "out": url}))["images"] == 0  # resumes: done
    metrics = run_train_snn(EmbedConfig(out=url), TrainConfig(runs_dir=str(tmp_path / "runs"),
                                                              skip_baselines=True),
                            ColanetConfig(m=2, e=1))
    assert metrics["store"] == url and metrics["run_dir"].endswith("digits-m2-e1")
    with pytest.raises(UserError, match="memory:// store lives inside one process"):
        embed_store(EmbedConfig(**{**cfg.to_dict(), "out": "memory://annsnn-test/other.zarr"}),
                  ClusterConfig(cluster="local:1"))


def test_file_url_is_the_local_path(tmp_path):
    cfg = EmbedConfig(data="digits", limit=8, threads=1, **SMALL)
    embed_store(EmbedConfig(**{**cfg.to_dict(), "out": f"file://{tmp_path}/u.zarr"}))
    assert EmbeddingStore.open(tmp_path / "u.zarr").is_complete()
    assert embed_store(EmbedConfig(**{**cfg.to_dict(), "out": str(tmp_path / "u.zarr")}))["images"] == 0


@pytest.mark.parametrize("options, message", [
    ({"cluster": "local"}, "use local:N"),
    ({"cluster": "local:0"}, "use local:N"),
    ({"cluster": "k8s:3"}, "use local:N"),
    ({"cluster": "local:2", "scheduler": "tcp://127.0.0.1:1"}, "not both"),
    ({"scheduler": "tcp://127.0.0.1:1"}, "could not reach the dask scheduler"),
])
def test_bad_cluster_options_are_refused(tmp_path, options, message):
    """A malformed option is refused when the config is made (before anything runs); an
    unreachable scheduler when the run connects."""
    with pytest.raises((UserError, ValueError), match=message):
        embed_store(EmbedConfig(data="digits", limit=8, out=str(tmp_path / "x.zarr"), **SMALL),
                  ClusterConfig(**options))
    assert not store_exists(tmp_path / "x.zarr")


def test_confusion_plot_of_1000_classes_stays_small(tmp_path):
    from PIL import Image

    from pipeline import plots

    confusion = np.eye(1000, 1001, dtype=np.int64) * 3
    plots.confusion_matrix(confusion, [f"c{i}" for i in range(1000)], tmp_path / "c.png")
    with Image.open(tmp_path / "c.png") as image:
        assert max(image.size) <= 1600


def test_a_worker_that_sees_other_images_refuses(tmp_path):
    """What a worker on another host does when its copy of the data differs from the store's."""
    from pipeline.embedding import embed_chunks_task, for_workers

    here = make_image_folder(tmp_path / "here", per_class=4)
    cfg = EmbedConfig(data=f"imagefolder:{here}", out=str(tmp_path / "s.zarr"), threads=1, **SMALL)
    embed_store(cfg, stop_after_chunks=0)  # the coordinator creates the store
    (here / "cat" / "img0.jpg").write_bytes(b"changed on this worker's disk")
    with pytest.raises(UserError, match="sees other images or weights"):
        embed_chunks_task(for_workers(cfg), cfg.out, [("train", 0)], 4, 1)
    assert not EmbeddingStore.open(cfg.out).done_chunks("train").any()
