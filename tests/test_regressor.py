"""RobustNetRegressor: targets on their own scale, several targets, corrupted rows found."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.dataset import ValidSplit

from skrobust import RobustNetRegressor
from skrobust.losses import HuberLoss, TukeyBiweightLoss
from skrobust.noise import add_target_noise


def make_data(n=300, d=5, noise=0.3, seed=0):
    """A smooth nonlinear target with Gaussian noise, float64 X and y."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.sin(X[:, 0]) + X[:, 1] + 0.5 * X[:, 2] * X[:, 3] + noise * rng.normal(size=n)
    return X, y


def net(**params):
    settings = dict(max_epochs=30, warmup_epochs=5, random_state=0, verbose=0,
                    module__hidden_layer_sizes=(32, 32), lr=3e-3)
    settings.update(params)
    return RobustNetRegressor(**settings)


@pytest.fixture(scope="module")
def data():
    return make_data()


def test_fit_predict_1d(data):
    X, y = data
    reg = net().fit(X, y)
    pred = reg.predict(X)
    assert pred.shape == (len(y),) and pred.dtype == np.float64
    assert reg.score(X, y) > 0.8
    assert reg.n_targets_ == 1 and reg.n_features_in_ == X.shape[1]


def test_targets_on_their_own_scale_need_no_scaling(data):
    """An affine change of y changes the predictions by the same map, nothing else."""
    X, y = data
    small = net().fit(X, y).predict(X)
    large = net().fit(X, 2000.0 * y + 3e5).predict(X)
    np.testing.assert_allclose(large, 2000.0 * small + 3e5, rtol=1e-4, atol=5.0)


def test_target_scaling_is_not_dragged_by_corrupted_targets(data):
    X, y = data
    y_bad = add_target_noise(y, 0.2, kind="gross", scale=100.0, random_state=0)
    reg = net(max_epochs=1, warmup_epochs=0).fit(X, y_bad)
    clean = net(max_epochs=1, warmup_epochs=0).fit(X, y)
    assert abs(reg.target_center_[0] - clean.target_center_[0]) < 0.3 * clean.target_scale_[0]
    assert 0.7 < reg.target_scale_[0] / clean.target_scale_[0] < 1.5
    # whereas the standard deviation is dragged a hundredfold
    assert y_bad.std() > 20 * y.std()


def test_two_targets(data):
    X, y = data
    Y = np.c_[y, -3.0 * y + 10.0]
    reg = net().fit(X, Y)
    pred = reg.predict(X)
    assert pred.shape == (len(y), 2) and reg.n_targets_ == 2
    assert reg.module_.layers[-1].out_features == 2
    assert r2_score(Y, pred, multioutput="raw_values").min() > 0.8
    assert reg.noise_scores_.shape == (len(y),)


def test_column_y_keeps_its_shape(data):
    X, y = data
    pred = net(max_epochs=2, warmup_epochs=0).fit(X, y[:, None]).predict(X)
    assert pred.shape == (len(y), 1)


def test_default_rule_finds_and_leaves_out_gross_errors(data):
    X, y = data
    y_bad, mask = add_target_noise(y, 0.2, kind="gross", random_state=0, return_mask=True)
    reg = net().fit(X, y_bad)
    assert roc_auc_score(mask, reg.noise_scores_) > 0.98
    flags = reg.target_issues_
    assert flags.dtype == bool and flags.shape == mask.shape
    assert mask[flags].mean() > 0.9 and flags[mask].mean() > 0.8
    # the flagged rows were left out: the mean weight of the last epoch is the kept share
    assert reg.history[-1, "weight_mean"] == pytest.approx(1 - flags.mean(), abs=0.03)
    plain = net(weighting="none").fit(X, y_bad)
    clean_fit = net(weighting="none").fit(X, y)
    X_test, y_test = make_data(seed=1)
    assert reg.score(X_test, y_test) > plain.score(X_test, y_test) + 0.2
    assert reg.score(X_test, y_test) > clean_fit.score(X_test, y_test) - 0.1


