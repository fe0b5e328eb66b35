"""Label issues for any model: find the suspicious rows, or train on the rest.

Two entry points share one *detector protocol*:

* :func:`find_label_issues` fits a detector once and returns a table with one
  row per training row, ready to sort and review;
* :class:`CleanedClassifier` fits a detector once, then any scikit-learn
  classifier on the rows the detector keeps (or with the flagged rows
  down-weighted).

**The detector protocol.** A detector is any scikit-learn classifier that, after ``fit(X, y)``, has

* ``noise_scores_``: float array of shape ``(n_samples,)``, one score per row
  of ``X`` in the same order, higher meaning more likely mislabeled (NaN for a
  row the detector did not judge), and/or
* ``label_issues_``: bool array of shape ``(n_samples,)``, the rows it judges
  mislabeled.

:class:`~skrobust.RobustNetClassifier` has both. When the fitted detector lacks
them, they are read from its last step if it is a
:class:`~sklearn.pipeline.Pipeline` (pipelines do not reorder rows), or from
its ``best_estimator_`` if it is a search refitted on all rows, such as
:class:`~sklearn.model_selection.GridSearchCV`; this applies recursively.
Only these public attributes are read, so the detector's own rule for
``label_issues_`` is used as it stands.
"""

import math
import numbers
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    has_fit_parameter,
    validate_data,
)

__all__ = ["CleanedClassifier", "find_label_issues"]

_PANDAS_INSTALL = 'pip install "skrobust[pandas]"'

_ACTIONS = ("drop", "downweight")
_SELECT_RULES = ("detector",)

_PROTOCOL = (
    "after fit it (or the last step of a Pipeline, or the best_estimator_ of a "
    "search) must have noise_scores_ and/or label_issues_, arrays with one entry "
    "per row of X, as skrobust.RobustNetClassifier has"
)


# --------------------------------------------------------------------------
# The detector protocol
# --------------------------------------------------------------------------


def _default_detector():
    from .classifier import RobustNetClassifier

    return RobustNetClassifier()


def _scoring_estimator(fitted):
    """The fitted estimator that holds ``noise_scores_`` / ``label_issues_``, or None."""
    est = fitted
    for _ in range(32):  # nested pipelines and searches, without looping forever
        if _has_attr(est, "noise_scores_") or _has_attr(est, "label_issues_"):
            return est
        if isinstance(est, Pipeline):
            est = est.steps[-1][1]
        elif _has_attr(est, "best_estimator_"):
            est = est.best_estimator_
        else:
            return None
    return None


def _has_attr(obj, name):
    try:
        getattr(obj, name)
    except (AttributeError, ValueError):  # NotFittedError is both
        return False
    return True


def _row_array(values, name, n_samples, kind):
    arr = np.asarray(values)
    if arr.shape != (n_samples,):
        raise ValueError(
            f"The detector's {name} has shape {arr.shape}, but X has {n_samples} rows: "
            f"a detector needs one entry per row of X, in the same order. A step that "
            f"adds or removes rows (a resampler) cannot sit before it."
        )
    if kind == "bool":
        if arr.dtype.kind != "b":
            raise ValueError(f"The detector's {name} must be a boolean mask; got dtype "
                             f"{arr.dtype}.")
        return arr.astype(bool)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"The detector's {name} must be numeric; got dtype {arr.dtype}.")
    return arr.astype(np.float64)


def _read_detector(fitted, n_samples, owner):
    """``(noise_scores, label_issues)`` of a fitted detector; either may be None."""
    est = _scoring_estimator(fitted)
    if est is None:
        raise TypeError(
            f"{owner} got a detector of type {type(fitted).__name__} that does not "
            f"report label issues: {_PROTOCOL}. Use a RobustNetClassifier, or a "
            f"Pipeline ending in one."
        )
    scores = issues = None
    if _has_attr(est, "noise_scores_"):
        scores = _row_array(est.noise_scores_, "noise_scores_", n_samples, "float")
    if _has_attr(est, "label_issues_"):
        issues = _row_array(est.label_issues_, "label_issues_", n_samples, "bool")
    return scores, issues


