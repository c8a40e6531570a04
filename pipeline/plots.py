"""PNG plots of a run: online learning curve, confusion matrix, per-class recall, spike raster,
class prototypes. Each reads at any class count: above a few dozen classes a plot draws a chosen
subset of them and says which."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
# Class names are data: "money$$" or "US$ and C$" is text, never matplotlib's $math$ notation
# (which draws such names wrongly or raises on them).
matplotlib.rcParams["text.parse_math"] = False
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402


def _save(fig, path: Path) -> None:
    with warnings.catch_warnings():  # a class name's glyph the font lacks, a layout that does
        warnings.simplefilter("ignore", UserWarning)  # not fit: the plot is drawn all the same
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)


#: At most this many classes are drawn one by one in the confusion matrix, the spike raster and
#: the weights; above it each plot draws a chosen subset (and says which).
SHOWN_CLASSES = 30
MOST_CONFUSED = 20  # the confusion matrix of more than SHOWN_CLASSES classes: these many rows


def most_confused(confusion: np.ndarray, limit: int) -> np.ndarray:
    """Class indices (ascending) of the ``limit`` classes with the most errors, counting a class's
    samples answered wrongly or not at all and other classes' samples answered as it (ties: the
    lower index); all classes when there are no more than ``limit``. ``confusion`` is
    (C, C + 1), its last column 'no answer' (:func:`pipeline.metrics.classification_metrics`)."""
    confusion = np.asarray(confusion, dtype=np.int64)
    n = confusion.shape[0]
    if n <= limit:
        return np.arange(n)
    square = confusion[:, :n]
    off = square - np.diag(np.diag(square))
    errors = off.sum(axis=1) + confusion[:, n] + off.sum(axis=0)
    ranked = np.lexsort((np.arange(n), -errors))  # most errors first, ties by index
    return np.sort(ranked[:limit])


def confusion_matrix(confusion: np.ndarray, class_names: list[str], path: Path,
                     split: str = "test") -> np.ndarray:
    """Rows: true class; columns: predicted class, then 'no answer' (the matrix's last column).
    Cells are coloured by their share of the row and show their count. Up to
    :data:`SHOWN_CLASSES` classes all are drawn; above that the :data:`MOST_CONFUSED` classes of
    :func:`most_confused`, with a column 'other classes' for answers outside them, so each row
    still sums to its class's samples. The title holds the accuracy (the diagonal's share of
    all samples; no answer counts as wrong). Returns the classes drawn."""
    confusion = np.asarray(confusion, dtype=np.int64)
    n = len(class_names)
    total = int(confusion.sum())
    accuracy = np.trace(confusion[:, :n]) / total if total else 0.0
    shown = most_confused(confusion, MOST_CONFUSED if n > SHOWN_CLASSES else n)
    columns = [confusion[shown][:, shown]]
    labels = [class_names[i] for i in shown]
    if len(shown) < n:
        columns.append(confusion[shown, :n].sum(axis=1, keepdims=True) - columns[0].sum(axis=1,
                                                                                    keepdims=True))
        labels.append("other classes")
    columns.append(confusion[shown, n:])
    labels.append("no answer")
    matrix = np.concatenate(columns, axis=1)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    k = len(shown)
    side = max(4.5, 0.32 * (k + 2) + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", rotation_mode="anchor",
                  fontsize=7)
    ax.set_yticks(range(k), labels[:k], fontsize=7)
    for col in range(k, len(labels)):  # the columns that are not classes, set apart
        ax.get_xticklabels()[col].set_fontstyle("italic")
    ax.axvline(k - 0.5, color="black", linewidth=0.8)
    if k <= SHOWN_CLASSES:
        for (row, col), count in np.ndenumerate(matrix):
            if count:
                ax.text(col, row, str(count), ha="center", va="center", fontsize=6,
                        color="white" if share[row, col] > 0.5 else "black")
    which = (f"the {k} most confused of {n} classes" if k < n else f"{n} classes")
    ax.set(xlabel="answer", ylabel="true class",
           title=f"CoLaNET on the {split} split: accuracy {accuracy:.1%} of {total:,} samples\n"
                 f"{which}; numbers: counts, colour: share of the row")
    ax.title.set_fontsize(9)
    fig.colorbar(im, ax=ax, fraction=0.04, label="share of the true class's samples")
    _save(fig, path)
    return shown


def running_accuracy(correct: np.ndarray, path: Path, window: int = 100,
                     pass_length: int | None = None) -> None:
    """Online accuracy during the training passes: each sample was answered before it was learned
    (a dotted line where each later pass begins)."""
    correct = np.asarray(correct, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if len(correct):
        w = max(1, min(window, len(correct)))
        seen = np.arange(1, len(correct) + 1)
        moving = np.convolve(correct, np.ones(w) / w, mode="valid")
        cumulative = np.cumsum(correct) / seen
        # At most ~4000 points per line: a million-sample pass would otherwise cost matplotlib
        # more memory than the training loop itself.
        step = max(1, len(correct) // 4000)
        ax.plot(seen[w - 1::step], moving[::step], label=f"last {w} samples")
        ax.plot(seen[::step], cumulative[::step], label="cumulative", alpha=0.7)
        for start in range(pass_length or len(correct), len(correct), pass_length or len(correct)):
            ax.axvline(start, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="training samples seen", ylabel="online accuracy", ylim=(0, 1),
           title="CoLaNET online pass")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)


LABELLED_CLASSES = 30  # up to this many classes every point carries its class name
LABELLED_WORST = 10  # above that, only these many of lowest SNN recall are named


def per_class_recall(per_class: list[dict], path: Path, split: str = "test") -> None:
    """Per class (entries of :func:`pipeline.metrics.per_class_table`): SNN recall against the
    linear probe's (left, with the diagonal; only where the probe ran) and against the class's
    train count (right; log axis when the counts span more than 10x). Classes with no eval
    samples are left out. Names label the points up to ``LABELLED_CLASSES`` classes; above that
    the ``LABELLED_WORST`` classes of lowest SNN recall are drawn in red, numbered 1 (worst) on,
    and listed by number, name and recall beside the panels."""
    shown = [c for c in per_class if c["snn_recall"] is not None]
    names = [c["name"] for c in shown]
    snn = np.array([c["snn_recall"] for c in shown], dtype=float)
    count = np.array([c["train_count"] for c in shown], dtype=float)
    has_probe = bool(shown) and all(c.get("probe_recall") is not None for c in shown)
    label_all = len(per_class) <= LABELLED_CLASSES
    named = (np.arange(len(shown)) if label_all
             else np.lexsort((np.arange(len(shown)), snn))[:LABELLED_WORST])  # worst, ties by order
    listed = not label_all and len(named) > 0
    size, alpha = (20, 0.9) if label_all else (6, 0.5)  # thousands of points: small, translucent
    n_panels = 2 if has_probe else 1
    fig, axes = plt.subplots(1, n_panels + listed, squeeze=False,
                             figsize=(5.5 * n_panels + 0.5 + 2.5 * listed, 4.5),
                             width_ratios=[1] * n_panels + [0.45] * listed)
    panels = [(count, "train samples of the class")]
    if has_probe:
        panels.insert(0, (np.array([c["probe_recall"] for c in shown], dtype=float),
                          "linear probe recall"))
    for ax, (x, xlabel) in zip(axes[0], panels):
        ax.scatter(x, snn, s=size, alpha=alpha)
        if listed:
            ax.scatter(x[named], snn[named], s=20, color="tab:red",
                       label=f"the {len(named)} classes of lowest SNN recall")
            ax.legend(loc="lower right", fontsize=7)
        for rank, i in enumerate(named, 1):
            ax.annotate(str(rank) if listed else names[i], (x[i], snn[i]), fontsize=6,
                        xytext=(2, 2), textcoords="offset points")
        ax.set(xlabel=xlabel, ylabel="SNN recall", ylim=(-0.03, 1.03))
        ax.grid(alpha=0.3)
    if listed:
        side = axes[0][-1]
        side.axis("off")
        side.text(0, 1, "lowest SNN recall\n" + "\n".join(
            f"{rank:>2} {names[i][:22]:<22} {snn[i]:>4.0%}" for rank, i in enumerate(named, 1)),
            va="top", ha="left", fontsize=7, family="monospace", transform=side.transAxes)
    if has_probe:
        axes[0][0].plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        axes[0][0].set(xlim=(-0.03, 1.03), title="SNN vs linear probe, per class")
    right = axes[0][n_panels - 1]
    if len(count) and count.max() > 10 * max(count.min(), 1):
        if count.min() > 0:
            right.set_xscale("log")
        else:  # a class with no train rows: log from 1 up, linear below, so it shows at 0
            right.set_xscale("symlog", linthresh=1)
            right.set_xlim(left=-0.5)
        # 20, 50, 100 rather than 2x10^1: every power of ten, and its 2x and 5x in between
        right.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        right.xaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    right.set(title=f"SNN recall ({split} split) vs train count, {len(shown)} classes")
    _save(fig, path)


RASTER_COLUMNS = 10  # the spike raster draws at most this many class columns (tab10 colours)


def raster_samples(labels: np.ndarray, limit: int) -> np.ndarray:
    """Positions of up to ``limit`` samples for the spike raster, in order: the first of each
    class first (as many classes as possible), then the next ones."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    first = np.sort(first)[:limit]
    rest = np.setdiff1d(np.arange(len(labels)), first)[:limit - len(first)]
    return np.sort(np.concatenate([first, rest])).astype(np.int64)


