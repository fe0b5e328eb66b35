"""Checks at the public boundary: hyperparameters and user data."""

import math
import numbers

import numpy as np
import torch
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import column_or_1d

from .engines import ENGINES
from .rules import RULES
from .weighting import STATS


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_nonnegative(value):
    return _is_real(value) and not math.isnan(value) and value >= 0


# name -> (predicate, description of the allowed values)
_HYPERPARAMETERS = {
    # The registered rules (skrobust.rules.RULES), read when checked.
    "weighting": (lambda v: isinstance(v, str) and v in RULES, lambda: f"one of {tuple(RULES)}"),
    "stats": (lambda v: v in STATS, f"one of {STATS}"),
    "alpha": (_check_nonnegative, "a number >= 0 (float('inf') disables the upper cut)"),
    "beta": (_check_nonnegative, "a number >= 0 (float('inf') disables the lower cut)"),
    "warmup_epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "normalize_weights": (lambda v: isinstance(v, (bool, np.bool_)), "True or False"),
    "grad_engine": (lambda v: v in ENGINES, f"one of {ENGINES}"),
    "forget_rate": (lambda v: v == "auto" or (_is_real(v) and 0 <= v < 1),
                    "'auto' or a number in [0, 1)"),
    "loss_correction": (lambda v: v in (None, "forward"), "None or 'forward'"),
    "random_state": (
        lambda v: v is None or _is_int(v) or isinstance(v, np.random.RandomState),
        "None, an integer or a numpy.random.RandomState",
    ),
    "max_epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "batch_size": (lambda v: _is_int(v) and (v >= 1 or v == -1),
                   "a positive integer (or -1 for the whole data set)"),
    "lr": (lambda v: _is_real(v) and math.isfinite(v) and v > 0, "a finite number > 0"),
}


def check_hyperparameters(estimator):
    """Raise one ValueError listing every invalid hyperparameter of ``estimator``.

    Hyperparameters that the estimator does not have (e.g. the regressor's
    ``loss_correction``) are skipped.
    """
    problems = []
    for name, (is_valid, allowed) in _HYPERPARAMETERS.items():
        if not hasattr(estimator, name):
            continue
        value = getattr(estimator, name)
        try:
            ok = bool(is_valid(value))
        except TypeError:
            ok = False
        if not ok:
            allowed = allowed() if callable(allowed) else allowed
            problems.append(f"{name} must be {allowed}; got {value!r}.")
    if getattr(estimator, "loss_correction", None) == "forward":
        if estimator.criterion is not torch.nn.CrossEntropyLoss:
            problems.append("loss_correction='forward' corrects the cross entropy: keep "
                            "the default criterion=torch.nn.CrossEntropyLoss.")
        if _is_int(estimator.warmup_epochs) and estimator.warmup_epochs < 1:
            problems.append("loss_correction='forward' estimates the noise from the "
                            "first warmup_epochs epochs: set warmup_epochs >= 1.")
    if problems:
        raise ValueError(
            f"Invalid hyperparameters for {type(estimator).__name__}:\n  "
            + "\n  ".join(problems)
        )


def check_targets(y):
    """Classification targets as a 1-D numpy array, or a clear error."""
    y = np.asarray(y)
    if y.dtype.kind == "c":
        raise ValueError("Complex data not supported: y has a complex dtype.")
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)
    if y.ndim != 1:
        raise ValueError(f"y should be a 1d array of labels; got shape {y.shape}.")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinity; every row needs a label.")
    if y.dtype.kind == "O" and any(v is None or (isinstance(v, float) and math.isnan(v))
                                  for v in y.ravel()):
        raise ValueError("y contains missing labels (None or NaN); every row needs a label.")
    check_classification_targets(y)
    if type_of_target(y) not in ("binary", "multiclass"):
        raise ValueError(
            f"RobustNetClassifier supports binary and multiclass targets; got "
            f"{type_of_target(y)!r}."
        )
    return y


def check_regression_targets(y):
    """Regression targets as a 1-D or 2-D float64 numpy array, or a clear error."""
    y = np.asarray(y)
    if y.dtype.kind == "c":
        raise ValueError("Complex data not supported: y has a complex dtype.")
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] < 1):
        raise ValueError(
            f"y should be a 1-D array of targets, or 2-D with one column per target; "
            f"got shape {y.shape}."
        )
    if y.dtype.kind not in "biuf":
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"y must hold numbers (regression targets); got dtype {y.dtype}."
            ) from None
    y = y.astype(np.float64)
    if not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinity; every row needs a finite target.")
    return y


def check_sample_weight(sample_weight, n_samples):
    """User sample weights as a float32 tensor, or a clear error."""
    if sample_weight is None:
        return None
    sw = np.asarray(sample_weight)
    if sw.ndim == 0:
        sw = np.full(n_samples, float(sw))
    if sw.ndim != 1 or len(sw) != n_samples:
        raise ValueError(
            f"sample_weight must be a 1-D array with one weight per row of X "
            f"({n_samples}); got shape {sw.shape}."
        )
    if sw.dtype.kind not in "biuf":
        raise ValueError(f"sample_weight must be numeric; got dtype {sw.dtype}.")
    sw = sw.astype(np.float64)
    if not np.isfinite(sw).all() or (sw < 0).any():
        raise ValueError("sample_weight must be finite and non-negative.")
    if not sw.any():
        raise ValueError("sample_weight is zero for every row: nothing to train on.")
    return torch.as_tensor(sw, dtype=torch.float32)
