"""Tests of skrobust.noise: label noise, transition matrices and feature noise."""

import doctest
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from skrobust import noise
from skrobust.noise import (
    add_label_noise,
    apply_transition_matrix,
    corrupt_features,
    noise_transition_matrix,
)

KINDS = ["symmetric", "pair", "instance"]
MATRIX_KINDS = ["symmetric", "pair"]
FEATURE_KINDS = ["gaussian", "outlier", "dropout"]

# Sorted label values of each label type; a Series type is wrapped in a Series.
LABEL_VALUES = {
    "int": np.array([0, 1, 2]),
    "str": np.array(["cat", "dog", "emu"]),
    "int32_3_7": np.array([3, 7], dtype=np.int32),
    "series_int": np.array([10, 20, 30]),
    "series_str": np.array(["a", "b", "c", "d"]),
}
LABEL_TYPES = list(LABEL_VALUES)
N_SAMPLES = 301


def make_labels(label_type, n_samples=N_SAMPLES, seed=0):
    """Labels of the given type, their sorted classes, integer codes and features."""
    classes = LABEL_VALUES[label_type]
    X, codes = make_classification(
        n_samples=n_samples,
        n_features=6,
        n_informative=3,
        n_classes=classes.shape[0],
        random_state=seed,
    )
    y = classes[codes]
    if label_type.startswith("series"):
        y = pd.Series(y, index=np.arange(n_samples) * 2 + 5, name="target")
    return y, classes, codes, X


def empirical_matrix(true_codes, noisy_codes, n_classes):
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, (true_codes, noisy_codes), 1)
    return counts / counts.sum(axis=1, keepdims=True)


def lr_margins(X, codes):
    """Margin p_true - max p_other and most likely other class of a standardized LR."""
    Z = StandardScaler().fit_transform(X)
    proba = LogisticRegression(max_iter=1000).fit(Z, codes).predict_proba(Z)
    rows = np.arange(codes.shape[0])
    p_true = proba[rows, codes].copy()
    proba[rows, codes] = -np.inf
    return p_true - proba.max(axis=1), proba.argmax(axis=1)


# --------------------------------------------------------------------------
# add_label_noise
# --------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.37, 0.5])
@pytest.mark.parametrize("label_type", LABEL_TYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_add_label_noise_flips_exact_count_to_other_known_labels(kind, label_type, rate):
    y, classes, _, X = make_labels(label_type)
    y_noisy = add_label_noise(y, rate, kind=kind, X=X, random_state=0)

    y_arr = np.asarray(y)
    assert isinstance(y_noisy, np.ndarray)
    assert y_noisy.shape == y_arr.shape
    assert y_noisy.dtype == y_arr.dtype
    flipped = y_noisy != y_arr
    assert flipped.sum() == round(rate * N_SAMPLES)
    assert set(np.unique(y_noisy)) <= set(classes)


@pytest.mark.parametrize("label_type", LABEL_TYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_add_label_noise_does_not_modify_inputs(kind, label_type):
    y, _, _, X = make_labels(label_type)
    y_before, X_before = y.copy(), X.copy()
    y_noisy = add_label_noise(y, 0.3, kind=kind, X=X, random_state=0)
    assert not np.shares_memory(y_noisy, np.asarray(y))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_before))
    np.testing.assert_array_equal(X, X_before)
    if isinstance(y, pd.Series):
        pd.testing.assert_series_equal(y, y_before)


@pytest.mark.parametrize("kind", KINDS)
def test_add_label_noise_reproducible(kind):
    y, _, _, X = make_labels("str")
    a = add_label_noise(y, 0.3, kind=kind, X=X, random_state=42)
    b = add_label_noise(y, 0.3, kind=kind, X=X, random_state=42)
    c = add_label_noise(y, 0.3, kind=kind, X=X, random_state=43)
    d = add_label_noise(y, 0.3, kind=kind, X=X, random_state=np.random.RandomState(42))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, d)
    assert not np.array_equal(a, c)


def test_add_label_noise_zero_rate_returns_equal_copy():
    y = np.array([3, 7, 7, 3], dtype=np.int32)
    y_noisy = add_label_noise(y, 0.0, random_state=0)
    np.testing.assert_array_equal(y_noisy, y)
    assert y_noisy is not y


@pytest.mark.parametrize("label_type", LABEL_TYPES)
def test_pair_noise_maps_each_class_to_the_next(label_type):
    y, classes, codes, _ = make_labels(label_type)
    y_noisy = add_label_noise(y, 0.4, kind="pair", random_state=1)
    flipped = y_noisy != np.asarray(y)
    expected = classes[(codes + 1) % classes.shape[0]]
    np.testing.assert_array_equal(y_noisy[flipped], expected[flipped])


