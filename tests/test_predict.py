"""`annsnn predict` (pipeline.predict): images are embedded with the model's own encoder and
answered as ColanetClassifier answers their features (default sample ids: the features' hash),
bit for bit the features and answers the evaluation path gives the same images; unreadable
images are rows, refusals are one line."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline import ColanetClassifier
from pipeline import encoder as encoder_module
from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.outputs import claim_folder
from pipeline.store import EmbeddingStore
from stages.cli import main
from tests.conftest import assert_refused, make_image_folder, run_cli, separable_store, snapshot

HEADER = ["path", "predicted", "votes_share", "second", "no_answer", "error"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An ImageFolder embedded one image per batch (as predict embeds), a tiny model trained on
    it by train-snn (m 3, e 1) and exported."""
    root = tmp_path_factory.mktemp("predict")
    images = make_image_folder(root / "images")
    store, run, model = root / "images.zarr", root / "runs" / "r", root / "model.npz"
    for argv in (["embed", "--data", f"imagefolder:{images}", "--image-size", 64,
                  "--batch-size", 1, "--out", store],
                 ["train-snn", "--out", store, "--runs-dir", root / "runs", "--run", "r",
                  "--m", 3, "--e", 1, "--skip-baselines"],
                 ["export", "--run", run, "--out", model]):
        assert main([str(a) for a in argv]) == 0, argv
    return SimpleNamespace(root=root, images=images, store=store, run=run, model=model)


def _predict(argv, capsys) -> tuple[list[dict[str, str]], str]:
    """``annsnn predict ARGV``: the CSV rows it printed on stdout, and its stderr."""
    assert main(["predict", *map(str, argv)]) == 0
    captured = capsys.readouterr()
    return list(csv.DictReader(io.StringIO(captured.out))), captured.err


def _store_rows(store_path) -> tuple[list[str], np.ndarray]:
    """Every row of a store: the image's file and its features, in split and row order."""
    store = EmbeddingStore.open(store_path)
    root = Path(store.attrs["dataset"]["root"])
    paths, features = [], []
    for split in store.splits:
        group = store.split(split)
        paths += [str(root / i) for i in group["ids"][:]]
        features.append(group["features"][:])
    return paths, np.concatenate(features)


def _expected(clf: ColanetClassifier, x: np.ndarray) -> list[dict[str, str]]:
    """The answers ColanetClassifier gives (default sample ids), in predict's columns."""
    votes = clf.votes(x).sum(axis=1)
    proba, predicted = clf.predict_proba(x), clf.predict(x)
    out = []
    for v, p, c in zip(votes, proba, predicted):
        second = np.argsort(-v, kind="stable")[1]
        out.append({"predicted": str(c) if v.sum() else "",
                    "votes_share": f"{p.max():.4f}" if v.sum() else "",
                    "second": str(clf.classes_[second]) if v[second] else "",
                    "no_answer": "0" if v.sum() else "1"})
    return out


