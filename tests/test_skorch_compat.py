"""skorch's features on RobustNetClassifier: one test per case that once broke.

Each test does what a skorch user does with ``NeuralNetClassifier`` and checks
that RobustNetClassifier behaves the same way. The intended differences are in
``docs/differences_from_skorch.rst``.
"""

import warnings

import numpy as np
import pytest
import torch
from skorch.callbacks import InputShapeSetter
from torch import nn

from skrobust import RobustNetClassifier


class Logits(nn.Module):
    """One linear layer: 20 features in, 2 logits out."""

    def __init__(self, input_dim=20, n_classes=2):
        super().__init__()
        self.linear = nn.Linear(input_dim, n_classes)

    def forward(self, X):
        return self.linear(X)


class ScaledLogits(Logits):
    """A forward pass that needs a fit parameter."""

    def forward(self, X, scale):
        return self.linear(X) * scale


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 20)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    return X, y


def make(module=Logits, **params):
    params = {"max_epochs": 2, "verbose": 0, "random_state": 0, "warmup_epochs": 1,
              **params}
    return RobustNetClassifier(module, **params)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


# Case 2 ----------------------------------------------------------------------------
def test_input_shape_setter_resizes_the_module_before_the_first_forward_pass(data):
    X, y = data
    net = make(Logits, module__input_dim=3, callbacks=[InputShapeSetter()]).fit(X, y)
    assert net.module_.linear.in_features == 20
    assert net.predict(X).shape == (200,)


# Case 3 ----------------------------------------------------------------------------
def test_fit_params_reach_forward_from_the_first_step(data):
    X, y = data
    net = make(ScaledLogits).fit(X, y, scale=2.0)
    assert len(net.history) == 2