@pytest.mark.parametrize("kind", MATRIX_KINDS)
def test_label_noise_matches_its_transition_matrix(kind):
    n_classes, rate = 4, 0.3
    codes = np.arange(20_000) % n_classes
    y_noisy = add_label_noise(codes, rate, kind=kind, random_state=0)
    observed = empirical_matrix(codes, y_noisy, n_classes)
    expected = noise_transition_matrix(n_classes, rate, kind=kind)
    np.testing.assert_allclose(observed, expected, atol=0.02)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_instance_noise_targets_low_margin_rows(n_classes):
    X, codes = make_classification(
        n_samples=2000, n_features=8, n_informative=4, n_classes=n_classes, random_state=0
    )
    y_noisy = add_label_noise(codes, 0.2, kind="instance", X=X, random_state=0)
    flipped = y_noisy != codes
    assert flipped.sum() == 400

    margin, most_likely_other = lr_margins(X, codes)
    # A uniformly random choice of rows would give mean margin ~ margin.mean().
    assert margin[flipped].mean() < margin.mean() - 0.05
    assert margin[flipped].mean() < margin[~flipped].mean() - 0.1
    # Hard rows (lowest margins) are flipped far more often than easy ones.
    low, high = np.quantile(margin, [0.25, 0.75])
    assert flipped[margin <= low].mean() > 2 * flipped[margin >= high].mean()
    # Each flipped row goes to the class the model confuses it with.
    assert (y_noisy[flipped] == most_likely_other[flipped]).mean() > 0.95


def test_instance_noise_accepts_dataframe_features():
    y, _, _, X = make_labels("str")
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    a = add_label_noise(y, 0.2, kind="instance", X=frame, random_state=0)
    b = add_label_noise(y, 0.2, kind="instance", X=X, random_state=0)
    np.testing.assert_array_equal(a, b)


@settings(max_examples=60, deadline=None)
@given(
    n_classes=st.integers(2, 6),
    extra=st.integers(0, 200),
    rate=st.floats(0.0, 1.0, exclude_max=True),
    kind=st.sampled_from(MATRIX_KINDS),
    seed=st.integers(0, 2**32 - 1),
)
def test_add_label_noise_property(n_classes, extra, rate, kind, seed):
    n = n_classes + extra
    rng = np.random.RandomState(seed)
    codes = rng.permutation(np.arange(n) % n_classes)
    y = np.array([f"c{k}" for k in range(n_classes)])[codes]
    y_noisy = add_label_noise(y, rate, kind=kind, random_state=seed)
    assert (y_noisy != y).sum() == round(rate * n)
    assert set(y_noisy) <= set(y)
    assert y_noisy.dtype == y.dtype


# --------------------------------------------------------------------------
# noise_transition_matrix and apply_transition_matrix
# --------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.45])
@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("kind", MATRIX_KINDS)
def test_noise_transition_matrix_structure(kind, n_classes, rate):
    T = noise_transition_matrix(n_classes, rate, kind=kind)
    assert T.shape == (n_classes, n_classes)
    assert T.dtype == np.float64
    assert (T >= 0).all()
    np.testing.assert_allclose(T.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.diag(T), 1.0 - rate)
    for i in range(n_classes):
        for j in range(n_classes):
            if i == j:
                continue
            if kind == "symmetric":
                expected = rate / (n_classes - 1)
            else:
                expected = rate if j == (i + 1) % n_classes else 0.0
            assert T[i, j] == pytest.approx(expected)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("kind", MATRIX_KINDS)
def test_apply_transition_matrix_matches_matrix(kind, n_classes):
    T = noise_transition_matrix(n_classes, 0.3, kind=kind)
    codes = np.arange(20_000) % n_classes
    y_noisy = apply_transition_matrix(codes, T, random_state=0)
    assert y_noisy.dtype == codes.dtype
    np.testing.assert_allclose(empirical_matrix(codes, y_noisy, n_classes), T, atol=0.02)


def test_apply_transition_matrix_custom_classes_order_and_zero_entries():
    classes = np.array(["low", "high", "mid"])  # deliberately not sorted
    T = np.array(
        [
            [0.7, 0.0, 0.3],  # low -> mid, never high
            [0.0, 1.0, 0.0],  # high stays
            [0.5, 0.5, 0.0],  # mid always changes
        ]
    )
    codes = np.arange(20_000) % 3
    y = pd.Series(classes[codes])
    y_before = y.copy()
    y_noisy = apply_transition_matrix(y, T, classes=classes, random_state=0)
    pd.testing.assert_series_equal(y, y_before)
    assert isinstance(y_noisy, np.ndarray)
    noisy_codes = np.array([list(classes).index(v) for v in y_noisy])
    observed = empirical_matrix(codes, noisy_codes, 3)
    np.testing.assert_allclose(observed, T, atol=0.02)
    assert observed[0, 1] == 0 and observed[2, 2] == 0 and observed[1, 1] == 1


