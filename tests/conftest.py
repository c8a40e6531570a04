"""Shared fixtures: small generated image sets (nothing from outside the repository)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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
