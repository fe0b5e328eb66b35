"""Shared by the engine tests: an independent per-sample reference, and test models.

The reference recomputes the whole-batch forward pass once per sample, with
torch's global RNG re-seeded to the seed used before the engine's forward pass
(so ``torch.nn.Dropout`` draws the same masks), and differentiates
``losses[i]`` alone with ``torch.autograd.grad``.
"""

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skrobust.engines import GenericEngine, GhostNormEngine, HybridEngine

SEED = 1234
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]
LAYER_NORM_HAS_BIAS_ARG = "bias" in inspect.signature(nn.LayerNorm.__init__).parameters


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One torch thread for the test module; imported by each engine test module."""
    # The tensors here are tiny: intra-op threads only add contention (on a busy
    # 2-core machine they made this file ~5x slower). Restored afterwards.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------
# Independent reference: one autograd.grad per sample
# ---------------------------------------------------------------------------


def trainable(module):
    return [p for p in module.parameters() if p.requires_grad]


def reference(module, loss_fn, X, y, coefficients, seed=SEED):
    """Per-sample gradient norms and sum_i c_i grad_i, by a plain loop."""
    params = trainable(module)
    n = len(coefficients)
    norms = []
    weighted = [torch.zeros_like(p) for p in params]
    for i in range(n):
        torch.manual_seed(seed)
        losses = loss_fn(module(X), y)
        assert losses.shape == (n,)
        grads = torch.autograd.grad(losses[i], params, allow_unused=True)
        sq = params[0].new_zeros(())
        for acc, g in zip(weighted, grads):
            if g is None:
                continue
            sq = sq + g.pow(2).sum()
            acc += coefficients[i] * g
        norms.append(sq.sqrt())
    return torch.stack(norms).detach(), [w.detach() for w in weighted]


def per_tensor_norm_sum(module, loss_fn, X, y, n, seed=SEED):
    """The wrong quantity: per sample, the SUM of the per-tensor gradient norms."""
    params = trainable(module)
    out = []
    for i in range(n):
        torch.manual_seed(seed)
        losses = loss_fn(module(X), y)
        grads = torch.autograd.grad(losses[i], params)
        out.append(sum(g.norm() for g in grads))
    return torch.stack(out).detach()


def run_engine(engine, module, loss_fn, X, y, coefficients, seed=SEED):
    """One engine step: seeded forward under capture, norms, weighted backward."""
    torch.manual_seed(seed)
    with engine.capture():
        losses = loss_fn(module(X), y)
    norms = engine.norms(losses)
    engine.backward(coefficients)
    return norms


def norms_and_fallback(engine, module, loss_fn, X, y, coefficients, seed=SEED):
    """run_engine, also telling whether the step fell back to GenericEngine."""
    torch.manual_seed(seed)
    with engine.capture():
        losses = loss_fn(module(X), y)
    norms = engine.norms(losses)
    fell_back = engine._fallback.active
    engine.backward(coefficients)
    return norms, fell_back


def check_exact(module, loss_fn, X, y, engine, expect_fallback, steps=2, tol=1e-10):
    """Norms and weighted gradients of ``engine`` against the per-sample loop."""
    c = torch.rand(len(X), dtype=torch.float64)
    ref_norms, ref_grads = reference(module, loss_fn, X, y, c)
    for _ in range(steps):
        module.zero_grad(set_to_none=True)
        norms, fell_back = norms_and_fallback(engine, module, loss_fn, X, y, c)
        assert fell_back == expect_fallback
        assert_norms_close(norms, ref_norms, tol)
        for p, g in zip(trainable(module), ref_grads):
            assert_grad_close(p.grad, g, tol)


def assert_norms_close(actual, expected, tol):
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    assert not actual.requires_grad
    torch.testing.assert_close(actual, expected, rtol=tol, atol=0.0)


def assert_grad_close(actual, expected, tol):
    assert actual is not None
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual.detach(), expected, rtol=tol, atol=tol * max(scale, 1e-30))


# ---------------------------------------------------------------------------
# Test models
# ---------------------------------------------------------------------------


def ce_loss(out, y):
    return F.cross_entropy(out, y, reduction="none")


def mse_loss(out, y):
    return (out - y).pow(2).mean(1)



def perturb_layer_norms(module):
    # LayerNorm starts at weight=1, bias=0: move away from that special point.
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.LayerNorm):
                for p in sub.parameters(recurse=False):
                    p.add_(0.3 * torch.randn_like(p))


class TwiceLinear(nn.Module):
    """Weight sharing: the same Linear applied twice in one forward pass."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.shared = nn.Linear(8, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = torch.tanh(self.shared(h))
        h = torch.tanh(self.shared(h))
        return self.out(h)


