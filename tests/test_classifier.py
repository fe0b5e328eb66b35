"""RobustNetClassifier as a scikit-learn and skorch user sees it."""

import pickle
import threading

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import sklearn
import torch
from _reference import (
    assert_step,
    expected_step,
    one_step,
    per_sample_gradients,
    truncate_weights,
)
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from skorch.dataset import ValidSplit

from skrobust import RobustNetClassifier, compute_weights, per_sample_grad_norms
from skrobust.data import IndexedBatch


# ----------------------------------------------------------------- inputs
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.int32])
def test_feature_dtypes(small_data, dtype, make_net):
    X, y = small_data
    Xd = (X * 10).astype(dtype)
    before = Xd.copy()
    net = make_net().fit(Xd, y)
    assert net.predict(Xd).shape == (len(y),)
    np.testing.assert_array_equal(Xd, before)  # caller's array untouched


@pytest.mark.parametrize("labels", [
    lambda y: y.astype(np.int32),
    lambda y: np.array(["cat", "dog", "eel"])[y],
    lambda y: np.array([3, 7, 11])[y],
    lambda y: pd.Series(np.array(["a", "b", "c"])[y]),
])
def test_any_label_type(small_data, labels, make_net):
    X, y = small_data
    y_user = labels(y)
    net = make_net().fit(X, y_user)
    np.testing.assert_array_equal(net.classes_, np.unique(np.asarray(y_user)))
    pred = net.predict(X)
    assert set(np.unique(pred)) <= set(net.classes_)
    assert net.score(X, y_user) > 0.5
    proba = net.predict_proba(X)
    assert proba.shape == (len(y), 3)
    np.testing.assert_allclose(proba.sum(1), 1)
    np.testing.assert_array_equal(net.classes_[proba.argmax(1)], pred)


def test_binary_strings(small_data, make_net):
    X, y = small_data
    yb = np.where(y == 0, "yes", "no")
    net = make_net().fit(X, yb)
    assert list(net.classes_) == ["no", "yes"]
    assert net.predict_proba(X).shape == (len(y), 2)


def test_dataframe_and_feature_names(small_data, make_net):
    X, y = small_data
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    net = make_net().fit(df, y)
    assert list(net.feature_names_in_) == list(df.columns)
    assert net.n_features_in_ == X.shape[1]
    net.predict(df)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse_input(small_data, fmt, make_net):
    X, y = small_data
    kept = np.random.default_rng(0).random(X.shape) < 0.5
    dense = np.where(kept, X, 0.0)
    Xs = sp.coo_matrix(dense).asformat(fmt)
    from_sparse = make_net(random_state=3, lr=0.02).fit(Xs, y)
    from_dense = make_net(random_state=3, lr=0.02).fit(dense, y)
    proba = from_sparse.predict_proba(Xs)
    np.testing.assert_array_equal(proba, from_dense.predict_proba(dense))
    np.testing.assert_array_equal(from_sparse.predict(Xs), from_dense.predict(dense))
    assert from_sparse.score(Xs, y) > 0.5  # a fitted model, not a constant


def test_pipeline_with_column_transformer_sparse_onehot(make_net):
    rng = np.random.default_rng(0)
    n = 240
    df = pd.DataFrame({
        "age": rng.normal(40, 10, n),
        "income": rng.lognormal(10, 1, n),
        "city": rng.choice(["paris", "rome", "oslo", "lima"], n),
        "plan": rng.choice(["a", "b"], n),
    })
    y = np.where((df["age"] > 40) | (df["city"] == "rome"), "churn", "stay")
    pre = ColumnTransformer([
        ("num", StandardScaler(), ["age", "income"]),
        ("cat", OneHotEncoder(sparse_output=True), ["city", "plan"]),
    ], sparse_threshold=1.0)
    pipe = make_pipeline(pre, make_net(max_epochs=30, lr=3e-3))
    pipe.fit(df, y)
    assert pipe.score(df, y) > 0.8


