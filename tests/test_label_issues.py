"""find_label_issues and CleanedClassifier: behaviour users rely on."""

import pickle
import sys

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from skrobust import CleanedClassifier, RobustNetClassifier, find_label_issues
from skrobust.noise import add_label_noise

pd = pytest.importorskip("pandas")

# --------------------------------------------------------------------------
# Helpers: a detector whose verdict is fixed, and estimators that record fits
# --------------------------------------------------------------------------


class FixedDetector(ClassifierMixin, BaseEstimator):
    """Follows the detector protocol with a verdict fixed in advance.

    ``flags``: row indices to flag; ``scores``: the noise scores (default: 1.0
    on flagged rows, else 0.0). ``report`` chooses which attributes exist.
    """

    def __init__(self, flags=(), scores=None, report=("noise_scores_", "label_issues_")):
        self.flags = flags
        self.scores = scores
        self.report = report

    def fit(self, X, y, sample_weight=None):
        n = len(y)
        issues = np.zeros(n, dtype=bool)
        issues[list(self.flags)] = True
        scores = issues.astype(float) if self.scores is None else np.asarray(self.scores)
        if "label_issues_" in self.report:
            self.label_issues_ = issues
        if "noise_scores_" in self.report:
            self.noise_scores_ = scores
        self.classes_ = np.unique(y)
        self.fit_sample_weight_ = sample_weight
        self.fitted_ = True
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


class Recorder(ClassifierMixin, BaseEstimator):
    """Records what ``fit`` got; predicts the first class."""

    def __init__(self, tag=0):
        self.tag = tag

    def fit(self, X, y, sample_weight=None):
        self.fit_X_ = np.asarray(X)
        self.fit_y_ = np.asarray(y)
        self.fit_sample_weight_ = sample_weight
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])

    def predict_proba(self, X):
        proba = np.zeros((len(X), len(self.classes_)))
        proba[:, 0] = 1.0
        return proba


class RecorderNoWeight(ClassifierMixin, BaseEstimator):
    """Like Recorder, but its fit takes no sample_weight."""

    def fit(self, X, y):
        self.fit_X_ = np.asarray(X)
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


@pytest.fixture
def data():
    """20 rows, 2 classes, row i has feature value i (so rows are identifiable)."""
    X = np.arange(40, dtype=float).reshape(20, 2)
    y = np.array([0, 1] * 10)
    return X, y


@pytest.fixture(scope="module")
def noisy():
    """A learnable 2-class problem with 20% of the labels flipped."""
    X, y = make_classification(n_samples=300, n_features=6, n_informative=4,
                               class_sep=2.0, random_state=0)
    y_noisy = add_label_noise(y, 0.2, random_state=0)
    return X, y, y_noisy


def fast_net(**params):
    base = dict(max_epochs=15, batch_size=32, warmup_epochs=3, lr=1e-2, verbose=0,
                random_state=0, module__hidden_layer_sizes=(32,))
    base.update(params)
    return RobustNetClassifier(**base)


# --------------------------------------------------------------------------
# find_label_issues
# --------------------------------------------------------------------------


def test_find_label_issues_table(data):
    X, y = data
    out = find_label_issues(X, y, estimator=FixedDetector(flags=(3, 7)))
    assert list(out.columns) == ["is_label_issue", "noise_score", "given_label",
                                 "predicted_label"]
    assert len(out) == len(y)
    assert out["is_label_issue"].dtype == bool
    assert out["noise_score"].dtype == np.float64
    assert out.index.equals(pd.RangeIndex(20))
    assert np.flatnonzero(out["is_label_issue"]).tolist() == [3, 7]
    np.testing.assert_array_equal(out["given_label"], y)
    np.testing.assert_array_equal(out["predicted_label"], np.zeros(20))


