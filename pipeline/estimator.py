"""CoLaNET as a scikit-learn classifier: :class:`ColanetClassifier` (``from pipeline import
ColanetClassifier``).

It runs the training engine's own code (:mod:`pipeline.training`): the coding is measured by
:meth:`pipeline.training.Coding.measured`, the online loop is
:func:`pipeline.training.fit_stretches` over :func:`pipeline.streaming.array_batches`, and the
answers come from :func:`pipeline.training.vote`, so the Numba kernels see exactly what
``annsnn train-snn`` gives them on the same rows in the same order (see the class docstring for
the sample ids that key the simulator's noise).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import typing
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from pipeline.colanet import ColanetConfig, init_state, readout
from pipeline.errors import UserError
from pipeline.model_file import Model, read_model, write_model
from pipeline.streaming import ARRAY_CHUNK_ROWS, array_batches, stretches
from pipeline.training import (Coding, Progress, fit_stretches, ids_used, presentations,
                               vote)

#: The model's parameters: every ColanetConfig field, with its default and help, then ``passes``.
_FIELDS = dataclasses.fields(ColanetConfig)
_HINTS = typing.get_type_hints(ColanetConfig, include_extras=True)
_PASSES_HELP = ("online passes over the training data in fit (later ones in a seeded order "
                "within stretches, with new noise); partial_fit presents each batch once")


def content_ids(x: np.ndarray) -> np.ndarray:
    """The default sample ids of prediction: a 63-bit hash (BLAKE2b) of each row's float32
    values, so a row's answer depends on the row alone (not on its batch or position)."""
    x = np.ascontiguousarray(x, dtype=np.float32) + np.float32(0)  # -0.0 and 0.0 alike
    return np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(),
                                    "little") >> 1 for row in x], dtype=np.int64).reshape(len(x))


