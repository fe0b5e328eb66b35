"""Bad input is refused before training, with a message that names the problem;
degenerate but valid input trains without NaN.

Every bad-input case is run twice: ``test_bad_input_raises`` checks the exception
type, its message and that the caller's arrays come back unmodified;
``test_bad_input_refused_before_training`` checks that no epoch (and no batch)
began before the error. The table in ``docs/bad_input_table.rst`` lists the same
cases.
"""

import copy
import math
import re
import warnings
from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit

INF = float("inf")
NAN = float("nan")


# ------------------------------------------------------------------ helpers
class EpochSpy(Callback):
    """Records every epoch and batch that begins."""

    def __init__(self):
        self.events = []

    def on_epoch_begin(self, net, **kwargs):
        self.events.append("epoch")

    def on_batch_begin(self, net, **kwargs):
        self.events.append("batch")


class Call(NamedTuple):
    """A call that must fail: ``func(*args, **kwargs)``; ``net`` is checked afterwards."""

    net: Any
    func: Callable
    args: tuple
    kwargs: dict


class BadCase(NamedTuple):
    id: str
    exc: type
    match: str
    build: Callable  # (make_net, spy) -> Call


def _data(n=12, d=3, seed=0):
    """Fresh float64 X of shape (n, d) and int y alternating 0, 1."""
    X = np.random.default_rng(seed).normal(size=(n, d))
    y = np.arange(n) % 2
    return X, y


def _net(make_net, spy=None, **params):
    base = dict(max_epochs=1, batch_size=8, warmup_epochs=0)
    if spy is not None:
        base["callbacks"] = [("spy", spy)]
    if "module" not in params:
        base["module__hidden_layer_sizes"] = (8,)
    base.update(params)
    return make_net(**base)


def _history_len(net):
    return 0 if net is None or net.history_ is None else len(net.history)


def _assert_unmodified(before, after):
    """``after`` (the caller's objects after the call) equals ``before`` (a deep copy)."""
    assert type(after) is type(before)
    if isinstance(before, np.ndarray):
        assert after.dtype == before.dtype and after.shape == before.shape
        if before.dtype == object:  # deepcopy makes new NaN objects: compare by value
            for b, a in zip(before.ravel(), after.ravel()):
                assert a == b or (a != a and b != b), (a, b)
        else:
            np.testing.assert_array_equal(after, before)  # NaN == NaN here
    elif isinstance(before, pd.DataFrame):
        pd.testing.assert_frame_equal(after, before)
    elif isinstance(before, (list, tuple)):
        assert len(after) == len(before)
        for b, a in zip(before, after):
            _assert_unmodified(b, a)
    elif isinstance(before, dict):
        assert after.keys() == before.keys()
        for key in before:
            _assert_unmodified(before[key], after[key])


class _Linear(torch.nn.Module):
    """A linear model with a chosen number of outputs, optionally after BatchNorm1d."""

    def __init__(self, n_in=3, n_out=2, batchnorm=False):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(n_in) if batchnorm else torch.nn.Identity()
        self.linear = torch.nn.Linear(n_in, n_out)

    def forward(self, X):
        return self.linear(self.norm(X))


# -------------------------------------------------------- case builders
def _fit_with(transform_X=None, transform_y=None, n=12, d=3, **fit_kwargs):
    """A failing ``fit`` on the standard data, transformed."""

    def build(make_net, spy):
        X, y = _data(n, d)
        X = transform_X(X) if transform_X else X
        y = transform_y(y) if transform_y else y
        net = _net(make_net, spy)
        return Call(net, net.fit, (X, y), dict(fit_kwargs))

    return build


def _fit_hyper(method="fit", **params):
    """A failing ``fit`` / ``partial_fit`` on valid data with invalid hyperparameters."""

    def build(make_net, spy):
        X, y = _data()
        net = _net(make_net, spy, **params)
        return Call(net, getattr(net, method), (X, y), {})

    return build