@pytest.mark.parametrize("index", [
    pd.Index([f"row{i}" for i in range(20)]),
    pd.Index(np.arange(100, 120)[::-1]),
])
def test_find_label_issues_keeps_the_dataframe_index(data, index):
    X, y = data
    Xdf = pd.DataFrame(X, columns=["a", "b"], index=index)
    out = find_label_issues(Xdf, y, estimator=FixedDetector(flags=(0,)))
    assert out.index.equals(index)
    assert out.loc[index[0], "is_label_issue"]
    assert not out.loc[index[1], "is_label_issue"]


def test_find_label_issues_takes_the_series_index_for_an_array(data):
    X, y = data
    ys = pd.Series(y, index=np.arange(20) * 3)
    out = find_label_issues(X, ys, estimator=FixedDetector())
    assert out.index.equals(ys.index)


def test_find_label_issues_does_not_modify_the_estimator(data):
    X, y = data
    det = FixedDetector(flags=(1,))
    before = det.get_params()
    find_label_issues(X, y, estimator=det)
    assert det.get_params() == before
    assert not hasattr(det, "fitted_")


def test_find_label_issues_default_estimator_is_a_robust_net(noisy, monkeypatch):
    from skrobust import label_issues

    made = []

    def fast_default():
        made.append(fast_net())
        return made[-1]

    monkeypatch.setattr(label_issues, "_default_detector", fast_default)
    X, _, y_noisy = noisy
    out = find_label_issues(X, y_noisy)
    assert len(made) == 1
    np.testing.assert_allclose(out["noise_score"], made[0].noise_scores_)
    np.testing.assert_array_equal(out["is_label_issue"], made[0].label_issues_)


def test_find_label_issues_ranks_flipped_rows_first(noisy):
    X, y, y_noisy = noisy
    out = find_label_issues(X, y_noisy, estimator=fast_net())
    flipped = y_noisy != y
    top = out["noise_score"].to_numpy().argsort()[::-1][: flipped.sum()]
    # 20% of the rows are flipped: a ranking or flags unrelated to the rows
    # (misaligned, or read from the wrong step) would score about 0.2 here
    assert flipped[top].mean() > 0.5
    assert flipped[out["is_label_issue"].to_numpy()].mean() > 0.5


def test_find_label_issues_reads_the_last_step_of_a_pipeline(noisy):
    X, _, y_noisy = noisy
    pipe = make_pipeline(StandardScaler(), fast_net(max_epochs=3))
    out = find_label_issues(X, y_noisy, estimator=pipe)
    ref = clone(pipe).fit(X, y_noisy)
    np.testing.assert_allclose(out["noise_score"], ref[-1].noise_scores_)
    np.testing.assert_array_equal(out["predicted_label"], ref.predict(X))
    assert not hasattr(pipe[-1], "module_")


def test_find_label_issues_passes_fit_params(data):
    X, y = data
    calls = []

    class Spy(FixedDetector):
        def fit(self, X, y, sample_weight=None):
            calls.append(sample_weight)
            return super().fit(X, y)

    w = np.linspace(1, 2, 20)
    find_label_issues(X, y, estimator=Spy(), sample_weight=w)
    np.testing.assert_array_equal(calls[0], w)


def test_find_label_issues_without_pandas(data, monkeypatch):
    X, y = data
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r'pip install "skrobust\[pandas\]"'):
        find_label_issues(X, y, estimator=FixedDetector())


@pytest.mark.parametrize("estimator, error, match", [
    (LogisticRegression(), TypeError, "noise_scores_ and/or label_issues_"),
    (make_pipeline(StandardScaler(), LogisticRegression()), TypeError,
     "does not report label issues"),
    (FixedDetector(scores=np.zeros(5)), ValueError, r"shape \(5,\), but X has 20 rows"),
    (FixedDetector(report=("noise_scores_",)), TypeError, "needs the detector's label_issues_"),
])
def test_find_label_issues_rejects_detectors_outside_the_protocol(data, estimator, error,
                                                                  match):
    X, y = data
    with pytest.raises(error, match=match):
        find_label_issues(X, y, estimator=estimator)


