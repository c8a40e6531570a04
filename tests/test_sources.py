"""Data sources given unusual or bad input, all generated here: each case is read as documented, or
refused with one line naming the file (and line) and what to do; nothing is silently dropped.

Listing a source decodes no image, so most sources here hold empty files named like images.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import MAX_ASPECT, DataSet, list_images, open_dataset, read_image_file
from pipeline.errors import UserError
from tests.conftest import assert_refused, snapshot


def _class_folders(folder: Path, classes: dict[str, int]) -> Path:
    """``folder/<class>/img<i>.jpg`` for each class and count (empty files: never decoded here)."""
    for name, count in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (folder / name / f"img{i}.jpg").write_bytes(b"")
    return folder


def _write_csv(tmp_path: Path, content: str | bytes) -> Path:
    """``tmp_path/data/list.csv`` holding ``content`` (bytes are written as they are)."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    path = data / "list.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def _assert_cli_refuses(spec: str, tmp_path: Path, capsys, pattern: str, *extra: str) -> None:
    """``annsnn embed`` refuses with the message, leaves the user's data folder as it was and
    writes no store."""
    data = tmp_path / "data"
    before = snapshot(data)
    assert_refused(["embed", "--data", spec, "--out", str(tmp_path / "s.zarr"),
                    "--image-size", "32", *extra], capsys, pattern)
    assert snapshot(data) == before
    assert not (tmp_path / "s.zarr").exists()


def _listed(ds: DataSet) -> dict[str, list[tuple[str, str]]]:
    """Each split's (id, class name) pairs, sorted: what a source listed, independent of order."""
    return {name: sorted((str(i), ds.class_names[int(y)]) for i, y in zip(s.ids, s.labels))
            for name, s in ds.splits.items()}


# --- CSV: accepted -------------------------------------------------------------------------------

