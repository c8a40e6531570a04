"""A bad-input corpus, generated here: each case and what the embed stage does with it."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import EmbedConfig
from pipeline.store import EmbeddingStore
from pipeline.embedding import embed_store
from stages.embed import print_summary
from tests.conftest import make_image_folder

NON_UTF8 = os.fsdecode(b"caf\xe9.png")


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


# file name -> "recorded" (skipped, reason stored) or "embedded"
CASES = {
    "zero.jpg": "recorded",  # zero-byte file
    "trunc.jpg": "recorded",  # truncated JPEG
    "text.jpg": "recorded",  # a text file named .jpg
    "bomb.png": "recorded",  # decompression bomb: PIL's guard refuses it
    "broken.png": "recorded",  # broken symlink
    "alpha.png": "embedded",  # PNG with alpha: converted to RGB
    "deep16.png": "embedded",  # 16-bit greyscale PNG
    "cmyk.jpg": "embedded",  # CMYK JPEG
    "grey.png": "embedded",  # greyscale
    "one.png": "embedded",  # a 1x1 image: the transform resizes it
    NON_UTF8: "embedded",  # a file name that is not UTF-8
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = make_image_folder(tmp_path / "imgs", per_class=4)
    d = root / "cat"
    (d / "zero.jpg").write_bytes(b"")
    good = (d / "img0.jpg").read_bytes()
    (d / "trunc.jpg").write_bytes(good[: len(good) // 2])
    (d / "text.jpg").write_text("not an image")
    _png_header_only(d / "bomb.png", 20000, 20000)
    os.symlink(d / "missing.png", d / "broken.png")
    Image.fromarray(np.zeros((20, 20, 4), np.uint8)).save(d / "alpha.png")
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(d / "deep16.png")
    Image.new("CMYK", (20, 20), (10, 20, 30, 40)).save(d / "cmyk.jpg")
    Image.new("L", (20, 20), 128).save(d / "grey.png")
    Image.new("RGB", (1, 1), (1, 2, 3)).save(d / "one.png")
    (d / NON_UTF8).write_bytes((d / "img1.png").read_bytes())
    return root


def test_each_bad_image_is_recorded_or_embedded_as_documented(corpus, tmp_path, capsys):
    out = tmp_path / "c.zarr"
    summary = embed_store(EmbedConfig(data=f"imagefolder:{corpus}", out=str(out), image_size=32,
                                    chunk_size=8, batch_size=4, test_fraction=0.5))
    assert summary["complete"]
    recorded = {Path(p).name for p, _ in summary["failed"]}
    assert recorded == {name for name, fate in CASES.items() if fate == "recorded"}
    store = EmbeddingStore.open(out)
    reasons = {}
    for s in store.splits:
        ids = np.asarray(store.split(s)["ids"][:]).astype(object)
        errors = np.asarray(store.split(s)["errors"][:]).astype(object)
        feats = store.split(s)["features"][:]
        for i, e, f in zip(ids, errors, feats):
            name = Path(i).name
            if e:
                reasons[name] = e
                assert not f.any()
            else:  # embedded (a flat image may well give all-zero pooled features)
                assert np.isfinite(f).all(), name
    assert "DecompressionBomb" in reasons["bomb.png"]
    assert "caf\\xe9.png" in {Path(i).name for s in store.splits
                              for i in np.asarray(store.split(s)["ids"][:]).astype(object)}
    print_summary(summary)  # a non-UTF-8 name or reason must not break the summary
    assert "skipped" in capsys.readouterr().out


def test_an_unreadable_file_is_recorded(tmp_path, monkeypatch):
    """Simulated: the tests run as root, who can read a chmod 000 file."""
    import pipeline.data as data

    root = make_image_folder(tmp_path / "imgs", per_class=4)
    real = data.read_image_file

    def deny(path):
        if Path(path).name == "img2.jpg" and Path(path).parent.name == "dog":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(data, "read_image_file", deny)
    summary = embed_store(EmbedConfig(data=f"imagefolder:{root}", out=str(tmp_path / "u.zarr"),
                                    image_size=32, test_fraction=0.5))
    assert [(p, r.split(":")[0]) for p, r in summary["failed"]] == [("dog/img2.jpg", "PermissionError")]


def test_a_full_disk_stops_with_a_message_and_loses_nothing(tmp_path, monkeypatch):
    import errno

    from pipeline.errors import UserError

    whole = tmp_path / "whole.zarr"
    cfg = EmbedConfig(data="digits", limit=24, image_size=32, chunk_size=8, batch_size=8)
    embed_store(EmbedConfig(**{**cfg.to_dict(), "out": str(whole)}))
    out = tmp_path / "full.zarr"
    real = EmbeddingStore.write_chunk
    calls = {"n": 0}

    def fill_up(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(EmbeddingStore, "write_chunk", fill_up)
    with pytest.raises(UserError, match="No space left on device.*finished chunks are kept"):
        embed_store(EmbedConfig(**{**cfg.to_dict(), "out": str(out)}))
    assert EmbeddingStore.open(out).done_chunks("train").tolist() == [True, True, False]
    monkeypatch.setattr(EmbeddingStore, "write_chunk", real)
    embed_store(EmbedConfig(**{**cfg.to_dict(), "out": str(out)}))
    for s in ("train", "test"):
        np.testing.assert_array_equal(EmbeddingStore.open(out).split(s)["features"][:],
                                      EmbeddingStore.open(whole).split(s)["features"][:])


def test_a_single_class_is_refused_in_every_layout(tmp_path):
    from pipeline.data import open_dataset
    from pipeline.errors import UserError

    flat = make_image_folder(tmp_path / "flat", classes=("cat",))
    split = make_image_folder(tmp_path / "split", classes=("cat",), splits=("train", "val"))
    for root in (flat, split):
        with pytest.raises(UserError, match="single class"):
            open_dataset(f"imagefolder:{root}")


def test_a_csv_listing_a_missing_file_records_it(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=2)
    rows = ["path,label,split", "cat/img0.jpg,cat,train", "dog/img0.jpg,dog,train",
            "cat/img1.png,cat,test", "dog/gone.png,dog,test"]
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    summary = embed_store(EmbedConfig(data=f"csv:{root / 'list.csv'}", out=str(tmp_path / "c.zarr"),
                                    image_size=32))
    assert [(p, r.split(":")[0]) for p, r in summary["failed"]] == [("dog/gone.png", "FileNotFoundError")]
