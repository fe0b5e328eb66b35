"""add_target_noise: exact counts, the three kinds, the mask, checks."""

import numpy as np
import pandas as pd
import pytest

from skrobust.noise import add_target_noise


@pytest.fixture
def y():
    return np.random.default_rng(0).normal(100.0, 15.0, size=200)


@pytest.mark.parametrize("kind", ["gross", "swap", "gaussian"])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3])
def test_exact_share_and_mask(y, kind, rate):
    before = y.copy()
    y_noisy, mask = add_target_noise(y, rate, kind=kind, random_state=0, return_mask=True)
    np.testing.assert_array_equal(y, before)  # input untouched
    assert mask.dtype == bool and mask.shape == y.shape
    assert mask.sum() == round(rate * len(y))
    np.testing.assert_array_equal(mask, y_noisy != y)


def test_gross_moves_far_either_side(y):
    y_noisy, mask = add_target_noise(y, 0.2, kind="gross", random_state=0, return_mask=True)
    iqr_sd = np.subtract(*np.percentile(y, [75, 25])) / 1.349
    moves = (y_noisy - y)[mask] / iqr_sd
    assert (np.abs(moves) >= 3 - 1e-9).all() and (np.abs(moves) <= 6 + 1e-9).all()
    assert (moves > 0).any() and (moves < 0).any()
    scaled = add_target_noise(y, 0.2, kind="gross", scale=10.0, random_state=0)
    np.testing.assert_allclose(scaled - y, 10 * (y_noisy - y))


def test_swap_permutes_the_chosen_targets(y):
    y_noisy, mask = add_target_noise(y, 0.3, kind="swap", random_state=1, return_mask=True)
    np.testing.assert_allclose(np.sort(y_noisy), np.sort(y))
    assert set(y_noisy[mask]) == set(y[mask])


def test_swap_of_equal_values_is_not_in_the_mask():
    y = np.r_[np.zeros(50), np.ones(50)]
    y_noisy, mask = add_target_noise(y, 0.4, kind="swap", random_state=0, return_mask=True)
    np.testing.assert_array_equal(mask, y_noisy != y)
    assert mask.sum() < 40


def test_gaussian_is_heteroscedastic():
    y = np.linspace(0.0, 1.0, 20000)
    y_noisy = add_target_noise(y, 0.99, kind="gaussian", random_state=0)
    low, high = (y_noisy - y)[:5000].std(), (y_noisy - y)[-5000:].std()
    assert high > 1.8 * low


def test_two_targets_corrupted_row_by_row(y):
    Y = np.c_[y, -y * 1000]
    Y_noisy, mask = add_target_noise(Y, 0.25, kind="gross", random_state=0, return_mask=True)
    assert Y_noisy.shape == Y.shape and mask.sum() == 50
    assert ((Y_noisy != Y).all(axis=1) == mask).all()


def test_deterministic_and_accepts_series(y):
    a = add_target_noise(pd.Series(y), 0.2, kind="swap", random_state=3)
    b = add_target_noise(y, 0.2, kind="swap", random_state=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, add_target_noise(y, 0.2, kind="swap", random_state=4))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(rate=1.0), ValueError, "rate must be in"),
    (dict(rate=-0.1), ValueError, "rate must be in"),
    (dict(rate=0.1, kind="flip"), ValueError, "kind"),
    (dict(rate=0.1, scale=0.0), ValueError, "scale must be in"),
    (dict(rate=0.1, return_mask=1), TypeError, "return_mask"),
])
def test_bad_arguments(y, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        add_target_noise(y, **kwargs)


@pytest.mark.parametrize("bad,exc,match", [
    (np.array(["a", "b"]), TypeError, "y must hold numbers"),
    (np.array([1.0, np.nan]), ValueError, "finite"),
    (np.zeros((2, 2, 2)), ValueError, "1-D or 2-D"),
])
def test_bad_targets(bad, exc, match):
    with pytest.raises(exc, match=match):
        add_target_noise(bad, 0.5)