def _after_fit(method, transform_X, fit_frame=False):
    """A failing ``predict``/``predict_proba`` on a net fitted to the standard data."""

    def build(make_net, spy):
        X, y = _data()
        if fit_frame:
            X = pd.DataFrame(X, columns=["a", "b", "c"])
        net = _net(make_net, spy).fit(X, y)
        return Call(net, getattr(net, method), (transform_X(X),), {})

    return build


def _before_fit(method):
    def build(make_net, spy):
        X, _ = _data()
        net = _net(make_net, spy)
        return Call(net, getattr(net, method), (X,), {})

    return build


def _with_nonfinite(value):
    def transform(X):
        X = X.copy()
        X[3, 1] = value
        return X

    return transform


def _module_output_mismatch(make_net, spy):
    X, y = _data()
    net = _net(make_net, spy, module=_Linear, module__n_out=3)  # 3 logits, 2 classes
    return Call(net, net.fit, (X, y), {})


def _module_batchnorm(make_net, spy):
    X, y = _data()
    net = _net(make_net, spy, module=_Linear, module__batchnorm=True)
    return Call(net, net.fit, (X, y), {})


def _criterion_instance_mean(make_net, spy):
    X, y = _data()

    def construct_and_fit(X, y):
        # Constructing is part of the call: the bug fires in __init__.
        criterion = torch.nn.CrossEntropyLoss(reduction="mean")
        return _net(make_net, spy, criterion=criterion).fit(X, y)

    return Call(None, construct_and_fit, (X, y), {})


def _criterion_class_mean(make_net, spy):
    X, y = _data()
    net = _net(make_net, spy, criterion=torch.nn.CrossEntropyLoss,
               criterion__reduction="mean")
    return Call(net, net.fit, (X, y), {})


def _partial_fit_unseen_labels(make_net, spy):
    X, y = _data()
    net = _net(make_net, spy)
    net.partial_fit(X, y)
    return Call(net, net.partial_fit, (X, y + 5), {})


def _partial_fit_label_outside_classes(make_net, spy):
    X, _ = _data()
    y = np.arange(12) % 3
    net = _net(make_net, spy)
    return Call(net, net.partial_fit, (X, y), {"classes": [0, 1]})


def _partial_fit_single_class(make_net, spy):
    X, _ = _data()
    net = _net(make_net, spy)
    return Call(net, net.partial_fit, (X, np.zeros(12, dtype=int)), {"classes": [0]})


def _partial_fit_then_bad_hyperparameter(make_net, spy):
    X, y = _data()
    net = _net(make_net, spy)
    net.partial_fit(X, y)
    net.set_params(alpha=-1.0)
    return Call(net, net.partial_fit, (X, y), {})


def _hyper_match(name, value):
    return rf"{name} must be .*; got {re.escape(repr(value))}\."


_HYPERPARAMETER_CASES = [
    ("weighting", "robust"),
    ("weighting", None),
    ("stats", "mean"),
    ("alpha", -1.0),
    ("alpha", NAN),
    ("alpha", "1"),
    ("beta", -0.5),
    ("warmup_epochs", -1),
    ("warmup_epochs", 1.5),
    ("normalize_weights", 1),
    ("normalize_weights", "yes"),
    ("grad_engine", "fast"),
    ("random_state", "0"),
    ("random_state", 1.5),
    ("batch_size", 0),
    ("batch_size", -2),
    ("batch_size", 1.5),
    ("max_epochs", -1),
    ("max_epochs", 2.0),
    ("lr", 0),
    ("lr", -0.1),
    ("lr", INF),
    ("lr", NAN),
]

