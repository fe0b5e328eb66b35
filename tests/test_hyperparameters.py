"""Every hyperparameter of RobustNetClassifier changes what the estimator does.

Each test compares two values of one hyperparameter whose effects must differ,
or checks the effect against an independent reference (:mod:`_reference`), so
that it fails if the estimator ignored the value (read its default or a
constant instead).
"""

import math
import warnings
from functools import partial

import numpy as np
import pytest
import torch
from _reference import (
    assert_step,
    expected_step,
    flat_parameters,
    one_step,
    per_sample_gradients,
    soft_weights,
    truncate_weights,
)

N_ROWS = 96


@pytest.fixture(scope="module")
def data(small_data):
    X, y = small_data
    return X[:N_ROWS].astype(np.float32), y[:N_ROWS]


@pytest.fixture(scope="module")
def noisy_data(small_data):
    """All 300 rows, 30% of the labels moved to another class."""
    X, y = small_data
    rng = np.random.default_rng(0)
    flip = rng.random(len(y)) < 0.3
    y_noisy = y.copy()
    y_noisy[flip] = (y[flip] + rng.integers(1, 3, flip.sum())) % 3
    return X.astype(np.float32), y_noisy


@pytest.fixture(scope="module")
def tiny_net(make_net):
    """The suite's small classifier, narrower, two epochs, no warm-up."""
    return partial(make_net, module__hidden_layer_sizes=(8,), max_epochs=2, warmup_epochs=0)


def per_sample_losses(module, X, y):
    with torch.no_grad():
        logits = module(torch.as_tensor(X))
        return torch.nn.functional.cross_entropy(logits, torch.as_tensor(y),
                                                 reduction="none").double()


# ---------------------------------------------------------------- weighting
@pytest.mark.parametrize("weighting", ["truncate", "soft", "none"])
def test_weighting_sets_the_batch_rule(data, weighting):
    X, y = data
    params = {"alpha": 0.0} if weighting == "truncate" else {}
    module, before, after, _ = one_step(X, y, weighting=weighting, **params)
    grads, norms = per_sample_gradients(module, X, y)
    weights = {
        "truncate": lambda: truncate_weights(norms, alpha=0.0, beta=math.inf),
        "soft": lambda: soft_weights(norms),
        "none": lambda: torch.ones(len(y), dtype=torch.float64),
    }[weighting]()
    assert_step(before, after, expected_step(grads, weights))


# -------------------------------------------------------------------- stats
@pytest.mark.parametrize("stats", ["mean_std", "median_iqr"])
def test_stats_sets_centre_and_spread(data, stats):
    X, y = data
    module, before, after, _ = one_step(X, y, weighting="truncate", stats=stats, alpha=0.5)
    grads, norms = per_sample_gradients(module, X, y)
    weights = truncate_weights(norms, alpha=0.5, beta=math.inf, stats=stats)
    other = "median_iqr" if stats == "mean_std" else "mean_std"
    assert not torch.equal(weights, truncate_weights(norms, alpha=0.5, beta=math.inf,
                                                     stats=other))
    assert_step(before, after, expected_step(grads, weights))


# ------------------------------------------------------------ alpha and beta
@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_alpha_sets_the_upper_cut(data, alpha):
    X, y = data
    module, before, after, _ = one_step(X, y, weighting="truncate", alpha=alpha)
    grads, norms = per_sample_gradients(module, X, y)
    weights = truncate_weights(norms, alpha=alpha, beta=math.inf)
    assert 0 < weights.sum() < len(y)
    assert not torch.equal(weights, truncate_weights(norms, alpha=0.7 - alpha, beta=math.inf))
    assert_step(before, after, expected_step(grads, weights))


@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_beta_sets_the_lower_cut(data, beta):
    X, y = data
    module, before, after, _ = one_step(X, y, weighting="truncate", alpha=math.inf, beta=beta)
    grads, norms = per_sample_gradients(module, X, y)
    weights = truncate_weights(norms, alpha=math.inf, beta=beta)
    assert 0 < weights.sum() < len(y)
    assert not torch.equal(weights, truncate_weights(norms, alpha=math.inf, beta=1.3 - beta))
    assert_step(before, after, expected_step(grads, weights))


# ------------------------------------------------------------ warmup_epochs
@pytest.mark.parametrize("warmup_epochs", [0, 1, 2])
def test_warmup_epochs_delays_the_rule(data, warmup_epochs, tiny_net):
    X, y = data
    net = tiny_net(weighting="truncate", alpha=0.0, warmup_epochs=warmup_epochs,
                   max_epochs=3).fit(X, y)
    means = net.history[:, "weight_mean"]
    assert means[:warmup_epochs] == [1.0] * warmup_epochs
    assert all(m < 0.9 for m in means[warmup_epochs:])


@pytest.mark.parametrize("warmup_epochs", [1, 2])
def test_warmup_epochs_ramps_the_forget_rate(data, warmup_epochs, tiny_net):
    X, y = data
    net = tiny_net(weighting="small_loss", forget_rate=0.5, warmup_epochs=warmup_epochs,
                   batch_size=N_ROWS, max_epochs=3).fit(X, y)
    rates = [min(epoch / warmup_epochs, 1.0) * 0.5 for epoch in (1, 2, 3)]
    expected = [round((1 - rate) * N_ROWS) / N_ROWS for rate in rates]
    assert net.history[:, "weight_mean"] == pytest.approx(expected)


# -------------------------------------------------------- normalize_weights
@pytest.mark.parametrize("normalize", [False, True])
def test_normalize_weights_divides_by_the_mean_weight(data, normalize):
    X, y = data
    module, before, after, _ = one_step(X, y, weighting="truncate", alpha=0.0,
                                        normalize_weights=normalize)
    grads, norms = per_sample_gradients(module, X, y)
    weights = truncate_weights(norms, alpha=0.0, beta=math.inf)
    assert weights.mean() < 0.8  # dividing by it must show
    assert_step(before, after, expected_step(grads, weights, normalize=normalize))