def test_default_rule_flags_almost_nothing_on_clean_gaussian_targets(data):
    X, y = data
    reg = net().fit(X, y)
    assert reg.target_issues_.mean() < 0.02


def test_noise_scores_nan_for_rows_held_out(data):
    X, y = data
    reg = net(max_epochs=3, train_split=ValidSplit(0.25, random_state=0)).fit(X, y)
    scores = reg.noise_scores_
    assert np.isnan(scores).sum() == round(0.25 * len(y))
    assert not reg.target_issues_[np.isnan(scores)].any()


@pytest.mark.parametrize("criterion", [HuberLoss, TukeyBiweightLoss, torch.nn.L1Loss])
def test_robust_criteria_train(data, criterion):
    X, y = data
    reg = net(criterion=criterion, weighting="none").fit(X, y)
    assert reg.score(X, y) > 0.7


@pytest.mark.parametrize("weighting", ["truncate", "soft", "small_loss", "none"])
def test_other_rules_work_unchanged(data, weighting):
    X, y = data
    reg = net(weighting=weighting).fit(X, y)
    assert np.isfinite(reg.predict(X)).all()
    assert reg.history[-1, "weight_mean"] <= 1.0


def test_partial_fit_keeps_scaling_and_memories(data):
    X, y = data
    reg = net(max_epochs=2)
    reg.partial_fit(X, y)
    center, memory = reg.target_center_.copy(), reg.prediction_memory_
    reg.partial_fit(X, y + 100.0)
    np.testing.assert_array_equal(reg.target_center_, center)
    assert reg.prediction_memory_ is memory and len(reg.history) == 4
    with pytest.raises(ValueError, match="y has 2 targets, but RobustNetRegressor was fitted"):
        reg.partial_fit(X, np.c_[y, y])


def test_sample_weight_changes_the_fit(data):
    X, y = data
    weights = np.where(X[:, 0] > 0, 5.0, 0.2)
    a = net(max_epochs=3).fit(X, y).predict(X)
    b = net(max_epochs=3).fit(X, y, sample_weight=weights).predict(X)
    assert not np.allclose(a, b)


def test_pipeline_grid_search_clone_pickle(data):
    X, y = data
    pipe = make_pipeline(StandardScaler(), net(max_epochs=3))
    search = GridSearchCV(pipe, {"robustnetregressor__lr": [1e-3, 3e-3]}, cv=2).fit(X, y)
    assert search.best_params_["robustnetregressor__lr"] in (1e-3, 3e-3)
    reg = net(max_epochs=3).fit(X, y)
    assert clone(reg).get_params()["weighting"] == "adaptive"
    restored = pickle.loads(pickle.dumps(reg))
    np.testing.assert_allclose(restored.predict(X), reg.predict(X))
    np.testing.assert_array_equal(restored.target_issues_, reg.target_issues_)


def test_transformed_target_regressor(data):
    X, y = data
    y_pos = np.exp(y / 2)
    ttr = TransformedTargetRegressor(net(max_epochs=10), func=np.log, inverse_func=np.exp)
    pred = ttr.fit(X, y_pos).predict(X)
    assert pred.shape == y.shape and (pred > 0).all()


def test_constant_targets_train_to_the_constant(data):
    X, _ = data
    reg = net(max_epochs=3).fit(X, np.full(len(X), 7.5))
    np.testing.assert_allclose(reg.predict(X), 7.5, atol=0.5)
    assert reg.target_scale_[0] == 1.0
    assert np.isfinite(reg.noise_scores_).all() and not reg.target_issues_.any()


def test_grad_engine_and_module_default(data):
    X, y = data
    reg = net(max_epochs=1).fit(X, y)
    assert reg.grad_engine_ == "ghost"
    assert reg.module_.layers[0].in_features == X.shape[1]