BAD_CASES = [
    # ---------------------------------------------------------- X at fit
    BadCase("X-nan", ValueError, "Input X contains NaN",
            _fit_with(_with_nonfinite(NAN))),
    BadCase("X-posinf", ValueError, "Input X contains infinity",
            _fit_with(_with_nonfinite(INF))),
    BadCase("X-neginf", ValueError, "Input X contains infinity",
            _fit_with(_with_nonfinite(-INF))),
    BadCase("X-empty", ValueError, r"Found array with 0 sample\(s\)",
            _fit_with(lambda X: X[:0], lambda y: y[:0])),
    BadCase("X-1d", ValueError, "Expected 2D array, got 1D array",
            _fit_with(lambda X: X[:, 0])),
    BadCase("X-3d", ValueError, "Found array with dim 3",
            _fit_with(lambda X: X[:, :, None])),
    BadCase("X-none", ValueError, "Expected 2D array, got scalar array",
            _fit_with(lambda X: None)),
    BadCase("X-object-strings", ValueError, "could not convert string to float",
            _fit_with(lambda X: np.where(X > 0, "pos", "neg").astype(object))),
    BadCase("X-complex", ValueError, "Complex data not supported",
            _fit_with(lambda X: X + 1j)),
    BadCase("X-single-sample", ValueError, r"n_samples=1; training needs at least 2",
            _fit_with(lambda X: X[:1], lambda y: y[:1])),
    # ---------------------------------------------------------- y at fit
    BadCase("y-none", ValueError, "requires y to be passed",
            _fit_with(transform_y=lambda y: None)),
    BadCase("y-nan-float", ValueError, "y contains NaN or infinity",
            _fit_with(transform_y=lambda y: np.where(np.arange(12) == 4, NAN, y * 1.0))),
    BadCase("y-inf-float", ValueError, "y contains NaN or infinity",
            _fit_with(transform_y=lambda y: np.where(np.arange(12) == 4, INF, y * 1.0))),
    BadCase("y-none-in-object", ValueError, r"y contains missing labels \(None or NaN\)",
            _fit_with(transform_y=lambda y: np.array(
                ["a", "b"] * 5 + [None, "a"], dtype=object))),
    BadCase("y-nan-in-object", ValueError, r"y contains missing labels \(None or NaN\)",
            _fit_with(transform_y=lambda y: np.array([NAN, "a"] * 6, dtype=object))),
    BadCase("y-shorter-than-X", ValueError, "X has 12 rows but y has 11 labels",
            _fit_with(transform_y=lambda y: y[:-1])),
    BadCase("y-longer-than-X", ValueError, "X has 11 rows but y has 12 labels",
            _fit_with(transform_X=lambda X: X[:-1])),
    BadCase("y-one-class", ValueError, r"y has a single class .*at least 2 classes",
            _fit_with(transform_y=lambda y: np.full(12, 7))),
    BadCase("y-continuous", ValueError, "Unknown label type: continuous",
            _fit_with(transform_y=lambda y: np.linspace(0.0, 1.0, 12))),
    BadCase("y-mixed-types", ValueError, "Unknown label type: unknown",
            _fit_with(transform_y=lambda y: np.array([1, "a"] * 6, dtype=object))),
    BadCase("y-multilabel-2d", ValueError,
            r"y should be a 1d array of labels; got shape \(12, 3\)",
            _fit_with(transform_y=lambda y: np.random.default_rng(1).integers(0, 2, (12, 3)))),
    BadCase("y-complex", ValueError, "Complex data not supported: y has a complex dtype",
            _fit_with(transform_y=lambda y: y + 1j)),
    # --------------------------------------------------------- sample_weight
    BadCase("sample_weight-wrong-length", ValueError,
            r"sample_weight must be a 1-D array .*\(12\); got shape \(11,\)",
            _fit_with(sample_weight=np.ones(11))),
    BadCase("sample_weight-2d", ValueError,
            r"sample_weight must be a 1-D array .*; got shape \(12, 1\)",
            _fit_with(sample_weight=np.ones((12, 1)))),
    BadCase("sample_weight-negative", ValueError,
            "sample_weight must be finite and non-negative",
            _fit_with(sample_weight=np.r_[np.ones(11), -1.0])),
    BadCase("sample_weight-nan", ValueError, "sample_weight must be finite and non-negative",
            _fit_with(sample_weight=np.r_[np.ones(11), NAN])),
    BadCase("sample_weight-inf", ValueError, "sample_weight must be finite and non-negative",
            _fit_with(sample_weight=np.r_[np.ones(11), INF])),
    BadCase("sample_weight-all-zero", ValueError, "sample_weight is zero for every row",
            _fit_with(sample_weight=np.zeros(12))),
    BadCase("sample_weight-strings", ValueError, "sample_weight must be numeric",
            _fit_with(sample_weight=np.array(["1"] * 12))),
    # ---------------------------------------------------------- predict
    BadCase("predict-before-fit", NotFittedError, "is not fitted yet",
            _before_fit("predict")),
    BadCase("predict_proba-before-fit", NotFittedError, "is not fitted yet",
            _before_fit("predict_proba")),
    BadCase("predict-fewer-features", ValueError,
            "X has 2 features, but RobustNetClassifier is expecting 3 features",
            _after_fit("predict", lambda X: X[:, :2])),
    BadCase("predict_proba-more-features", ValueError,
            "X has 4 features, but RobustNetClassifier is expecting 3 features",
            _after_fit("predict_proba", lambda X: np.c_[X, X[:, :1]])),
    BadCase("predict-dataframe-renamed-column", ValueError,
            "feature names should match those that were passed during fit",
            _after_fit("predict", lambda df: df.rename(columns={"c": "d"}), fit_frame=True)),
    BadCase("predict_proba-dataframe-reordered", ValueError,
            "Feature names must be in the same order as they were in fit",
            _after_fit("predict_proba", lambda df: df[["b", "a", "c"]], fit_frame=True)),
    BadCase("predict-nan", ValueError, "Input X contains NaN",
            _after_fit("predict", _with_nonfinite(NAN))),
    BadCase("predict-empty", ValueError, r"Found array with 0 sample\(s\)",
            _after_fit("predict", lambda X: X[:0])),
    # ------------------------------------------------------ hyperparameters
    *[BadCase(f"hyper-{name}={value!r}", ValueError, _hyper_match(name, value),
              _fit_hyper(**{name: value}))
      for name, value in _HYPERPARAMETER_CASES],
    BadCase("hyper-several-listed-at-once", ValueError,
            r"(?s)weighting must be .*lr must be",
            _fit_hyper(weighting="robust", lr=0)),
    BadCase("hyper-partial_fit", ValueError, _hyper_match("alpha", -1),
            _fit_hyper("partial_fit", alpha=-1)),
    BadCase("hyper-set_params-between-partial_fits", ValueError,
            _hyper_match("alpha", -1.0), _partial_fit_then_bad_hyperparameter),
    BadCase("unknown-kwarg-iterator_train_shuffle", ValueError,
            "unexpected argument iterator_train_shuffle, did you mean iterator_train__shuffle",
            _fit_hyper(iterator_train_shuffle=True)),
    # --------------------------------------------------- module / criterion
    BadCase("module-output-size-mismatch", ValueError,
            r"module returned shape \(2, 3\); it must return .*\(\*, 2\) logits",
            _module_output_mismatch),
    BadCase("module-batchnorm1d", ValueError, r"BatchNorm layer \(norm: BatchNorm1d\)",
            _module_batchnorm),
    BadCase("criterion-instance-reduction-mean", ValueError, "reduction='mean'",
            _criterion_instance_mean),
    BadCase("criterion-class-reduction-mean", ValueError,
            "must return one loss per sample, but it has reduction='mean'",
            _criterion_class_mean),
    # -------------------------------------------------------- partial_fit
    BadCase("partial_fit-unseen-labels-second-call", ValueError,
            r"labels not seen in the classes of the first fit: \[5, 6\]",
            _partial_fit_unseen_labels),
    BadCase("partial_fit-label-outside-classes", ValueError,
            r"labels not seen in the classes of the first fit: \[2\]",
            _partial_fit_label_outside_classes),
    BadCase("partial_fit-classes-single-class", ValueError, "y has a single class",
            _partial_fit_single_class),
]

