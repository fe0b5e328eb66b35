"""HuberLoss and TukeyBiweightLoss: hand computations, gradients, reductions, checks."""

import math

import pytest
import torch

from skrobust.losses import HuberLoss, TukeyBiweightLoss


def huber_by_hand(r, delta):
    return 0.5 * r * r if abs(r) <= delta else delta * (abs(r) - 0.5 * delta)


def tukey_by_hand(r, c):
    if abs(r) > c:
        return c * c / 6
    return c * c / 6 * (1 - (1 - (r / c) ** 2) ** 3)


RESIDUALS = [-7.0, -2.0, -1.0, -0.3, 0.0, 0.5, 1.345, 2.5, 4.685, 10.0]


@pytest.mark.parametrize("delta", [0.5, 1.345, 3.0])
def test_huber_matches_hand_computation(delta):
    r = torch.tensor(RESIDUALS, dtype=torch.float64)
    loss = HuberLoss(delta=delta, reduction="none")(r + 2.0, torch.full_like(r, 2.0))
    expected = [huber_by_hand(v, delta) for v in RESIDUALS]
    assert loss.tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("c", [1.0, 4.685])
def test_tukey_matches_hand_computation(c):
    r = torch.tensor(RESIDUALS, dtype=torch.float64)
    loss = TukeyBiweightLoss(c=c, reduction="none")(r, torch.zeros_like(r))
    expected = [tukey_by_hand(v, c) for v in RESIDUALS]
    assert loss.tolist() == pytest.approx(expected, abs=1e-12)


def test_hand_values_of_the_docstrings():
    assert HuberLoss(delta=1.0, reduction="none")(
        torch.tensor([0.5, 3.0]), torch.zeros(2)).tolist() == [0.125, 2.5]
    value = TukeyBiweightLoss(c=2.0, reduction="none")(torch.tensor([1.0]), torch.zeros(1))
    assert float(value) == pytest.approx(4 / 6 * (1 - 0.75**3))


@pytest.mark.parametrize("criterion", [HuberLoss(delta=1.0, reduction="none"),
                                       TukeyBiweightLoss(c=2.0, reduction="none")])
def test_gradcheck(criterion):
    # residuals away from the kinks (|r| = delta or c), where the loss is smooth
    pred = torch.tensor([[-3.1, 0.2], [0.7, 1.6], [-0.4, 2.9]], dtype=torch.float64,
                        requires_grad=True)
    target = torch.tensor([[0.0, -0.1], [0.3, 0.0], [0.2, 0.5]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: criterion(p, target), (pred,))


def test_gradients_are_bounded_and_redescend():
    r = torch.tensor([0.5, 2.0, 50.0], dtype=torch.float64, requires_grad=True)
    HuberLoss(delta=1.0, reduction="sum")(r, torch.zeros(3, dtype=torch.float64)).backward()
    assert r.grad.tolist() == pytest.approx([0.5, 1.0, 1.0])
    r.grad = None
    TukeyBiweightLoss(c=4.0, reduction="sum")(r, torch.zeros(3, dtype=torch.float64)).backward()
    assert r.grad[0] == pytest.approx(0.5 * (1 - (0.5 / 4) ** 2) ** 2)
    assert r.grad[2] == 0.0


@pytest.mark.parametrize("cls", [HuberLoss, TukeyBiweightLoss])
def test_reductions_and_shapes(cls):
    pred, target = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(5, 3)
    none = cls(reduction="none")(pred, target)
    assert none.shape == (5, 3)
    assert float(cls(reduction="mean")(pred, target)) == pytest.approx(float(none.mean()))
    assert float(cls(reduction="sum")(pred, target)) == pytest.approx(float(none.sum()))
    assert float(cls()(pred, target)) == pytest.approx(float(none.mean()))


def test_near_zero_both_are_half_the_squared_error():
    r = torch.tensor([1e-3])
    for loss in (HuberLoss(reduction="none"), TukeyBiweightLoss(reduction="none")):
        assert float(loss(r, torch.zeros(1))) == pytest.approx(0.5e-6, rel=1e-3)


@pytest.mark.parametrize("cls,name", [(HuberLoss, "delta"), (TukeyBiweightLoss, "c")])
@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, math.nan])
def test_bad_constant_is_refused(cls, name, value):
    with pytest.raises(ValueError, match=name):
        cls(**{name: value})


@pytest.mark.parametrize("cls", [HuberLoss, TukeyBiweightLoss])
def test_bad_inputs_are_refused(cls):
    with pytest.raises(ValueError, match="reduction"):
        cls(reduction="max")
    with pytest.raises(ValueError, match="same shape"):
        cls()(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ValueError, match="floating point"):
        cls()(torch.zeros(4, dtype=torch.long), torch.zeros(4))


def test_repr_names_the_constant():
    assert "delta=1.345" in repr(HuberLoss())
    assert "c=4.685" in repr(TukeyBiweightLoss())
