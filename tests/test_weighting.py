"""The weighting rules, on their own: norms in, weights out."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skrobust import compute_weights
from skrobust.weighting import STATS, WEIGHTINGS, batch_statistics

finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
anything = st.floats(allow_nan=True, allow_infinity=True, width=32)
thresholds = st.one_of(st.floats(min_value=0, max_value=10), st.just(math.inf))


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("stats", STATS)
@settings(max_examples=60, deadline=None)
@given(norms=st.lists(anything, min_size=0, max_size=40), alpha=thresholds, beta=thresholds)
def test_weights_in_unit_interval_and_never_nan(weighting, stats, norms, alpha, beta):
    w = compute_weights(torch.tensor(norms, dtype=torch.float32), weighting=weighting,
                        stats=stats, alpha=alpha, beta=beta)
    assert w.shape == (len(norms),)
    assert not torch.isnan(w).any()
    assert ((w >= 0) & (w <= 1)).all()


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("stats", STATS)
@settings(max_examples=30, deadline=None)
@given(value=finite, size=st.integers(1, 30))
def test_zero_spread_or_single_sample_gives_ones(weighting, stats, value, size):
    w = compute_weights(torch.full((size,), value, dtype=torch.float64),
                        weighting=weighting, stats=stats, alpha=0.0, beta=0.0)
    assert torch.equal(w, torch.ones(size, dtype=torch.float64))


@pytest.mark.parametrize("weighting", ["truncate", "soft"])
@pytest.mark.parametrize("stats", STATS)
@settings(max_examples=60, deadline=None)
@given(norms=st.lists(finite, min_size=2, max_size=40), alpha=thresholds, beta=thresholds)
def test_weights_never_increase_with_distance_from_centre(weighting, stats, norms, alpha,
                                                           beta):
    g = torch.tensor(norms, dtype=torch.float64)
    w = compute_weights(g, weighting=weighting, stats=stats, alpha=alpha, beta=beta)
    mu, _ = batch_statistics(g, stats)
    for side in (g >= mu, g <= mu):
        dist, weights = (g[side] - mu).abs(), w[side]
        order = torch.argsort(dist)
        assert (torch.diff(weights[order]) <= 1e-12).all()


def test_truncate_matches_the_original_method_formula():
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    mu, sigma = g.mean(), g.std()  # ddof=1
    for alpha, beta in [(1.0, 1.0), (0.5, 0.2), (2.0, math.inf)]:
        expected = ((g <= mu + alpha * sigma) & (g >= mu - beta * sigma)).float()
        got = compute_weights(g, weighting="truncate", alpha=alpha, beta=beta)
        assert torch.equal(got, expected)


def test_soft_matches_the_original_method_formula():
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0], dtype=torch.float64)
    mu, sigma = g.mean(), g.std()
    expected = torch.exp(-(g - mu) ** 2 / (2 * sigma**2))
    torch.testing.assert_close(compute_weights(g, weighting="soft"), expected)


def test_median_iqr_statistics():
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0], dtype=torch.float64)
    mu, sigma = batch_statistics(g, "median_iqr")
    q25, q75 = np.percentile(g.numpy(), [25, 75])
    assert mu.item() == pytest.approx(3.0)
    assert sigma.item() == pytest.approx((q75 - q25) / 1.349)
    w = compute_weights(g, stats="median_iqr", alpha=2.0, beta=2.0)
    assert w.tolist() == [1, 1, 1, 1, 0]


def test_non_finite_norms_get_zero_weight_and_are_ignored():
    g = torch.tensor([1.0, 1.2, float("nan"), 0.8, float("inf")])
    w = compute_weights(g, weighting="truncate", alpha=2.0, beta=2.0)
    assert w.tolist() == [1, 1, 0, 1, 0]


def test_accepts_numpy_and_lists():
    assert compute_weights(np.array([1.0, 1.0, 9.0, 1.0]), alpha=1.0).tolist() == [1, 1, 0, 1]
    assert compute_weights([2, 2, 2]).dtype.is_floating_point


@pytest.mark.parametrize("kwargs, match", [
    ({"weighting": "hard"}, "weighting must be one of"),
    ({"stats": "mad"}, "stats must be one of"),
    ({"alpha": -1}, "alpha must be a number >= 0"),
    ({"beta": float("nan")}, "beta must be a number >= 0"),
    ({"alpha": "1"}, "alpha must be a number >= 0"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_weights([1.0, 2.0], **kwargs)


@settings(max_examples=60, deadline=None)
@given(losses=st.lists(finite, min_size=1, max_size=50),
       rate=st.floats(min_value=0, max_value=0.99))
def test_small_loss_keeps_the_smallest_share(losses, rate):
    from skrobust.weighting import small_loss_weights

    t = torch.tensor(losses, dtype=torch.float64)
    w = small_loss_weights(t, rate)
    keep = max(1, round((1 - rate) * len(losses)))
    assert int(w.sum()) == keep
    if keep < len(losses):
        assert t[w == 1].max() <= t[w == 0].min()


def test_small_loss_drops_non_finite_and_validates():
    from skrobust.weighting import small_loss_weights

    w = small_loss_weights(torch.tensor([0.1, float("nan"), 0.2]), 0.0)
    assert w.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="forget_rate must be in"):
        small_loss_weights(torch.tensor([1.0]), 1.0)
