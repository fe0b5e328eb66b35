"""Tests for skrobust.engines.layerwise: closed forms, torch.func layers, and the fallback.

No silent fallback where the layer forms apply, an exact fallback
(GenericEngine) where they do not.
"""

import pytest
import torch
import torch.nn.functional as F
from _engine_reference import (
    DTYPES,
    GHOST_CASES,
    HYBRID_CASES,
    SEED,
    TOL,
    ScaleLayer,
    assert_grad_close,
    assert_norms_close,
    auto_type,
    build,
    ce_loss,
    check_exact,
    norms_and_fallback,
    perturb_layer_norms,
    reference,
    run_engine,
    single_thread,  # noqa: F401 - autouse fixture
    trainable,
)
from torch import nn

from skrobust.engines import GhostNormEngine, HybridEngine, make_engine
from skrobust.engines import func_form as func_form_mod


class ScaledLinear(nn.Linear):
    """A Linear subclass with an extra parameter the closed form knows nothing of."""

    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out)
        self.scale = nn.Parameter(torch.ones(n_out))

    def forward(self, x):
        return super().forward(x) * self.scale


def test_linear_subclass_is_not_given_the_closed_form_and_is_exact():
    torch.manual_seed(7)
    module = nn.Sequential(ScaledLinear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    assert not GhostNormEngine.supports(module)
    # A leaf that owns its parameters: torch.func per sample, not the Linear closed form.
    assert type(make_engine(module, "auto")) is HybridEngine
    X, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    c = torch.rand(8, dtype=torch.float64)
    ref_norms, _ = reference(module, ce_loss, X, y, c)
    module.zero_grad(set_to_none=True)
    norms = run_engine(make_engine(module, "auto"), module, ce_loss, X, y, c)
    assert_norms_close(norms, ref_norms, 1e-10)


def test_direct_construction_refuses_unsupported_modules():
    shared = nn.Linear(4, 4)
    tied = nn.Sequential(shared, nn.Tanh(), nn.Linear(4, 4))
    tied[2].weight = shared.weight
    for engine_cls, module, match in [
        (GhostNormEngine, nn.Sequential(ScaleLayer(4), nn.Linear(4, 2)), "ScaleLayer has no"),
        (HybridEngine, nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), "BatchNorm1d has no"),
        (HybridEngine, tied, "registered in two modules"),
    ]:
        assert not engine_cls.supports(module)
        with pytest.raises(TypeError, match=match):
            engine_cls(module)


@pytest.mark.parametrize("name", sorted(GHOST_CASES | HYBRID_CASES))
def test_layerwise_engines_do_not_fall_back(name):
    # In-place activations after a Linear, a layer called twice and torch.func
    # layers all keep the layer-wise path: GenericEngine is not needed.
    module, loss_fn, X, y = build(name, torch.float64)
    engine = make_engine(module, "auto")
    assert type(engine) is auto_type(name)
    check_exact(module, loss_fn, X, y, engine, expect_fallback=False)


class TiedOutputNet(nn.Module):
    """Weight tying the usual way: the output layer reuses the embedding table."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.hidden = nn.Linear(4, 4)

    def forward(self, x):
        h = torch.tanh(self.hidden(self.emb(x)))
        return h @ self.emb.weight.t()  # the table, used outside nn.Embedding.forward


def test_parameter_used_outside_its_layer_falls_back_and_is_exact():
    torch.manual_seed(8)
    module = TiedOutputNet().double()
    # Only Embedding and Linear hold parameters: statically the closed forms apply.
    engine = make_engine(module, "auto")
    assert type(engine) is GhostNormEngine
    X, y = torch.randint(0, 7, (8,)), torch.randint(0, 7, (8,))
    check_exact(module, ce_loss, X, y, engine, expect_fallback=True)


def test_parameter_used_in_the_loss_falls_back_and_is_exact():
    torch.manual_seed(9)
    module = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()

    def penalised(out, y):  # per-sample loss plus a weight penalty
        return ce_loss(out, y) + 0.1 * module[0].weight.pow(2).sum()

    X, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    check_exact(module, penalised, X, y, make_engine(module, "ghost"), expect_fallback=True)


class ModifiedInputNet(nn.Module):
    """The input of ``b`` is modified in place after ``b`` read it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 6)
        self.b = nn.Linear(6, 3)
        self.b.weight.requires_grad_(False)  # so that autograd itself does not object

    def forward(self, x):
        h = self.a(x)
        out = self.b(h)
        h.mul_(2.0)
        return out + torch.tanh(h).sum(1, keepdim=True)


def test_layer_input_modified_in_place_falls_back_and_is_exact():
    torch.manual_seed(10)
    module = ModifiedInputNet().double()
    X, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    check_exact(module, ce_loss, X, y, make_engine(module, "ghost"), expect_fallback=True)


def test_forward_hook_replacing_a_layer_output_is_exact():
    # The engine differentiates at the layer's own output, whatever hooks do to it.
    torch.manual_seed(11)
    module = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    module[0].register_forward_hook(lambda layer, args, out: 2.0 * out + 1.0)
    X, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    check_exact(module, ce_loss, X, y, make_engine(module, "ghost"), expect_fallback=False)