class ScaleLayer(nn.Module):
    """A custom layer with a bare parameter used as an elementwise scale."""

    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Parameter(1.0 + 0.5 * torch.randn(dim))

    def forward(self, x):
        return x * self.scale


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 3, kernel_size=3)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).flatten(1))


class CategoricalNet(nn.Module):
    """Three categorical columns share ONE embedding table; two numeric columns."""

    def __init__(self, n_categories=5, dim=4, padding_idx=None):
        super().__init__()
        self.emb = nn.Embedding(n_categories, dim, padding_idx=padding_idx)
        self.head = nn.Sequential(nn.Linear(3 * dim + 2, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x):
        cats = x[:, :3].long()
        nums = x[:, 3:]
        return self.head(torch.cat([self.emb(cats).flatten(1), nums], dim=1))


class PaddedNet(nn.Module):
    """Embedding with padding_idx, looked up with (n, 2) ids and with (n,) ids."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(6, 3, padding_idx=0)
        self.single = nn.Embedding(4, 3, padding_idx=2)
        self.head = nn.Linear(9 + 1, 3)

    def forward(self, x):
        pair = x[:, :2].long()
        one = x[:, 2].long()
        feats = [self.emb(pair).flatten(1), self.single(one), x[:, 3:]]
        return self.head(torch.cat(feats, dim=1))


class SequenceNet(nn.Module):
    """(n, T, d) input through Linear/LayerNorm layers, then a mean over T."""

    def __init__(self):
        super().__init__()
        # T=5: 25 <= 4*8 (Gram form) for `a`, 25 > 8*3 (direct form) for `b`.
        self.a = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.norm(self.a(x)))).mean(1)


class FrozenNet(nn.Module):
    """Some frozen tensors, including a frozen bare parameter."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(1.0 + 0.5 * torch.randn(6), requires_grad=False)
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.c = nn.Linear(8, 3)
        self.a.requires_grad_(False)
        self.b.weight.requires_grad_(False)
        self.norm.bias.requires_grad_(False)

    def forward(self, x):
        h = torch.tanh(self.a(x * self.scale))
        return self.c(torch.tanh(self.norm(self.b(h))))


N = 10


def _numeric(n=N, d=6):
    return torch.randn(n, d)


def _labels(n=N, k=3):
    return torch.randint(0, k, (n,))


def case_linear():
    return nn.Linear(6, 3), ce_loss, _numeric(), _labels(), True


def case_mlp_dropout():
    module = nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3),
    )
    module.train()
    return module, ce_loss, _numeric(), _labels(), True


def case_linear_no_bias():
    module = nn.Sequential(nn.Linear(6, 8, bias=False), nn.Tanh(), nn.Linear(8, 2, bias=False))
    return module, mse_loss, _numeric(), torch.randn(N, 2), True


def case_layer_norm():
    module = nn.Sequential(
        nn.Linear(6, 12), nn.LayerNorm(12), nn.GELU(), nn.Linear(12, 12),
        nn.LayerNorm(12, elementwise_affine=False), nn.Linear(12, 3),
    )
    perturb_layer_norms(module)
    return module, ce_loss, _numeric(), _labels(), True


def case_layer_norm_no_bias():
    module = nn.Sequential(nn.Linear(6, 12), nn.LayerNorm(12, bias=False), nn.Tanh(),
                           nn.Linear(12, 3))
    perturb_layer_norms(module)
    return module, ce_loss, _numeric(), _labels(), True


def _categorical_rows():
    cats = torch.tensor([
        [1, 1, 1], [2, 2, 0], [0, 3, 0], [4, 1, 2], [3, 3, 4],
        [0, 1, 2], [2, 4, 2], [1, 0, 3], [4, 4, 4], [3, 2, 1],
    ])
    assert any(len(set(row.tolist())) < 3 for row in cats)  # ids repeat within rows
    return cats


