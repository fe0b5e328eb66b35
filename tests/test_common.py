"""scikit-learn's estimator checks."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skrobust import RobustNetClassifier

SAMPLE_WEIGHT_REASON = (
    "Minibatch SGD with shuffled batches cannot equal removing or repeating rows; "
    "scikit-learn excuses its own SGDClassifier the same way."
)

EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": SAMPLE_WEIGHT_REASON,
    "check_sample_weight_equivalence_on_sparse_data": SAMPLE_WEIGHT_REASON,
}


@parametrize_with_checks(
    [RobustNetClassifier(max_epochs=5, verbose=0, random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
