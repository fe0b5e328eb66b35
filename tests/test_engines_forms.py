"""Tests for skrobust.engines.registry and forms: the closed forms of layers.

The built-in forms are checked on every test model by ``test_engines.py``; here
a user-registered form is checked against the same per-sample loop.
"""

import doctest

import pytest
import torch
import torch.nn.functional as F
from _engine_reference import (
    DTYPES,
    TOL,
    assert_grad_close,
    assert_norms_close,
    ce_loss,
    norms_and_fallback,
    reference,
    single_thread,  # noqa: F401 - autouse fixture
    trainable,
)
from torch import nn

from skrobust.engines import (
    GhostNormEngine,
    HybridEngine,
    make_engine,
    register_layer_form,
)
from skrobust.engines import forms as forms_mod
from skrobust.engines import registry as registry_mod


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registrations made by the test are undone afterwards."""
    monkeypatch.setattr(registry_mod, "_FORMS", dict(registry_mod._FORMS))


class ScaledLinear(nn.Module):
    """``(x W^T + b) * scale``: a linear layer with an output scale, all its own parameters."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / n_in**0.5)
        self.bias = nn.Parameter(0.1 * torch.randn(n_out))
        self.scale = nn.Parameter(1.0 + 0.5 * torch.randn(n_out))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias) * self.scale


class ScaledLinearForm:
    """Per-sample gradients of ScaledLinear, written out (inputs (n, d) or (n, T, d)).

    With ``z = W x + b`` and ``d`` the output gradient: ``(d * s) x^T`` for the
    weight, ``d * s`` for the bias and ``d * z`` for the scale, summed over the
    positions and the calls.
    """

    def __init__(self, layer):
        self.layer = layer
        self.params = {name: p for name, p in layer.named_parameters(recurse=False)
                       if p.requires_grad}

    def norms(self, calls, total):
        weight, bias, scale = (p.detach() for p in (self.layer.weight, self.layer.bias,
                                                     self.layer.scale))
        grads = dict.fromkeys(self.params, 0)
        for call in calls:
            x, d = call.args[0], call.output_grad
            x = x.reshape(x.shape[0], -1, x.shape[-1])
            d = d.reshape(d.shape[0], -1, d.shape[-1])
            ds = d * scale
            parts = {"weight": torch.einsum("nto,nti->noi", ds, x), "bias": ds.sum(1),
                     "scale": (d * F.linear(x, weight, bias)).sum(1)}
            for name in grads:
                grads[name] = grads[name] + parts[name]
        total.add_square(sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads.values()))
        return grads

    def update(self, grads, coefficients):
        for name, g in grads.items():
            step = torch.tensordot(coefficients.to(g.dtype), g, dims=1)
            param = self.params[name]
            if param.grad is None:
                param.grad = step
            else:
                param.grad += step


class TwiceScaled(nn.Module):
    """A ScaledLinear applied twice, between two Linear layers."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(5, 6)
        self.scaled = ScaledLinear(6, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.tanh(self.scaled(torch.tanh(self.inp(x))))
        return self.out(torch.tanh(self.scaled(h)))


class SequenceScaled(nn.Module):
    """(n, T, d) input through a ScaledLinear, then a mean over T."""

    def __init__(self):
        super().__init__()
        self.scaled = ScaledLinear(4, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.scaled(x))).mean(1)


MODELS = {"twice": (TwiceScaled, (9, 5)), "sequence": (SequenceScaled, (9, 4, 4))}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_registered_form_gives_exact_norms_and_update(isolated_registry, model, dtype):
    torch.manual_seed(20)
    cls, shape = MODELS[model]
    module = cls().to(dtype)
    assert type(make_engine(module, "auto")) is HybridEngine  # torch.func before registering
    assert register_layer_form(ScaledLinear)(ScaledLinearForm) is ScaledLinearForm
    assert GhostNormEngine.supports(module)
    engine = make_engine(module, "ghost")
    assert type(engine) is GhostNormEngine
    assert engine.name == "ghost"

    X, y = torch.randn(*shape, dtype=dtype), torch.randint(0, 3, (shape[0],))
    c = torch.rand(shape[0], dtype=dtype)
    c[0] = 0.0
    ref_norms, ref_grads = reference(module, ce_loss, X, y, c)
    params = trainable(module)
    tol = TOL[dtype]

    module.zero_grad(set_to_none=True)  # step 1: from empty gradients
    norms, fell_back = norms_and_fallback(engine, module, ce_loss, X, y, c)
    assert not fell_back
    assert_norms_close(norms, ref_norms, tol)
    for p, g in zip(params, ref_grads):
        assert_grad_close(p.grad, g, tol)

    existing = [torch.randn_like(p) for p in params]  # step 2: onto existing gradients
    for p, e in zip(params, existing):
        p.grad = e.clone()
    norms, fell_back = norms_and_fallback(engine, module, ce_loss, X, y, c)
    assert not fell_back
    assert_norms_close(norms, ref_norms, tol)
    for p, e, g in zip(params, existing, ref_grads):
        assert_grad_close(p.grad, e + g, tol)


def test_form_that_does_not_apply_leaves_the_layer_to_torch_func(isolated_registry):
    class PickyForm(ScaledLinearForm):
        @staticmethod
        def applies_to(layer):
            return layer.weight.shape[0] != 6

    register_layer_form(ScaledLinear)(PickyForm)
    module = TwiceScaled()
    assert not GhostNormEngine.supports(module)
    assert type(make_engine(module, "auto")) is HybridEngine
    assert GhostNormEngine.supports(nn.Sequential(ScaledLinear(6, 4), nn.Linear(4, 3)))


def test_registered_form_is_not_used_for_subclasses(isolated_registry):
    class SubScaled(ScaledLinear):
        pass

    register_layer_form(ScaledLinear)(ScaledLinearForm)
    assert not GhostNormEngine.supports(nn.Sequential(SubScaled(4, 3)))


@pytest.mark.parametrize("bad", [int, nn.Linear(2, 2), "Linear"])
def test_register_layer_form_needs_a_module_type(bad):
    with pytest.raises(TypeError, match="subclass of torch.nn.Module"):
        register_layer_form(bad)


def test_built_in_forms_are_registered():
    assert registry_mod.closed_form(nn.Linear(2, 2)) is forms_mod.LinearForm
    assert registry_mod.closed_form(nn.LayerNorm(2)) is forms_mod.LayerNormForm
    assert registry_mod.closed_form(nn.Embedding(3, 2)) is forms_mod.EmbeddingForm
    assert registry_mod.closed_form(nn.Embedding(3, 2, sparse=True)) is None
    assert registry_mod.closed_form(nn.Embedding(3, 2, scale_grad_by_freq=True)) is None
    assert registry_mod.closed_form(nn.Conv1d(1, 1, 1)) is None


def test_register_layer_form_docstring_example(isolated_registry):
    result = doctest.testmod(registry_mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
