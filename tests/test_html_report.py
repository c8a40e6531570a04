"""report.html: valid HTML (html5lib's strict parser, the WHATWG parsing rules: any parse error
fails), self-contained (every image and link is a file of the run folder or a place on the page),
and every figure it shows is the one in metrics.json."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import html5lib
import numpy as np

from pipeline.colanet import ColanetConfig
from pipeline.config import EmbedConfig, TrainConfig
from pipeline.html_report import scalar_figures, shown_value, write_html_report
from pipeline.metrics import classification_metrics, write_metrics
from stages.train_snn import run_train_snn
from tests.conftest import separable_store


def _parse(page: Path):
    """The page's tree; html5lib's strict parser raises on any parse error."""
    parser = html5lib.HTMLParser(strict=True, tree=html5lib.getTreeBuilder("etree"),
                                 namespaceHTMLElements=False)
    return parser.parse(page.read_text(encoding="utf-8"))


def _text(element) -> str:
    return "".join(element.itertext())


def _resolve(metrics: dict, key: str):
    value = metrics
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _check_page(run: Path) -> tuple[object, dict[str, str]]:
    """Hold run/report.html to its folder and metrics.json; returns the tree and what each
    data-key shows."""
    tree = _parse(run / "report.html")
    ids = {e.get("id") for e in tree.iter() if e.get("id")}
    targets = [e.get("src") for e in tree.iter("img")] + [e.get("href") for e in tree.iter("a")]
    for target in targets:
        assert "//" not in target and ":" not in target, target  # nothing fetched from elsewhere
        if target.startswith("#"):
            assert target[1:] in ids, target
        else:
            assert (run / unquote(target)).is_file(), target
    assert "url(" not in _text(tree.find(".//style"))
    assert not list(tree.iter("script")) and not list(tree.iter("link"))
    metrics = json.loads((run / "metrics.json").read_text())
    shown = {}
    for cell in tree.iter():
        key = cell.get("data-key")
        if key is None:
            continue
        value = _resolve(metrics, key)
        assert json.loads(cell.get("data-value")) == value, key
        assert _text(cell) == shown_value(key, value), key
        shown[key] = _text(cell)
    assert {key for key, _ in scalar_figures(metrics)} <= set(shown)
    return tree, shown


def test_each_run_writes_a_page_true_to_its_files(tmp_path):
    store = separable_store(tmp_path / "s.zarr")
    cfg = TrainConfig(runs_dir=str(tmp_path / "runs"), run="r", checkpoint_every=50)
    run_train_snn(EmbedConfig(out=store.path), cfg, ColanetConfig(m=3, e=2))
    run = tmp_path / "runs" / "r"
    tree, shown = _check_page(run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert shown["snn_accuracy"] == f"{metrics['snn_accuracy']:.2%}"
    assert shown["seconds.train"] == f"{metrics['seconds']['train']:.6g}"
    for i, entry in enumerate(metrics["per_class"]):  # the whole per-class table
        assert {f"per_class.{i}.{field}" for field in entry} <= set(shown)
    pictures = {unquote(e.get("src")) for e in tree.iter("img")}
    assert pictures == {p.name for p in run.glob("*.png")} and len(pictures) == 5
    links = {unquote(e.get("href")) for e in tree.iter("a")}
    assert {"metrics.json", "config.json", "checkpoint.npz"} <= links
    config = json.loads((run / "config.json").read_text())
    assert [_text(h) for h in tree.iter("h3") if _text(h) in config] == list(config)

    # Evaluated again (a finished run rerun): the page is written anew.
    (run / "report.html").unlink()
    run_train_snn(EmbedConfig(out=store.path), cfg, ColanetConfig(m=3, e=2))
    _, again = _check_page(run)
    timing = {k for k in shown if k.startswith("seconds.")}  # the only figures that may differ
    assert {k: v for k, v in again.items() if k not in timing} == \
        {k: v for k, v in shown.items() if k not in timing}


def test_the_page_shows_keys_it_does_not_know_and_escapes_names(tmp_path):
    """Figures added to metrics.json later appear without a change here; class names are text,
    never markup; a 1,000-class run links its confusion.npy; long config lists are summarised."""
    names = ['<b>bold</b>', 'a & "b"', "c'd"] + [f"c{i}" for i in range(997)]
    y = np.arange(1000)
    snn = classification_metrics(y, y, 1000)
    write_metrics(tmp_path, {"snn_accuracy": 1.0, "no_answer_rate": 0.0, "eval_split": "test",
                             "top5_accuracy": 1.0, "macro": {"f1": 0.5, "precision": None},
                             "samples_per_second": 1234.5, "confusion": snn["confusion"],
                             "per_class": [{"name": n, "train_count": 3, "eval_count": 1,
                                            "snn_recall": 1.0, "f1": 1.0} for n in names]})
    (tmp_path / "config.json").write_text(json.dumps({"coding": {"sat": [0.5] * 1280}}))
    (tmp_path / "confusion.png").write_bytes(b"")
    write_html_report(tmp_path)
    tree, shown = _check_page(tmp_path)
    assert shown["top5_accuracy"] == "100.00%" and shown["macro.f1"] == "50.00%"
    assert shown["macro.precision"] == "–" and shown["samples_per_second"] == "1234.5"
    assert [shown[f"per_class.{i}.name"] for i in range(3)] == names[:3]
    assert not list(tree.iter("b"))  # the name '<b>bold</b>' stayed text
    assert "confusion.npy" in {e.get("href") for e in tree.iter("a")}
    assert "<1280 values: see config.json>" in _text(tree)
    assert [e.get("src") for e in tree.iter("img")] == ["confusion.png"]  # only plots present


def test_a_page_without_config_or_per_class_table_says_so(tmp_path):
    write_metrics(tmp_path, {"snn_accuracy": 0.5, "confusion": np.zeros((2, 3), np.int64)})
    write_html_report(tmp_path)
    tree, shown = _check_page(tmp_path)
    text = _text(tree)
    assert "config.json is missing or unreadable" in text
    assert "metrics.json holds no per-class table" in text
    assert shown == {"snn_accuracy": "50.00%"}
