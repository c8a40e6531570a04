"""Shared fixtures: small generated image sets (nothing from outside the repository)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image


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