def _fit_detector(detector, X, y, fit_params, owner):
    """Fit ``detector`` (already cloned); return it with its scores and flags."""
    detector.fit(X, y, **fit_params)
    n_samples = len(y)
    scores, issues = _read_detector(detector, n_samples, owner)
    if scores is None:
        # A detector with flags only: the flag is its score.
        scores = issues.astype(np.float64)
    return detector, scores, issues


def _top_share(scores, share):
    """Mask of the ``round(share * n)`` rows with the highest finite scores."""
    n_flag = int(round(share * len(scores)))
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
    flags = np.zeros(len(scores), dtype=bool)
    flags[order[:n_flag]] = True
    return flags & np.isfinite(scores)


def _select_rows(scores, issues, select, owner):
    """The rows to flag under the ``select`` rule."""
    if isinstance(select, str):
        if issues is None:
            raise ValueError(
                f"{owner}: select='detector' uses the detector's label_issues_, which "
                f"this detector does not have; pass select=<share of rows to flag>, "
                f"e.g. select=0.2, to flag the rows with the highest noise_scores_."
            )
        return issues.copy()
    return _top_share(scores, select)


def _cap_per_class(flags, scores, y, max_flag_rate):
    """Unflag the least suspicious flagged rows of each class above the cap.

    Returns the new flags and the classes whose flags were capped.
    """
    flags = flags.copy()
    capped = []
    classes, codes = np.unique(y, return_inverse=True)
    codes = codes.reshape(-1)
    order_key = np.nan_to_num(scores, nan=-np.inf)
    for k, label in enumerate(classes):
        rows = np.flatnonzero(codes == k)
        allowed = math.floor(max_flag_rate * len(rows) + 1e-9)
        allowed = min(allowed, len(rows) - 1)  # every class keeps a row
        flagged = rows[flags[rows]]
        if len(flagged) > allowed:
            # keep flagged only the `allowed` highest-scored ones
            keep_flagged = flagged[np.argsort(-order_key[flagged], kind="stable")[:allowed]]
            flags[flagged] = False
            flags[keep_flagged] = True
            label = label.item() if isinstance(label, np.generic) else label
            capped.append((label, len(flagged), len(rows), allowed))
    return flags, capped


# --------------------------------------------------------------------------
# find_label_issues
# --------------------------------------------------------------------------


def _import_pandas():
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError(
            "find_label_issues returns a pandas DataFrame, and pandas is not "
            f"installed. Install it with: {_PANDAS_INSTALL}"
        ) from exc
    return pd


