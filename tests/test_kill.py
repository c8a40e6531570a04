"""Kill harness: SIGKILL each stage at seeded moments, rerun it, and get the uninterrupted result.

The moments are drawn from a seeded generator, so the same points are tried on every run; where a
kill lands in the stage's work still depends on the machine's speed, and the assertion holds for
any landing point: the final store or checkpoint is bit-identical to an uninterrupted run's.
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

from pipeline.checkpoint import load_checkpoint
from pipeline.tuning import TrialLog
from tests.conftest import assert_same_store
from tests.test_train_snn import separable_store

KILLS = 3  # per stage in the default run (2 for the cluster embed); the slow test uses 10
ROOT = Path(__file__).resolve().parents[1]


def _kill_points(seed: int, low: float, high: float, n: int) -> list[float]:
    return sorted(np.random.default_rng(seed).uniform(low, high, n).round(2).tolist())


def _run_killed(cmd: list[str], delays: list[float]) -> int:
    """Start ``cmd`` once per delay and SIGKILL its process group (the stage and any worker
    processes it started) after that many seconds; returns how many kills landed."""
    killed = 0
    for delay in delays:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait()
    return killed


def _embed_cmd(out: Path, *extra: str, limit: int = 96, size: int = 32) -> list[str]:
    return [sys.executable, "-m", "stages", "embed", "--limit", str(limit), "--image-size",
            str(size), "--chunk-size", "8", "--batch-size", "8", "--threads", "1", "--out", str(out),
            *extra]


def _train_cmd(store: str, runs: Path) -> list[str]:
    return [sys.executable, "-m", "stages", "train-snn", "--out", store, "--runs-dir", str(runs),
            "--run", "r", "--checkpoint-every", "10", "--m", "3", "--e", "2", "--skip-baselines",
            "--numba-threads", "1"]


def _check_embed(tmp_path: Path, kills: int) -> None:
    whole, cut = tmp_path / "whole.zarr", tmp_path / "cut.zarr"
    subprocess.run(_embed_cmd(whole), cwd=ROOT, check=True, capture_output=True)
    assert _run_killed(_embed_cmd(cut), _kill_points(1, 2.0, 7.0, kills)) >= 1
    subprocess.run(_embed_cmd(cut), cwd=ROOT, check=True, capture_output=True)
    assert_same_store(whole, cut)


def _check_cluster_embed(tmp_path: Path, kills: int) -> None:
    """Killed while two LocalCluster workers write chunks; finished by a rerun on the cluster;
    equal to a single process's store. Kill points span worker start-up and the embedding."""
    whole, cut = tmp_path / "whole.zarr", tmp_path / "cut.zarr"
    shape = dict(limit=240, size=64)
    subprocess.run(_embed_cmd(whole, **shape), cwd=ROOT, check=True, capture_output=True)
    cmd = _embed_cmd(cut, "--cluster", "local:2", **shape)
    assert _run_killed(cmd, _kill_points(4, 9.0, 16.0, kills)) >= 1
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    assert_same_store(whole, cut)


def _check_train(tmp_path: Path, kills: int) -> None:
    store = separable_store(tmp_path / "s.zarr", n_train=3000, n_test=40, dim=128).path
    subprocess.run(_train_cmd(store, tmp_path / "whole"), cwd=ROOT, check=True, capture_output=True)
    assert _run_killed(_train_cmd(store, tmp_path / "cut"), _kill_points(2, 3.0, 8.0, kills)) >= 1
    subprocess.run(_train_cmd(store, tmp_path / "cut"), cwd=ROOT, check=True, capture_output=True)
    a, _ = load_checkpoint(tmp_path / "whole" / "r" / "checkpoint.npz")
    b, _ = load_checkpoint(tmp_path / "cut" / "r" / "checkpoint.npz")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _tune_cmd(store: str, tune_dir: Path) -> list[str]:
    return [sys.executable, "-m", "stages", "tune", "--out", store, "--tune-dir", str(tune_dir),
            "--name", "s", "--trials", "8", "--batch", "2", "--cluster", "local:2", "--startup", "2",
            "--m", "3", "--e", "1"]


def _check_tune(tmp_path: Path, kills: int) -> None:
    store = separable_store(tmp_path / "s.zarr", n_train=800, n_test=20, dim=64).path
    subprocess.run(_tune_cmd(store, tmp_path / "whole"), cwd=ROOT, check=True, capture_output=True)
    assert _run_killed(_tune_cmd(store, tmp_path / "cut"), _kill_points(3, 4.0, 10.0, kills)) >= 1
    subprocess.run(_tune_cmd(store, tmp_path / "cut"), cwd=ROOT, check=True, capture_output=True)

    def trials(d: Path) -> list[tuple]:
        rows = TrialLog(d / "s" / "trials.jsonl").read().values()
        return sorted((r["number"], json.dumps(r["values"]), r["score"]) for r in rows)

    assert trials(tmp_path / "cut") == trials(tmp_path / "whole")


def test_embed_killed_at_seeded_points_resumes_to_the_same_store(tmp_path):
    _check_embed(tmp_path, KILLS)


def test_cluster_embed_killed_at_seeded_points_resumes_to_the_single_process_store(tmp_path):
    _check_cluster_embed(tmp_path, 2)


def test_train_snn_killed_at_seeded_points_resumes_to_the_same_weights(tmp_path):
    _check_train(tmp_path, KILLS)


def test_tune_killed_at_seeded_points_resumes_to_the_same_trials(tmp_path):
    _check_tune(tmp_path, KILLS)


@pytest.mark.slow
def test_ten_kills_per_stage(tmp_path):
    _check_embed(tmp_path / "embed", 10)
    _check_cluster_embed(tmp_path / "cluster-embed", 10)
    _check_train(tmp_path / "train", 10)
    _check_tune(tmp_path / "tune", 10)
