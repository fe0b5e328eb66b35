"""skorch's features on RobustNetClassifier: one test per case that once broke.

Each test does what a skorch user does with ``NeuralNetClassifier`` and checks
that RobustNetClassifier behaves the same way. The intended differences are in
``docs/differences_from_skorch.rst``.
"""

import warnings

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import check_set_params
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, EarlyStopping, EpochScoring, InputShapeSetter
from skorch.dataset import Dataset, ValidSplit
from skorch.helper import predefined_split
from skorch.history import History
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
    """A short fit; the original method's rule unless a test says otherwise."""
    params = {"max_epochs": 2, "verbose": 0, "random_state": 0, "warmup_epochs": 1,
              "weighting": "truncate", **params}
    if params["weighting"] is None:  # the estimator's default rule
        del params["weighting"]
    return RobustNetClassifier(module, **params)


# The cases where the rule's own set-up could interfere run under every rule.
ALL_RULES = pytest.mark.parametrize("weighting", [None, "truncate", "small_loss", "none"])


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


# Case 2 ----------------------------------------------------------------------------
@ALL_RULES
def test_input_shape_setter_resizes_the_module_before_the_first_forward_pass(data, weighting):
    X, y = data
    net = make(Logits, module__input_dim=3, callbacks=[InputShapeSetter()],
               weighting=weighting).fit(X, y)
    assert net.module_.linear.in_features == 20
    assert net.predict(X).shape == (200,)


# Case 3 ----------------------------------------------------------------------------
@ALL_RULES
def test_fit_params_reach_forward_from_the_first_step(data, weighting):
    X, y = data
    net = make(ScaledLogits, weighting=weighting).fit(X, y, scale=2.0)
    assert len(net.history) == 2


# Case 1 ----------------------------------------------------------------------------
def test_partial_fit_after_initialize_learns_the_labels(data):
    X, y = data
    labels = np.array(["no", "yes"])[y]
    net = make().initialize()
    net.partial_fit(X, labels)
    assert list(net.classes_) == ["no", "yes"]
    assert net.n_features_in_ == 20
    assert set(net.predict(X)) <= {"no", "yes"}


def test_load_params_then_predict_without_the_labels(data, tmp_path):
    X, y = data
    labels = np.array(["no", "yes"])[y]
    fitted = make().fit(X, labels)
    f_params = tmp_path / "params.pt"
    fitted.save_params(f_params=f_params)
    expected = fitted.predict(X)

    # The labels travel with the parameters of the net when given as `classes`.
    deployed = make(classes=["no", "yes"]).initialize()
    deployed.load_params(f_params=f_params)
    assert np.array_equal(deployed.predict(X), expected)
    assert np.allclose(deployed.predict_proba(X), fitted.predict_proba(X))

    # Otherwise, as in skorch: the index of the predicted class.
    bare = make().initialize()
    bare.load_params(f_params=f_params)
    assert np.array_equal(bare.predict(X), (expected == "yes").astype(int))


# Case 5 ----------------------------------------------------------------------------
class Probabilities(Logits):
    """skorch's convention for NLLLoss: the module ends in a softmax."""

    def forward(self, X):
        return torch.softmax(self.linear(X), dim=-1)


@ALL_RULES
def test_nllloss_takes_the_log_of_the_modules_probabilities(data, weighting):
    X, y = data
    net = make(Probabilities, criterion=nn.NLLLoss, max_epochs=3, lr=0.05,
               weighting=weighting).fit(X, y)
    losses = net.history[:, "train_loss"]
    assert all(loss > 0 for loss in losses)
    assert losses[-1] < losses[0]
    proba = net.predict_proba(X)
    with torch.no_grad():
        expected = net.module_(torch.as_tensor(X)).numpy()
    assert np.allclose(proba, expected, atol=1e-6)  # no second softmax
    assert proba.max() > 0.9
    assert np.isclose(net.proba_memory_.values.sum(1)[net.proba_memory_.seen], 1).all()


@pytest.mark.parametrize("nonlinearity", [None, "callable"])
def test_predict_nonlinearity_is_honoured(data, nonlinearity):
    X, y = data
    if nonlinearity == "callable":
        nonlinearity = torch.sigmoid
    net = make(predict_nonlinearity=nonlinearity).fit(X, y)
    with torch.no_grad():
        logits = net.module_(torch.as_tensor(X))
    expected = logits if nonlinearity is None else torch.sigmoid(logits)
    proba = net.predict_proba(X)
    assert np.allclose(proba, expected.numpy(), atol=1e-6)
    assert np.array_equal(net.predict(X), logits.argmax(1).numpy())


# Case 4 ----------------------------------------------------------------------------
class L1Penalized(RobustNetClassifier):
    """skorch's documented way to add a penalty: override get_loss."""

    calls = 0

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if training:
            type(self).calls += 1
            loss = loss + 0.5 * sum(p.abs().sum() for p in self.module_.parameters())
        return loss


def test_get_loss_override_is_trained_on(data):
    X, y = data
    params = {"max_epochs": 3, "lr": 0.05, "weighting": "none"}
    plain = make(**params).fit(X, y)
    penalized = make(**params)
    penalized.__class__ = L1Penalized
    penalized.fit(X, y)
    assert L1Penalized.calls == 3 * 2  # 3 epochs of 2 batches
    weights = lambda net: float(net.module_.linear.weight.abs().sum())  # noqa: E731
    assert weights(penalized) < 0.8 * weights(plain)