CASES = [pytest.param(case, id=case.id) for case in BAD_CASES]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_raises(case, make_net):
    """The right exception, a message naming the problem, the caller's data untouched."""
    call = case.build(make_net, EpochSpy())
    before = copy.deepcopy((call.args, call.kwargs))
    with pytest.raises(case.exc, match=case.match):
        call.func(*call.args, **call.kwargs)
    _assert_unmodified(before, (call.args, call.kwargs))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_refused_before_training(case, make_net):
    """No epoch and no batch begins before the error; the history does not grow."""
    spy = EpochSpy()
    call = case.build(make_net, spy)
    events, history = list(spy.events), _history_len(call.net)
    with pytest.raises(case.exc):
        call.func(*call.args, **call.kwargs)
    assert spy.events == events, f"training had begun: {spy.events[len(events):]}"
    assert _history_len(call.net) == history


def test_spy_sees_training(make_net):
    """The spy used above does record epochs and batches of a successful fit."""
    spy = EpochSpy()
    X, y = _data()
    _net(make_net, spy).fit(X, y)
    assert spy.events == ["epoch", "batch", "batch"]


def test_bad_case_count():
    assert len(BAD_CASES) >= 30
    assert len({case.id for case in BAD_CASES}) == len(BAD_CASES)


@pytest.mark.parametrize("param", ["criterion", "module"])
def test_documented_instances_are_accepted(param, make_net):
    X, y = _data()
    instance = {"criterion": torch.nn.CrossEntropyLoss(reduction="none"),
                "module": _Linear(3, 2)}[param]
    net = _net(make_net, **{param: instance}).fit(X, y)
    assert np.isfinite(net.predict_proba(X)).all()