@pytest.mark.parametrize("y, match", [
    (None, "requires y to be passed"),
    (np.zeros((20, 2)), "1-D array of labels"),
    (np.linspace(0, 1, 20), "Unknown label type"),
    (np.array([0, 1] * 5), "inconsistent numbers of samples"),
])
def test_find_label_issues_rejects_bad_labels(data, y, match):
    X, _ = data
    with pytest.raises(ValueError, match=match):
        find_label_issues(X, y, estimator=FixedDetector())


# --------------------------------------------------------------------------
# CleanedClassifier: what the inner estimator is fitted on
# --------------------------------------------------------------------------


def test_flagged_rows_are_left_out_of_the_inner_fit(data):
    X, y = data
    clf = CleanedClassifier(Recorder(), detector=FixedDetector(flags=(2, 5, 11))).fit(X, y)
    kept = np.setdiff1d(np.arange(20), [2, 5, 11])
    np.testing.assert_array_equal(clf.estimator_.fit_X_, X[kept])
    np.testing.assert_array_equal(clf.estimator_.fit_y_, y[kept])
    assert clf.estimator_.fit_sample_weight_ is None
    assert np.flatnonzero(clf.label_issues_).tolist() == [2, 5, 11]
    np.testing.assert_array_equal(clf.noise_scores_, clf.label_issues_.astype(float))


def test_drop_works_on_dataframes(data):
    X, y = data
    Xdf = pd.DataFrame(X, columns=["a", "b"], index=np.arange(20) + 50)
    clf = CleanedClassifier(Recorder(), detector=FixedDetector(flags=(0,))).fit(Xdf, y)
    np.testing.assert_array_equal(clf.estimator_.fit_X_, X[1:])
    assert clf.feature_names_in_.tolist() == ["a", "b"]
    assert clf.n_features_in_ == 2


@pytest.mark.parametrize("flagged_weight", [0.0, 0.1, 0.5])
def test_downweight_passes_sample_weight(data, flagged_weight):
    X, y = data
    clf = CleanedClassifier(Recorder(), detector=FixedDetector(flags=(4, 9)),
                            action="downweight", flagged_weight=flagged_weight).fit(X, y)
    expected = np.ones(20)
    expected[[4, 9]] = flagged_weight
    np.testing.assert_array_equal(clf.estimator_.fit_X_, X)
    np.testing.assert_allclose(clf.estimator_.fit_sample_weight_, expected)


def test_flagged_weight_is_ignored_by_drop(data):
    X, y = data
    fits = [CleanedClassifier(Recorder(), detector=FixedDetector(flags=(4,)),
                              flagged_weight=w).fit(X, y).estimator_ for w in (0.0, 0.5)]
    np.testing.assert_array_equal(fits[0].fit_X_, fits[1].fit_X_)


def test_downweight_reaches_the_last_step_of_a_pipeline(data):
    X, y = data
    pipe = Pipeline([("scale", StandardScaler()), ("rec", Recorder())])
    clf = CleanedClassifier(pipe, detector=FixedDetector(flags=(1,)),
                            action="downweight").fit(X, y)
    weights = clf.estimator_.named_steps["rec"].fit_sample_weight_
    assert weights[1] == pytest.approx(0.1) and weights[0] == 1.0


@pytest.mark.parametrize("action, sample_weight", [("downweight", None),
                                                   ("drop", np.ones(20))])
def test_estimator_without_sample_weight_is_refused(data, action, sample_weight):
    X, y = data
    clf = CleanedClassifier(RecorderNoWeight(), detector=FixedDetector(flags=(1,)),
                            action=action)
    with pytest.raises(ValueError, match="does not accept sample_weight"):
        clf.fit(X, y, sample_weight=sample_weight)


def test_sample_weight_reaches_detector_and_estimator(data):
    X, y = data
    w = np.arange(1, 21, dtype=float)
    clf = CleanedClassifier(Recorder(), detector=FixedDetector(flags=(0, 1))).fit(
        X, y, sample_weight=w)
    np.testing.assert_array_equal(clf.detector_.fit_sample_weight_, w)
    np.testing.assert_array_equal(clf.estimator_.fit_sample_weight_, w[2:])
    down = CleanedClassifier(Recorder(), detector=FixedDetector(flags=(0, 1)),
                             action="downweight", flagged_weight=0.5).fit(
        X, y, sample_weight=w)
    np.testing.assert_allclose(down.estimator_.fit_sample_weight_[:3], [0.5, 1.0, 3.0])


