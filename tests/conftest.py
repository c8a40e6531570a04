"""Shared fixtures: small generated image sets (nothing from outside the repository)."""

from __future__ import annotations

import os

# The CUDA kernels' tests (tests/test_cuda.py) run under Numba's CUDA simulator unless told
# otherwise (NUMBA_ENABLE_CUDASIM=0 on a machine with a GPU); numba reads it when it is first
# imported, so it is set before anything imports numba. The CPU kernels do not read it.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from pipeline import colanet as cn
from pipeline.store import write_arrays


def make_image_folder(root: Path, classes=("cat", "dog", "owl"), per_class: int = 6,
                      size: int = 40, splits: tuple[str, ...] = ()) -> Path:
    """Write a deterministic ImageFolder: each class a distinct colour pattern, PNG and JPEG."""
    rng = np.random.default_rng(0)
    for split in splits or ("",):
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = np.zeros((size, size, 3), np.uint8)
                base[..., k % 3] = 200
                noise = rng.integers(0, 50, size=(size, size, 3), dtype=np.uint8)
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(base + noise).save(folder / f"img{i}.{ext}")
    return root


def separable_store(path, n_train=120, n_test=60, dim=48, classes=4, seed=0, chunk=32,
                    transform=None):
    """Classes are distinct non-negative prototypes plus noise, like pooled ReLU features."""
    rng = np.random.default_rng(seed)
    protos = rng.random((classes, dim)) * (rng.random((classes, dim)) < 0.3) * 3.0

    def draw(n):
        y = rng.integers(0, classes, n)
        x = np.maximum(protos[y] + rng.normal(0, 0.3, (n, dim)), 0).astype(np.float32)
        return x, y

    splits = {"train": draw(n_train), "test": draw(n_test)}
    if transform is not None:  # e.g. garbage written into a split: transform(split, x) -> x
        splits = {k: (transform(k, x.copy()), y) for k, (x, y) in splits.items()}
    return write_arrays(path, splits,
                        [f"c{i}" for i in range(classes)], encoder={"model": "synthetic"},
                        source=f"synthetic:{seed}", chunk_size=chunk)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")


def assert_same_store(a, b) -> None:
    """Two stores hold bit-identical arrays (features, labels, ids, errors, done) in every split."""
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert sorted(n for n, _ in ga.groups()) == sorted(n for n, _ in gb.groups())
    for split, _ in ga.groups():
        for name in ("features", "labels", "ids", "errors", "done"):
            np.testing.assert_array_equal(np.asarray(ga[split][name][:]),
                                          np.asarray(gb[split][name][:]), err_msg=f"{split}/{name}")


