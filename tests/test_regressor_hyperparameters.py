"""Every hyperparameter of RobustNetRegressor changes what the estimator does.

Each test compares values of one hyperparameter whose effects must differ (in
the recorded weights, the flagged rows or the fitted parameters), so that it
fails if the estimator ignored the value.
"""

import numpy as np
import pytest
import torch

from skrobust import RobustNetRegressor
from skrobust.losses import HuberLoss
from skrobust.noise import add_target_noise


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(192, 4)).astype(np.float32)
    y = X[:, 0] - 2 * X[:, 1] + 0.1 * rng.normal(size=192)
    y_bad = add_target_noise(y, 0.2, kind="gross", random_state=0)
    return X, 1000.0 * y_bad


def reg(**params):
    settings = dict(max_epochs=3, batch_size=32, random_state=0, verbose=0, warmup_epochs=0,
                    module__hidden_layer_sizes=(8,))
    settings.update(params)
    return RobustNetRegressor(**settings)


def weight_means(net):
    return np.array(net.history[:, "weight_mean"])


def parameters(net):
    return torch.cat([p.detach().flatten() for p in net.module_.parameters()])


def test_weighting(data):
    X, y = data
    plain = reg(weighting="none", max_epochs=8, lr=1e-2).fit(X, y)
    adaptive = reg(weighting="adaptive", max_epochs=8, lr=1e-2).fit(X, y)
    np.testing.assert_array_equal(weight_means(plain), 1.0)
    assert weight_means(adaptive)[-1] < 0.9


def test_stats(data):
    X, y = data
    a = reg(weighting="truncate", alpha=0.0, stats="mean_std").fit(X, y)
    b = reg(weighting="truncate", alpha=0.0, stats="median_iqr").fit(X, y)
    assert not np.allclose(weight_means(a), weight_means(b))


def test_alpha(data):
    X, y = data
    cut = reg(weighting="truncate", alpha=0.0).fit(X, y)
    keep = reg(weighting="truncate", alpha=float("inf")).fit(X, y)
    assert weight_means(cut).max() < 0.8
    np.testing.assert_array_equal(weight_means(keep), 1.0)


def test_beta(data):
    X, y = data
    cut = reg(weighting="truncate", alpha=float("inf"), beta=0.0).fit(X, y)
    keep = reg(weighting="truncate", alpha=float("inf"), beta=float("inf")).fit(X, y)
    assert weight_means(cut).max() < 0.8
    np.testing.assert_array_equal(weight_means(keep), 1.0)


def test_warmup_epochs(data):
    X, y = data
    early = reg(warmup_epochs=2, max_epochs=6, lr=1e-2).fit(X, y)
    late = reg(warmup_epochs=5, max_epochs=6, lr=1e-2).fit(X, y)
    np.testing.assert_array_equal(weight_means(early)[:2], 1.0)
    assert weight_means(early)[2] < 1.0
    np.testing.assert_array_equal(weight_means(late)[:5], 1.0)


def test_normalize_weights(data):
    X, y = data
    plain = reg(weighting="truncate", alpha=0.0, normalize_weights=False).fit(X, y)
    normalized = reg(weighting="truncate", alpha=0.0, normalize_weights=True).fit(X, y)
    # the same weights in the first step, but a different step size
    assert not torch.allclose(parameters(plain), parameters(normalized))


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_forget_rate(data, rate):
    X, y = data
    net = reg(weighting="small_loss", forget_rate=rate).fit(X, y)
    assert weight_means(net)[-1] == pytest.approx(1 - rate, abs=0.04)


@pytest.mark.parametrize("engine", ["ghost", "generic"])
def test_grad_engine(data, engine):
    X, y = data
    net = reg(grad_engine=engine).fit(X, y)
    assert net.grad_engine_ == engine


def test_random_state(data):
    X, y = data
    a, b, c = (reg(random_state=s).fit(X, y).predict(X) for s in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_criterion_lr_max_epochs_batch_size(data):
    X, y = data
    base = reg(weighting="none").fit(X, y)
    for params in (dict(criterion=HuberLoss), dict(lr=1e-2), dict(max_epochs=4),
                   dict(batch_size=64)):
        other = reg(weighting="none", **params).fit(X, y)
        assert not torch.allclose(parameters(base), parameters(other)), params
    assert len(reg(max_epochs=4).fit(X, y).history) == 4
    assert len(reg(batch_size=64).fit(X, y).history[-1]["batches"]) == 3


def test_module_hidden_layer_sizes(data):
    X, y = data
    net = reg(module__hidden_layer_sizes=(5, 7)).fit(X, y)
    assert [m.out_features for m in net.module_.layers if hasattr(m, "out_features")] \
        == [5, 7, 1]