# --------------------------------------------------------------------------
# CleanedClassifier: which rows are flagged
# --------------------------------------------------------------------------


@pytest.mark.parametrize("select, expected", [
    ("detector", [0, 1]),
    (0.0, []),
    (0.1, [18, 19]),
    (0.2, [16, 17, 18, 19]),
])
def test_select(data, select, expected):
    X, y = data
    scores = np.arange(20, dtype=float)  # row 19 is the most suspicious
    det = FixedDetector(flags=(0, 1), scores=scores)
    clf = CleanedClassifier(Recorder(), detector=det, select=select).fit(X, y)
    assert np.flatnonzero(clf.label_issues_).tolist() == expected
    np.testing.assert_array_equal(clf.noise_scores_, scores)


def test_select_a_share_never_flags_unscored_rows(data):
    X, y = data
    scores = np.r_[np.full(18, np.nan), 1.0, 2.0]
    clf = CleanedClassifier(Recorder(), detector=FixedDetector(scores=scores),
                            select=0.3).fit(X, y)
    assert np.flatnonzero(clf.label_issues_).tolist() == [18, 19]


def test_select_a_share_works_with_a_scores_only_detector(data):
    X, y = data
    det = FixedDetector(scores=np.arange(20.0), report=("noise_scores_",))
    clf = CleanedClassifier(Recorder(), detector=det, select=0.1).fit(X, y)
    assert np.flatnonzero(clf.label_issues_).tolist() == [18, 19]
    with pytest.raises(ValueError, match="pass select=<share of rows to flag>"):
        CleanedClassifier(Recorder(), detector=det).fit(X, y)


@pytest.mark.parametrize("max_flag_rate, n_flagged_per_class", [(0.2, 2), (0.5, 5), (0.9, 9)])
def test_max_flag_rate_caps_each_class(data, max_flag_rate, n_flagged_per_class):
    X, y = data
    scores = np.arange(20, dtype=float)
    det = FixedDetector(flags=range(20), scores=scores)  # flags every row
    clf = CleanedClassifier(Recorder(), detector=det, max_flag_rate=max_flag_rate)
    with pytest.warns(UserWarning, match="max_flag_rate"):
        clf.fit(X, y)
    for label in (0, 1):
        rows = np.flatnonzero(y == label)
        flagged = rows[clf.label_issues_[rows]]
        assert len(flagged) == n_flagged_per_class
        # the highest-scored rows of the class stay flagged
        assert flagged.tolist() == rows[-n_flagged_per_class:].tolist()
    assert set(clf.estimator_.fit_y_) == {0, 1}


def test_no_class_vanishes(data):
    X, y = data
    y = y.copy()
    y[[0, 2]] = 2  # a tiny third class, all flagged
    with pytest.warns(UserWarning, match="class 2"):
        clf = CleanedClassifier(Recorder(), detector=FixedDetector(flags=(0, 2)),
                                max_flag_rate=0.5).fit(X, y)
    assert clf.classes_.tolist() == [0, 1, 2]
    assert (clf.estimator_.fit_y_ == 2).sum() == 1


def test_no_warning_below_the_cap(data, recwarn):
    X, y = data
    CleanedClassifier(Recorder(), detector=FixedDetector(flags=(0, 1, 2))).fit(X, y)
    assert not [w for w in recwarn if "max_flag_rate" in str(w.message)]


# --------------------------------------------------------------------------
# CleanedClassifier: parameters, prediction, scikit-learn integration
# --------------------------------------------------------------------------


