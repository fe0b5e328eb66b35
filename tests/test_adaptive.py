"""The default rule: the held-out self-check of weighting="adaptive"."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.datasets import make_blobs

from skrobust import RobustNetClassifier
from skrobust.modules import MLP
from skrobust.noise import add_label_noise
from skrobust.probe import held_out_split, probe_curve
from skrobust.rules import AdaptiveRule
from skrobust.selection import choose_recipe, held_out_gain

_rows = st.integers(1, 30)


@st.composite
def _pair(draw):
    n = draw(_rows)
    a = draw(arrays(bool, n))
    b = draw(arrays(bool, n))
    return a, b


@st.composite
def _curves(draw):
    epochs, n = draw(st.integers(1, 6)), draw(_rows)
    return draw(arrays(bool, (epochs, n))), draw(arrays(bool, (epochs, n)))


# ---------------------------------------------------------------- pure functions
@given(_pair())
def test_held_out_gain_is_antisymmetric_and_bounded(pair):
    a, b = pair
    gain, se = held_out_gain(a, b)
    back, se_back = held_out_gain(b, a)
    assert gain == -back and se == se_back >= 1
    assert abs(gain) <= round(se ** 2)
    assert gain == int(a.sum()) - int(b.sum())


@given(_curves(), st.floats(0, 5))
@settings(max_examples=60)
def test_recipe_is_plain_when_nothing_beats_plain_training(curves, alpha):
    plain, _ = curves
    # The selecting probe no better than plain's last epoch anywhere, plain best at the end.
    plain = plain.copy()
    plain[-1] = plain.any(0)
    select = np.broadcast_to(plain[-1], plain.shape) & False
    recipe = choose_recipe(plain, select, alpha=alpha)
    assert recipe == {**recipe, "mode": "plain", "epochs": len(plain)}


@given(_curves(), st.floats(0, 3), st.floats(0, 3))
@settings(max_examples=60)
def test_a_larger_alpha_never_opens_what_a_smaller_one_kept_closed(curves, a, b):
    low, high = sorted((a, b))
    closed = choose_recipe(*curves, alpha=low)
    if closed["mode"] == "plain" and closed["epochs"] == len(curves[0]):
        stricter = choose_recipe(*curves, alpha=high)
        assert stricter["mode"] == "plain" and stricter["epochs"] == len(curves[0])


@given(_curves())
@settings(max_examples=60)
def test_a_chosen_candidate_beats_plain_by_the_margin(curves):
    recipe = choose_recipe(*curves, alpha=1.0)
    if recipe["mode"] != "plain" or recipe["epochs"] != len(curves[0]):
        assert any(g > 1.0 * se for g, se in recipe["gains"].values())
    assert 1 <= recipe["epochs"] <= len(curves[0])


def test_alpha_decides_a_close_call():
    # Selection gets 3 more held-out rows right than plain, on 3 disagreements: se = sqrt(3).
    plain = np.array([[True] * 5 + [False] * 3 + [True] * 4])
    select = np.array([[True] * 5 + [True] * 3 + [True] * 4])
    assert choose_recipe(plain, select, alpha=1.0)["mode"] == "select"
    assert choose_recipe(plain, select, alpha=2.0)["mode"] == "plain"


def test_choose_recipe_rejects_mismatched_curves():
    with pytest.raises(ValueError, match="one shape"):
        choose_recipe(np.ones((2, 3), bool), np.ones((3, 3), bool))


def test_held_out_split_is_stratified_and_refuses_tiny_data():
    labels = torch.tensor([0] * 60 + [1] * 120)
    train, held = held_out_split(labels, 2, generator=torch.Generator().manual_seed(0))
    assert len(set(train.tolist()) & set(held.tolist())) == 0
    assert len(train) + len(held) == 180
    assert (labels[held] == 0).sum() == 20 and (labels[held] == 1).sum() == 40
    # below 50 held-out rows: no check (the fit trains plainly)
    assert held_out_split(torch.tensor([0, 1] * 70), 2) is None


def test_probe_curve_leaves_the_module_alone_and_is_repeatable():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(60, 4, generator=gen)
    y = (X[:, 0] > 0).long()
    module = MLP(n_features=4, n_classes=2, random_state=0)
    before = [p.clone() for p in module.parameters()]
    train, held = torch.arange(40), torch.arange(40, 60)

    def run(select):
        return probe_curve(
            module, torch.nn.CrossEntropyLoss(reduction="none"),
            lambda params: torch.optim.Adam(params, lr=1e-2), X, y, train, held,
            epochs=4, batch_size=16, generator=torch.Generator().manual_seed(1),
            select=select, warmup_epochs=1)

    first = run(True)
    assert first.shape == (4, 20) and first.dtype == bool
    np.testing.assert_array_equal(first, run(True))
    assert run(False)[-1].mean() > 0.8  # it learns
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


# ---------------------------------------------------------------- behaviour
def _blobs(rate, seed=0):
    X, y = make_blobs(n_samples=300, centers=3, n_features=20, cluster_std=3.0,
                      random_state=seed)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    noisy = add_label_noise(y, rate, random_state=seed) if rate else y
    return X, y, noisy


def _net(**params):
    # A high learning rate: the network memorises the flipped labels within the fit.
    return RobustNetClassifier(**{"max_epochs": 30, "batch_size": 32, "lr": 5e-3,
                                  "random_state": 0, "verbose": 0, **params})


def test_clean_separable_data_trains_plainly_and_flags_nothing():
    X, y, _ = _blobs(0.0)
    net = _net().fit(X, y)
    assert net.adaptive_recipe_["mode"] == "plain"
    assert net.adaptive_recipe_["epochs"] == 30 and len(net.history) == 30
    assert net.label_issues_.mean() <= 0.02


def test_flipped_labels_are_found_and_training_changes():
    X, y, noisy = _blobs(0.3)
    net = _net().fit(X, noisy)
    recipe = net.adaptive_recipe_
    assert not (recipe["mode"] == "plain" and recipe["epochs"] == 30)
    flags, flipped = net.label_issues_, noisy != y
    assert flags.sum() > 0.3 * flipped.sum()
    assert (flags & flipped).sum() / flags.sum() >= 0.8
    # the fit followed the recipe: it stopped where the recipe said
    assert len(net.history) == recipe["epochs"]


def test_alpha_acts_in_the_default_mode():
    X, _, noisy = _blobs(0.3)
    strict = _net(alpha=1e6).fit(X, noisy)
    assert strict.adaptive_recipe_["mode"] == "plain"
    assert len(strict.history) == 30 and not strict.label_issues_.any()
    loose = _net(alpha=0.0).fit(X, noisy)
    assert len(loose.history) < 30 or loose.adaptive_recipe_["mode"] == "select"


def test_warmup_epochs_acts_on_the_selection():
    rule = AdaptiveRule(warmup_epochs=3)
    rule.recipe = {"mode": "select", "epochs": 10, "gains": {}}
    assert not rule.is_active(3) and rule.is_active(4)
    rule.recipe = {"mode": "plain", "epochs": 10, "gains": {}}
    assert not rule.is_active(4)


def test_a_continued_fit_keeps_the_recipe_mode():
    X, _, noisy = _blobs(0.3)
    net = _net(max_epochs=5, warmup_epochs=2, warm_start=True).fit(X, noisy)
    mode = net.adaptive_recipe_["mode"]
    net.fit(X, noisy)
    assert net.adaptive_recipe_["mode"] == mode
