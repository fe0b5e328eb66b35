"""RobustNetRegressor: bad input is refused before training, with a message naming it.

The regression rows of ``docs/bad_input_table.rst``. Every case checks the
exception, its message, that the caller's arrays come back unmodified and that
no epoch began. Degenerate but valid targets (constant, a single distinct
outlier, integers) train without NaN.
"""

import copy
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Callback

from skrobust import RobustNetRegressor

INF, NAN = float("inf"), float("nan")


class EpochSpy(Callback):
    def __init__(self):
        self.events = []

    def on_epoch_begin(self, net, **kwargs):
        self.events.append("epoch")


def _data(n=12, d=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)), rng.normal(size=n) * 100.0


def _net(spy=None, **params):
    settings = dict(max_epochs=1, batch_size=8, warmup_epochs=0, verbose=0, random_state=0,
                    module__hidden_layer_sizes=(8,))
    if spy is not None:
        settings["callbacks"] = [("spy", spy)]
    settings.update(params)
    return RobustNetRegressor(**settings)


def _with(values, at=4):
    def transform(y):
        y = np.array(y, dtype=np.float64)
        y[at] = values
        return y
    return transform


# id, exception, message, y transform (or None), X transform (or None), fit kwargs
CASES = [
    ("y-nan", ValueError, "y contains NaN or infinity", _with(NAN), None, {}),
    ("y-inf", ValueError, "y contains NaN or infinity", _with(INF), None, {}),
    ("y-neginf", ValueError, "y contains NaN or infinity", _with(-INF), None, {}),
    ("y-none", ValueError, "RobustNetRegressor requires y to be passed", lambda y: None,
     None, {}),
    ("y-strings", ValueError, "y must hold numbers", lambda y: np.array(["a"] * 12), None, {}),
    ("y-complex", ValueError, "Complex data not supported", lambda y: y + 1j, None, {}),
    ("y-3d", ValueError, r"y should be a 1-D array of targets, or 2-D .*\(12, 2, 2\)",
     lambda y: np.zeros((12, 2, 2)), None, {}),
    ("y-no-columns", ValueError, r"got shape \(12, 0\)", lambda y: np.zeros((12, 0)),
     None, {}),
    ("y-shorter-than-X", ValueError, "X has 12 rows but y has 11 targets",
     lambda y: y[:-1], None, {}),
    ("X-single-row", ValueError, r"n_samples=1; training needs at least 2 samples",
     lambda y: y[:1], lambda X: X[:1], {}),
    ("X-nan", ValueError, "Input X contains NaN", None, lambda X: np.where(X > 1, NAN, X), {}),
    ("X-1d", ValueError, "Expected 2D array, got 1D array", None, lambda X: X[:, 0], {}),
    ("sample_weight-negative", ValueError, "sample_weight must be finite and non-negative",
     None, None, {"sample_weight": np.r_[np.ones(11), -1.0]}),
    ("weighting-unknown", ValueError, "weighting must be one of", None, None,
     {"params": {"weighting": "robust"}}),
    ("loss-correction-on-the-regressor", ValueError,
     "loss_correction='forward' corrects the cross entropy", None, None,
     {"params": {"loss_correction": "forward"}}),
]


def _call(case, spy):
    _, _, _, ty, tx, kwargs = case
    X, y = _data()
    X = tx(X) if tx else X
    y = ty(y) if ty else y
    kwargs = dict(kwargs)
    params = kwargs.pop("params", {})

    def run():
        return _net(spy, **params).fit(X, y, **kwargs)

    return run, (X, y, kwargs)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_before_training(case):
    spy = EpochSpy()
    run, inputs = _call(case, spy)
    before = copy.deepcopy(inputs)
    with pytest.raises(case[1], match=case[2]):
        run()
    assert spy.events == []
    for b, a in zip(before[:2], inputs[:2]):
        if isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b)


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        _net().predict(_data()[0])


def test_predict_with_other_features():
    X, y = _data()
    net = _net().fit(X, y)
    with pytest.raises(ValueError, match="X has 2 features, but RobustNetRegressor"):
        net.predict(X[:, :2])


def test_module_with_wrong_output_width():
    X, y = _data()
    net = _net(module__hidden_layer_sizes=(8,), module__n_classes=3)
    with pytest.raises(ValueError, match=r"must return \(batch_size, n_targets\) = \(\*, 1\)"):
        net.fit(X, y)


def test_no_predict_proba():
    X, y = _data()
    net = _net().fit(X, y)
    assert not hasattr(net, "predict_proba")


@pytest.mark.parametrize("y", [
    np.full(12, 3.0),                     # constant
    np.r_[np.zeros(11), 1e9],             # one distinct, huge value: spread falls back
    np.arange(12),                        # integers
    np.c_[np.arange(12.0), np.full(12, -5.0)],  # a constant second target
], ids=["constant", "single-outlier", "integers", "constant-column"])
def test_degenerate_targets_train_without_nan(y):
    X, _ = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        net = _net(max_epochs=3).fit(X, y)
        pred = net.predict(X)
    assert pred.shape == np.shape(y) and np.isfinite(pred).all()
    assert (net.target_scale_ > 0).all()
    assert np.isfinite(net.noise_scores_).all()
