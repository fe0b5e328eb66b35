"""Corrupt labels and features on purpose, to run noisy-label experiments.

Every function here is pure: the inputs are never modified, a new array is
returned, and all randomness comes from ``random_state`` (anything accepted by
:func:`sklearn.utils.check_random_state`). Invalid input raises a
:class:`ValueError` or :class:`TypeError` whose message names the parameter,
the value received and what is allowed.

Label noise comes in two forms:

* :func:`add_label_noise` flips *exactly* ``round(noise_rate * n_samples)``
  labels, so that an experiment's noise level is known, not estimated;
* :func:`apply_transition_matrix` draws every label independently from a
  class-conditional transition matrix ``T[i, j] = P(noisy j | true i)``, such as
  the ones built by :func:`noise_transition_matrix`.

:func:`corrupt_features` adds input noise (sensor noise, outliers, dropped
sensors) to a fraction of the rows of a numeric feature matrix.
"""

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state

from ._checks import check_integer, check_option, check_real, check_transition_matrix
from .weighting import _IQR_TO_SIGMA

__all__ = [
    "add_label_noise",
    "add_target_noise",
    "apply_transition_matrix",
    "corrupt_features",
    "noise_transition_matrix",
]

_LABEL_NOISE_KINDS = ("symmetric", "pair", "instance")
_MATRIX_KINDS = ("symmetric", "pair")
_FEATURE_NOISE_KINDS = ("gaussian", "outlier", "dropout")
_TARGET_NOISE_KINDS = ("gross", "swap", "gaussian")

# Every row keeps at least this much weight in instance-dependent sampling, so
# that rows the model finds easy can still be drawn once the hard ones run out.
_MIN_DIFFICULTY = 1e-6


# --------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------


def _sorted_unique(values, name):
    """``np.unique(values)``, with errors for NaN and for unorderable labels."""
    if values.dtype.kind in "fc" and np.isnan(values).any():
        raise ValueError(f"{name} must not contain NaN, got {name} with missing values.")
    try:
        return np.unique(values, return_inverse=True)
    except TypeError as exc:
        raise TypeError(
            f"{name} must hold labels of one sortable type (all numbers or all "
            f"strings), got {name} of dtype {values.dtype}: {exc}"
        ) from None


def _check_y(y, name="y"):
    """Return ``y`` as a 1-D numpy array with at least one sample."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got an array of shape {y.shape}.")
    if y.shape[0] == 0:
        raise ValueError(f"{name} must contain at least 1 sample, got 0.")
    return y


def _encode_labels(y):
    """Validate labels; return ``(y, classes, codes)`` with ``classes[codes] == y``."""
    y = _check_y(y)
    classes, codes = _sorted_unique(y, "y")
    if classes.shape[0] < 2:
        raise ValueError(
            f"y must contain at least 2 distinct classes, got {classes.shape[0]}: "
            f"{classes.tolist()!r}."
        )
    return y, classes, codes.reshape(-1)


def _encode_with_classes(y, classes):
    """Codes of ``y`` in the user-given order of ``classes``."""
    classes = np.asarray(classes)
    if classes.ndim != 1 or classes.shape[0] < 2:
        raise ValueError(
            f"classes must be a 1-dimensional array of at least 2 labels, got shape "
            f"{classes.shape}."
        )
    sorted_classes, inverse = _sorted_unique(classes, "classes")
    if sorted_classes.shape[0] != classes.shape[0]:
        raise ValueError(f"classes must not contain duplicates, got {classes.tolist()!r}.")
    try:
        pos = np.clip(np.searchsorted(sorted_classes, y), 0, sorted_classes.shape[0] - 1)
        known = sorted_classes[pos] == y
    except TypeError as exc:  # includes numpy's DTypePromotionError
        raise TypeError(
            f"y and classes must hold labels of the same type, got y of dtype {y.dtype} "
            f"and classes of dtype {classes.dtype}: {exc}"
        ) from None
    known = np.asarray(known, dtype=bool)
    if not known.all():
        unknown = np.unique(y[~known]).tolist()
        raise ValueError(
            f"y contains labels that are not in classes: {unknown!r}; "
            f"classes is {classes.tolist()!r}."
        )
    # ``inverse`` maps each position of ``classes`` to its sorted position;
    # invert it to map sorted positions back to the user's order.
    order = np.empty_like(inverse.reshape(-1))
    order[inverse.reshape(-1)] = np.arange(classes.shape[0])
    return classes, order[pos]


def _labels_from_codes(y, classes, codes):
    """``classes[codes]`` in ``y``'s dtype, widened only if a class would not fit."""
    values = classes[codes]
    try:
        fits = np.array_equal(classes.astype(y.dtype), classes)
    except (TypeError, ValueError, OverflowError):
        fits = False
    if fits:
        return values.astype(y.dtype, copy=False)
    try:
        dtype = np.result_type(y.dtype, classes.dtype)
    except TypeError:
        dtype = object
    return values.astype(dtype, copy=False)


