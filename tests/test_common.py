"""scikit-learn's estimator checks."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skrobust import RobustNetClassifier, RobustNetRegressor

SAMPLE_WEIGHT_REASON = (
    "Minibatch SGD with shuffled batches cannot equal removing or repeating rows; "
    "scikit-learn excuses its own SGDClassifier the same way."
)

EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": SAMPLE_WEIGHT_REASON,
    "check_sample_weight_equivalence_on_sparse_data": SAMPLE_WEIGHT_REASON,
}


REGRESSOR_EXPECTED_FAILED_CHECKS = {
    **EXPECTED_FAILED_CHECKS,
    "check_methods_subset_invariance": (
        "float32 matrix products differ in the last bits (about 1e-7 relative) between a "
        "batch of one row and a batch of many; the check allows 1e-7."
    ),
}


def _expected_failed_checks(estimator):
    if isinstance(estimator, RobustNetRegressor):
        return REGRESSOR_EXPECTED_FAILED_CHECKS
    return EXPECTED_FAILED_CHECKS


@parametrize_with_checks(
    [RobustNetClassifier(max_epochs=5, verbose=0, random_state=0),
     RobustNetRegressor(max_epochs=20, warmup_epochs=2, lr=1e-2, verbose=0, random_state=0)],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