def test_csv_with_a_utf8_bom_is_read(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a BOM; kept, the header would read '\\ufeffpath'."""
    path = _write_csv(tmp_path, "\ufeffpath,label,split\na.jpg,cat,train\nb.jpg,dog,train\n"
                                "c.jpg,cat,test\nd.jpg,dog,test\n")
    ds = open_dataset(f"csv:{path}")
    assert ds.class_names == ("cat", "dog")
    assert _listed(ds) == {"train": [("a.jpg", "cat"), ("b.jpg", "dog")],
                           "test": [("c.jpg", "cat"), ("d.jpg", "dog")]}


def test_csv_values_are_stripped_so_padded_labels_are_one_class(tmp_path: Path) -> None:
    """'cat ' and 'cat' must not become two classes; padded paths and splits are the plain ones."""
    path = _write_csv(tmp_path, "path , label,split\n a.jpg ,cat ,train\nb.jpg, dog, Train \n"
                                "c.jpg,  cat,test\nd.jpg,dog ,TEST\n")
    ds = open_dataset(f"csv:{path}")
    assert ds.class_names == ("cat", "dog")
    assert _listed(ds) == {"train": [("a.jpg", "cat"), ("b.jpg", "dog")],
                           "test": [("c.jpg", "cat"), ("d.jpg", "dog")]}


def test_csv_labels_spelt_in_two_unicode_forms_are_one_class(tmp_path: Path) -> None:
    """'café' as one character é (NFC) or as e and a combining accent (NFD, as macOS and some
    exports write it) looks the same and must not become two classes; the class is named in NFC."""
    path = _write_csv(tmp_path, "path,label,split\na.jpg,caf\u00e9,train\nb.jpg,cafe\u0301,train\n"
                                "c.jpg,dog,train\n")
    ds = open_dataset(f"csv:{path}")
    assert ds.class_names == ("caf\u00e9", "dog")
    assert _listed(ds) == {"train": [("a.jpg", "caf\u00e9"), ("b.jpg", "caf\u00e9"), ("c.jpg", "dog")]}


@pytest.mark.parametrize("given, split", [
    ("train", "train"), ("Training", "train"), ("VAL", "val"), ("valid", "val"),
    ("Validation", "val"), ("dev", "val"), ("test", "test"), ("Testing", "test")])
def test_csv_split_values_take_the_usual_aliases_in_any_case(tmp_path: Path, given: str,
                                                             split: str) -> None:
    """Data sets name their validation split val, valid, validation or dev; all mean one split."""
    path = _write_csv(tmp_path, f"path,label,split\na.jpg,cat,{given}\nb.jpg,dog,{given}\n")
    assert _listed(open_dataset(f"csv:{path}")) == {split: [("a.jpg", "cat"), ("b.jpg", "dog")]}


def test_csv_rows_of_empty_cells_list_nothing(tmp_path: Path) -> None:
    """Spreadsheets write ',,' rows after the data; they hold nothing to drop, so are skipped."""
    path = _write_csv(tmp_path, "path,label,split\na.jpg,cat,train\n,,\n\nb.jpg,dog,train\n , ,\n")
    assert _listed(open_dataset(f"csv:{path}")) == {"train": [("a.jpg", "cat"), ("b.jpg", "dog")]}


# --- CSV: refused --------------------------------------------------------------------------------

CSV_REFUSALS = {
    # case: (content, pattern the message must match)
    "short row": ("path,label,split\na.jpg,cat,train\nb.jpg,dog\n",
                  r"list\.csv:3: 2 field\(s\) where the header has 3"),
    "extra field": ("path,label\na.jpg,cat\nb,c.jpg,dog\n",
                    r"list\.csv:3: 3 fields where the header has 2; quote"),
    "empty path": ("path,label\na.jpg,cat\n  ,dog\n", r"list\.csv:3: empty path"),
    "empty label": ("path,label\na.jpg,cat\nb.jpg,  \n", r"list\.csv:3: empty label for 'b\.jpg'"),
    "latin-1": ("path,label\na.jpg,cat\ncafé.jpg,dog\n".encode("latin-1"),
                r"list\.csv:3: byte 0xe9 is not UTF-8.*save the file as UTF-8"),
    "huge field": ("path,label\na.jpg,cat\n" + "b" * 200_000 + ".jpg,dog\n",
                   r"list\.csv:3: a field is longer than \d+ characters;"),
    "quote never closed": ('path,label\na.jpg,cat\n"b.jpg,dog\n' + "c.jpg,cat\n" * 20_000,
                           r"list\.csv:3: a field is longer than \d+ characters \(it runs on to "
                           r"line \d+\); .*quote"),
    "quote open at the end": ('path,label\na.jpg,cat\nb.jpg,"dog\n',
                              r"list\.csv:3: not a valid CSV row \(unexpected end of data\)"),
    "stray quote": ('path,label\na.jpg,cat\n"b.jpg"x,dog\n',
                    r"list\.csv:3: not a valid CSV row .*check its quotes"),
    "line break in a field": ('path,label\na.jpg,cat\n"b.jpg\nc.jpg",dog\n',
                              r"list\.csv:3: a field holds a line break"),
    "unknown split": ("path,label,split\na.jpg,cat,train\nb.jpg,dog,holdout\n",
                      r"list\.csv:3: split 'holdout' must be one of"),
    "same file in two splits": ("path,label,split\na.jpg,cat,train\nb.jpg,dog,train\n"
                                "./a.jpg,cat,test\n",
                                r"list\.csv:4: '\./a\.jpg' is in split test here and in train at "
                                r"line 2: .*leaks"),
    "same file twice in a split": ("path,label,split\na.jpg,cat,train\nb.jpg,dog,test\n"
                                   "a.jpg,cat,train\n",
                                   r"list\.csv:4: 'a\.jpg' is listed again \(first at line 2\)"),
    "same file twice, no split": ("path,label\na.jpg,cat\nb.jpg,dog\na.jpg ,dog\nc.jpg,cat\n",
                                  r"list\.csv:4: 'a\.jpg' is listed again \(first at line 2\)"),
}


@pytest.mark.parametrize("case", list(CSV_REFUSALS))
def test_a_bad_csv_is_refused_at_its_line(tmp_path: Path, capsys, case: str) -> None:
    """The message names file:line, so the user can fix the row instead of guessing."""
    content, pattern = CSV_REFUSALS[case]
    path = _write_csv(tmp_path, content)
    with pytest.raises(UserError, match=pattern):
        open_dataset(f"csv:{path}")
    _assert_cli_refuses(f"csv:{path}", tmp_path, capsys, pattern)


# --- ImageFolder ---------------------------------------------------------------------------------

@pytest.mark.parametrize("names", [("train", "val", "test"), ("Training", "VALID", "Testing"),
                                   ("TRAIN", "dev", "test"), ("train", "Validation", "TEST")])
def test_split_folders_take_the_usual_aliases_in_any_case(tmp_path: Path,
                                                          names: tuple[str, str, str]) -> None:
    """Ids keep the folder's real name (they are paths below the root); the split's key is the
    canonical one."""
    root = tmp_path / "data"
    for name in names:
        _class_folders(root / name, {"cat": 2, "dog": 2})
    ds = open_dataset(f"imagefolder:{root}")
    assert ds.class_names == ("cat", "dog")
    assert _listed(ds) == {split: [(f"{name}/{c}/img{i}.jpg", c) for c in ("cat", "dog")
                                   for i in range(2)]
                           for split, name in zip(("train", "val", "test"), names)}


@pytest.mark.parametrize("first, second, split", [("val", "valid", "val"),
                                                  ("Test", "testing", "test"),
                                                  ("train", "Training", "train")])
def test_two_folders_of_one_split_are_refused(tmp_path: Path, capsys, first: str, second: str,
                                              split: str) -> None:
    """Taking one of them would silently drop the other's images."""
    root = tmp_path / "data"
    for name in ("train" if split != "train" else "test", first, second):
        _class_folders(root / name, {"cat": 2, "dog": 2})
    pattern = (rf"folders ({first}/ and {second}/|{second}/ and {first}/) are both the {split} "
               rf"split; merge them")
    with pytest.raises(UserError, match=pattern):
        open_dataset(f"imagefolder:{root}")
    _assert_cli_refuses(f"imagefolder:{root}", tmp_path, capsys, pattern)


def _with_hidden_entries(folder: Path) -> None:
    """What tools leave in a data folder: Jupyter checkpoints (empty, or holding a copy of a class),
    macOS's .DS_Store and ._ resource forks, in the folder and in each class folder."""
    (folder / ".ipynb_checkpoints").mkdir(exist_ok=True)
    _class_folders(folder / ".cache", {"cat": 1})
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    for class_dir in [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]:
        (class_dir / "._img0.jpg").write_bytes(b"\0\5\26\7 resource fork")
        (class_dir / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (class_dir / ".ipynb_checkpoints").mkdir(exist_ok=True)


@pytest.mark.parametrize("layout", ["flat", "split folders"])
def test_hidden_entries_are_ignored_everywhere(tmp_path: Path, layout: str) -> None:
    """Hidden entries are never data: no class '.ipynb_checkpoints', no 'extra folder' refusal, no
    '._img0.jpg' row (a resource fork, not an image)."""
    root = tmp_path / "data"
    if layout == "flat":
        _with_hidden_entries(_class_folders(root, {"cat": 2, "dog": 2}))
    else:
        for split in ("train", "test"):
            _with_hidden_entries(_class_folders(root / split, {"cat": 2, "dog": 2}))
        _with_hidden_entries(root)  # also puts hidden entries beside the class folders
    ds = open_dataset(f"imagefolder:{root}", test_fraction=0.5)
    assert ds.class_names == ("cat", "dog")
    ids = [str(i) for s in ds.splits.values() for i in s.ids]
    assert len(ids) == (4 if layout == "flat" else 8)
    assert not [i for i in ids if any(part.startswith(".") for part in Path(i).parts)]


def test_a_folder_beside_split_folders_is_refused(tmp_path: Path, capsys) -> None:
    """extra/ is neither a split nor ignorable: its images would be silently left out."""
    root = tmp_path / "data"
    for name in ("train", "test", "extra"):
        _class_folders(root / name, {"cat": 2, "dog": 2})
    pattern = r"extra/ beside the split folders test/, train/ is no split .*move extra/ out"
    with pytest.raises(UserError, match=pattern):
        open_dataset(f"imagefolder:{root}")
    _assert_cli_refuses(f"imagefolder:{root}", tmp_path, capsys, pattern)


def test_a_file_beside_split_folders_is_ignored(tmp_path: Path) -> None:
    """A README beside train/ and test/ is documentation, not a class."""
    root = tmp_path / "data"
    for name in ("train", "test"):
        _class_folders(root / name, {"cat": 2, "dog": 2})
    (root / "README.txt").write_text("cats and dogs\n")
    ds = open_dataset(f"imagefolder:{root}")
    assert sorted(ds.splits) == ["test", "train"] and ds.class_names == ("cat", "dog")


def test_a_class_folder_of_only_hidden_files_is_refused(tmp_path: Path, capsys) -> None:
    """._img0.jpg is not an image, so dog/ holds none: refused as an empty class, as before."""
    root = _class_folders(tmp_path / "data", {"cat": 2})
    (root / "dog").mkdir()
    (root / "dog" / "._img0.jpg").write_bytes(b"\0\5\26\7")
    (root / "dog" / ".DS_Store").write_bytes(b"\0")
    pattern = r"dog: class folder holds no images"
    with pytest.raises(UserError, match=pattern):
        open_dataset(f"imagefolder:{root}")
    _assert_cli_refuses(f"imagefolder:{root}", tmp_path, capsys, pattern)


def test_a_class_folder_whose_name_is_not_utf8_is_refused(tmp_path: Path, capsys) -> None:
    """Such a name reached the store as lone surrogates, and train-snn then crashed drawing it
    (on every rerun): refused when listing, naming the folder as its bytes read."""
    root = _class_folders(tmp_path / "data", {"cat": 2})
    bad = Path(os.fsdecode(bytes(root) + b"/caf\xe9"))
    bad.mkdir()
    (bad / "img0.jpg").write_bytes(b"")
    pattern = r"the class folder caf\\xe9/ has a name that is not UTF-8 text; rename it"
    with pytest.raises(UserError, match=pattern):
        open_dataset(f"imagefolder:{root}")
    _assert_cli_refuses(f"imagefolder:{root}", tmp_path, capsys, pattern)


def test_a_folder_named_like_an_image_is_no_image(tmp_path: Path) -> None:
    """``cat/more.jpg/`` is a folder: it used to be listed as an image and fail to embed."""
    root = _class_folders(tmp_path / "data", {"cat": 2, "dog": 2})
    (root / "cat" / "more.jpg").mkdir()
    ds = list_images(f"imagefolder:{root}")
    assert sorted(str(i) for i in ds.splits[""].ids) == [
        "cat/img0.jpg", "cat/img1.jpg", "dog/img0.jpg", "dog/img1.jpg"]


def test_a_16_bit_greyscale_image_is_scaled_not_clipped(tmp_path: Path) -> None:
    """Pillow's conversion clips 16-bit levels at 255 (a gradient became 99.6 % white)."""
    levels = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)
    Image.fromarray(levels).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode.startswith("I")
    rgb = np.asarray(read_image_file(tmp_path / "g.png")).astype(int)
    assert rgb.shape == (30, 40, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    assert np.abs(rgb[..., 0] - np.round(levels / 257.0)).max() <= 1


def test_an_extreme_strip_is_cut_around_its_centre(tmp_path: Path) -> None:
    """A 1 x 100,000 strip would be scaled to gigabytes by the eval transform (its short side to
    the input size); it is cut to MAX_ASPECT : 1 around its centre, which the centre crop keeps."""
    strip = np.zeros((1, 100_000, 3), np.uint8)
    strip[0, 50_000 - 8:50_000 + 8] = 200  # the centre, kept
    Image.fromarray(strip).save(tmp_path / "s.png")
    cut = read_image_file(tmp_path / "s.png")
    assert cut.size == (MAX_ASPECT, 1) and (np.asarray(cut) == 200).all()
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "p.png")
    assert read_image_file(tmp_path / "p.png").size == (40, 30)  # a photo is untouched


def test_a_class_only_in_val_is_still_a_class(tmp_path: Path) -> None:
    """Unchanged behaviour: the classes are the union over the split folders."""
    root = tmp_path / "data"
    _class_folders(root / "train", {"cat": 2, "dog": 2})
    _class_folders(root / "val", {"cat": 1, "dog": 1, "owl": 1})
    ds = open_dataset(f"imagefolder:{root}")
    assert ds.class_names == ("cat", "dog", "owl")
    assert {c for _, c in _listed(ds)["train"]} == {"cat", "dog"}
    assert ("val/owl/img0.jpg", "owl") in _listed(ds)["val"]


# --- images --------------------------------------------------------------------------------------

def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A camera photo stored sideways with orientation 6 ("turn 90° clockwise") is read upright."""
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high
    stored[:5] = (255, 0, 0)  # a red band along the stored top edge
    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    path = root / "cat" / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, exif=exif)
    with Image.open(path) as raw:
        assert raw.size == (40, 20)
    upright = read_image_file(path)
    assert upright.size == (20, 40)
    pixels = np.asarray(upright).astype(int)
    assert pixels[:, -3:, 0].mean() > 200 > pixels[:, :3, 0].mean() + 100  # top turned to the right
    _class_folders(root, {"cat": 1, "dog": 2})
    ds = open_dataset(f"imagefolder:{root}", test_fraction=0.5)  # a source reads it the same way
    assert ds.read_image("cat/photo.jpg").size == (20, 40)


# --- seeded split --------------------------------------------------------------------------------

def _assert_suggestion_works(message: str, root: Path) -> None:
    """The --test-fraction the message suggests gives every class a train and a test image."""
    suggested = float(re.search(r"use --test-fraction ([0-9.]+)", message).group(1))
    ds = open_dataset(f"imagefolder:{root}", test_fraction=suggested)
    for split in ("train", "test"):
        assert set(ds.splits[split].labels.tolist()) == set(range(len(ds.class_names))), split


@pytest.mark.parametrize("fraction, pattern", [
    (0.01, r"--test-fraction 0\.01 puts 1 of 9 images in test, fewer than the 3 classes, so some "
           r"class \(e\.g\. '(cat|dog|owl)', 3 images\) gets no test image; use --test-fraction"),
    (0.99, r"--test-fraction 0\.99 puts 0 of 9 images in train, fewer than the 3 classes, so some "
           r"class \(e\.g\. '(cat|dog|owl)', 3 images\) gets no train image; use --test-fraction")])
def test_a_test_fraction_too_small_or_large_for_the_classes_is_refused(
        tmp_path: Path, capsys, fraction: float, pattern: str) -> None:
    """sklearn would raise a ValueError traceback here; the user gets a fraction that works."""
    root = _class_folders(tmp_path / "data", {"cat": 3, "dog": 3, "owl": 3})
    with pytest.raises(UserError, match=pattern) as refused:
        open_dataset(f"imagefolder:{root}", test_fraction=fraction)
    _assert_suggestion_works(str(refused.value), root)
    _assert_cli_refuses(f"imagefolder:{root}", tmp_path, capsys, pattern,
                        "--test-fraction", str(fraction))


@pytest.mark.parametrize("fraction, side", [(0.1, "test"), (0.9, "train")])
def test_a_small_class_left_without_test_or_train_rows_is_refused(
        tmp_path: Path, fraction: float, side: str) -> None:
    """With 40 cats and 2 dogs sklearn splits without error but gives the dogs no row on one side:
    a class that is never tested (or never learnt) must not pass silently."""
    root = _class_folders(tmp_path / "data", {"cat": 40, "dog": 2})
    with pytest.raises(UserError, match=rf"leaves class 'dog' \(2 images\) with no {side} image; "
                                        rf"use --test-fraction") as refused:
        open_dataset(f"imagefolder:{root}", test_fraction=fraction)
    _assert_suggestion_works(str(refused.value), root)


def test_a_split_sklearn_refuses_anyway_is_a_user_error(tmp_path: Path, monkeypatch) -> None:
    """Last resort: a ValueError from sklearn that the checks did not foresee is a message too."""
    import sklearn.model_selection

    def refuse(*args, **kwargs):
        raise ValueError("an unforeseen refusal")

    monkeypatch.setattr(sklearn.model_selection, "train_test_split", refuse)
    root = _class_folders(tmp_path / "data", {"cat": 4, "dog": 4})
    with pytest.raises(UserError, match=r"cannot split the classes \(an unforeseen refusal\); add "
                                        r"images"):
        open_dataset(f"imagefolder:{root}")