def _n_selected(fraction, n):
    """Number of rows to corrupt: ``round(fraction * n)`` (ties to even)."""
    return int(round(fraction * n))


def _choose_rows(n, fraction, rng, weights=None):
    """Indices of exactly ``round(fraction * n)`` distinct rows.

    Without ``weights`` the rows are drawn uniformly without replacement. With
    ``weights`` (positive, shape ``(n,)``) they are drawn one after another,
    each with probability proportional to its weight among the rows left
    (successive sampling, done in one pass with the exponential-keys trick of
    Efraimidis and Spirakis).
    """
    k = _n_selected(fraction, n)
    if weights is None:
        return rng.choice(n, size=k, replace=False)
    keys = np.log(rng.uniform(size=n)) / weights
    return np.argsort(-keys, kind="stable")[:k]


def _check_features(X, name="X"):
    """Return ``(values, frame)``: a float copy of ``X`` and the DataFrame, if any."""
    frame = X if _is_dataframe(X) else None
    if frame is not None:
        from pandas.api.types import is_float_dtype, is_numeric_dtype

        bad = [col for col, dt in frame.dtypes.items() if not is_numeric_dtype(dt)]
        if bad:
            raise TypeError(
                f"{name} must have only numeric columns, got non-numeric columns {bad!r}."
            )
        if all(is_float_dtype(dt) and isinstance(dt, np.dtype) for dt in frame.dtypes):
            values = frame.to_numpy(copy=True)
        else:
            values = frame.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    else:
        values = np.asarray(X)
        if values.dtype.kind not in "biuf":
            raise TypeError(
                f"{name} must be numeric (bool, integer or float), got dtype {values.dtype}."
            )
        values = values.astype(values.dtype if values.dtype.kind == "f" else np.float64)
    if values.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional, got an array of shape {values.shape}.")
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(
            f"{name} must have at least 1 sample and 1 feature, got shape {values.shape}."
        )
    if np.isinf(values).any():
        raise ValueError(f"{name} must not contain infinite values.")
    return values, frame


def _is_dataframe(X):
    return type(X).__module__.split(".")[0] == "pandas" and hasattr(X, "columns")


