import numpy as np
import pytest
from sklearn.datasets import make_classification


@pytest.fixture(scope="session")
def small_data():
    """A small, learnable 3-class problem: float64 X, int y."""
    X, y = make_classification(
        n_samples=300, n_features=8, n_informative=5, n_classes=3, random_state=0)
    return X, y


def _make_net(**overrides):
    """A RobustNetClassifier with settings that keep a fit well under a second."""
    from skrobust import RobustNetClassifier

    params = dict(max_epochs=4, batch_size=32, verbose=0, random_state=0, warmup_epochs=1)
    if "module" not in overrides:
        params["module__hidden_layer_sizes"] = (16,)
    params.update(overrides)
    return RobustNetClassifier(**params)


@pytest.fixture(scope="session")
def make_net():
    return _make_net


@pytest.fixture
def rng():
    return np.random.default_rng(0)