def assert_same_checkpoint(a, b) -> dict:
    """Two checkpoint files hold the same arrays, bit for bit; returns the first one's arrays."""
    from pipeline.checkpoint import load_checkpoint

    (xa, _), (xb, _) = load_checkpoint(a), load_checkpoint(b)
    assert xa.keys() == xb.keys()
    for k in xa:
        np.testing.assert_array_equal(xa[k], xb[k], err_msg=k)
    return xa


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run ``annsnn ARGV`` in this process; returns (exit status, stdout + stderr). Argparse's own
    refusals (``SystemExit``) count as an exit status like any other."""
    from stages.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def assert_refused(argv: list[str], capsys, *patterns: str) -> str:
    """``annsnn ARGV`` exits with status 2, prints no traceback, and its message matches every
    regular expression in ``patterns``; returns the output."""
    import re

    code, out = run_cli(argv, capsys)
    assert code == 2, f"exit {code}, expected 2:\n{out}"
    assert "Traceback" not in out, out
    for p in patterns:
        assert re.search(p, out), f"{p!r} not in:\n{out}"
    return out


def snapshot(root: Path, *, locks: bool = True) -> dict[str, tuple[str, int]]:
    """Every file and folder under ``root`` (itself included): relative path -> (content hash or
    "dir" or a symlink's target, mode). Equal snapshots mean nothing was added, changed or deleted.
    ``locks=False`` leaves out our ``*.lock`` files: a reader records itself in the lock it holds."""
    import hashlib
    import os

    root = Path(root)
    out: dict[str, tuple[str, int]] = {}
    if not root.exists() and not root.is_symlink():
        return out
    for path in [root, *sorted(root.rglob("*"))]:
        if not locks and path.name.endswith(".lock") and path.is_file():
            continue
        rel = str(path.relative_to(root))
        st = path.lstat()
        if path.is_symlink():
            out[rel] = ("link:" + os.readlink(path), st.st_mode)
        elif path.is_dir():
            out[rel] = ("dir", st.st_mode)
        else:
            out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mode)
    return out


def damage_zip_member(data: bytes, member: str) -> bytes:
    """The bytes of a zip (an ``.npz``) with 16 bytes in the middle of ``member``'s own data
    flipped: the directory stays intact, so only reading that member finds the damage."""
    import io
    import struct
    import zipfile

    data = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo(member)
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_length + extra_length  # the member's own bytes
    middle = start + info.compress_size // 2
    for i in range(middle, middle + 16):
        data[i] ^= 0xA5
    return bytes(data)


# --- CoLaNET runs shared by the differential tests (CPU kernels against the reference) and the
# CUDA tests (GPU kernels against the CPU kernels) ---

#: The spec's values of the parameters the shipped defaults changed (shared/spec/colanet.md).
SPEC = dict(gain_total=640.0, d_h=-0.114, dopamine=0.227, r_s=0.159, k_thr=0.00107, s_stim=0.63,
            forcing="most_depolarised", blocking="column", burst_scope="continuous")
#: The spec's readings (the defaults keep the simulator's earlier ones).
SPEC_READINGS = dict(firing="all_above_threshold", theta_refresh="anti_hebbian",
                     gate_scope="sample", gate_ticks=10, syn_window="t_syn", block_span="block_ticks")


def nonnegative_data(seed, n, n_classes, n_inputs):
    """Pooled-ReLU-like features: a sparse non-negative prototype per class plus noise, clipped at
    0 (so some features are silent), and labels."""
    rng = np.random.default_rng(seed)
    protos = rng.random((n_classes, n_inputs)) * (rng.random((n_classes, n_inputs)) < 0.6) * 2.0
    y = rng.integers(0, n_classes, n)
    x = np.maximum(protos[y] + rng.normal(0.0, 0.3, (n, n_inputs)), 0.0).astype(np.float32)
    return x, y


def exercised(params, state, votes, spikes, n_inputs_silent):
    """Assert that a run used every mechanism: votes, forced spikes, anti-Hebbian steps,
    dopamine and stability, and conservation (synapses of never-active inputs moved)."""
    assert votes.sum() > 0
    assert spikes.sum() > votes.sum(), "no forced spike"
    assert np.any(state.last_ah_tick != cn.NEVER), "no anti-Hebbian step"
    assert np.any(state.stability > 0), "no consolidation"
    r0 = cn.resource_of(0.0, params)
    assert np.any(state.r[:, -n_inputs_silent:, :] != r0), "no conservation"


def assert_same_run(params, n_classes, x, y, chunks, x_test, sat, *, twin_train, twin_infer,
                    weight_spread=0.0, seed=0):
    """Train the kernels and a twin (``twin_train``/``twin_infer``: the NumPy reference, or the
    kernels on another device) on the same chunks from the same start, then infer on ``x_test``:
    votes, recorded spikes and every state array must be identical. The start is a fresh state,
    its weights drawn uniformly from ``[-weight_spread, weight_spread]`` (so that a few samples
    already fire and learn). Returns the kernels' training votes, spikes and final state."""
    fast = cn.init_state(params, x.shape[1] // params.n_views, n_classes)  # views: blocks of x
    if weight_spread > 0:
        w = np.random.default_rng(seed).uniform(-weight_spread, weight_spread, fast.r.shape)
        fast.r[...] = cn.resource_of(np.clip(w, params.w_min, 0.99 * params.w_max), params)
        cn.sync_derived(params, fast)
    twin = fast.copy()
    votes, spikes = [], []
    for lo, hi in chunks:
        chunk = (x[lo:hi], y[lo:hi], np.arange(lo, hi), sat)
        v_fast, _, rec_fast = cn.train_chunk(params, fast, *chunk, record=True)
        v_twin, _, rec_twin = twin_train(params, twin, *chunk, record=True)
        np.testing.assert_array_equal(v_fast, v_twin, err_msg=f"train votes, samples {lo}:{hi}")
        np.testing.assert_array_equal(rec_fast, rec_twin, err_msg=f"train spikes, {lo}:{hi}")
        votes.append(v_fast)
        spikes.append(rec_fast)
    twin_arrays = cn.state_arrays(twin)
    for name, array in cn.state_arrays(fast).items():
        np.testing.assert_array_equal(array, twin_arrays[name], err_msg=f"state.{name}")
    ids = np.arange(1000, 1000 + len(x_test))
    v_fast, rec_fast = cn.infer_chunk(params, fast, x_test, ids, sat, record=True)
    v_twin, rec_twin = twin_infer(params, twin, x_test, ids, sat, record=True)
    np.testing.assert_array_equal(v_fast, v_twin, err_msg="inference votes")
    np.testing.assert_array_equal(rec_fast, rec_twin, err_msg="inference spikes")
    return np.concatenate(votes), np.concatenate(spikes), fast