def raster_columns(spikes: np.ndarray, labels: np.ndarray, answers: np.ndarray,
                   n_classes: int, neurons_per_class: int, limit: int = RASTER_COLUMNS
                   ) -> np.ndarray:
    """The class columns the raster draws (ascending): all when ``n_classes <= limit``; else the
    true and answered classes of the samples, then the columns with the most spikes, up to
    ``limit``."""
    if n_classes <= limit:
        return np.arange(n_classes)
    wanted = [int(c) for c in [*labels, *answers] if 0 <= c < n_classes]
    per_column = spikes.reshape(-1, n_classes, neurons_per_class).sum(axis=(0, 2))
    busiest = np.lexsort((np.arange(n_classes), -per_column))
    chosen = list(dict.fromkeys(wanted))[:limit]
    busy = [int(c) for c in busiest if c not in chosen and per_column[c] > 0]
    chosen += busy[:limit - len(chosen)]
    return np.array(sorted(chosen), dtype=np.int64)


def spike_raster(spikes: np.ndarray, labels: np.ndarray, answers: np.ndarray,
                 class_names: list[str], neurons_per_class: int, path: Path) -> np.ndarray:
    """L-neuron spikes of copy 0 on a few samples presented one after another (frozen network).

    ``spikes`` is (samples, ticks, neurons) bool, neuron ``n`` in class column
    ``n // neurons_per_class``; ``labels`` the true classes, ``answers`` the ensemble's answers
    (-1: none). Neurons are grouped by column, coloured by it (legend) and separated by lines;
    above each sample its true class and the answer (green right, red wrong). Of many classes
    only the :func:`raster_columns` are drawn, the spikes of the others counted in the title.
    Returns the columns drawn."""
    spikes = np.asarray(spikes, dtype=bool)
    b, p, n = spikes.shape
    m = neurons_per_class
    n_classes = n // m
    columns = raster_columns(spikes, labels, answers, n_classes, m)
    rows = (columns[:, None] * m + np.arange(m)).ravel()  # the drawn neurons, column by column
    drawn = spikes[:, :, rows]
    hidden = int(spikes.sum() - drawn.sum())
    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * b + 2), min(max(3.5, 0.05 * len(rows) + 2.5), 8)))
    for i, c in enumerate(columns):
        s, t, k = np.nonzero(drawn[:, :, i * m:(i + 1) * m])
        ax.scatter(s * p + t, i * m + k, s=40, color=colours[i % len(colours)], marker="|",
                   label=class_names[c])
        if i:
            ax.axhline(i * m - 0.5, color="grey", lw=0.6)
    for i in range(b + 1):
        ax.axvline(i * p - 0.5, color="black", lw=0.6, ls="--")
    top = ax.secondary_xaxis("top")  # above each sample: its true class and the answer
    top.set_xticks([i * p + (p - 1) / 2 for i in range(b)],
                   [f"true: {class_names[labels[i]]}\nanswer: "
                    + (class_names[answers[i]] if answers[i] >= 0 else "no answer")
                    for i in range(b)], fontsize=7)
    for label, right in zip(top.get_xticklabels(), answers == labels):
        label.set_color("tab:green" if right else "tab:red")
    ax.set_yticks([i * m + (m - 1) / 2 for i in range(len(columns))],
                  [class_names[c] for c in columns], fontsize=7)
    ax.set(xlabel="tick (samples one after another)", ylabel="L neurons of the class column",
           xlim=(-0.5, b * p - 0.5), ylim=(len(rows) - 0.5, -0.5))  # first column on top
    title = "Spikes of copy 0's L neurons on test samples (answer: the whole ensemble's vote)"
    if len(columns) < n_classes:
        title += (f"\n{len(columns)} of {n_classes} class columns drawn; {hidden} spikes in the "
                  f"others not drawn")
    ax.set_title(title, fontsize=9)
    ax.legend(title="class column", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7,
              title_fontsize=7, markerscale=1.5)
    _save(fig, path)
    return columns