class PartlyNoGradNet(nn.Module):
    """One call of a layer under torch.no_grad, one with gradients."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.b = nn.Linear(5, 3)

    def forward(self, x):
        with torch.no_grad():
            x = self.a(x)
        return self.b(torch.tanh(self.a(x)))


def test_layer_call_without_gradient_is_skipped():
    torch.manual_seed(12)
    module = PartlyNoGradNet().double()
    X, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    check_exact(module, ce_loss, X, y, make_engine(module, "ghost"), expect_fallback=False)


def test_forward_is_restored_after_capture():
    module, loss_fn, X, y = build("conv1d", torch.float32)
    engine = make_engine(module, "auto")
    with pytest.raises(ZeroDivisionError):
        with engine.capture():
            module(X)
            raise ZeroDivisionError
    for layer in module.modules():
        assert "forward" not in vars(layer)


@pytest.mark.parametrize("name", ["mlp_dropout", "conv1d", "sequence_3d"])
def test_retain_graph_then_own_weighted_backward(name):
    # The DistributedDataParallel path: norms(retain_graph=True), then the
    # caller's own backward of sum_i c_i loss_i instead of engine.backward.
    module, loss_fn, X, y = build(name, torch.float64)
    c = torch.rand(len(X), dtype=torch.float64)
    _, ref_grads = reference(module, loss_fn, X, y, c)
    engine = make_engine(module, "auto")
    module.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    with engine.capture():
        losses = loss_fn(module(X), y)
    engine.norms(losses, retain_graph=True)
    (losses * c).sum().backward()
    engine.release()
    for p, g in zip(trainable(module), ref_grads):
        assert_grad_close(p.grad, g, 1e-10)


def test_trainable_parameters_changing_after_creation():
    torch.manual_seed(13)
    module = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.LayerNorm(6), nn.Linear(6, 3))
    module = module.double()
    perturb_layer_norms(module)
    X, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    engine = make_engine(module, "ghost")
    check_exact(module, ce_loss, X, y, engine, expect_fallback=False, steps=1)
    module[0].requires_grad_(False)  # e.g. skorch's Freezer callback
    check_exact(module, ce_loss, X, y, engine, expect_fallback=False, steps=1)
    module[0].requires_grad_(True)
    module[2].bias.requires_grad_(False)
    check_exact(module, ce_loss, X, y, engine, expect_fallback=False, steps=1)


def test_unfreezing_a_layer_without_closed_form_falls_back():
    torch.manual_seed(14)
    module = nn.Sequential(ScaleLayer(5), nn.Linear(5, 3)).double()
    module[0].requires_grad_(False)
    X, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    engine = make_engine(module, "ghost")
    check_exact(module, ce_loss, X, y, engine, expect_fallback=False, steps=1)
    module[0].requires_grad_(True)
    check_exact(module, ce_loss, X, y, engine, expect_fallback=True, steps=1)


# ---------------------------------------------------------------------------
# HybridEngine: torch.func for leaf layers without a closed form
# ---------------------------------------------------------------------------


class ScaleTwiceNet(nn.Module):
    """A custom leaf layer applied twice, and a Conv1d."""

    def __init__(self):
        super().__init__()
        self.scale = ScaleLayer(6)
        self.conv = nn.Conv1d(1, 2, kernel_size=3, padding=1)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        h = torch.tanh(self.scale(x))
        h = self.scale(h).unsqueeze(1)
        return self.head(torch.tanh(self.conv(h)).flatten(1))


@pytest.mark.parametrize("keep_bytes", [None, 8])
@pytest.mark.parametrize("dtype", DTYPES)
def test_hybrid_engine_layer_called_twice_and_chunked(monkeypatch, keep_bytes, dtype):
    if keep_bytes is not None:
        # Per-sample gradients too big to keep: chunks, then a batched vjp update.
        monkeypatch.setattr(func_form_mod, "_KEEP_BYTES", keep_bytes)
    torch.manual_seed(15)
    module = ScaleTwiceNet().to(dtype)
    X, y = torch.randn(9, 6, dtype=dtype), torch.randint(0, 3, (9,))
    engine = make_engine(module, "auto")
    assert type(engine) is HybridEngine
    c = torch.rand(9, dtype=dtype)
    ref_norms, ref_grads = reference(module, ce_loss, X, y, c)
    for _ in range(2):
        module.zero_grad(set_to_none=True)
        norms, fell_back = norms_and_fallback(engine, module, ce_loss, X, y, c)
        assert not fell_back
        assert_norms_close(norms, ref_norms, TOL[dtype])
        for p, g in zip(trainable(module), ref_grads):
            assert_grad_close(p.grad, g, TOL[dtype])


class NoisyScale(nn.Module):
    """A leaf layer with its own parameter and Dropout inside its forward."""

    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Parameter(1.0 + 0.5 * torch.randn(dim))

    def forward(self, x):
        return F.dropout(x * self.scale, 0.3, self.training)


class CentringScale(nn.Module):
    """A leaf layer that mixes the samples of its batch."""

    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Parameter(1.0 + 0.5 * torch.randn(dim))

    def forward(self, x):
        return (x - x.mean(0)) * self.scale


@pytest.mark.parametrize("layer_cls", [NoisyScale, CentringScale])
def test_hybrid_engine_gives_up_on_layers_that_are_not_per_sample(layer_cls):
    torch.manual_seed(16)
    module = nn.Sequential(layer_cls(5), nn.Tanh(), nn.Linear(5, 3)).double()
    X, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    engine = make_engine(module, "auto")
    assert type(engine) is HybridEngine
    c = torch.rand(8, dtype=torch.float64)
    ref_norms, ref_grads = reference(module, ce_loss, X, y, c)
    for step in range(2):
        module.zero_grad(set_to_none=True)
        if step == 0:
            with pytest.warns(RuntimeWarning, match="GenericEngine is used from now on"):
                norms, fell_back = norms_and_fallback(engine, module, ce_loss, X, y, c)
        else:
            norms, fell_back = norms_and_fallback(engine, module, ce_loss, X, y, c)
        assert fell_back
        assert_norms_close(norms, ref_norms, 1e-10)
        for p, g in zip(trainable(module), ref_grads):
            assert_grad_close(p.grad, g, 1e-10)

