"""A fast smoke test of what users do first: fit, predict, search, pickle.

CI also runs this file alone against the declared minimum versions of the
dependencies (``.ci/min_requirements.py``), so it imports only what the core
package needs: pandas is optional here.
"""

import pickle
from importlib.metadata import version

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skrobust


def test_version_has_one_source():
    assert skrobust.__version__ == version("skrobust")


def test_fit_predict_score(small_data, make_net):
    X, y = small_data
    labels = np.array(["cat", "dog", "eel"])[y]
    net = make_net().fit(X, labels)
    pred = net.predict(X)
    assert pred.shape == (len(y),)
    assert set(pred) <= set(net.classes_)
    proba = net.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert net.score(X, labels) > 0.5
    assert net.noise_scores_.shape == (len(y),)
    assert net.label_issues_.shape == (len(y),)


def test_sparse_and_partial_fit(small_data, make_net):
    X, y = small_data
    net = make_net().partial_fit(sp.csr_matrix(X), y)
    net.partial_fit(sp.csr_matrix(X), y)
    assert len(net.history) == 8
    assert net.predict(X).shape == (len(y),)


def test_dataframe_input(small_data, make_net):
    pd = pytest.importorskip("pandas")
    X, y = small_data
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    net = make_net().fit(df, pd.Series(y))
    assert list(net.feature_names_in_) == list(df.columns)
    assert net.predict(df).shape == (len(y),)


def test_grid_search_in_pipeline(small_data, make_net):
    X, y = small_data
    pipe = make_pipeline(StandardScaler(), make_net(max_epochs=2, weighting="truncate"))
    grid = {"robustnetclassifier__alpha": [1.0, 2.0],
            "robustnetclassifier__stats": ["mean_std", "median_iqr"]}
    search = GridSearchCV(pipe, grid, cv=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_sample_weight_through_metadata_routing(small_data, make_net):
    # The net itself in the search: routing through Pipeline.score needs
    # scikit-learn >= 1.8, whatever the estimator.
    X, y = small_data
    with sklearn.config_context(enable_metadata_routing=True):
        net = make_net(max_epochs=2, weighting="truncate")
        net.set_fit_request(sample_weight=True).set_score_request(sample_weight=True)
        search = GridSearchCV(net, {"alpha": [1.0, 2.0]}, cv=2)
        search.fit(X, y, sample_weight=np.where(y == 2, 0.0, 1.0))
    assert search.best_score_ > 0.3


def test_pickle_and_clone(small_data, make_net):
    X, y = small_data
    net = make_net(module__dropout=0.1).fit(X, y)
    loaded = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    np.testing.assert_array_equal(loaded.noise_scores_, net.noise_scores_)
    assert clone(net).get_params()["module__dropout"] == 0.1