def test_predict_answers_as_the_classifier_answers_the_stores_features(trained, capsys,
                                                                      monkeypatch):
    """Each image's features equal its row of the store (embedded one per batch) bit for bit, and
    its answer is ColanetClassifier's for those features; --run gives the exported model's
    answers."""
    seen = []
    votes = ColanetClassifier.votes

    def spy(self, x, sample_id=None):
        seen.append(np.array(x))
        return votes(self, x, sample_id)

    monkeypatch.setattr(ColanetClassifier, "votes", spy)
    rows, err = _predict(["--model", trained.model, trained.images], capsys)
    monkeypatch.undo()
    paths, x = _store_rows(trained.store)
    order = np.argsort(paths)  # predict lists a folder sorted by path
    assert [r["path"] for r in rows] == [paths[i] for i in order]
    assert list(rows[0]) == HEADER and all(r["error"] == "" for r in rows)
    np.testing.assert_array_equal(seen[-1], x[order])  # seen[0]: the kernels' warm-up row
    clf = ColanetClassifier.load(trained.model)
    assert [{k: r[k] for k in HEADER[1:5]} for r in rows] == _expected(clf, x[order])
    labels = [Path(p).parent.name for p in paths]
    answered = [r for r in rows if r["no_answer"] == "0"]
    assert len(answered) >= 12 and sum(r["predicted"] == Path(r["path"]).parent.name
                                       for r in answered) >= 12, (rows, labels)
    assert "predicted 18 images (0 failed" in err and "s per image" in err and "start-up" in err
    assert main(["predict", "--run", str(trained.run), str(trained.images)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        ",".join(r.values()) for r in rows]


def test_a_store_is_answered_from_its_features(trained, capsys, tmp_path):
    """A store input runs no encoder: its rows get the same answers as the images; a model file
    written before the embedding settings were recorded still predicts the same."""
    images, _ = _predict(["--model", trained.model, trained.images], capsys)
    stored, _ = _predict(["--model", trained.model, trained.store], capsys)
    paths, x = _store_rows(trained.store)
    assert [r["path"] for r in stored] == paths
    assert sorted(stored, key=lambda r: r["path"]) == images
    arrays, meta = load_checkpoint(trained.model)
    assert meta["source"]["embedding"] == {"batch_size": 1, "threads": meta["source"]["embedding"]
                                           ["threads"], "compute": {"device": "cpu",
                                                                    "precision": "float32"}}
    del meta["source"]["embedding"]
    save_checkpoint(tmp_path / "old.npz", arrays, meta)
    one = Path(images[0]["path"])
    assert _predict(["--model", tmp_path / "old.npz", one], capsys)[0] == [images[0]]


def test_unreadable_images_are_rows_and_top_k_lists_the_best_classes(trained, capsys,
                                                                      tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    good = sorted(trained.images.glob("dog/*"))[0]
    (folder / "sub" / "dog.png").write_bytes(good.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("not an image: a folder gives only its image files\n")
    (folder / ".hidden.png").write_bytes(good.read_bytes())
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    out = tmp_path / "made" / "answers.csv"  # a missing folder is made, as export makes one
    code, err = run_cli(["predict", "--model", trained.model, "--top-k", 2, "--out", out,
                         folder, truncated, f"csv:{_csv(tmp_path, good)}"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == [*HEADER[:5], "top1", "top1_share", "top2", "top2_share", "error"]
    assert [r["path"] for r in rows] == [str(folder / "broken.jpg"),
                                         str(folder / "sub" / "dog.png"), str(truncated),
                                         str(tmp_path / good.name)]
    broken, dog, cut, listed = rows
    assert broken["error"].startswith("UnidentifiedImageError: cannot identify image file")
    assert cut["error"].startswith(("OSError", "SyntaxError", "ValueError")), cut
    for row in (broken, cut):
        assert not any(row[k] for k in list(row)[1:-1]), row
    assert dog["error"] == "" and dog["top1"] == dog["predicted"] == listed["predicted"]
    assert dog["top1_share"] == dog["votes_share"] and dog["top2"] == dog["second"]
    shares = [float(dog[k] or 0) for k in ("top1_share", "top2_share")]
    assert shares[0] >= shares[1] and sum(shares) <= 1.0 + 1e-4
    assert "predicted 4 images (2 failed" in err and f"CSV: {out}" in err


def _csv(folder: Path, image: Path) -> Path:
    """A CSV source listing one copy of ``image`` (csv: sources need a label)."""
    (folder / image.name).write_bytes(image.read_bytes())
    (folder / "list.csv").write_text(f"path,label\n{image.name},dog\n")
    return folder / "list.csv"


def test_refusals_are_one_line_and_write_nothing(trained, capsys, tmp_path, monkeypatch):
    model, images = ["--model", trained.model], trained.images
    unfinished = claim_folder(tmp_path / "runs" / "u", "run")
    assert_refused(["predict", "--run", unfinished, images], capsys,
                   rf"{unfinished}: has no finished model .*finish it with `annsnn train-snn`")
    assert_refused(["predict", "--run", tmp_path, images], capsys, "not a run folder")
    assert_refused(["predict", images], capsys, "give the model: --model FILE .* or --run RUN_DIR")
    out = tmp_path / "mine.csv"
    out.write_text("my notes\n")
    before = snapshot(tmp_path)
    assert_refused(["predict", *model, "--out", out, images], capsys,
                   rf"{out}: already exists; nothing was written")
    assert snapshot(tmp_path) == before
    assert_refused(["predict", *model, "--out", out / "a.csv", images], capsys,
                   rf"{out} is a file, not a folder")
    assert_refused(["predict", *model, "--out", tmp_path, images], capsys,
                   "is a folder; give the CSV file's path")
    assert snapshot(tmp_path) == before
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here\n")
    assert_refused(["predict", *model, tmp_path / "empty"], capsys, "no images found in")
    assert_refused(["predict", *model, tmp_path / "missing.jpg"], capsys,
                   "missing.jpg: no such file or folder")
    assert_refused(["predict", *model, "--top-k", 4, images], capsys, "the model .* has 3 classes")
    other = separable_store(tmp_path / "other.zarr")
    assert_refused(["predict", *model, other.path], capsys,
                   "holds features of encoder synthetic .* but the model .* was trained on "
                   "encoder tf_efficientnet_lite0")
    saved = tmp_path / "saved.npz"
    ColanetClassifier.load(trained.model).save(saved)
    assert_refused(["predict", "--model", saved, images], capsys, "records no encoder")
    monkeypatch.setattr(encoder_module, "_LOADED", {})
    monkeypatch.setitem(encoder_module.PACKAGE_WEIGHTS, "tf_efficientnet_lite0",
                        ("no_such_weights_package", "Model"))
    assert_refused(["predict", *model, "--out", tmp_path / "a.csv", images], capsys,
                   "weights need the package no-such-weights-package; install it with")
    assert_refused(["predict", *model, "--weights", tmp_path / "none.pth", images], capsys,
                   "none.pth: no such checkpoint file")
    assert not (tmp_path / "a.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_damaged_inputs_are_refused_in_one_line(trained, capsys, tmp_path):
    """A store with a chunk cut short, a run whose metrics.json is JSON but not a run's record,
    and a model file of random bytes: one line each, naming what is wrong (each used to end in a
    traceback or in numpy's text about pickles)."""
    import shutil

    store = tmp_path / "cut.zarr"
    shutil.copytree(trained.store, store)
    chunk = next(p for p in sorted((store / "train" / "features" / "c").rglob("*")) if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:20])
    assert_refused(["predict", "--model", trained.model, store], capsys,
                   r"cut\.zarr: split 'train' chunk \d+ cannot be decoded")
    run = tmp_path / "runs" / "listed"
    shutil.copytree(trained.run, run, ignore=shutil.ignore_patterns("*.lock"))
    for text in ("[1, 2, 3]", '"done"', '{"snn_accuracy": 0.5}'):
        (run / "metrics.json").write_text(text)
        for argv in (["export", "--run", run, "--out", tmp_path / "m.npz"],
                     ["predict", "--run", run, trained.images]):
            assert_refused(argv, capsys, rf"{run}: config\.json or metrics\.json is unreadable")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(np.random.default_rng(0).bytes(2000))
    out = assert_refused(["predict", "--model", garbage, trained.images], capsys,
                         r"garbage\.npz: not a readable model file \(neither an \.npz nor a \.npy")
    assert "pickle" not in out
    assert not (tmp_path / "m.npz").exists()


def test_a_path_holding_a_carriage_return_reads_back_as_one_row():
    """csv quotes a field for its own line terminator ("\\n") only: a bare "\\r" in a file name
    split the row for every reader. Such a row is quoted whole; the others are as before."""
    from pipeline.predict import _CsvRows

    stream = io.StringIO(newline="")
    rows = [["path", "top1"], ["photos/cr\rx.png", "cat"], ["photos/a,b.png", "dog"],
            ["photos/plain.png", "owl"]]
    _CsvRows(stream).writerows(rows)
    text = stream.getvalue()
    assert text.splitlines(keepends=True)[0] == "path,top1\n"
    assert '"photos/cr\rx.png","cat"\n' in text and "photos/plain.png,owl\n" in text
    assert list(csv.reader(io.StringIO(text, newline=""))) == rows