def test_default_detector_is_a_robust_net(noisy, monkeypatch):
    from skrobust import label_issues

    monkeypatch.setattr(label_issues, "_default_detector", lambda: fast_net(max_epochs=2))
    X, _, y_noisy = noisy
    clf = CleanedClassifier(LogisticRegression()).fit(X, y_noisy)
    assert isinstance(clf.detector_, RobustNetClassifier)
    np.testing.assert_array_equal(clf.label_issues_, clf.detector_.label_issues_)
    np.testing.assert_allclose(clf.noise_scores_, clf.detector_.noise_scores_)


def test_estimator_and_detector_are_cloned_not_modified(noisy):
    X, _, y_noisy = noisy
    est, det = LogisticRegression(C=0.5), fast_net(max_epochs=2)
    clf = CleanedClassifier(est, detector=det).fit(X, y_noisy)
    assert clf.estimator_ is not est and clf.detector_ is not det
    assert not hasattr(est, "coef_") and not hasattr(det, "module_")
    assert clf.estimator_.C == 0.5 and clf.detector_.max_epochs == 2


def test_cleaning_helps_on_noisy_labels(noisy):
    X, y, y_noisy = noisy
    det = make_pipeline(StandardScaler(), fast_net())
    clf = CleanedClassifier(LogisticRegression(), detector=det).fit(X, y_noisy)
    flipped = y_noisy != y
    assert flipped[clf.label_issues_].mean() > 0.6  # flags are mostly flipped rows
    assert clf.label_issues_[flipped].mean() > 0.5  # and find most of them
    kept = ~clf.label_issues_
    assert (y_noisy[kept] != y[kept]).mean() < 0.75 * flipped.mean()


def test_prediction_methods_follow_the_inner_estimator(noisy):
    X, _, y_noisy = noisy
    det = FixedDetector(flags=(0, 1, 2))
    lr = CleanedClassifier(LogisticRegression(), detector=det).fit(X, y_noisy)
    ref = LogisticRegression().fit(X[3:], y_noisy[3:])
    np.testing.assert_allclose(lr.predict_proba(X), ref.predict_proba(X))
    np.testing.assert_allclose(lr.predict_log_proba(X), ref.predict_log_proba(X))
    np.testing.assert_allclose(lr.decision_function(X), ref.decision_function(X))
    np.testing.assert_array_equal(lr.predict(X), ref.predict(X))
    assert lr.score(X, y_noisy) == ref.score(X, y_noisy)
    np.testing.assert_array_equal(lr.classes_, ref.classes_)

    svc = CleanedClassifier(LinearSVC(), detector=det)
    assert not hasattr(svc, "predict_proba")
    assert hasattr(svc, "decision_function")
    svc.fit(X, y_noisy)
    assert not hasattr(svc, "predict_proba")


def test_in_a_pipeline_and_grid_search(noisy):
    X, _, y_noisy = noisy
    pipe = make_pipeline(StandardScaler(), CleanedClassifier(
        LogisticRegression(), detector=FixedDetector()))
    grid = GridSearchCV(pipe, {
        "cleanedclassifier__detector__flags": [(), tuple(range(0, 100, 2))],
        "cleanedclassifier__estimator__C": [0.01, 1.0],
    }, cv=2).fit(X, y_noisy)
    assert len(grid.cv_results_["params"]) == 4
    best = grid.best_estimator_[-1]
    assert best.estimator_.C == grid.best_params_["cleanedclassifier__estimator__C"]
    # dropping every other training row of the first 100 loses, so it is not picked
    assert grid.best_params_["cleanedclassifier__detector__flags"] == ()


def test_grid_search_over_a_robust_net_detector(noisy):
    X, _, y_noisy = noisy
    clf = CleanedClassifier(LogisticRegression(), detector=fast_net())
    grid = GridSearchCV(clf, {"detector__max_epochs": [1, 2]}, cv=2).fit(X, y_noisy)
    assert grid.best_estimator_.detector_.max_epochs == grid.best_params_[
        "detector__max_epochs"]