PROTOTYPE_FEATURES = 64  # the weights plot shows at most this many inputs


def class_prototypes(weights: np.ndarray, class_rates: np.ndarray, class_names: list[str],
                     neurons_per_class: int, path: Path) -> np.ndarray:
    """Per class, the learned prototype beside the class's mean input.

    ``weights`` is (E, D, N), the synaptic weights of every copy; a class's prototype is the mean
    weight of its column's neurons over all copies. ``class_rates`` is (C, D): each class's mean
    input spike rate on the train split (NaN for a class without train rows), drawn less the mean
    over classes. Both panels are on colour scales centred on zero; each row names the class and
    the correlation r of its prototype with its mean input over all D inputs. Up to
    :data:`SHOWN_CLASSES` classes all are drawn, else that many evenly spaced through the class
    list; up to :data:`PROTOTYPE_FEATURES` inputs, else those whose mean rate differs most between
    the drawn classes (in input order). Returns the classes drawn."""
    weights = np.asarray(weights)  # float32: a float64 copy of 1,000 classes' would be GBs
    e, d, n = weights.shape
    m = neurons_per_class
    n_classes = n // m
    prototypes = weights.reshape(e, d, n_classes, m).mean(axis=(0, 3), dtype=np.float64).T
    rates = np.asarray(class_rates, dtype=np.float64)
    shown = (np.arange(n_classes) if n_classes <= SHOWN_CLASSES
             else np.unique(np.linspace(0, n_classes - 1, SHOWN_CLASSES).round().astype(np.int64)))
    known = np.isfinite(rates).all(axis=1)
    centred = rates - (rates[known].mean(axis=0) if known.any() else 0.0)
    spread = np.nan_to_num(centred[shown]).std(axis=0)
    features = (np.arange(d) if d <= PROTOTYPE_FEATURES
                else np.sort(np.lexsort((np.arange(d), -spread))[:PROTOTYPE_FEATURES]))
    names = []
    for c in shown:
        a, b = prototypes[c], centred[c]
        ok = known[c] and a.std() > 0 and b.std() > 0
        r = f"r={np.corrcoef(a, b)[0, 1]:+.2f}" if ok else "r=n/a"
        names.append(f"{class_names[c]} ({r})")
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3.5, 0.22 * len(shown) + 2)), sharey=True)
    panels = [(prototypes[shown][:, features], "learned prototype (mean weight of the column)"),
              (centred[shown][:, features], "class mean input rate less all classes' mean")]
    for ax, (values, title) in zip(axes, panels):
        limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
        limit = limit or 1.0
        im = ax.imshow(values, aspect="auto", cmap="coolwarm", vmin=-limit, vmax=limit,
                       interpolation="nearest")
        which = "" if len(features) == d else ", those differing most between classes"
        ax.set(xlabel=f"input ({len(features)} of {d}{which})", title=title)
        ax.title.set_fontsize(9)
        ticks = np.unique(np.linspace(0, len(features) - 1, 8).round().astype(np.int64))
        ax.set_xticks(ticks, [str(f) for f in features[ticks]], fontsize=7)  # the input's index
        fig.colorbar(im, ax=ax, fraction=0.04)
    axes[0].set_yticks(range(len(shown)), names, fontsize=7)
    which = (f"all {n_classes} classes" if len(shown) == n_classes else
             f"{len(shown)} of {n_classes} classes, evenly spaced")
    fig.suptitle(f"What each class column learned ({which}; {e} copies, {m} neurons each); "
                 f"r: correlation over all {d} inputs", fontsize=9)
    _save(fig, path)
    return shown
