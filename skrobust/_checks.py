"""Argument checks shared by the leaf modules (noise tools, losses, weighting).

One small function per check. Each returns the checked value (converted where
that is the point of the check) or raises with a message that names the
argument, the value received and what is allowed.

A value of the wrong type raises :class:`ArgumentTypeError`, which is both a
:class:`TypeError` and a :class:`ValueError` (as scikit-learn's
``InvalidParameterError`` is): the noise tools have always raised a
``TypeError`` for a wrong type and the losses a ``ValueError``, and callers of
either keep catching what they caught. A value of the right type but out of
range raises a :class:`ValueError`.
"""

import math
import numbers

import numpy as np
import torch

#: Rows of a transition matrix must sum to 1 within this absolute tolerance.
#: Loose enough for a float32 matrix (a tensor, or one normalised in float32,
#: whose row sums are off by about ``n_classes * 6e-8``), tight enough to
#: reject rounded or mistyped probabilities (``[0.33, 0.33, 0.33]``).
ROW_SUM_ATOL = 1e-4


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (both a TypeError and a ValueError)."""


def format_interval(low=None, high=None, low_inclusive=True, high_inclusive=True):
    """``"[0, 1)"``-style text of an interval; ``None`` bounds print as ``inf``."""
    left = "[" if low_inclusive and low is not None else "("
    right = "]" if high_inclusive and high is not None else ")"
    low_str = "-inf" if low is None else f"{low:g}"
    high_str = "inf" if high is None else f"{high:g}"
    return f"{left}{low_str}, {high_str}{right}"


def check_type(value, name, expected, number_type=numbers.Real):
    """Raise :class:`ArgumentTypeError` unless ``value`` is a (non-bool) ``number_type``.

    ``expected`` describes the allowed values in the message, e.g.
    ``"an integer >= 2"``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, number_type):
        raise ArgumentTypeError(
            f"{name} must be {expected}, got {value!r} of type {type(value).__name__}."
        )


def check_real(value, name, *, low=None, high=None, low_inclusive=True, high_inclusive=True):
    """Return ``value`` as a finite float in the interval from ``low`` to ``high``.

    ``None`` leaves that side open; NaN and infinities are always rejected.
    """
    interval = format_interval(low, high, low_inclusive, high_inclusive)
    check_type(value, name, f"a real number in {interval}")
    value = float(value)
    out_of_range = (
        not math.isfinite(value)
        or (low is not None and (value < low or (value == low and not low_inclusive)))
        or (high is not None and (value > high or (value == high and not high_inclusive)))
    )
    if out_of_range:
        raise ValueError(f"{name} must be in {interval}, got {value!r}.")
    return value


def check_integer(value, name, *, low):
    """Return ``value`` as an int ``>= low``."""
    expected = f"an integer >= {low}"
    check_type(value, name, expected, numbers.Integral)
    value = int(value)
    if value < low:
        raise ValueError(f"{name} must be {expected}, got {value!r}.")
    return value


def check_option(value, name, allowed):
    """Return ``value`` if it is one of the strings in ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {options}, got {value!r}.")
    return value


def as_float64_array(value, name):
    """``value`` (an array-like or a tensor on any device) as a float64 numpy array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(
            f"{name} must be a numeric array-like, got {type(value).__name__} {value!r}: {exc}"
        ) from None


def check_transition_matrix(transition_matrix, n_classes=None):
    """A row-stochastic square matrix as a new float64 array (not renormalised).

    Parameters
    ----------
    transition_matrix : array-like or torch.Tensor
        ``T[i, j] = P(noisy label j | true label i)``.
    n_classes : int or None, default=None
        The required number of rows and columns; ``None`` accepts any
        ``n_classes >= 2``.

    Returns
    -------
    T : ndarray of shape (n_classes, n_classes), dtype float64
        Finite, non-negative, each row summing to 1 within :data:`ROW_SUM_ATOL`.
    """
    T = as_float64_array(transition_matrix, "transition_matrix")
    if n_classes is None:
        if T.ndim != 2 or T.shape[0] != T.shape[1] or T.shape[0] < 2:
            raise ValueError(
                "transition_matrix must be a square 2-D array of shape (n_classes, n_classes) "
                f"with n_classes >= 2, got shape {T.shape}."
            )
    elif T.shape != (n_classes, n_classes):
        raise ValueError(
            f"transition_matrix must be a square 2-D array of shape ({n_classes}, {n_classes}) "
            f"(one row and column per class), got shape {T.shape}."
        )
    if not np.isfinite(T).all():
        raise ValueError("transition_matrix must contain only finite values (no NaN or inf).")
    if (T < 0).any():
        raise ValueError(
            f"transition_matrix must be non-negative, got minimum entry {T.min():g}; "
            "entries are probabilities P(noisy label j | true label i)."
        )
    row_sums = T.sum(axis=1)
    worst = int(np.argmax(np.abs(row_sums - 1.0)))
    if abs(row_sums[worst] - 1.0) > ROW_SUM_ATOL:
        raise ValueError(
            f"transition_matrix rows must sum to 1 (within {ROW_SUM_ATOL:g}), got row "
            f"{worst} summing to {row_sums[worst]:.6g}; normalize it, e.g. with "
            "T / T.sum(axis=1, keepdims=True)."
        )
    return T