class ColanetClassifier(ClassifierMixin, BaseEstimator):
    """A CoLaNET spiking classifier, trained online with local plasticity, as a scikit-learn
    estimator: ``fit``, ``partial_fit``, ``predict``, ``predict_proba``, ``score``, ``save`` and
    ``load`` (the ``annsnn export`` model file), picklable, usable in a ``Pipeline``.

    The parameters are :class:`pipeline.colanet.ColanetConfig`'s fields (same names, defaults and
    meaning; listed below), plus ``passes``. They are checked when fitting (a value the
    configuration refuses raises ValueError).

    Training, as ``annsnn train-snn`` does it:

    * ``fit(X, y)`` measures the input coding on ``X`` (the saturation levels of
      ``sat_percentile`` and ``sat_scope``; with ``coding="centred"`` or ``"on_off"`` the mean
      that is subtracted first; with the default ``"whitened"`` the mean and covariance of the
      signed square roots and their whitening map), then learns the rows online in the given
      order, ``passes`` times.
      Row ``i`` of ``X`` has sample id ``i`` (the id that keys the simulator's noise), as row
      ``i`` of a store's train split has; later passes and ``order="balanced"`` present each
      stretch of 256 rows (a store's default chunk) in a seeded order with new ids, with the
      stride ``len(X)``. On the same rows in the same order, ``fit`` learns bit for bit the
      network ``annsnn train-snn`` learns on a store: one pass in store order on any store
      (with ``coding="centred"``, ``"on_off"`` or ``"whitened"``, one written in the default
      chunks of 256 rows: the moments are summed a stretch at a time); more passes or
      ``order="balanced"`` on a store of the train split alone (the id stride is the store's
      rows) in chunks of 256 rows.
    * ``partial_fit(X, y, classes)`` learns online, natively: the first call needs ``classes``
      (one column of neurons each), measures the coding on its batch (as training measures it
      on the train split: give a first batch that represents the data) and learns it; later
      calls keep the model's configuration and coding and learn each batch once in order, with
      the ids continuing. One ``partial_fit`` on ``X`` is ``fit(X, y)`` with ``passes=1``.
      ``order`` applies to ``fit`` only (balancing needs the whole training data's class
      counts): ``partial_fit`` presents each row once, in the order given.
      A model loaded from a file continues exactly where it was saved.

    Labels: any labels scikit-learn accepts (text, integers); ``classes_`` holds them sorted
    (:meth:`load` keeps the file's order: a store's class order) and column ``c`` of the network
    is class ``classes_[c]``.

    Answers (plasticity frozen): each copy's L neurons vote for their class; ``predict_proba``
    gives each class's share of a sample's votes summed over the copies, and ``predict`` the
    class with the most votes (ties: the first of ``classes_``, the readout's rule). A sample
    that got **no vote at all** (the engine's "no answer", counted as an error in
    ``metrics.json``) gets the uniform distribution ``1 / n_classes`` from ``predict_proba`` and
    ``classes_[0]`` from ``predict``. Noise at inference is keyed by each sample's id: by default
    a hash of the row's values (:func:`content_ids`), so a row's answer does not depend on its
    batch, its position or the other rows. ``predict(X, sample_id=ids)`` and
    ``predict_proba(X, sample_id=ids)`` take the engine's ids instead, to reproduce its answers
    exactly: a store's row ``i`` of split ``s`` has id ``split_offset(store, s) + i``
    (:func:`pipeline.streaming.split_offset`: the rows of the splits before it, in train, val,
    test order; the test rows of a store with 1347 train rows start at 1347).

    Inputs are coded as rates of their positive part: the default ``coding="whitened"`` codes
    the positive side of the features' decorrelated signed square roots (chosen on CNN
    embeddings, docs/accuracy.md); ``"centred"`` codes values above each feature's mean, and
    ``"on_off"`` both signs of the centred features, two inputs each: for data whose negative
    side carries the class, like 2-D blobs, where the other codings see half of it.

    Fitted attributes: ``classes_``, ``n_features_in_`` (``feature_names_in_`` for a
    DataFrame), ``config_`` (the resolved ColanetConfig), ``coding_`` (the measured
    :class:`pipeline.training.Coding`), ``state_`` (the network's
    :class:`pipeline.colanet.ColanetState`), ``next_sample_id_`` (the id the next
    ``partial_fit`` row gets), ``passes_`` (the passes ``fit`` made; what :meth:`save` records,
    whatever ``set_params`` changed since). Pickling keeps them all (plain arrays and frozen
    dataclasses); :meth:`save` writes the same self-contained ``.npz`` as ``annsnn export`` (no pickle).

    scikit-learn's estimator checks (``tests/test_estimator.py``, ``m=2, e=1``): every check
    passes with ``coding="on_off"``; with ``"saturation"`` and the default ``"whitened"`` every
    check but ``check_classifiers_train``, whose 2-D blobs carry their class on both sides of
    each feature (these codings leave the negative side silent: training accuracy under the 0.83
    it asks). ``check_array_api_input``, which scikit-learn skips unless ``SCIPY_ARRAY_API=1`` is
    set before SciPy is imported, passes when it is set.
    """

    def __init__(self, **params):
        # The signature (below) is generated from ColanetConfig: binding refuses unknown names.
        bound = inspect.signature(type(self).__init__).bind(self, **params)
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    # --- training -----------------------------------------------------------------------------

    def fit(self, X, y):
        """Measure the coding on ``X``, then learn its rows online, ``passes`` times."""
        config, passes = self._resolved()
        X, y = validate_data(self, X, y, dtype=np.float32, reset=True)
        check_classification_targets(y)
        classes, labels = np.unique(y, return_inverse=True)
        repeats = presentations(config, np.bincount(labels, minlength=len(classes)))
        self._start(config, classes, X, labels)
        self._learn(X, labels, repeats=repeats, passes=passes)
        self.next_sample_id_, self.passes_ = ids_used(len(X), passes, repeats), passes
        return self

    def partial_fit(self, X, y, classes=None):
        """Learn one batch online (each row once, in order); the first call needs ``classes`` and
        measures the coding on its batch (see the class docstring)."""
        first = not hasattr(self, "state_")
        if first:
            config, _ = self._resolved()
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit (the "
                                 "network has one column of neurons per class)")
        X, y = validate_data(self, X, y, dtype=np.float32, reset=first)
        check_classification_targets(y)
        if first:
            classes = _class_list(classes)
            columns = _columns(classes, y)
            self._start(config, classes, X, columns)
            self.next_sample_id_, self.passes_ = 0, 1
        else:
            if classes is not None and not np.array_equal(_class_list(classes),
                                                          np.unique(self.classes_)):
                raise ValueError(f"classes={_class_list(classes)!r} is not the classes_ "
                                 f"{self.classes_!r} of the first call to partial_fit")
            columns = _columns(self.classes_, y)
        self._learn(X, columns, repeats=np.ones(len(self.classes_)), passes=1,
                    first_id=self.next_sample_id_, in_order=True)
        self.next_sample_id_ += len(X)
        return self

    def _resolved(self) -> tuple[ColanetConfig, int]:
        """The parameters as the model's configuration (ValueError for a refused value)."""
        config = ColanetConfig(**{f.name: getattr(self, f.name) for f in _FIELDS})
        passes = self.passes
        if isinstance(passes, bool) or not isinstance(passes, (int, np.integer)) or passes < 1:
            raise ValueError(f"passes={passes!r}: must be an integer >= 1")
        return config, int(passes)

    def _start(self, config: ColanetConfig, classes: np.ndarray, X: np.ndarray,
               labels: np.ndarray) -> None:
        """A fresh network for ``classes``, its coding measured on ``X`` (columns ``labels``)."""
        try:
            coding = Coding.measured(config, lambda: array_batches(X, labels), X,
                                     "the training data")
        except UserError as e:  # e.g. sat_scope="global" on data with no positive value
            raise ValueError(str(e)) from None
        self.config_, self.coding_, self.classes_ = config, coding, classes
        self.state_ = init_state(config, config.n_inputs(X.shape[1]), len(classes))

    def _learn(self, X: np.ndarray, labels: np.ndarray, *, repeats: np.ndarray, passes: int,
               first_id: int = 0, in_order: bool = False) -> None:
        """The engine's online loop over the rows of ``X``, ids from ``first_id`` (``in_order``:
        each row once, in the order given, whatever ``order`` says)."""
        progress = Progress.fresh(self.coding_)
        config = dataclasses.replace(self.config_, order="store") if in_order else self.config_
        for _ in fit_stretches(config, self.state_, progress,
                               lambda cursor: array_batches(X, labels, cursor, first_id=first_id),
                               total_rows=len(X), repeats=repeats, passes=passes):
            pass

    # --- answers --------------------------------------------------------------------------------

    def votes(self, X, sample_id=None) -> np.ndarray:
        """The network's votes, (n_samples, copies ``e``, classes) int32, plasticity frozen; each
        row's noise keyed by ``sample_id`` (default: :func:`content_ids`)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        if sample_id is None:
            ids = content_ids(X)
        else:
            ids = np.asarray(sample_id)
            if ids.shape != (len(X),) or (len(X) and ids.dtype.kind not in "iu"):
                raise ValueError(f"sample_id must be {len(X)} integers (one per row), got "
                                 f"{ids.dtype} {ids.shape}")
            if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= 2**63):
                raise ValueError(f"sample_id must lie in 0 .. 2^63 - 1 (the engine's ids), got "
                                 f"{int(ids.min())} .. {int(ids.max())}")
            ids = ids.astype(np.int64)
        out = np.zeros((len(X), self.config_.e, len(self.classes_)), np.int32)
        for pos, stop in stretches(0, len(X), ARRAY_CHUNK_ROWS):
            out[pos:stop] = vote(self.config_, self.state_, self.coding_, X[pos:stop],
                                 ids[pos:stop])
        return out

    def predict_proba(self, X, sample_id=None) -> np.ndarray:
        """Each class's share of the votes (columns in ``classes_`` order); uniform for a row
        with no vote."""
        total = self.votes(X, sample_id).sum(axis=1).astype(np.float64)
        n = total.sum(axis=1, keepdims=True)
        return np.where(n > 0, total / np.maximum(n, 1), 1.0 / len(self.classes_))

    def predict(self, X, sample_id=None) -> np.ndarray:
        """The class with the most votes (ties, and no vote at all: the first of ``classes_``)."""
        pred, _ = readout(self.votes(X, sample_id))
        return self.classes_[np.maximum(pred, 0)]

    # --- model files ----------------------------------------------------------------------------

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the fitted model to one ``.npz`` (the ``annsnn export`` format, no pickle). An
        existing file is refused unless ``overwrite`` (and then only a model file annsnn wrote)."""
        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", None)
        return write_model(path, Model(
            config=self.config_, state=self.state_, coding=self.coding_, classes=self.classes_,
            n_features=self.n_features_in_, passes=getattr(self, "passes_", self.passes),
            next_sample_id=self.next_sample_id_,
            feature_names=None if names is None else [str(n) for n in names]),
            overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> "ColanetClassifier":
        """The fitted classifier in a model file (written by :meth:`save` or ``annsnn export``);
        its parameters are the file's configuration. A damaged file is refused naming it
        (:class:`pipeline.errors.UserError`)."""
        return cls.from_model(read_model(path))

    @classmethod
    def from_model(cls, model: Model) -> "ColanetClassifier":
        """The fitted classifier holding ``model`` (what a model file holds:
        :func:`pipeline.model_file.read_model`, :func:`pipeline.model_file.run_model`)."""
        clf = cls(**model.config.to_dict(), passes=model.passes)
        clf.config_, clf.coding_, clf.state_ = model.config, model.coding, model.state
        clf.classes_, clf.n_features_in_ = model.classes, model.n_features
        clf.next_sample_id_, clf.passes_ = model.next_sample_id, model.passes
        if model.feature_names is not None:
            clf.feature_names_in_ = np.asarray(model.feature_names, dtype=object)
        return clf


def _class_list(classes) -> np.ndarray:
    """``partial_fit``'s ``classes``, sorted and each once: a ValueError names what is not a
    list of labels (empty, not 1-D, None or NaN among them, kinds that do not sort together)."""
    given = np.asarray(classes)
    if given.ndim != 1 or given.size == 0:
        raise ValueError(f"classes={classes!r}: give a 1-D list of the labels, one per class "
                         f"(shape {given.shape})")
    if any(c is None or (isinstance(c, float) and np.isnan(c)) for c in given.tolist()):
        raise ValueError(f"classes={classes!r}: holds None or NaN, which is no label")
    try:
        return np.unique(given)
    except TypeError:
        raise ValueError(f"classes={classes!r}: labels of one kind that sort together (text or "
                         f"numbers), not a mix") from None


def _columns(classes: np.ndarray, y) -> np.ndarray:
    """Each label's column: its index in ``classes`` (in any order); ValueError for a label that
    is not one of them."""
    y = np.asarray(y)
    order = np.argsort(classes, kind="stable")
    try:
        where = np.searchsorted(classes, y, sorter=order)
        columns = order[np.minimum(where, len(order) - 1)]
        unknown = np.asarray(classes[columns] != y)
    except TypeError:  # labels that do not compare with the classes (text against numbers)
        columns, unknown = None, np.ones(len(y), bool)
    if unknown.any():
        raise ValueError(f"y holds labels that are not in classes_ {classes!r}: "
                         f"{np.unique(y[unknown])[:5]!r}")
    return columns.astype(np.int64)


def _signature() -> inspect.Signature:
    """``__init__(self, *, <every ColanetConfig field>=<its default>, passes=1)``."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    return inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(f.name, keyword, default=f.default,
                             annotation=_HINTS[f.name].__origin__) for f in _FIELDS]
        + [inspect.Parameter("passes", keyword, default=1, annotation=int)])


def _parameters_doc() -> str:
    """The Parameters section, from ColanetConfig's field help (numpydoc style)."""
    lines = ["", "    Parameters", "    ----------"]
    for f in _FIELDS:
        hint = _HINTS[f.name]
        kind = getattr(hint.__origin__, "__name__", str(hint.__origin__))
        lines += [f"    {f.name} : {kind}, default={f.default!r}", f"        {hint.__metadata__[0]}"]
    lines += ["    passes : int, default=1", f"        {_PASSES_HELP}", ""]
    return "\n".join(lines)


ColanetClassifier.__init__.__signature__ = _signature()
ColanetClassifier.__doc__ += _parameters_doc()