class OwnCriterion(RobustNetClassifier):
    """A net that builds its own criterion attribute and uses it in get_loss."""

    def initialize_criterion(self):
        super().initialize_criterion()
        self.aux_criterion_ = nn.CrossEntropyLoss(reduction="none")
        return self

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        return loss + 0.0 * self.aux_criterion_(y_pred, y_true).mean()


def test_criterion_built_in_initialize_criterion_is_available_to_get_loss(data):
    X, y = data
    net = OwnCriterion(Logits, max_epochs=1, verbose=0, random_state=0).fit(X, y)
    assert isinstance(net.aux_criterion_, nn.CrossEntropyLoss)


# Case 6 ----------------------------------------------------------------------------
class MyHistory(History):
    pass


def test_history_instance_is_kept(data):
    X, y = data
    history = MyHistory()
    net = make(history=history).fit(X, y)
    assert net.history is history
    assert len(net.history) == 2


# Case 7 ----------------------------------------------------------------------------
class WithAuxModule(RobustNetClassifier):
    def __init__(self, *args, **kwargs):
        self.aux = nn.Linear(2, 2)
        super().__init__(*args, **kwargs)


def test_subclass_may_set_a_module_attribute_before_super_init(data):
    X, y = data
    net = WithAuxModule(Logits, max_epochs=1, verbose=0, random_state=0)
    assert isinstance(net.aux, nn.Linear)
    net.fit(X, y)


# Case 8 ----------------------------------------------------------------------------
def test_predefined_split_with_a_skorch_dataset(data):
    X, y = data
    valid = Dataset(X[:50], y[:50])
    net = make(train_split=predefined_split(valid)).fit(X[50:], y[50:])
    assert np.isfinite(net.history[:, "valid_loss"]).all()
    expected = float(np.mean(net.predict(X[:50]) == y[:50]))
    assert np.isclose(net.history[-1, "valid_acc"], expected)


# Case 9 ----------------------------------------------------------------------------
class EndlessDataset(torch.utils.data.Dataset):
    """Valid under torch's protocol: the length is in __len__, never an IndexError."""

    def __init__(self, X):
        self.X = torch.as_tensor(X)
        self.calls = 0

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        self.calls += 1
        if self.calls > 10 * len(self.X):
            raise RuntimeError("read far past __len__: the Dataset is being iterated")
        return self.X[i % len(self.X)], 0


def test_predict_on_a_dataset_without_index_error(data):
    X, y = data
    net = make().fit(X, y)
    proba = net.predict_proba(EndlessDataset(X))
    assert np.allclose(proba, net.predict_proba(X))
    # As in skorch, the prediction on a Dataset is the class index.
    assert np.array_equal(net.predict(EndlessDataset(X)), net.predict(X))


def test_fit_on_a_dataset_is_refused_with_a_message(data):
    X, y = data
    with pytest.raises(TypeError, match="trains on arrays"):
        make().fit(EndlessDataset(X), y)


# Case 10 ---------------------------------------------------------------------------
def test_epoch_scoring_with_a_scorer_name(data):
    X, y = data
    labels = np.array(["no", "yes"])[y]
    net = make(train_split=ValidSplit(5, stratified=True),
               callbacks=[EpochScoring("accuracy", name="acc", lower_is_better=False)])
    net.fit(X, labels)
    assert np.allclose(net.history[:, "acc"], net.history[:, "valid_acc"])


# Case 11 ---------------------------------------------------------------------------
class LossSpy(Callback):
    def initialize(self):
        self.losses = []
        return self

    def on_batch_end(self, net, batch=None, training=None, loss=None, **kwargs):
        if training:
            self.losses.append(loss)


def test_on_batch_end_gets_the_loss_with_its_graph(data):
    X, y = data
    spy = LossSpy()
    net = make(callbacks=[spy]).fit(X, y)
    assert spy.losses and all(loss.requires_grad for loss in spy.losses)
    recorded = [b["train_loss"] for epoch in net.history for b in epoch["batches"]]
    assert np.allclose(recorded, [float(loss) for loss in spy.losses])


# Case 12 ---------------------------------------------------------------------------
def test_initialize_module_alone_behaves_as_in_skorch():
    def outcome(net):
        try:
            net.initialize_module()
        except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
            return type(exc)
        return None

    skorch_net = NeuralNetClassifier(Logits)
    assert outcome(make()) is outcome(skorch_net)
    net = make().initialize()
    first = net.module_
    assert outcome(net) is outcome(NeuralNetClassifier(Logits).initialize()) is None
    assert net.module_ is not first


# Case 13 ---------------------------------------------------------------------------
def test_early_stopping_defaults_without_a_split_fail_with_a_clear_message(data):
    X, y = data
    with pytest.raises(ValueError, match=r"monitors 'valid_loss'.*monitor='train_loss'"):
        make(callbacks=[EarlyStopping()]).fit(X, y)


def test_early_stopping_works_on_the_training_loss_or_with_a_split(data):
    X, y = data
    stop = EarlyStopping(monitor="train_loss", patience=1, threshold=10.0)
    net = make(max_epochs=10, callbacks=[stop]).fit(X, y)
    assert len(net.history) < 10
    net = make(train_split=ValidSplit(5), callbacks=[EarlyStopping(patience=2)]).fit(X, y)
    assert len(net.history) >= 1


# scikit-learn's check_set_params --------------------------------------------------
def test_set_params_does_not_validate(data):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_set_params("RobustNetClassifier", make())
    assert not [w for w in caught if "set_params" in str(w.message)]
    net = make().set_params(callbacks=float("inf"), alpha=-1)
    with pytest.raises((TypeError, ValueError)):
        net.fit(*data)