def _column_stats(values):
    """NaN-aware column min, max, mean and std; a zero or undefined std becomes 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        low = np.nanmin(values, axis=0)
        high = np.nanmax(values, axis=0)
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
    low, high, mean = (np.where(np.isfinite(a), a, 0.0) for a in (low, high, mean))
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return low, high, mean, std


# --------------------------------------------------------------------------
# Label noise
# --------------------------------------------------------------------------


def _instance_difficulty(X, codes):
    """Difficulty in ``[0, 1]`` of each row and its most likely other class."""
    X = np.asarray(X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise ValueError("X must contain only finite values for kind='instance'.")
    Z = StandardScaler().fit_transform(X)
    proba = LogisticRegression(max_iter=1000).fit(Z, codes).predict_proba(Z)
    rows = np.arange(codes.shape[0])
    p_true = proba[rows, codes]
    proba[rows, codes] = -np.inf
    other = np.argmax(proba, axis=1)
    margin = p_true - proba[rows, other]
    return (1.0 - margin) / 2.0, other


def add_label_noise(y, noise_rate, *, kind="symmetric", X=None, random_state=None):
    """Flip an exact fraction of labels to a different class.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        True labels: integers, strings or any sortable values, with at least
        two distinct classes. A pandas Series is accepted.
    noise_rate : float in [0, 1)
        Fraction of rows to flip. Exactly ``round(noise_rate * n_samples)``
        rows get a new label (Python's ``round``: ties go to the even count).
    kind : {"symmetric", "pair", "instance"}, default="symmetric"
        How the flipped rows and their new labels are chosen; see Notes.
    X : array-like of shape (n_samples, n_features), default=None
        Numeric features. Required for ``kind="instance"``, ignored otherwise.
    random_state : int, RandomState instance or None, default=None
        Seed or generator for the draws, as in scikit-learn.

    Returns
    -------
    y_noisy : ndarray of shape (n_samples,)
        New array of noisy labels, with the dtype of ``np.asarray(y)`` and
        only values that occur in ``y``. Every flipped row holds a label that
        differs from its true one; the other rows are unchanged.

    See Also
    --------
    noise_transition_matrix : The class-level matrix of symmetric or pair noise.
    apply_transition_matrix : Draw each label independently from a transition matrix.
    corrupt_features : Input noise on the features instead of the labels.

    Notes
    -----
    Let ``C`` be the number of classes and ``classes = np.unique(y)``.

    * ``"symmetric"`` (uniform noise): the rows to flip are drawn uniformly
      without replacement and each gets a label drawn uniformly from the
      ``C - 1`` other classes. In expectation this is the transition matrix
      ``noise_transition_matrix(C, noise_rate, kind="symmetric")``.
    * ``"pair"`` (class-flip noise): the rows are drawn as above and a row of
      ``classes[k]`` becomes ``classes[(k + 1) % C]``; this matches
      ``noise_transition_matrix(C, noise_rate, kind="pair")``.
    * ``"instance"`` (instance-dependent noise): a
      :class:`~sklearn.linear_model.LogisticRegression` is fitted on the
      standardized ``X`` and ``y``. With ``p_true`` the probability it gives to
      a row's true class and ``p_other`` the largest probability among the
      other classes, the row's difficulty is ``(1 - (p_true - p_other)) / 2``,
      in ``[0, 1]`` and above 1/2 for misclassified rows. The rows to flip are
      drawn one after another without replacement, each with probability
      proportional to its difficulty (floored at ``1e-6`` so that every row
      can be drawn), and each flipped row gets its most likely other class
      under the model. Rows near the decision boundary are therefore flipped
      more often, and to the class they are confused with.

    Examples
    --------
    >>> import numpy as np
    >>> from skrobust.noise import add_label_noise
    >>> y = np.array(["cat", "dog", "emu"] * 4)
    >>> y_noisy = add_label_noise(y, 0.25, random_state=0)
    >>> int((y_noisy != y).sum())
    3
    >>> y_pair = add_label_noise(y, 0.25, kind="pair", random_state=0)
    >>> flipped = y_pair != y
    >>> sorted(set(zip(y[flipped].tolist(), y_pair[flipped].tolist())))
    [('cat', 'dog'), ('dog', 'emu'), ('emu', 'cat')]
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(n_samples=200, random_state=0)
    >>> y_noisy = add_label_noise(y, 0.1, kind="instance", X=X, random_state=0)
    >>> int((y_noisy != y).sum())
    20
    """
    kind = check_option(kind, "kind", _LABEL_NOISE_KINDS)
    noise_rate = check_real(noise_rate, "noise_rate", low=0.0, high=1.0, high_inclusive=False)
    y, classes, codes = _encode_labels(y)
    n, n_classes = codes.shape[0], classes.shape[0]
    rng = check_random_state(random_state)

    if kind == "instance":
        if X is None:
            raise ValueError(
                "X is required for kind='instance' (the noise depends on the features); "
                "pass X=features or use kind='symmetric' or 'pair'."
            )
        X, _ = _check_features(X)
        if X.shape[0] != n:
            raise ValueError(
                f"X and y must have the same number of samples, got X with {X.shape[0]} "
                f"and y with {n}."
            )
        difficulty, other = _instance_difficulty(X, codes)
        rows = _choose_rows(n, noise_rate, rng, np.maximum(difficulty, _MIN_DIFFICULTY))
        new_codes = other[rows]
    else:
        rows = _choose_rows(n, noise_rate, rng)
        if kind == "symmetric":
            shift = rng.randint(1, n_classes, size=rows.shape[0])
        else:
            shift = 1
        new_codes = (codes[rows] + shift) % n_classes

    y_noisy = y.copy()
    y_noisy[rows] = classes[new_codes]
    return y_noisy


def noise_transition_matrix(n_classes, noise_rate, *, kind="symmetric"):
    """Class-level transition matrix of symmetric or pair label noise.

    Parameters
    ----------
    n_classes : int
        Number of classes ``C``, at least 2.
    noise_rate : float in [0, 1)
        Probability that a label is changed.
    kind : {"symmetric", "pair"}, default="symmetric"
        Noise model; see Notes.

    Returns
    -------
    transition_matrix : ndarray of shape (n_classes, n_classes), dtype float64
        Row-stochastic matrix with ``T[i, j] = P(noisy label j | true label i)``.

    See Also
    --------
    apply_transition_matrix : Draw noisy labels from such a matrix.
    add_label_noise : Flip an exact number of labels with the same noise models.

    Notes
    -----
    With ``r = noise_rate``, both kinds keep a label with probability
    ``T[i, i] = 1 - r``. ``"symmetric"`` spreads ``r`` evenly over the other
    classes, ``T[i, j] = r / (C - 1)``; ``"pair"`` moves all of it to the next
    class, ``T[i, (i + 1) % C] = r``. For two classes the kinds coincide.
    Instance-dependent noise has no class-level matrix.

    Examples
    --------
    >>> from skrobust.noise import noise_transition_matrix
    >>> noise_transition_matrix(3, 0.2)
    array([[0.8, 0.1, 0.1],
           [0.1, 0.8, 0.1],
           [0.1, 0.1, 0.8]])
    >>> noise_transition_matrix(3, 0.2, kind="pair")
    array([[0.8, 0.2, 0. ],
           [0. , 0.8, 0.2],
           [0.2, 0. , 0.8]])
    """
    kind = check_option(kind, "kind", _MATRIX_KINDS)
    n_classes = check_integer(n_classes, "n_classes", low=2)
    noise_rate = check_real(noise_rate, "noise_rate", low=0.0, high=1.0, high_inclusive=False)
    eye = np.eye(n_classes)
    if kind == "symmetric":
        off = (1.0 - eye) * (noise_rate / (n_classes - 1))
    else:
        off = np.roll(eye, 1, axis=1) * noise_rate
    return (1.0 - noise_rate) * eye + off


def apply_transition_matrix(y, transition_matrix, *, classes=None, random_state=None):
    """Draw each noisy label independently from a class transition matrix.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        True labels. A pandas Series is accepted.
    transition_matrix : array-like of shape (n_classes, n_classes)
        Row-stochastic matrix, ``T[i, j] = P(noisy classes[j] | true classes[i])``:
        finite, non-negative, each row summing to 1 within ``1e-4`` (then renormalised).
    classes : array-like of shape (n_classes,), default=None
        At least 2 distinct labels, in the order of the rows and columns of
        ``transition_matrix``. Defaults to ``np.unique(y)``. Every label of
        ``y`` must be in it; it may hold classes absent from ``y``.
    random_state : int, RandomState instance or None, default=None
        Seed or generator for the draws, as in scikit-learn.

    Returns
    -------
    y_noisy : ndarray of shape (n_samples,)
        New array of noisy labels, with the dtype of ``np.asarray(y)`` unless a
        label of ``classes`` does not fit in it.

    See Also
    --------
    noise_transition_matrix : Symmetric and pair transition matrices.
    add_label_noise : Flip an exact number of labels.

    Notes
    -----
    Each row is corrupted independently, so the number of changed labels is
    random, with mean ``sum_i n_i * (1 - T[i, i])`` for ``n_i`` rows of class
    ``i``. Use :func:`add_label_noise` to flip an exact number of rows.

    Examples
    --------
    >>> import numpy as np
    >>> from skrobust.noise import apply_transition_matrix
    >>> y = np.array([0, 1] * 5)
    >>> T = [[1.0, 0.0], [0.5, 0.5]]  # class 1 is mislabelled as 0 half the time
    >>> y_noisy = apply_transition_matrix(y, T, random_state=0)
    >>> bool((y_noisy[y == 0] == 0).all())
    True
    """
    if classes is None:
        y, classes, codes = _encode_labels(y)
    else:
        y = _check_y(y)
        classes, codes = _encode_with_classes(y, classes)
    T = check_transition_matrix(transition_matrix, classes.shape[0])
    T = T / T.sum(axis=1, keepdims=True)
    rng = check_random_state(random_state)

    # Inverse-CDF sampling; side="right" never picks a zero-probability class.
    cdf = np.cumsum(T, axis=1)
    cdf[:, -1] = 1.0
    u = rng.uniform(size=codes.shape[0])
    new_codes = np.empty_like(codes)
    for i in range(classes.shape[0]):
        rows = codes == i
        new_codes[rows] = np.searchsorted(cdf[i], u[rows], side="right")
    return _labels_from_codes(y, classes, np.minimum(new_codes, classes.shape[0] - 1))


# --------------------------------------------------------------------------
# Feature noise
# --------------------------------------------------------------------------


def corrupt_features(X, fraction, *, kind="gaussian", scale=3.0, random_state=None):
    """Add input noise to an exact fraction of the rows of a feature matrix.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Numeric features: a numpy array (bool, integer or float) or a pandas
        DataFrame with only numeric columns. NaN is allowed, infinity is not.
    fraction : float in [0, 1]
        Fraction of rows to corrupt. Exactly ``round(fraction * n_samples)``
        rows are chosen, uniformly without replacement.
    kind : {"gaussian", "outlier", "dropout"}, default="gaussian"
        Noise model; see Notes.
    scale : float > 0, default=3.0
        Strength of the noise, in column standard deviations. Ignored for
        ``kind="dropout"``.
    random_state : int, RandomState instance or None, default=None
        Seed or generator for the draws, as in scikit-learn.

    Returns
    -------
    X_noisy : ndarray or DataFrame of shape (n_samples, n_features)
        New corrupted copy. Float arrays keep their dtype, other arrays become
        float64; a DataFrame gives a DataFrame with the same columns and index.
    corrupted_mask : ndarray of shape (n_samples,), dtype bool
        True for the rows that were corrupted.

    See Also
    --------
    add_label_noise : Noise on the labels instead of the features.

    Notes
    -----
    Column statistics are computed on the clean ``X``, ignoring NaN; a column
    whose standard deviation ``std`` is zero or undefined uses ``std = 1``.

    * ``"gaussian"`` (sensor noise): every value of a chosen row gets added
      noise drawn from ``N(0, (scale * std) ** 2)`` of its column.
    * ``"outlier"`` (gross errors): every value of a chosen row is replaced by
      a value outside the column's observed range ``[min, max]``: with a
      random sign, ``max + scale * std * (1 + u)`` or
      ``min - scale * std * (1 + u)``, with ``u`` uniform in ``[0, 1)``.
    * ``"dropout"`` (missing sensors): in each chosen row, ``ceil(n_features /
      2)`` features picked at random are replaced by their column mean.

    Examples
    --------
    >>> import numpy as np
    >>> from skrobust.noise import corrupt_features
    >>> X = np.arange(20.0).reshape(10, 2)
    >>> X_noisy, mask = corrupt_features(X, 0.3, kind="outlier", random_state=0)
    >>> int(mask.sum())
    3
    >>> bool((X_noisy[~mask] == X[~mask]).all())
    True
    >>> outside = (X_noisy[mask] > X.max(axis=0)) | (X_noisy[mask] < X.min(axis=0))
    >>> bool(outside.all())
    True
    """
    kind = check_option(kind, "kind", _FEATURE_NOISE_KINDS)
    fraction = check_real(fraction, "fraction", low=0.0, high=1.0)
    scale = check_real(scale, "scale", low=0.0, low_inclusive=False)
    values, frame = _check_features(X)
    rng = check_random_state(random_state)

    n, d = values.shape
    rows = _choose_rows(n, fraction, rng)
    low, high, mean, std = _column_stats(values)
    k = rows.shape[0]
    if kind == "gaussian":
        values[rows] += rng.normal(size=(k, d)) * (scale * std)
    elif kind == "outlier":
        distance = scale * std * (1.0 + rng.uniform(size=(k, d)))
        upper = rng.uniform(size=(k, d)) < 0.5
        values[rows] = np.where(upper, high + distance, low - distance)
    else:
        n_drop = (d + 1) // 2
        drop = np.argsort(rng.uniform(size=(k, d)), axis=1)[:, :n_drop]
        values[rows[:, None], drop] = mean[drop]

    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    if frame is not None:
        values = type(frame)(values, index=frame.index, columns=frame.columns)
    return values, mask


def _robust_spread(values):
    """Per-column ``IQR / 1.349`` of ``values`` (n, k); the std, then 1, where it is 0."""
    q25, q75 = np.percentile(values, [25, 75], axis=0)
    spread = (q75 - q25) / _IQR_TO_SIGMA
    std = values.std(axis=0)
    spread = np.where(spread > 0, spread, std)
    return np.where(spread > 0, spread, 1.0)


def add_target_noise(y, rate, *, kind="gross", scale=1.0, random_state=None,
                     return_mask=False):
    """Corrupt an exact fraction of regression targets.

    Parameters
    ----------
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        True numeric targets. A pandas Series is accepted.
    rate : float in [0, 1)
        Fraction of rows to corrupt: exactly ``round(rate * n_samples)`` rows
        are chosen, uniformly without replacement (Python's ``round``).
    kind : {"gross", "swap", "gaussian"}, default="gross"
        How the chosen rows are corrupted; see Notes.
    scale : float, default=1.0
        Size of the corruption for ``"gross"`` and ``"gaussian"``, ``> 0``, in
        units of each target's robust spread (``IQR / 1.349``); ignored by
        ``"swap"``.
    random_state : int, RandomState instance or None, default=None
        Seed or generator for the draws, as in scikit-learn.
    return_mask : bool, default=False
        Also return the boolean mask of the corrupted rows.

    Returns
    -------
    y_noisy : ndarray of the shape of ``y``, float64
        New array; the rows not chosen are unchanged.
    mask : ndarray of shape (n_samples,), dtype bool
        Only with ``return_mask=True``: the rows whose target changed. For
        ``"swap"``, a chosen row that received an equal value is not in it.

    See Also
    --------
    add_label_noise : Label noise for classification.

    Notes
    -----
    With ``s`` a target's robust spread (``IQR / 1.349``; its standard
    deviation where the IQR is 0):

    * ``"gross"`` (recording errors, unit mix-ups): each chosen row moves by
      ``scale * s * u`` with ``u`` uniform in ``[3, 6]``, up or down at random.
    * ``"swap"`` (rows joined to the wrong record): the chosen rows' targets are
      permuted among themselves so that each receives another chosen row's
      target (a random cyclic shift).
    * ``"gaussian"`` (heteroscedastic measurement noise): each chosen row gets
      Gaussian noise of standard deviation ``scale * s * (0.5 + q)``, where
      ``q`` in ``[0, 1]`` is the rank quantile of its target: larger values are
      noisier.

    Several targets are corrupted together, row by row.

    Examples
    --------
    >>> import numpy as np
    >>> from skrobust.noise import add_target_noise
    >>> y = np.arange(10.0)
    >>> y_noisy, mask = add_target_noise(y, 0.2, kind="swap", random_state=0,
    ...                                  return_mask=True)
    >>> int(mask.sum()), sorted(y_noisy[mask].tolist()) == sorted(y[mask].tolist())
    (2, True)
    >>> y_gross = add_target_noise(y, 0.3, random_state=0)
    >>> int((y_gross != y).sum())
    3
    """
    kind = check_option(kind, "kind", _TARGET_NOISE_KINDS)
    rate = check_real(rate, "rate", low=0.0, high=1.0, high_inclusive=False)
    scale = check_real(scale, "scale", low=0.0, low_inclusive=False)
    if not isinstance(return_mask, (bool, np.bool_)):
        raise TypeError(f"return_mask must be True or False, got {return_mask!r}.")
    values = np.asarray(y)
    if values.dtype.kind not in "biuf":
        raise TypeError(f"y must hold numbers, got dtype {values.dtype}.")
    if values.ndim not in (1, 2) or values.shape[0] < 1:
        raise ValueError(
            f"y must be a non-empty 1-D or 2-D array, got shape {values.shape}.")
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("y must be finite (no NaN or infinity).")
    table = values.reshape(len(values), -1)
    n = len(table)
    rng = check_random_state(random_state)
    rows = _choose_rows(n, rate, rng)
    noisy = table.copy()
    spread = _robust_spread(table)
    if kind == "gross" and len(rows):
        size = rng.uniform(3.0, 6.0, size=(len(rows), 1))
        sign = rng.choice([-1.0, 1.0], size=(len(rows), 1))
        noisy[rows] += sign * size * scale * spread
    elif kind == "swap" and len(rows) > 1:
        shift = rng.randint(1, len(rows))
        noisy[rows] = table[np.roll(rows, shift)]
    elif kind == "gaussian" and len(rows):
        quantile = (np.argsort(np.argsort(table, axis=0), axis=0) / max(n - 1, 1))[rows]
        sd = scale * spread * (0.5 + quantile)
        noisy[rows] += sd * rng.standard_normal(size=sd.shape)
    y_noisy = noisy.reshape(values.shape)
    if not return_mask:
        return y_noisy
    return y_noisy, (noisy != table).any(axis=1)
