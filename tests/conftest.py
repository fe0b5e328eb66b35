import numpy as np
import pytest
from sklearn.datasets import make_classification


@pytest.fixture(scope="session")
def small_data():
    """A small, learnable 3-class problem: float64 X, int y."""
    X, y = make_classification(
        n_samples=300, n_features=8, n_informative=5, n_classes=3, random_state=0)
    return X, y


def fast_params(**overrides):
    """Settings that keep a fit well under a second."""
    params = dict(max_epochs=4, batch_size=32, verbose=0, random_state=0,
                  warmup_epochs=1, module__hidden_layer_sizes=(16,))
    params.update(overrides)
    return params


@pytest.fixture
def rng():
    return np.random.default_rng(0)