# -------------------------------------------------------------- forget_rate
@pytest.mark.parametrize("forget_rate", [0.25, 0.5])
def test_forget_rate_drops_the_largest_losses(data, forget_rate):
    X, y = data
    module, before, after, _ = one_step(X, y, weighting="small_loss",
                                        forget_rate=forget_rate)
    grads, _ = per_sample_gradients(module, X, y)
    losses = per_sample_losses(module, X, y)
    keep = round((1 - forget_rate) * len(y))
    weights = torch.zeros(len(y), dtype=torch.float64)
    weights[torch.argsort(losses)[:keep]] = 1.0
    assert_step(before, after, expected_step(grads, weights))


def test_forget_rate_auto_is_the_flagged_share(noisy_data, tiny_net):
    # "auto": each epoch leaves out the share of rows label_issues_ flagged after
    # the one before. The first fit stops where the second's last epoch begins.
    X, y = noisy_data
    params = dict(weighting="small_loss", forget_rate="auto", lr=0.02)
    first = tiny_net(max_epochs=3, **params).fit(X, y)
    second = tiny_net(max_epochs=4, **params).fit(X, y)
    rate = first.label_issues_.mean()
    assert rate > 0.05
    batches = [32] * (len(y) // 32) + [len(y) % 32]
    kept = sum(max(1, round((1 - rate) * b)) for b in batches)
    assert second.history[-1, "weight_mean"] == pytest.approx(kept / len(y))
    assert second.history[0, "weight_mean"] == 1.0  # nothing flagged before the first epoch


# ---------------------------------------------------------- loss_correction
def test_loss_correction_forward_trains_on_the_corrected_loss(noisy_data, tiny_net):
    X, y = noisy_data
    plain = tiny_net(weighting="none", warmup_epochs=1, max_epochs=2).fit(X, y)
    forward = tiny_net(weighting="none", warmup_epochs=1, max_epochs=2,
                       loss_correction="forward").fit(X, y)
    assert not hasattr(plain, "transition_matrix_")
    T = forward.transition_matrix_
    assert T.shape == (3, 3)
    np.testing.assert_allclose(T.sum(axis=1), 1.0)
    # The first (warm-up) epoch is the same; the second trains on another loss.
    assert forward.history[0, "train_loss"] == pytest.approx(plain.history[0, "train_loss"])
    assert not torch.allclose(flat_parameters(forward.module_), flat_parameters(plain.module_))


# -------------------------------------------------------------- grad_engine
@pytest.mark.parametrize(("grad_engine", "used"),
                         [("auto", "ghost"), ("ghost", "ghost"), ("generic", "generic")])
def test_grad_engine_is_the_one_used(data, grad_engine, used):
    X, y = data
    module, before, after, net = one_step(X, y, weighting="truncate", alpha=0.0,
                                          grad_engine=grad_engine)
    assert net.grad_engine_ == used
    grads, norms = per_sample_gradients(module, X, y)
    assert_step(before, after, expected_step(grads, truncate_weights(
        norms, alpha=0.0, beta=math.inf)))


# ------------------------------------------------------------- random_state
def test_random_state_sets_the_initial_weights_and_shuffling(data, tiny_net):
    X, y = data
    first = [flat_parameters(tiny_net(random_state=s, max_epochs=0).fit(X, y).module_)
             for s in (1, 2)]
    assert not torch.equal(first[0], first[1])
    again = flat_parameters(tiny_net(random_state=1, max_epochs=0).fit(X, y).module_)
    assert torch.equal(again, first[0])
    proba = [tiny_net(random_state=s).fit(X, y).predict_proba(X) for s in (1, 1, 2)]
    np.testing.assert_array_equal(proba[0], proba[1])
    assert not np.allclose(proba[0], proba[2])


# ----------------------------------------------- lr, max_epochs, batch_size
@pytest.mark.parametrize("lr", [0.05, 0.5])
def test_lr_scales_the_step(data, lr):
    X, y = data
    module, before, after, _ = one_step(X, y, weighting="none", lr=lr)
    grads, _ = per_sample_gradients(module, X, y)
    ones = torch.ones(len(y), dtype=torch.float64)
    assert_step(before, after, expected_step(grads, ones, lr=lr))


@pytest.mark.parametrize("max_epochs", [1, 3])
def test_max_epochs_is_the_number_of_epochs(data, max_epochs, tiny_net):
    X, y = data
    net = tiny_net(max_epochs=max_epochs).fit(X, y)
    assert len(net.history) == max_epochs


@pytest.mark.parametrize(("max_epochs", "warns"), [(2, True), (3, False)])
def test_max_epochs_against_the_warm_up(data, max_epochs, warns, tiny_net):
    X, y = data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_net(weighting="truncate", warmup_epochs=2, max_epochs=max_epochs).fit(X, y)
    assert any("never acts" in str(w.message) for w in caught) == warns


@pytest.mark.parametrize(("batch_size", "n_batches"), [(32, 3), (40, 3), (-1, 1), (96, 1)])
def test_batch_size_sets_the_batches(data, batch_size, n_batches, tiny_net):
    X, y = data
    net = tiny_net(batch_size=batch_size, max_epochs=1).fit(X, y)
    sizes = [b["train_batch_size"] for b in net.history[-1, "batches"]]
    expected = N_ROWS if batch_size == -1 else batch_size
    assert len(sizes) == n_batches
    assert sizes[0] == expected and sum(sizes) == N_ROWS
