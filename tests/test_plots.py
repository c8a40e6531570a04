"""The run's plots at few and many classes (synthetic inputs, no training): each is written, and
what it draws (classes, labels, colour scales) is what its docstring says."""

from __future__ import annotations

import matplotlib.figure
import numpy as np
import pytest

from pipeline import plots
from pipeline.metrics import classification_metrics, per_class_table
from pipeline.streaming import array_batches
from pipeline.training import Coding, class_input_rates

M = 3  # neurons per class column


@pytest.fixture
def saved(monkeypatch):
    """The figures saved, in order (their axes stay readable after the plot closes them)."""
    figures = []
    original = matplotlib.figure.Figure.savefig

    def record(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    return figures


def _names(n):
    return [f"class {i}" for i in range(n)]


def _predictions(n_classes, rng):
    """Five samples per class; class i is answered as i, except: every class i divisible by 7
    is answered as i + 1 on two samples, and class 3 gets no answer on one."""
    y = np.repeat(np.arange(n_classes), 5)
    pred = y.copy()
    for i in range(0, n_classes, 7):
        pred[5 * i:5 * i + 2] = (i + 1) % n_classes
    pred[5 * 3] = -1
    return y, pred


@pytest.mark.parametrize("n_classes", [10, 60])
def test_the_confusion_plot_names_its_classes_and_the_no_answer_column(tmp_path, saved, n_classes):
    y, pred = _predictions(n_classes, np.random.default_rng(0))
    m = classification_metrics(y, pred, n_classes)
    drawn = plots.confusion_matrix(m["confusion"], _names(n_classes), tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0
    ax = saved[-1].axes[0]
    columns = [t.get_text() for t in ax.get_xticklabels()]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert columns[-1] == "no answer" and rows == [f"class {i}" for i in drawn]
    assert f"accuracy {m['accuracy']:.1%}" in ax.get_title()
    image = ax.get_images()[0].get_array()
    assert image.shape == (len(drawn), len(columns))
    assert np.allclose(np.asarray(image).sum(axis=1), 1.0)  # row shares, every answer counted
    if n_classes == 10:
        assert list(drawn) == list(range(10)) and len(columns) == 11
        assert image[3, -1] == pytest.approx(1 / 5)  # class 3's no-answer share
    else:  # the 19 classes of an error (0, 7, ..., 56, what they were taken for, and 3), then
        # the first class without one
        wrong = {i for i in range(0, 60, 7)} | {(i + 1) % 60 for i in range(0, 60, 7)} | {3}
        assert set(drawn) == wrong | {2} and len(drawn) == plots.MOST_CONFUSED
        assert columns[-2:] == ["other classes", "no answer"]
        assert "20 most confused of 60 classes" in ax.get_title()


def test_most_confused_ranks_by_errors_made_and_received():
    confusion = np.zeros((5, 6), np.int64)
    np.fill_diagonal(confusion, 10)
    confusion[0, 4] = 3  # 0 taken for 4: errors of both
    confusion[2, 5] = 2  # class 2: two unanswered
    confusion[1, 3] = 1
    assert list(plots.most_confused(confusion, 2)) == [0, 4]
    assert list(plots.most_confused(confusion, 3)) == [0, 2, 4]
    assert list(plots.most_confused(confusion, 5)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("n_classes", [10, 60])
def test_the_spike_raster_groups_neurons_by_class_column(tmp_path, saved, n_classes):
    rng = np.random.default_rng(1)
    spikes = rng.random((4, 15, n_classes * M)) < 0.02
    labels = np.array([0, 5, 9, 2])
    answers = np.array([0, 6, -1, 2])
    drawn = plots.spike_raster(spikes, labels, answers, _names(n_classes), M, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 0
    ax = saved[-1].axes[0]
    assert set(labels) | {6} <= set(drawn) and len(drawn) == min(n_classes, plots.RASTER_COLUMNS)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"class {c}" for c in drawn]
    above = [(t.get_text(), t.get_color()) for t in ax.child_axes[0].get_xticklabels()]
    assert above == [("true: class 0\nanswer: class 0", "tab:green"),
                     ("true: class 5\nanswer: class 6", "tab:red"),
                     ("true: class 9\nanswer: no answer", "tab:red"),
                     ("true: class 2\nanswer: class 2", "tab:green")]
    boundaries = [line for line in ax.lines if line.get_ydata()[0] == line.get_ydata()[1]]
    assert len(boundaries) == len(drawn) - 1  # one line between each two columns
    if n_classes > plots.RASTER_COLUMNS:
        assert f"{len(drawn)} of {n_classes} class columns drawn" in ax.get_title()


def test_raster_samples_take_one_of_each_class_first():
    labels = np.array([4, 4, 4, 1, 1, 7, 4])
    assert list(plots.raster_samples(labels, 3)) == [0, 3, 5]
    assert list(plots.raster_samples(labels, 5)) == [0, 1, 2, 3, 5]
    assert list(plots.raster_samples(labels[:2], 5)) == [0, 1]


@pytest.mark.parametrize("n_classes", [10, 60])
def test_the_weights_plot_sets_each_prototype_against_its_class_mean(tmp_path, saved, n_classes):
    rng = np.random.default_rng(2)
    d = 80
    rates = rng.random((n_classes, d))
    rates[0] = np.nan  # a class without train rows
    weights = np.repeat((rates - np.nanmean(rates, axis=0)).T[None, :, :], M, axis=2)
    weights = np.nan_to_num(weights).astype(np.float32) * 2 + 0.1  # prototype = scaled class mean
    weights = np.concatenate([weights, weights], axis=0)  # two copies
    drawn = plots.class_prototypes(weights, rates, _names(n_classes), M, tmp_path / "w.png")
    assert (tmp_path / "w.png").stat().st_size > 0
    left, right = saved[-1].axes[:2]
    rows = [t.get_text() for t in left.get_yticklabels()]
    assert len(drawn) == min(n_classes, plots.SHOWN_CLASSES) and drawn[0] == 0
    assert drawn[-1] == n_classes - 1
    assert rows[0] == "class 0 (r=n/a)" and rows[1] == f"class {drawn[1]} (r=+1.00)"
    for ax in (left, right):
        image = ax.get_images()[0]
        low, high = image.get_clim()
        assert -low == high > 0  # centred on zero
        assert image.get_array().shape == (len(drawn), plots.PROTOTYPE_FEATURES)


def test_class_input_rates_are_the_coders_mean_rate_per_class():
    x = np.array([[1.0, -1.0], [3.0, 0.5], [0.5, 4.0], [9.0, 9.0]], np.float32)
    y = np.array([0, 0, 1, 0])
    coding = Coding(sat=np.array([2.0, np.inf]))
    rates = class_input_rates(array_batches(x, y), coding, 3)
    assert rates[0] == pytest.approx([(0.5 + 1 + 1) / 3, 0.0])
    assert rates[1] == pytest.approx([0.25, 0.0])
    assert np.isnan(rates[2]).all()  # no rows
    centred = Coding(sat=1.0, centre=np.array([1.0, 0.0], np.float32), on_off=True)
    rates = class_input_rates(array_batches(x[:1], y[:1]), centred, 1)
    assert rates[0] == pytest.approx([0.0, 0.0, 0.0, 1.0])  # [x - c, c - x] = [0, -1, 0, 1]


@pytest.mark.parametrize("n_classes", [10, 60])
def test_the_recall_plot_names_all_classes_or_the_worst(tmp_path, saved, n_classes):
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(n_classes), 4)
    pred = np.where(rng.random(len(y)) < 0.7, y, (y + 1) % n_classes)
    entries = per_class_table(_names(n_classes), rng.integers(1, 500, n_classes), y,
                              {"snn": pred, "probe": y})
    plots.per_class_recall(entries, tmp_path / "p.png")
    left, right = saved[-1].axes[:2]
    for ax in (left, right):
        assert [t.get_text() for t in ax.texts] == (
            _names(n_classes) if n_classes <= plots.LABELLED_CLASSES
            else [str(rank) for rank in range(1, plots.LABELLED_WORST + 1)])
    if n_classes > plots.LABELLED_CLASSES:  # the numbered worst classes, listed beside
        worst = sorted(range(n_classes), key=lambda i: (entries[i]["snn_recall"], i))
        listed = saved[-1].axes[2].texts[0].get_text().splitlines()
        assert listed[0] == "lowest SNN recall" and len(listed) == 1 + plots.LABELLED_WORST
        assert [line.split()[:3] for line in listed[1:]] == [
            [str(rank), "class", str(i)] for rank, i in enumerate(worst[:plots.LABELLED_WORST], 1)]


@pytest.mark.parametrize("n_classes", [10, 60])
def test_the_online_accuracy_plot_is_written(tmp_path, n_classes):
    correct = np.random.default_rng(4).random(30 * n_classes) < 0.8
    plots.running_accuracy(correct, tmp_path / "o.png", pass_length=15 * n_classes)
    assert (tmp_path / "o.png").stat().st_size > 0