def test_apply_transition_matrix_classes_absent_from_y():
    y = np.array([3, 3, 7], dtype=np.int32)
    T = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    y_noisy = apply_transition_matrix(y, T, classes=[3, 7, 9], random_state=0)
    np.testing.assert_array_equal(y_noisy, [9, 9, 7])
    assert y_noisy.dtype == np.int32


def test_apply_transition_matrix_widens_string_dtype_when_needed():
    y = np.array(["a", "a"])
    y_noisy = apply_transition_matrix(y, [[0.0, 1.0], [0.0, 1.0]], classes=["a", "bbb"])
    np.testing.assert_array_equal(y_noisy, ["bbb", "bbb"])


def test_apply_transition_matrix_identity_and_reproducible():
    y, _, _, _ = make_labels("str")
    np.testing.assert_array_equal(apply_transition_matrix(y, np.eye(3), random_state=0), y)
    T = noise_transition_matrix(3, 0.4)
    a = apply_transition_matrix(y, T, random_state=5)
    b = apply_transition_matrix(y, T, random_state=5)
    c = apply_transition_matrix(y, T, random_state=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_apply_transition_matrix_tolerates_tiny_row_sum_error():
    T = np.array([[0.7, 0.3 + 5e-7], [0.5, 0.5]])
    y_noisy = apply_transition_matrix([0, 1, 0, 1], T, random_state=0)
    assert set(y_noisy) <= {0, 1}


def test_apply_transition_matrix_row_sum_tolerance_is_the_losses_one():
    # One tolerance (1e-4) for apply_transition_matrix and ForwardCorrectedCrossEntropy.
    from skrobust.losses import ForwardCorrectedCrossEntropy

    inside = np.array([[0.9, 0.1 + 5e-5], [0.2, 0.8]])
    outside = np.array([[0.9, 0.1 + 5e-4], [0.2, 0.8]])
    apply_transition_matrix([0, 1], inside, random_state=0)
    ForwardCorrectedCrossEntropy(inside)
    for check in (lambda T: apply_transition_matrix([0, 1], T), ForwardCorrectedCrossEntropy):
        with pytest.raises(ValueError, match=r"rows must sum to 1 \(within 0\.0001\)"):
            check(outside)


# --------------------------------------------------------------------------
# corrupt_features
# --------------------------------------------------------------------------

FEATURE_INPUTS = ["float64", "float32", "int", "dataframe", "dataframe_int"]


def make_features(input_type, n_samples=120, n_features=5, seed=0):
    rng = np.random.RandomState(seed)
    values = rng.normal(size=(n_samples, n_features)) * [1.0, 10.0, 0.1, 3.0, 100.0][:n_features]
    if input_type == "float32":
        return values.astype(np.float32)
    if input_type in ("int", "dataframe_int"):
        values = np.round(values * 10).astype(np.int64)
    if input_type.startswith("dataframe"):
        return pd.DataFrame(
            values,
            columns=[f"sensor_{i}" for i in range(n_features)],
            index=pd.Index([f"row{i}" for i in range(n_samples)], name="id"),
        )
    return values


@pytest.mark.parametrize("fraction", [0.0, 0.25, 1.0])
@pytest.mark.parametrize("input_type", FEATURE_INPUTS)
@pytest.mark.parametrize("kind", FEATURE_KINDS)
def test_corrupt_features_rows_and_mask(kind, input_type, fraction):
    X = make_features(input_type)
    X_before = X.copy()
    X_noisy, mask = corrupt_features(X, fraction, kind=kind, random_state=0)

    # Input untouched, output a new object of the right type and dtype.
    if isinstance(X, pd.DataFrame):
        pd.testing.assert_frame_equal(X, X_before)
        assert isinstance(X_noisy, pd.DataFrame)
        pd.testing.assert_index_equal(X_noisy.columns, X.columns)
        pd.testing.assert_index_equal(X_noisy.index, X.index)
        assert (X_noisy.dtypes == np.float64).all()
        noisy = X_noisy.to_numpy()
    else:
        np.testing.assert_array_equal(X, X_before)
        assert isinstance(X_noisy, np.ndarray)
        expected_dtype = np.float32 if input_type == "float32" else np.float64
        assert X_noisy.dtype == expected_dtype
        noisy = X_noisy
    original = np.asarray(X, dtype=np.float64)
    assert not np.shares_memory(noisy, np.asarray(X))

    n, d = original.shape
    assert mask.dtype == bool and mask.shape == (n,)
    assert mask.sum() == round(fraction * n)
    np.testing.assert_array_equal(noisy[~mask], original[~mask].astype(noisy.dtype))

    rows = noisy[mask].astype(np.float64)
    clean = original[mask]
    if kind == "gaussian":
        assert (rows != clean).all()
    elif kind == "outlier":
        assert ((rows > original.max(axis=0)) | (rows < original.min(axis=0))).all()
    else:
        col_mean = original.mean(axis=0)
        changed = rows != clean
        at_mean = np.isclose(rows, col_mean, rtol=1e-6, atol=0)
        assert (at_mean[changed]).all()
        assert (at_mean.sum(axis=1) >= math.ceil(d / 2)).all()


@pytest.mark.parametrize("kind", FEATURE_KINDS)
def test_corrupt_features_reproducible(kind):
    X = make_features("float64")
    a, mask_a = corrupt_features(X, 0.3, kind=kind, random_state=3)
    b, mask_b = corrupt_features(X, 0.3, kind=kind, random_state=3)
    c, _ = corrupt_features(X, 0.3, kind=kind, random_state=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mask_a, mask_b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_gaussian_noise_has_requested_scale(scale):
    X = make_features("float64", n_samples=20_000)
    X_noisy, mask = corrupt_features(X, 1.0, kind="gaussian", scale=scale, random_state=0)
    assert mask.all()
    ratio = (X_noisy - X).std(axis=0) / X.std(axis=0)
    np.testing.assert_allclose(ratio, scale, rtol=0.05)
    np.testing.assert_allclose((X_noisy - X).mean(axis=0) / X.std(axis=0), 0.0, atol=0.05)


def test_corrupt_features_constant_column_and_nan():
    X = np.column_stack([np.full(50, 4.0), np.linspace(0, 1, 50)])
    X[3, 1] = np.nan
    for kind in ("gaussian", "outlier"):
        X_noisy, mask = corrupt_features(X, 1.0, kind=kind, random_state=0)
        assert (X_noisy[:, 0] != 4.0).all()  # a zero std falls back to 1
        assert np.isnan(X_noisy[3, 1]) == (kind == "gaussian")
        assert np.isfinite(np.delete(X_noisy, 3, axis=0)).all()


def test_corrupt_features_single_feature_dropout():
    X = np.arange(10.0).reshape(-1, 1)
    X_noisy, mask = corrupt_features(X, 0.5, kind="dropout", random_state=0)
    np.testing.assert_array_equal(X_noisy[mask, 0], 4.5)


# --------------------------------------------------------------------------
# Invalid input
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"noise_rate": 1.0}, ValueError, r"noise_rate must be in \[0, 1\), got 1\.0"),
        ({"noise_rate": -0.1}, ValueError, r"noise_rate must be in \[0, 1\), got -0\.1"),
        ({"noise_rate": float("nan")}, ValueError, r"noise_rate must be in \[0, 1\), got nan"),
        ({"noise_rate": "0.1"}, TypeError, r"noise_rate must be a real number .*'0\.1'.*str"),
        ({"noise_rate": True}, TypeError, r"noise_rate must be a real number"),
        (
            {"kind": "uniform"},
            ValueError,
            r"kind must be one of 'symmetric', 'pair', 'instance', got 'uniform'",
        ),
        ({"kind": "instance"}, ValueError, r"X is required for kind='instance'"),
        (
            {"kind": "instance", "X": np.zeros((3, 2))},
            ValueError,
            r"X and y must have the same number of samples, got X with 3 and y with 6",
        ),
        (
            {"kind": "instance", "X": np.array([["a"]] * 6)},
            TypeError,
            r"X must be numeric .* got dtype <U1",
        ),
        (
            {"kind": "instance", "X": np.full((6, 2), np.nan)},
            ValueError,
            r"X must contain only finite values for kind='instance'",
        ),
        ({"y": np.array([1, 1, 1])}, ValueError, r"at least 2 distinct classes, got 1: \[1\]"),
        ({"y": np.zeros((6, 1))}, ValueError, r"y must be 1-dimensional.*\(6, 1\)"),
        ({"y": np.array([])}, ValueError, r"y must contain at least 1 sample"),
        ({"y": np.array([0.0, np.nan, 1.0])}, ValueError, r"y must not contain NaN"),
        (
            {"y": np.array(["a", None, 1], dtype=object)},
            TypeError,
            r"y must hold labels of one sortable type",
        ),
    ],
)
def test_add_label_noise_invalid(kwargs, error, match):
    params = {"y": np.array([0, 1, 2, 0, 1, 2]), "noise_rate": 0.2, **kwargs}
    with pytest.raises(error, match=match):
        add_label_noise(params.pop("y"), params.pop("noise_rate"), **params)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((1, 0.1), {}, ValueError, r"n_classes must be an integer >= 2, got 1"),
        ((2.5, 0.1), {}, TypeError, r"n_classes must be an integer >= 2, got 2\.5.*float"),
        ((3, 1.2), {}, ValueError, r"noise_rate must be in \[0, 1\), got 1\.2"),
        (
            (3, 0.1),
            {"kind": "instance"},
            ValueError,
            r"kind must be one of 'symmetric', 'pair', got 'instance'",
        ),
    ],
)
def test_noise_transition_matrix_invalid(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        noise_transition_matrix(*args, **kwargs)


@pytest.mark.parametrize(
    ("T", "kwargs", "error", "match"),
    [
        (
            np.ones((2, 3)) / 3,
            {},
            ValueError,
            r"square 2-D array of shape \(2, 2\).*got shape \(2, 3\)",
        ),
        (np.eye(3), {}, ValueError, r"transition_matrix .* shape \(2, 2\).*got shape \(3, 3\)"),
        ([[1.5, -0.5], [0, 1]], {}, ValueError, r"transition_matrix must be non-negative"),
        ([[np.nan, 1], [0, 1]], {}, ValueError, r"transition_matrix must contain only finite"),
        ([[0.5, 0.4], [0, 1]], {}, ValueError, r"rows must sum to 1 .*got row 0 summing to 0\.9;"),
        ([["a", "b"], ["c", "d"]], {}, TypeError, r"transition_matrix must be a numeric array"),
        (np.eye(2), {"classes": [0, 0]}, ValueError, r"classes must not contain duplicates"),
        (np.eye(2), {"classes": [0, 5]}, ValueError, r"y contains labels that are not in classes"),
        (np.eye(2), {"classes": [[0, 1]]}, ValueError, r"classes must be a 1-dimensional"),
    ],
)
def test_apply_transition_matrix_invalid(T, kwargs, error, match):
    with pytest.raises(error, match=match):
        apply_transition_matrix(np.array([0, 1, 1]), T, **kwargs)


@pytest.mark.parametrize(
    ("X", "kwargs", "error", "match"),
    [
        (
            np.zeros((4, 2)),
            {"fraction": 1.5},
            ValueError,
            r"fraction must be in \[0, 1\], got 1\.5",
        ),
        (np.zeros((4, 2)), {"fraction": None}, TypeError, r"fraction must be a real number"),
        (np.zeros((4, 2)), {"scale": 0}, ValueError, r"scale must be in \(0, inf\), got 0\.0"),
        (
            np.zeros((4, 2)),
            {"scale": "big"},
            TypeError,
            r"scale must be a real number in \(0, inf\), got 'big'",
        ),
        (
            np.zeros((4, 2)),
            {"kind": "salt"},
            ValueError,
            r"kind must be one of 'gaussian', 'outlier', 'dropout', got 'salt'",
        ),
        (np.zeros(4), {}, ValueError, r"X must be 2-dimensional, got an array of shape \(4,\)"),
        (np.zeros((0, 2)), {}, ValueError, r"X must have at least 1 sample and 1 feature"),
        (np.array([[1.0, np.inf]]), {}, ValueError, r"X must not contain infinite values"),
        (np.array([["a", "b"]]), {}, TypeError, r"X must be numeric .*got dtype <U1"),
        (
            pd.DataFrame({"x": [1.0, 2.0], "city": ["a", "b"]}),
            {},
            TypeError,
            r"X must have only numeric columns, got non-numeric columns \['city'\]",
        ),
    ],
)
def test_corrupt_features_invalid(X, kwargs, error, match):
    params = {"fraction": 0.5, **kwargs}
    with pytest.raises(error, match=match):
        corrupt_features(X, params.pop("fraction"), **params)


# --------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------


def test_public_api_and_docstring_examples():
    assert sorted(noise.__all__) == [
        "add_label_noise",
        "add_target_noise",
        "apply_transition_matrix",
        "corrupt_features",
        "noise_transition_matrix",
    ]
    for name in noise.__all__:
        doc = getattr(noise, name).__doc__
        for section in ("Parameters", "Returns", "Notes", "Examples", "See Also"):
            assert f"\n    {section}\n    ---" in doc, (name, section)
    result = doctest.testmod(noise, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0