def test_grid_search_over_robust_hyperparameters(small_data, make_net):
    X, y = small_data
    grid = {
        "alpha": [0.5, 2.0],
        "beta": [1.0, float("inf")],
        "weighting": ["truncate", "soft"],
        "stats": ["mean_std", "median_iqr"],
    }
    search = GridSearchCV(make_net(max_epochs=2), grid, cv=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 16
    assert set(search.best_params_) == set(grid)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


# ------------------------------------------------------------ parameters
def test_params_stored_verbatim_and_cloneable():
    net = RobustNetClassifier(alpha=2.5, beta=float("inf"), weighting="soft",
                              stats="median_iqr", warmup_epochs=3, normalize_weights=True,
                              random_state=7, module__hidden_layer_sizes=(8,))
    params = net.get_params()
    for key, value in dict(alpha=2.5, beta=float("inf"), weighting="soft",
                           stats="median_iqr", warmup_epochs=3, normalize_weights=True,
                           random_state=7, module__hidden_layer_sizes=(8,)).items():
        assert params[key] == value
    assert not any(k.startswith("_") for k in params)
    assert clone(net).get_params()["alpha"] == 2.5
    assert vars(RobustNetClassifier()).keys().isdisjoint(
        {"history_", "initialized_", "virtual_params_"})


@pytest.mark.parametrize("param, value, match", [
    ("weighting", "hard", "weighting must be one of .'adaptive', 'truncate'"),
    ("stats", "mode", "stats must be one of"),
    ("alpha", -0.1, "alpha must be a number >= 0"),
    ("beta", float("nan"), "beta must be a number >= 0"),
    ("warmup_epochs", -1, "warmup_epochs must be an integer >= 0"),
    ("warmup_epochs", 1.5, "warmup_epochs must be an integer >= 0"),
    ("normalize_weights", "yes", "normalize_weights must be True or False"),
    ("grad_engine", "fast", "grad_engine must be one of"),
    ("random_state", "seed", "random_state must be None, an integer"),
    ("batch_size", 0, "batch_size must be a positive integer"),
    ("max_epochs", -3, "max_epochs must be an integer >= 0"),
    ("lr", 0.0, "lr must be a finite number > 0"),
])
def test_invalid_hyperparameters_raise_at_fit(small_data, param, value, match, make_net):
    X, y = small_data
    net = make_net(**{param: value})  # no error at construction
    with pytest.raises(ValueError, match=match):
        net.fit(X, y)


def test_all_invalid_hyperparameters_reported_at_once(small_data, make_net):
    X, y = small_data
    with pytest.raises(ValueError, match="(?s)weighting.*alpha"):
        make_net(weighting="x", alpha=-1).fit(X, y)


# -------------------------------------------------------- reproducibility
def test_random_state_reproducible(small_data, make_net):
    X, y = small_data
    p1 = make_net(module__dropout=0.2).fit(X, y).predict_proba(X)
    p2 = make_net(module__dropout=0.2).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)
    p3 = make_net(module__dropout=0.2, random_state=1).fit(X, y).predict_proba(X)
    assert not np.array_equal(p1, p3)


def test_random_state_leaves_global_rng_alone(small_data, make_net):
    X, y = small_data
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_net(module__dropout=0.2).fit(X, y)
    np.testing.assert_array_equal(torch.rand(3), expected)


def test_concurrent_fits_in_threads_do_not_interfere(small_data, make_net):
    X, y = small_data
    reference = make_net(module__dropout=0.3).fit(X, y).predict_proba(X)
    results = [None] * 4

    def work(i):
        results[i] = make_net(module__dropout=0.3).fit(X, y).predict_proba(X)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for proba in results:
        np.testing.assert_array_equal(proba, reference)


def test_pickle_round_trip(small_data, make_net):
    X, y = small_data
    net = make_net(module__dropout=0.1).fit(X, y)
    loaded = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    np.testing.assert_array_equal(loaded.noise_scores_, net.noise_scores_)


