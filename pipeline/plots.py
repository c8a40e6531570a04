"""PNG plots of a run: online learning curve, confusion matrix, per-class recall, spike raster,
neuron weights."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confusion_matrix(confusion: np.ndarray, class_names: list[str], path: Path,
                     split: str = "test") -> None:
    """Rows: true class; columns: predicted class, the last one 'no answer'."""
    confusion = np.asarray(confusion)
    n = len(class_names)
    # Capped size: at 1000 classes an uncapped figure would be a 6 GB canvas.
    fig, ax = plt.subplots(figsize=(min(max(5, 0.35 * n + 3), 14), min(max(4, 0.35 * n + 2), 13)))
    im = ax.imshow(confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1), cmap="Blues",
                   vmin=0, vmax=1, interpolation="nearest")
    if n <= 30:
        ax.set_xticks(range(n + 1), [*class_names, "none"], rotation=90, fontsize=7)
        ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=f"CoLaNET confusion on the {split} split (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


LABELLED_CLASSES = 30  # above this many classes the points carry no class names


def per_class_recall(per_class: list[dict], path: Path, split: str = "test") -> None:
    """Per class (entries of :func:`pipeline.metrics.per_class_table`): SNN recall against the
    linear probe's (left, with the diagonal; only where the probe ran) and against the class's
    train count (right; log axis when the counts span more than 10x). Classes with no eval
    samples are left out. Names label the points up to ``LABELLED_CLASSES`` classes."""
    shown = [c for c in per_class if c["snn_recall"] is not None]
    names = [c["name"] for c in shown]
    snn = np.array([c["snn_recall"] for c in shown], dtype=float)
    count = np.array([c["train_count"] for c in shown], dtype=float)
    has_probe = bool(shown) and all(c.get("probe_recall") is not None for c in shown)
    label = len(per_class) <= LABELLED_CLASSES
    size, alpha = (20, 0.9) if label else (6, 0.5)  # thousands of points: small, translucent
    fig, axes = plt.subplots(1, 2 if has_probe else 1, figsize=(11 if has_probe else 6, 4.5),
                             squeeze=False)
    panels = [(count, "train samples of the class")]
    if has_probe:
        panels.insert(0, (np.array([c["probe_recall"] for c in shown], dtype=float),
                          "linear probe recall"))
    for ax, (x, xlabel) in zip(axes[0], panels):
        ax.scatter(x, snn, s=size, alpha=alpha)
        if label:
            for xi, yi, name in zip(x, snn, names):
                ax.annotate(name, (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points")
        ax.set(xlabel=xlabel, ylabel="SNN recall", ylim=(-0.03, 1.03))
        ax.grid(alpha=0.3)
    if has_probe:
        axes[0][0].plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        axes[0][0].set(xlim=(-0.03, 1.03), title="SNN vs linear probe, per class")
    right = axes[0][-1]
    if len(count) and count.max() > 10 * max(count.min(), 1):
        if count.min() > 0:
            right.set_xscale("log")
        else:  # a class with no train rows: log from 1 up, linear below, so it shows at 0
            right.set_xscale("symlog", linthresh=1)
            right.set_xlim(left=-0.5)
    right.set(title=f"SNN recall ({split} split) vs train count")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def spike_raster(spikes: np.ndarray, labels: np.ndarray, neurons_per_class: int, path: Path) -> None:
    """L-neuron spikes of copy 0 for a few consecutive samples; dashed lines separate samples.

    ``spikes`` is (samples, ticks, neurons) bool.
    """
    b, p, n = spikes.shape
    s, t, k = np.nonzero(spikes)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.scatter(s * p + t, k, s=60, c=k // neurons_per_class, cmap="tab10", marker="|")
    for i in range(b + 1):
        ax.axvline(i * p, color="grey", lw=0.5, ls="--")
    for i in range(b):
        ax.text(i * p + 1, n + 0.5, f"y={labels[i]}", fontsize=7)
    ax.set(xlabel="tick", ylabel="L neuron (column-major)", xlim=(0, b * p), ylim=(-1, n + 3),
           title="Spike raster, copy 0")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def neuron_weights(weights: np.ndarray, neurons: list[int], neurons_per_class: int, path: Path) -> None:
    """Input weights of a few L neurons of copy 0 (``weights`` is (D, N))."""
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(neurons) + 1.5))
    im = ax.imshow(weights[:, neurons].T, aspect="auto", cmap="coolwarm", interpolation="nearest")
    ax.set_yticks(range(len(neurons)),
                  [f"n{n} (class {n // neurons_per_class})" for n in neurons], fontsize=7)
    ax.set(xlabel="input feature", title="Synaptic weights, copy 0")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