def find_label_issues(X, y, *, estimator=None, **fit_params):
    """Fit a detector once and report, for every row, how likely its label is wrong.

    Parameters
    ----------
    X : array-like, sparse matrix or DataFrame of shape (n_samples, n_features)
        Training features, in any form the estimator accepts.
    y : array-like of shape (n_samples,)
        The given (possibly wrong) labels.
    estimator : estimator or None, default=None
        The detector: an unfitted classifier that follows the detector protocol
        of :mod:`skrobust.label_issues` (after ``fit`` it has ``noise_scores_``
        and ``label_issues_``, or is a Pipeline whose last step has them). It is
        cloned, never modified. ``None`` uses ``RobustNetClassifier()`` with its
        defaults; its network sees the features as given, so scale them first
        (``make_pipeline(StandardScaler(), RobustNetClassifier())``) unless they
        are already on similar scales.
    **fit_params : dict
        Passed to the estimator's ``fit`` (e.g. ``sample_weight``, or
        ``robustnetclassifier__sample_weight`` for a pipeline).

    Returns
    -------
    issues : pandas.DataFrame of shape (n_samples, 4)
        One row per row of ``X``, in the same order, indexed by ``X``'s index
        when ``X`` is a DataFrame (else ``y``'s when ``y`` is a Series, else
        ``0 .. n_samples - 1``), with the columns:

        ``is_label_issue`` (bool)
            The detector's ``label_issues_``.
        ``noise_score`` (float)
            The detector's ``noise_scores_``; higher means more likely wrong.
            NaN for rows the detector did not score (rows held out by a
            ``train_split``). A detector with flags only gives 1.0 or 0.0.
        ``given_label``
            ``y``.
        ``predicted_label``
            The fitted detector's ``predict(X)``.

    Raises
    ------
    ImportError
        If pandas is not installed.
    TypeError
        If the fitted estimator does not report label issues.

    See Also
    --------
    CleanedClassifier : Train any classifier on the rows a detector keeps.
    RobustNetClassifier : The default detector.

    Notes
    -----
    The detector is fitted once on all rows, and each row is scored by the model
    that was trained on it. This costs one fit, where cross-validated methods
    (such as cleanlab's) cost one fit per fold.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skrobust import RobustNetClassifier, find_label_issues
    >>> X, y = load_iris(return_X_y=True)
    >>> y_noisy = y.copy()
    >>> y_noisy[::10] = (y[::10] + 1) % 3  # every tenth label is wrong
    >>> net = make_pipeline(StandardScaler(), RobustNetClassifier(verbose=0, random_state=0))
    >>> issues = find_label_issues(X, y_noisy, estimator=net)
    >>> list(issues.columns)
    ['is_label_issue', 'noise_score', 'given_label', 'predicted_label']
    >>> top = issues.sort_values("noise_score", ascending=False).head(15)
    >>> wrong = top.index % 10 == 0  # the 15 rows whose labels are wrong
    >>> bool(wrong.sum() >= 12)  # most of the 15 top-scored rows are wrong
    True
    """
    pd = _import_pandas()
    detector = _default_detector() if estimator is None else clone(estimator)
    y_arr = _check_labels(y)
    check_consistent_length(X, y_arr)
    detector, scores, issues = _fit_detector(
        detector, X, y_arr, fit_params, owner="find_label_issues")
    if issues is None:
        raise TypeError(
            f"find_label_issues needs the detector's label_issues_, which "
            f"{type(detector).__name__} does not have after fit; {_PROTOCOL}."
        )
    if hasattr(X, "index") and hasattr(X, "columns"):
        index = X.index
    elif isinstance(y, pd.Series):
        index = y.index
    else:
        index = pd.RangeIndex(len(y_arr))
    return pd.DataFrame(
        {
            "is_label_issue": issues,
            "noise_score": scores,
            "given_label": y_arr,
            "predicted_label": np.asarray(detector.predict(X)),
        },
        index=index,
    )


def _check_labels(y):
    """Labels as a 1-D array; a clear error for regression or multi-output targets."""
    if y is None:
        raise ValueError(
            "This estimator requires y to be passed, but the target y is None: pass the "
            "given labels, one per row of X.")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of labels, one per row of X; got shape "
                         f"{y.shape}.")
    check_classification_targets(y)
    return y


# --------------------------------------------------------------------------
# CleanedClassifier
# --------------------------------------------------------------------------


def _indexable(X):
    """``X`` in a form whose rows can be selected, changed only when needed."""
    if sp.issparse(X):
        return X if X.format in ("csr", "csc") else X.tocsr()
    if hasattr(X, "__getitem__") and hasattr(X, "__len__"):
        return X
    return np.asarray(X)


def _weight_params(estimator, sample_weight):
    """Fit parameters that pass ``sample_weight`` to ``estimator``, or None.

    A Pipeline gets it as ``<last step>__sample_weight`` when its last step
    takes it.
    """
    if isinstance(estimator, Pipeline):
        name, last = estimator.steps[-1]
        if last is None or last == "passthrough":
            return None
        inner = _weight_params(last, sample_weight)
        if inner is None:
            return None
        return {f"{name}__{key}": value for key, value in inner.items()}
    if has_fit_parameter(estimator, "sample_weight"):
        return {"sample_weight": sample_weight}
    return None