# ------------------------------------------------ DataFrame / ndarray mismatch
@pytest.mark.parametrize("fit_frame", [True, False], ids=["fit-frame", "fit-array"])
def test_feature_names_mismatch_warns(fit_frame, make_net):
    """scikit-learn's documented behaviour: names missing on one side only -> UserWarning."""
    X, y = _data()
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    net = _net(make_net).fit(df if fit_frame else X, y)
    message = ("X does not have valid feature names" if fit_frame
               else "X has feature names, but RobustNetClassifier was fitted without")
    with pytest.warns(UserWarning, match=message):
        proba = net.predict_proba(X if fit_frame else df)
    np.testing.assert_array_equal(proba, net.predict_proba(df if fit_frame else X))


# ------------------------------------------------------ degenerate but valid
def _assert_finite_fit(net, X, n_epochs):
    """Trained for n_epochs with finite losses, parameters and probabilities."""
    assert len(net.history) == n_epochs
    losses = np.asarray(net.history[:, "train_loss"], dtype=float)
    assert np.isfinite(losses).all(), losses
    for name, p in net.module_.named_parameters():
        assert torch.isfinite(p).all(), name
    weights = np.asarray(net.history[:, "weight_mean"], dtype=float)
    assert np.isfinite(weights).all() and ((weights >= 0) & (weights <= 1)).all()
    proba = net.predict_proba(X)
    assert proba.shape == (len(X), len(net.classes_))
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    assert np.isin(net.predict(X), net.classes_).all()


def _identical_rows(stats, weighting):
    """Every batch holds identical (x, y) pairs: sigma = 0, so every weight is 1."""

    def case(make_net):
        X, y = np.ones((8, 3)), np.repeat([0, 1], 4)
        net = _net(make_net, max_epochs=2, batch_size=4, iterator_train__shuffle=False,
                   weighting=weighting, stats=stats, alpha=0.0, beta=0.0)
        net.fit(X, y)
        assert net.history[:, "weight_mean"] == [1.0, 1.0]
        return net, X

    return case


def _identical_X_mixed_labels(make_net):
    X, y = np.full((8, 3), 0.5), np.arange(8) % 2
    return _net(make_net, max_epochs=2, weighting="truncate").fit(X, y), X


def _batch_size_one(weighting):
    """A batch of one sample has sigma = 0: its weight is 1, even with alpha = beta = 0."""

    def case(make_net):
        X, y = _data(9)
        net = _net(make_net, max_epochs=2, batch_size=1, weighting=weighting,
                   alpha=0.0, beta=0.0).fit(X, y)
        if weighting in ("truncate", "soft"):
            assert net.history[:, "weight_mean"] == [1.0, 1.0]
        return net, X

    return case


def _last_batch_of_one(make_net):
    X, y = _data(4 * 2 + 1)
    net = _net(make_net, max_epochs=2, batch_size=4, weighting="truncate").fit(X, y)
    assert net.history[-1, "batches", :, "train_batch_size"] == [4, 4, 1]
    return net, X


