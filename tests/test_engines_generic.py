"""Tests for skrobust.engines.generic: the exact engine for any module."""

import pytest
import torch
from _engine_reference import (
    SEED,
    assert_grad_close,
    assert_norms_close,
    build,
    ce_loss,
    reference,
    run_engine,
    single_thread,  # noqa: F401 - autouse fixture
    trainable,
)
from torch import nn

from skrobust.engines import GenericEngine, HybridEngine, make_engine
from skrobust.engines import generic as generic_mod


@pytest.mark.parametrize("engine_name", ["generic", "auto"])
@pytest.mark.parametrize("chunk_rows", [1, 3])
def test_generic_engine_chunking(monkeypatch, engine_name, chunk_rows):
    module, loss_fn, X, y = build("custom_scale", torch.float64)
    n_params = sum(p.numel() for p in trainable(module))
    monkeypatch.setattr(generic_mod, "_CHUNK_BYTES", chunk_rows * n_params * 8)
    c = torch.rand(len(X), dtype=torch.float64)
    ref_norms, ref_grads = reference(module, loss_fn, X, y, c)
    module.zero_grad(set_to_none=True)
    norms = run_engine(make_engine(module, engine_name), module, loss_fn, X, y, c)
    assert_norms_close(norms, ref_norms, 1e-10)
    for p, g in zip(trainable(module), ref_grads):
        assert_grad_close(p.grad, g, 1e-10)


class ParentParamNet(nn.Module):
    """A parameter held by a module that also has submodules: not a leaf layer."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1.5))
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x) * self.gain


def test_parameters_outside_leaf_layers_use_the_generic_engine():
    module = ParentParamNet().double()
    assert not HybridEngine.supports(module)
    engine = make_engine(module, "auto")
    assert type(engine) is GenericEngine
    X, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    c = torch.rand(8, dtype=torch.float64)
    ref_norms, ref_grads = reference(module, ce_loss, X, y, c)
    module.zero_grad(set_to_none=True)
    norms = run_engine(engine, module, ce_loss, X, y, c)
    assert_norms_close(norms, ref_norms, 1e-10)
    for p, g in zip(trainable(module), ref_grads):
        assert_grad_close(p.grad, g, 1e-10)


def test_generic_chunks_account_for_activation_gradients(monkeypatch):
    module, loss_fn, X, y = build("custom_scale", torch.float64)
    engine = GenericEngine(module)
    torch.manual_seed(SEED)
    with engine.capture():
        losses = loss_fn(module(X), y)
    # Outputs of the leaf modules: ScaleLayer, Linear, Tanh, Linear.
    assert engine._activations == len(X) * (6 + 8 + 8 + 3)
    n_params = sum(p.numel() for p in trainable(module))
    monkeypatch.setattr(generic_mod, "_CHUNK_BYTES",
                        4 * (n_params + engine._activations) * 8)
    calls = []
    grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls.append(kwargs.get("is_grads_batched", False))
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    engine.norms(losses)
    assert calls == [True] * 3  # 10 rows, 4 per chunk
    engine.release()