def test_clone_and_pickle(noisy):
    X, _, y_noisy = noisy
    clf = CleanedClassifier(LogisticRegression(), detector=fast_net(max_epochs=2),
                            action="downweight", flagged_weight=0.2, select=0.1,
                            max_flag_rate=0.3)
    params = clone(clf).get_params(deep=False)
    assert {k: params[k] for k in ("action", "flagged_weight", "select", "max_flag_rate")} \
        == {"action": "downweight", "flagged_weight": 0.2, "select": 0.1,
            "max_flag_rate": 0.3}
    clf.fit(X, y_noisy)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(again.label_issues_, clf.label_issues_)


@pytest.mark.parametrize("params, match", [
    ({"action": "remove"}, "action must be one of"),
    ({"flagged_weight": 1.0}, r"flagged_weight must be a number in \[0, 1\)"),
    ({"flagged_weight": -0.1}, "flagged_weight"),
    ({"select": 1.0}, "select must be 'detector' or a share"),
    ({"select": "auto"}, "select must be"),
    ({"max_flag_rate": 0}, r"max_flag_rate must be a number in \(0, 1\)"),
    ({"max_flag_rate": 1.0}, "max_flag_rate"),
    ({"estimator": None}, "estimator must be an unfitted scikit-learn classifier"),
    ({"detector": "robust"}, "detector must be"),
])
def test_invalid_parameters(data, params, match):
    X, y = data
    params = {"estimator": Recorder(), "detector": FixedDetector(), **params}
    with pytest.raises(ValueError, match=match):
        CleanedClassifier(**params).fit(X, y)


def test_all_problems_in_one_error(data):
    X, y = data
    clf = CleanedClassifier(Recorder(), detector=FixedDetector(), action="x", select=2)
    with pytest.raises(ValueError, match="(?s)action.*select"):
        clf.fit(X, y)


@pytest.mark.parametrize("sample_weight, match", [
    (np.ones(5), "one weight per row"),
    (-np.ones(20), "non-negative"),
])
def test_invalid_sample_weight(data, sample_weight, match):
    X, y = data
    with pytest.raises(ValueError, match=match):
        CleanedClassifier(Recorder(), detector=FixedDetector()).fit(X, y, sample_weight)


def test_detector_outside_the_protocol_is_refused(data):
    X, y = data
    with pytest.raises(TypeError, match="does not report label issues"):
        CleanedClassifier(Recorder(), detector=LogisticRegression()).fit(X, y)


# --------------------------------------------------------------------------
# scikit-learn's estimator checks, with a fast detector
# --------------------------------------------------------------------------

SAMPLE_WEIGHT_REASON = (
    "The detector is a network trained by minibatch SGD: weighting a row cannot "
    "equal repeating it, so the flagged rows can differ; RobustNetClassifier is "
    "excused the same way in test_common.py."
)
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": SAMPLE_WEIGHT_REASON,
    "check_sample_weight_equivalence_on_sparse_data": SAMPLE_WEIGHT_REASON,
}


class LogisticDetector(LogisticRegression):
    """A cheap detector outside skrobust: a row is an issue when the model
    predicts another class; its score is one minus the given label's probability."""

    def fit(self, X, y, sample_weight=None):
        super().fit(X, y, sample_weight=sample_weight)
        proba = self.predict_proba(X)
        given = np.searchsorted(self.classes_, y)
        self.noise_scores_ = 1.0 - proba[np.arange(len(y)), given]
        self.label_issues_ = proba.argmax(1) != given
        return self


@parametrize_with_checks(
    [CleanedClassifier(LogisticRegression(), detector=RobustNetClassifier(
        max_epochs=2, warmup_epochs=1, batch_size=32, verbose=0, random_state=0,
        module__hidden_layer_sizes=(8,))),
     CleanedClassifier(LogisticRegression(), detector=LogisticDetector(),
                       action="downweight")],
    expected_failed_checks=lambda est: (
        EXPECTED_FAILED_CHECKS if isinstance(est.detector, RobustNetClassifier) else {}),
)
@pytest.mark.filterwarnings("ignore:The detector flagged more than")
def test_sklearn_compatible(estimator, check):
    check(estimator)