def _alpha_beta_zero(normalize):
    def case(make_net):
        X, y = _data(17)
        net = _net(make_net, max_epochs=2, batch_size=4, weighting="truncate",
                   alpha=0.0, beta=0.0, normalize_weights=normalize).fit(X, y)
        return net, X

    return case


def _truncation_zeroes_everything(normalize):
    """alpha = beta = 0 and batches of 2 distinct norms: every weight is 0 -> no update."""

    def case(make_net):
        X, y = _data(16)
        params = dict(batch_size=2, weighting="truncate", alpha=0.0, beta=0.0,
                      normalize_weights=normalize, iterator_train__shuffle=False)
        initial = _net(make_net, max_epochs=0, **params).fit(X, y)
        net = _net(make_net, max_epochs=2, **params).fit(X, y)
        assert net.history[:, "weight_mean"] == [0.0, 0.0]
        assert net.history[:, "train_loss"] == [0.0, 0.0]
        for p0, p in zip(initial.module_.parameters(), net.module_.parameters()):
            torch.testing.assert_close(p, p0, rtol=0, atol=0)
        return net, X

    return case


def _alpha_beta_inf(make_net):
    X, y = _data(17)
    net = _net(make_net, max_epochs=2, weighting="truncate", alpha=INF, beta=INF).fit(X, y)
    assert net.history[:, "weight_mean"] == [1.0, 1.0]
    return net, X


def _smaller_than_batch(make_net):
    X, y = _data(5)
    net = _net(make_net, max_epochs=2, batch_size=64, weighting="truncate").fit(X, y)
    assert net.history[-1, "batches", :, "train_batch_size"] == [5]
    return net, X


def _scaled(scale, weighting):
    def case(make_net):
        X, y = _data(16)
        X = X * scale
        return _net(make_net, max_epochs=3, weighting=weighting).fit(X, y), X

    return case


def _class_absent_from_train_split(make_net):
    """Class 2 has one row; ValidSplit puts it in the validation part."""
    X, _ = _data(17)
    y = np.r_[np.arange(16) % 2, 2]
    net = _net(make_net, max_epochs=2, train_split=ValidSplit(0.5, random_state=3)).fit(X, y)
    assert math.isnan(net.noise_scores_[-1])  # the row was held out of training
    np.testing.assert_array_equal(net.classes_, [0, 1, 2])
    assert np.isfinite(net.history[:, "valid_loss"]).all()
    return net, X


def _class_absent_via_classes(make_net):
    X, y = _data()
    net = _net(make_net, max_epochs=2)
    net.partial_fit(X, y, classes=[0, 1, 2])
    np.testing.assert_array_equal(net.classes_, [0, 1, 2])
    return net, X


def _adaptive_two_rows(make_net):
    X, y = _data(2)
    return _net(make_net, max_epochs=3, weighting="adaptive").fit(X, y), X


def _soft_batch_size_one(make_net):
    X, y = _data(6)
    net = _net(make_net, max_epochs=2, batch_size=1, weighting="soft").fit(X, y)
    assert net.history[:, "weight_mean"] == [1.0, 1.0]
    return net, X


def _two_singleton_classes(weighting):
    def case(make_net):
        X = _data(2)[0]
        y = np.array(["cat", "dog"])
        net = _net(make_net, max_epochs=2, weighting=weighting).fit(X, y)
        np.testing.assert_array_equal(net.classes_, ["cat", "dog"])
        return net, X

    return case