def case_embedding_shared():
    cats = _categorical_rows().to(torch.get_default_dtype())
    X = torch.cat([cats, torch.randn(N, 2)], dim=1)
    return CategoricalNet(), ce_loss, X, _labels(), True


def case_embedding_padding():
    pair = torch.tensor([[0, 0], [1, 0], [0, 5], [3, 3], [2, 4], [5, 1], [0, 2], [4, 4],
                         [1, 1], [3, 0]])
    one = torch.tensor([2, 0, 1, 2, 3, 2, 0, 1, 3, 2])
    X = torch.cat([pair.float(), one.float()[:, None], torch.randn(N, 1)], dim=1)
    return PaddedNet(), ce_loss, X, _labels(), True


def case_sequence_3d():
    return SequenceNet(), ce_loss, torch.randn(N, 5, 4), _labels(), True


def case_frozen():
    return FrozenNet(), ce_loss, _numeric(), _labels(), True


def case_custom_scale():
    module = nn.Sequential(ScaleLayer(6), nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    return module, ce_loss, _numeric(), _labels(), False


def case_conv1d():
    return ConvNet(), ce_loss, torch.randn(N, 2, 6), _labels(), False


def case_embedding_scale_grad_by_freq():
    module = CategoricalNet()
    module.emb.scale_grad_by_freq = True
    cats = _categorical_rows().float()
    X = torch.cat([cats, torch.randn(N, 2)], dim=1)
    return module, ce_loss, X, _labels(), False


def case_weight_sharing():
    return TwiceLinear(), ce_loss, _numeric(), _labels(), True


def case_inplace_relu():
    module = nn.Sequential(
        nn.Linear(6, 8), nn.ReLU(inplace=True), nn.Linear(8, 8), nn.ReLU(inplace=True),
        nn.Linear(8, 3),
    )
    return module, ce_loss, _numeric() + 0.5, _labels(), True


no_ln_bias = pytest.mark.skipif(
    not LAYER_NORM_HAS_BIAS_ARG, reason="torch.nn.LayerNorm has no bias argument"
)

CASES = {
    "linear": (case_linear, ()),
    "mlp_dropout": (case_mlp_dropout, ()),
    "linear_no_bias": (case_linear_no_bias, ()),
    "layer_norm": (case_layer_norm, ()),
    "layer_norm_no_bias": (case_layer_norm_no_bias, (no_ln_bias,)),
    "embedding_shared": (case_embedding_shared, ()),
    "embedding_padding": (case_embedding_padding, ()),
    "sequence_3d": (case_sequence_3d, ()),
    "frozen": (case_frozen, ()),
    "custom_scale": (case_custom_scale, ()),
    "conv1d": (case_conv1d, ()),
    "embedding_scale_grad_by_freq": (case_embedding_scale_grad_by_freq, ()),
    "weight_sharing": (case_weight_sharing, ()),
    "inplace_relu": (case_inplace_relu, ()),
}
GHOST_CASES = {
    "linear", "mlp_dropout", "linear_no_bias", "layer_norm", "layer_norm_no_bias",
    "embedding_shared", "embedding_padding", "sequence_3d", "frozen", "weight_sharing",
    "inplace_relu",
}
# Not covered by closed forms, but every parametrized layer is a leaf owning its
# parameters: "auto" gives the HybridEngine (closed forms + torch.func per layer).
HYBRID_CASES = {"custom_scale", "conv1d"}


def auto_type(name):
    if name in GHOST_CASES:
        return GhostNormEngine
    return HybridEngine if name in HYBRID_CASES else GenericEngine


def build(name, dtype):
    torch.manual_seed(0)
    module, loss_fn, X, y, ghost_ok = CASES[name][0]()
    assert ghost_ok == (name in GHOST_CASES)
    module = module.to(dtype)
    if X.is_floating_point():
        X = X.to(dtype)
    if y.is_floating_point():
        y = y.to(dtype)
    return module, loss_fn, X, y


def _engine_params():
    params = []
    for name, (_, marks) in CASES.items():
        engines = ("ghost", "generic", "auto") if name in GHOST_CASES else ("generic", "auto")
        for engine in engines:
            params.append(pytest.param(name, engine, id=f"{name}-{engine}", marks=marks))
    return params


def _case_params():
    return [pytest.param(name, id=name, marks=marks) for name, (_, marks) in CASES.items()]