def _estimator_has(attr):
    """For ``available_if``: the (fitted, else unfitted) inner estimator has ``attr``."""

    def check(self):
        est = self.estimator_ if hasattr(self, "estimator_") else self.estimator
        getattr(est, attr)
        return True

    return check


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


class CleanedClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Train any classifier on the rows whose labels a detector trusts.

    ``fit`` fits the detector once on all rows, reads which rows it flags as
    mislabeled, and fits a clone of ``estimator`` on the other rows (or on all
    rows, with the flagged ones down-weighted). Prediction is the inner
    estimator's.

    Parameters
    ----------
    estimator : classifier
        The model to train on the cleaned data: any scikit-learn classifier or
        Pipeline. It is cloned, never modified. ``predict_proba``,
        ``decision_function`` and ``predict_log_proba`` exist when it has them.
    detector : classifier or None, default=None
        Finds the mislabeled rows: a classifier that follows the detector
        protocol of :mod:`skrobust.label_issues` (after ``fit`` it has
        ``noise_scores_`` and/or ``label_issues_``, one entry per row, or is a
        Pipeline whose last step has them). Cloned, never modified. ``None``
        uses ``RobustNetClassifier()`` with its defaults; its network sees the
        features as given, so pass
        ``make_pipeline(StandardScaler(), RobustNetClassifier())`` unless they
        are already on similar scales. Tune it with ``detector__*`` parameters,
        which need an explicit ``detector``.
    action : {"drop", "downweight"}, default="drop"
        What happens to the flagged rows: ``"drop"`` fits the estimator without
        them; ``"downweight"`` fits it on all rows with ``sample_weight`` equal
        to ``flagged_weight`` on the flagged rows and 1 elsewhere (the
        estimator, or the last step of a Pipeline, must accept
        ``sample_weight``).
    flagged_weight : float in [0, 1), default=0.1
        Weight of a flagged row with ``action="downweight"``; ignored with
        ``"drop"``.
    select : "detector" or float in [0, 1), default="detector"
        Which rows are flagged: ``"detector"`` takes the detector's
        ``label_issues_``; a number ``s`` flags the ``round(s * n_samples)``
        rows with the highest ``noise_scores_``, for when the noise rate is
        known or estimated (``0`` flags nothing).
    max_flag_rate : float in (0, 1), default=0.5
        Guard against a detector that flags too much: in every class (of the
        given labels) at most this share of the rows is flagged, and always at
        least one row is kept. Above it, only the class's highest-scored
        flagged rows stay flagged, and a warning says so.

    Attributes
    ----------
    detector_ : estimator
        The fitted clone of the detector.
    estimator_ : estimator
        The fitted clone of the estimator.
    label_issues_ : ndarray of shape (n_samples,), dtype bool
        The rows flagged (dropped or down-weighted), after the guard.
    noise_scores_ : ndarray of shape (n_samples,)
        The detector's ``noise_scores_`` (its ``label_issues_`` as 0.0 or 1.0
        when it has no scores).
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    n_features_in_ : int
        Number of features of ``X`` in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names, when ``X`` was a DataFrame with string column names.

    See Also
    --------
    find_label_issues : The detector's verdict on every row, as a DataFrame.
    RobustNetClassifier : The default detector.

    Notes
    -----
    The detector is fitted once, on all rows, so the cost is one detector fit
    plus one estimator fit, where cleaning by cross-validation (cleanlab's
    ``CleanLearning``) costs one estimator fit per fold plus the final one.

    A ``sample_weight`` given to ``fit`` is passed to the detector when its
    ``fit`` accepts it, and to the estimator (multiplied by the down-weights)
    in every case; the estimator must then accept it.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skrobust import CleanedClassifier, RobustNetClassifier
    >>> from skrobust.noise import add_label_noise
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> y_noisy = add_label_noise(y, 0.2, random_state=0)
    >>> detector = make_pipeline(StandardScaler(),
    ...                          RobustNetClassifier(verbose=0, random_state=0))
    >>> clf = CleanedClassifier(make_pipeline(StandardScaler(), LogisticRegression()),
    ...                         detector=detector).fit(X, y_noisy)
    >>> flagged = clf.label_issues_
    >>> bool((y_noisy != y)[flagged].mean() > 0.8)  # most flagged rows were flipped
    True
    >>> bool(clf.score(X, y) > 0.9)  # accuracy against the true labels
    True
    """

    def __init__(self, estimator, *, detector=None, action="drop", flagged_weight=0.1,
                 select="detector", max_flag_rate=0.5):
        self.estimator = estimator
        self.detector = detector
        self.action = action
        self.flagged_weight = flagged_weight
        self.select = select
        self.max_flag_rate = max_flag_rate

    # ------------------------------------------------------------- validation
    def _check_params(self):
        problems = []
        if self.action not in _ACTIONS:
            problems.append(f"action must be one of {_ACTIONS}; got {self.action!r}.")
        fw = self.flagged_weight
        if not (_is_real(fw) and 0 <= fw < 1):
            problems.append(f"flagged_weight must be a number in [0, 1); got {fw!r}.")
        sel = self.select
        if not ((isinstance(sel, str) and sel in _SELECT_RULES)
                or (_is_real(sel) and 0 <= sel < 1)):
            problems.append(
                f"select must be 'detector' or a share of rows in [0, 1); got {sel!r}.")
        rate = self.max_flag_rate
        if not (_is_real(rate) and 0 < rate < 1):
            problems.append(f"max_flag_rate must be a number in (0, 1); got {rate!r}.")
        for name in ("estimator", "detector"):
            value = getattr(self, name)
            if value is None and name == "detector":
                continue
            if not hasattr(value, "fit"):
                problems.append(
                    f"{name} must be an unfitted scikit-learn classifier (an object "
                    f"with fit); got {value!r}.")
        if problems:
            raise ValueError("Invalid parameters for CleanedClassifier:\n  "
                             + "\n  ".join(problems))

    def _check_sample_weight(self, sample_weight, n_samples):
        if sample_weight is None:
            return None
        sw = np.asarray(sample_weight)
        if sw.ndim == 0:
            sw = np.full(n_samples, sw)
        if sw.shape != (n_samples,):
            raise ValueError(f"sample_weight must have one weight per row of X "
                             f"({n_samples}); got shape {sw.shape}.")
        if sw.dtype.kind not in "biuf":
            raise ValueError(f"sample_weight must be numeric; got dtype {sw.dtype}.")
        sw = sw.astype(np.float64)
        if not np.isfinite(sw).all() or (sw < 0).any():
            raise ValueError("sample_weight must be finite and non-negative.")
        return sw

    # -------------------------------------------------------------------- fit
    def fit(self, X, y, sample_weight=None):
        """Fit the detector, flag rows, then fit the estimator on the rest.

        Parameters
        ----------
        X : array-like, sparse matrix or DataFrame of shape (n_samples, n_features)
            Training features, in any form the detector and the estimator accept.
        y : array-like of shape (n_samples,)
            The given (possibly wrong) labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights: passed to the detector if its ``fit`` accepts them, and
            to the estimator, which must accept them.

        Returns
        -------
        self : CleanedClassifier
            The fitted meta-estimator.
        """
        self._check_params()
        X = _indexable(X)
        validate_data(self, X, reset=True, skip_check_array=True)
        y = _check_labels(y)
        check_consistent_length(X, y)
        n_samples = len(y)
        sample_weight = self._check_sample_weight(sample_weight, n_samples)

        detector = _default_detector() if self.detector is None else clone(self.detector)
        detector_params = {}
        if sample_weight is not None:
            detector_params = _weight_params(detector, sample_weight) or {}
        detector, scores, issues = _fit_detector(
            detector, X, y, detector_params, owner="CleanedClassifier")
        flags = _select_rows(scores, issues, self.select, owner="CleanedClassifier")
        flags, capped = _cap_per_class(flags, scores, y, self.max_flag_rate)
        if capped:
            details = "; ".join(
                f"class {label!r}: {n_flag} of {n_rows} rows flagged, kept {allowed}"
                for label, n_flag, n_rows, allowed in capped)
            warnings.warn(
                f"The detector flagged more than max_flag_rate={self.max_flag_rate} of "
                f"the rows of some classes ({details}); only the highest-scored ones "
                f"stay flagged. So many flags usually mean the detector did not fit "
                f"the data (too few epochs, unscaled features) rather than that many "
                f"labels are wrong.",
                UserWarning, stacklevel=2)

        estimator = clone(self.estimator)
        if self.action == "drop":
            keep = np.flatnonzero(~flags)
            X_fit, y_fit = _safe_indexing(X, keep), y[keep]
            weights = None if sample_weight is None else sample_weight[keep]
        else:
            X_fit, y_fit = X, y
            weights = np.where(flags, float(self.flagged_weight), 1.0)
            if sample_weight is not None:
                weights = weights * sample_weight
        fit_params = {}
        if weights is not None:
            fit_params = _weight_params(estimator, weights)
            if fit_params is None:
                why = ("action='downweight' passes the down-weights as sample_weight"
                       if self.action == "downweight" else "fit got a sample_weight")
                raise ValueError(
                    f"{why}, but the estimator {type(estimator).__name__} (or the last "
                    f"step of its Pipeline) does not accept sample_weight in fit. Use "
                    f"action='drop' without sample_weight, or an estimator whose fit "
                    f"takes sample_weight.")
        estimator.fit(X_fit, y_fit, **fit_params)

        self.detector_ = detector
        self.estimator_ = estimator
        self.label_issues_ = flags
        self.noise_scores_ = scores
        self.classes_ = np.asarray(getattr(estimator, "classes_", np.unique(y)))
        return self

    # ---------------------------------------------------------------- predict
    def predict(self, X):
        """Predict with the inner estimator.

        Parameters
        ----------
        X : array-like, sparse matrix or DataFrame of shape (n_samples, n_features)
            Features.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted labels.
        """
        check_is_fitted(self)
        return self.estimator_.predict(X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities from the inner estimator.

        Parameters
        ----------
        X : array-like, sparse matrix or DataFrame of shape (n_samples, n_features)
            Features.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of :attr:`classes_`.
        """
        check_is_fitted(self)
        return self.estimator_.predict_proba(X)

    @available_if(_estimator_has("predict_log_proba"))
    def predict_log_proba(self, X):
        """Log class probabilities from the inner estimator.

        Parameters
        ----------
        X : array-like, sparse matrix or DataFrame of shape (n_samples, n_features)
            Features.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of :attr:`classes_`.
        """
        check_is_fitted(self)
        return self.estimator_.predict_log_proba(X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        """Decision function of the inner estimator.

        Parameters
        ----------
        X : array-like, sparse matrix or DataFrame of shape (n_samples, n_features)
            Features.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            As the inner estimator returns them.
        """
        check_is_fitted(self)
        return self.estimator_.decision_function(X)

    @available_if(_estimator_has("score"))
    def score(self, X, y, sample_weight=None):
        """Score of the inner estimator (accuracy for scikit-learn classifiers).

        Parameters
        ----------
        X : array-like, sparse matrix or DataFrame of shape (n_samples, n_features)
            Features.
        y : array-like of shape (n_samples,)
            True labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights.

        Returns
        -------
        score : float
            ``estimator_.score(X, y)``.
        """
        check_is_fitted(self)
        if sample_weight is None:
            return self.estimator_.score(X, y)
        return self.estimator_.score(X, y, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        detector = _default_detector() if self.detector is None else self.detector
        parts = [self.estimator, detector]
        try:
            inner = [est.__sklearn_tags__() for est in parts]
        except AttributeError:
            return tags
        tags.input_tags.sparse = all(t.input_tags.sparse for t in inner)
        tags.input_tags.allow_nan = all(t.input_tags.allow_nan for t in inner)
        tags.input_tags.string = all(t.input_tags.string for t in inner)
        tags.non_deterministic = any(t.non_deterministic for t in inner)
        return tags