# ------------------------------------------------------------ the step
def test_train_step_applies_the_original_methods_weighted_gradient(small_data, make_net):
    """(1/B) sum_i w_i grad_i, with w from compute_weights on the true norms."""
    X, y = small_data
    net = make_net(weighting="truncate", warmup_epochs=0, alpha=0.5, beta=0.5,
                   max_epochs=1).fit(X, y)
    net.history.new_epoch()  # past warm-up
    Xb = torch.as_tensor(X[:32], dtype=torch.float32)
    yb = torch.as_tensor(y[:32])
    module, loss_fn = net.module_, torch.nn.CrossEntropyLoss(reduction="none")
    norms = per_sample_grad_norms(module, loss_fn, Xb, yb, engine="generic")
    w = compute_weights(norms, weighting="truncate", stats="mean_std", alpha=0.5, beta=0.5)
    assert 0 < w.sum() < 32
    module.zero_grad()
    (loss_fn(module(Xb), yb) * w).mean().backward()
    expected = [p.grad.clone() for p in module.parameters()]
    module.zero_grad(set_to_none=True)
    step = net.train_step_single(IndexedBatch(Xb, yb, torch.arange(32)))
    torch.testing.assert_close(step["norms"], norms, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(step["weights"], w)
    for p, g in zip(module.parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def test_history_has_weight_columns_and_warmup_is_plain(small_data, make_net):
    X, y = small_data
    net = make_net(weighting="truncate", warmup_epochs=2, max_epochs=4, alpha=0.5).fit(X, y)
    means = net.history[:, "weight_mean"]
    lows = net.history[:, "weight_low"]
    assert means[:2] == [1.0, 1.0] and lows[:2] == [0.0, 0.0]
    assert all(m < 1.0 for m in means[2:]) and all(lo > 0 for lo in lows[2:])


def test_weighting_none_trains_plainly(small_data, make_net):
    X, y = small_data
    net = make_net(weighting="none", warmup_epochs=0).fit(X, y)
    assert set(net.history[:, "weight_mean"]) == {1.0}


@pytest.mark.parametrize("normalize", [False, True])
def test_normalize_weights_changes_the_update(small_data, normalize):
    """One SGD step (lr=1) on a Linear module, about half the batch truncated:
    the parameters move by -(1/B) sum_i w_i grad_i, divided by mean(w) when
    normalize_weights is set; grad_i from a plain loop over the samples."""
    X, y = small_data[0][:64].astype(np.float32), small_data[1][:64]
    module, before, after, _ = one_step(
        X, y, module=torch.nn.Linear, module__in_features=X.shape[1], module__out_features=3,
        weighting="truncate", alpha=0.0, normalize_weights=normalize)
    grads, norms = per_sample_gradients(module, X, y)
    weights = truncate_weights(norms, alpha=0.0, beta=float("inf"))
    assert 0.25 < weights.mean() < 0.75
    assert_step(before, after, expected_step(grads, weights, normalize=normalize))


# ------------------------------------------------------- noise scores
def test_noise_scores_one_per_row_and_find_flipped_labels(make_net):
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)[:900]
    y = y[:900].copy()
    rng = np.random.default_rng(0)
    flip = rng.random(len(y)) < 0.3
    y[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
    net = make_net(max_epochs=15, module__hidden_layer_sizes=(64,)).fit(X, y)
    scores = net.noise_scores_
    assert scores.shape == (len(y),) and np.isfinite(scores).all()
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(flip, scores) > 0.85


def test_noise_scores_nan_for_held_out_rows(small_data, make_net):
    X, y = small_data
    net = make_net(train_split=ValidSplit(5, stratified=True)).fit(X, y)
    scores = net.noise_scores_
    assert np.isnan(scores).sum() == len(y) // 5
    assert "valid_acc" in net.history[-1]


# -------------------------------------------------- sample weights
def test_sample_weight_multiplies_robust_weights(small_data, make_net):
    X, y = small_data
    sw = np.where(y == 2, 0.0, 1.0)
    before = sw.copy()
    net = make_net(weighting="truncate", alpha=0.5, max_epochs=10, warmup_epochs=1).fit(
        X, y, sample_weight=sw)
    np.testing.assert_array_equal(sw, before)  # the caller's array is untouched
    assert all(m < 0.95 for m in net.history[1:, "weight_mean"])  # robust weights acted
    assert (net.predict(X) == 2).mean() < 0.05  # class 2 never trained on
    # One step: the update is -(1/B) sum_i sw_i w_i grad_i.
    X, y, sw = X[:64].astype(np.float32), y[:64], np.linspace(0.2, 2.0, 64)
    module, before, after, _ = one_step(X, y, sample_weight=sw, weighting="truncate",
                                        alpha=0.0)
    grads, norms = per_sample_gradients(module, X, y)
    weights = truncate_weights(norms, alpha=0.0, beta=float("inf"))
    assert_step(before, after, expected_step(grads, weights, sample_weight=sw))


def test_sample_weight_routed_through_grid_search(small_data, make_net):
    X, y = small_data
    with sklearn.config_context(enable_metadata_routing=True):
        net = make_net(max_epochs=2).set_fit_request(sample_weight=True)
        net.set_score_request(sample_weight=True)
        pipe = make_pipeline(StandardScaler().set_fit_request(sample_weight=False), net)
        search = GridSearchCV(pipe, {"robustnetclassifier__alpha": [1.0, 2.0]}, cv=2)
        search.fit(X, y, sample_weight=np.ones(len(y)))
    assert search.best_score_ > 0.3


@pytest.mark.parametrize("sw, match", [
    (np.ones(5), "one weight per row"),
    (-np.ones(300), "non-negative"),
    (np.zeros(300), "zero for every row"),
])
def test_bad_sample_weight(small_data, sw, match, make_net):
    X, y = small_data
    with pytest.raises(ValueError, match=match):
        make_net().fit(X, y, sample_weight=sw)


# ---------------------------------------------------------- modules
class LogitsNet(torch.nn.Module):
    def __init__(self, n_in=8, n_out=3, norm=torch.nn.LayerNorm):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(n_in, 16), norm(16),
                                        torch.nn.ReLU(), torch.nn.Linear(16, n_out))

    def forward(self, X):
        return self.body(X)


def test_user_module_returning_logits(small_data, make_net):
    X, y = small_data
    net = make_net(module=LogitsNet).fit(X, y)
    assert net.grad_engine_ == "ghost"
    assert net.score(X, y) > 0.5


def test_batchnorm_refused_with_advice(small_data, make_net):
    X, y = small_data
    net = make_net(module=LogitsNet, module__norm=torch.nn.BatchNorm1d)
    with pytest.raises(ValueError, match="LayerNorm"):
        net.fit(X, y)


def test_module_with_wrong_output_size(small_data, make_net):
    X, y = small_data
    with pytest.raises(ValueError, match=r"n_classes\) = \(\*, 3\)"):
        make_net(module=LogitsNet, module__n_out=5).fit(X, y)


def test_partial_fit_keeps_state(small_data, make_net):
    X, y = small_data
    net = make_net(max_epochs=1)
    net.partial_fit(X, y)
    first = net.noise_scores_.copy()
    net.partial_fit(X, y)
    assert len(net.history) == 2
    assert int(net.norm_memory_.counts.min()) == 2
    assert not np.array_equal(first, net.noise_scores_)