DEGENERATE_CASES = {
    "identical-rows-truncate-mean_std": _identical_rows("mean_std", "truncate"),
    "identical-rows-truncate-median_iqr": _identical_rows("median_iqr", "truncate"),
    "identical-rows-soft-mean_std": _identical_rows("mean_std", "soft"),
    "identical-X-mixed-labels": _identical_X_mixed_labels,
    "batch_size-1-truncate": _batch_size_one("truncate"),
    "batch_size-1-adaptive": _batch_size_one("adaptive"),
    "last-batch-of-one-row": _last_batch_of_one,
    "alpha0-beta0-truncate": _alpha_beta_zero(False),
    "alpha0-beta0-truncate-normalized": _alpha_beta_zero(True),
    "truncation-zeroes-everything": _truncation_zeroes_everything(False),
    "truncation-zeroes-everything-normalized": _truncation_zeroes_everything(True),
    "alpha-inf-beta-inf": _alpha_beta_inf,
    "data-smaller-than-batch": _smaller_than_batch,
    "scale-1e6-truncate": _scaled(1e6, "truncate"),
    "scale-1e6-soft": _scaled(1e6, "soft"),
    "scale-1e6-adaptive": _scaled(1e6, "adaptive"),
    "scale-1e-6-truncate": _scaled(1e-6, "truncate"),
    "scale-1e-6-adaptive": _scaled(1e-6, "adaptive"),
    "class-absent-from-train-split": _class_absent_from_train_split,
    "class-absent-via-classes": _class_absent_via_classes,
    "adaptive-two-rows": _adaptive_two_rows,
    "soft-batch_size-1": _soft_batch_size_one,
    "two-classes-one-sample-each-adaptive": _two_singleton_classes("adaptive"),
    "two-classes-one-sample-each-truncate": _two_singleton_classes("truncate"),
}


@pytest.mark.parametrize("case", DEGENERATE_CASES.values(), ids=DEGENERATE_CASES.keys())
def test_degenerate_input_trains_finitely(case, make_net):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no silent NaN arithmetic
        net, X = case(make_net)
    _assert_finite_fit(net, X, n_epochs=net.max_epochs)


# --------------------------------------------------------------------- fuzz
_DTYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64}


@st.composite
def _problems(draw):
    n = draw(st.integers(2, 40))
    d = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from(sorted(_DTYPES)))
    if dtype == "int64":
        elements = st.integers(-100, 100)
    else:
        elements = st.floats(-1e3, 1e3, width=32, allow_subnormal=False)
    X = draw(hnp.arrays(_DTYPES[dtype], (n, d), elements=elements))
    n_classes = draw(st.integers(2, 4))
    if draw(st.booleans()):
        labels = draw(st.lists(st.integers(-50, 50), min_size=n_classes,
                               max_size=n_classes, unique=True))
    else:
        labels = draw(st.permutations(["a", "b", "cat", "dog", "x y", "\u00e9"]))[:n_classes]
    codes = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
    codes[:2] = [0, 1]  # at least two distinct labels
    y = np.asarray(labels)[codes]
    nonneg = st.one_of(st.sampled_from([0.0, 1.0, INF]), st.floats(-0.5, 5.0))
    params = dict(
        weighting=draw(st.sampled_from(["adaptive", "truncate", "soft", "none"])),
        stats=draw(st.sampled_from(["mean_std", "median_iqr"])),
        alpha=draw(nonneg),
        beta=draw(nonneg),
        batch_size=draw(st.integers(1, 16)),
        warmup_epochs=draw(st.integers(0, 2)),
        max_epochs=draw(st.integers(1, 2)),
        normalize_weights=draw(st.booleans()),
    )
    return X, y, params


@settings(max_examples=25, deadline=None)
@given(problem=_problems())
def test_fuzz_fit_predict(problem, make_net):
    X, y, params = problem
    X_before, y_before = X.copy(), y.copy()
    valid = params["alpha"] >= 0 and params["beta"] >= 0
    net = _net(make_net, **params)
    try:
        net.fit(X, y)
    except (ValueError, TypeError) as exc:
        assert str(exc).strip(), "empty error message"
        assert not valid, f"valid input refused: {exc!r}"
        event("refused")
    else:
        assert valid, "invalid hyperparameters accepted"
        event("fitted")
        np.testing.assert_array_equal(net.classes_, np.unique(y))
        proba = net.predict_proba(X)
        assert proba.shape == (len(X), len(net.classes_))
        assert np.isfinite(proba).all()
        np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
        assert np.isin(net.predict(X), net.classes_).all()
        assert np.isfinite(np.asarray(net.history[:, "train_loss"], dtype=float)).all()
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)
