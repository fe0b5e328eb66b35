"""Tests for the public surface of skrobust.engines, against an independent per-sample loop.

``make_engine``'s choices, the exactness of every engine on every test model,
``per_sample_grad_norms`` and the argument checks. The reference and the models
are in ``_engine_reference.py``.
"""

import pytest
import torch
from _engine_reference import (
    CASES,
    DTYPES,
    GHOST_CASES,
    HYBRID_CASES,
    TOL,
    assert_grad_close,
    assert_norms_close,
    auto_type,
    build,
    ce_loss,
    per_tensor_norm_sum,
    reference,
    run_engine,
    single_thread,  # noqa: F401 - autouse fixture
    trainable,
)
from torch import nn

from skrobust.engines import (
    ENGINES,
    GenericEngine,
    GhostNormEngine,
    HybridEngine,
    check_per_sample_module,
    make_engine,
    per_sample_grad_norms,
)


def _engine_params():
    params = []
    for name, (_, marks) in CASES.items():
        engines = ("ghost", "generic", "auto") if name in GHOST_CASES else ("generic", "auto")
        for engine in engines:
            params.append(pytest.param(name, engine, id=f"{name}-{engine}", marks=marks))
    return params


def _case_params():
    return [pytest.param(name, id=name, marks=marks) for name, (_, marks) in CASES.items()]


# ---------------------------------------------------------------------------
# Exactness of norms and weighted gradients
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "engine_name"), _engine_params())
def test_norms_and_weighted_grads_match_reference(name, engine_name, dtype):
    tol = TOL[dtype]
    module, loss_fn, X, y = build(name, dtype)
    n = len(X)
    coefficients = torch.rand(n, dtype=dtype)
    coefficients[0] = 0.0
    ref_norms, ref_grads = reference(module, loss_fn, X, y, coefficients)
    params = trainable(module)
    frozen = [p for p in module.parameters() if not p.requires_grad]

    engine = make_engine(module, engine_name)
    expected_type = GenericEngine if engine_name == "generic" else auto_type(name)
    assert type(engine) is expected_type

    # Step 1: from empty gradients.
    module.zero_grad(set_to_none=True)
    norms = run_engine(engine, module, loss_fn, X, y, coefficients)
    assert_norms_close(norms, ref_norms, tol)
    for p, g in zip(params, ref_grads):
        assert_grad_close(p.grad, g, tol)
    for p in frozen:
        assert p.grad is None

    # Step 2: the same engine object again, accumulating onto existing gradients.
    existing = [torch.randn_like(p) for p in params]
    for p, e in zip(params, existing):
        p.grad = e.clone()
    norms = run_engine(engine, module, loss_fn, X, y, coefficients)
    assert_norms_close(norms, ref_norms, tol)
    for p, e, g in zip(params, existing, ref_grads):
        assert_grad_close(p.grad, e + g, tol)
    for p in frozen:
        assert p.grad is None


@pytest.mark.parametrize("name", _case_params())
def test_auto_and_ghost_selection(name):
    module, *_ = build(name, torch.float32)
    assert GhostNormEngine.supports(module) == (name in GHOST_CASES)
    auto = make_engine(module, "auto")
    if name in GHOST_CASES:
        assert isinstance(auto, GhostNormEngine)
        assert isinstance(make_engine(module, "ghost"), GhostNormEngine)
    else:
        assert type(auto) is auto_type(name)
        assert HybridEngine.supports(module) == (name in HYBRID_CASES)
        with pytest.raises(ValueError, match="ghost"):
            make_engine(module, "ghost")
    assert isinstance(make_engine(module), type(auto))
    assert isinstance(make_engine(module, "generic"), GenericEngine)


def test_mlp_dropout_masks_actually_vary():
    # Guards the Dropout case: with different seeds the losses differ, so the
    # reference really relies on re-seeding to reproduce the engine's masks.
    module, loss_fn, X, y = build("mlp_dropout", torch.float64)
    torch.manual_seed(1)
    a = loss_fn(module(X), y)
    torch.manual_seed(2)
    b = loss_fn(module(X), y)
    torch.manual_seed(1)
    c = loss_fn(module(X), y)
    assert not torch.equal(a, b)
    assert torch.equal(a, c)


@pytest.mark.parametrize("engine_name", ["ghost", "generic", "auto"])
def test_norm_is_true_norm_not_sum_of_tensor_norms(engine_name):
    torch.manual_seed(3)
    module = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    X, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    c = torch.ones(8, dtype=torch.float64)
    true_norms, _ = reference(module, ce_loss, X, y, c)
    wrong = per_tensor_norm_sum(module, ce_loss, X, y, 8)
    # Four tensors with non-zero gradients: the two quantities differ clearly.
    assert torch.all(wrong > true_norms * 1.05)
    norms = run_engine(make_engine(module, engine_name), module, ce_loss, X, y, c)
    torch.testing.assert_close(norms, true_norms, rtol=1e-10, atol=0.0)


# ---------------------------------------------------------------------------
# per_sample_grad_norms and argument checks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("engine_name", ["ghost", "generic", "auto"])
def test_per_sample_grad_norms_matches_reference(engine_name):
    module, loss_fn, X, y = build("layer_norm", torch.float64)
    ref_norms, _ = reference(module, loss_fn, X, y, torch.ones(len(X), dtype=torch.float64))
    norms = per_sample_grad_norms(module, loss_fn, X, y, engine=engine_name)
    assert norms.shape == (len(X),)
    assert_norms_close(norms, ref_norms, 1e-10)


def test_per_sample_grad_norms_default_engine_shape():
    module = nn.Linear(3, 2)
    X, y = torch.randn(7, 3), torch.randint(0, 2, (7,))
    norms = per_sample_grad_norms(module, nn.CrossEntropyLoss(reduction="none"), X, y)
    assert norms.shape == (7,)
    assert torch.all(norms > 0)


@pytest.mark.parametrize("engine_name", ["ghost", "generic", "auto"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_per_sample_grad_norms_rejects_reduced_loss(engine_name, reduction):
    module = nn.Linear(3, 2)
    X, y = torch.randn(7, 3), torch.randint(0, 2, (7,))
    with pytest.raises(ValueError, match="one loss per sample"):
        per_sample_grad_norms(module, nn.CrossEntropyLoss(reduction=reduction), X, y,
                              engine=engine_name)


def test_per_sample_grad_norms_rejects_wrong_loss_shape():
    module = nn.Linear(3, 2)
    X, y = torch.randn(7, 3), torch.randn(7, 2)
    with pytest.raises(ValueError, match="one loss per sample"):
        per_sample_grad_norms(module, nn.MSELoss(reduction="none"), X, y)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_batch_norm_is_refused(engine_name):
    module = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="LayerNorm"):
        make_engine(module, engine_name)
    with pytest.raises(ValueError, match="BatchNorm"):
        check_per_sample_module(module)
    X, y = torch.randn(5, 4), torch.randint(0, 2, (5,))
    with pytest.raises(ValueError, match="LayerNorm"):
        per_sample_grad_norms(module, nn.CrossEntropyLoss(reduction="none"), X, y,
                              engine=engine_name)


def test_check_per_sample_module_accepts_layer_norm():
    check_per_sample_module(nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8)))


@pytest.mark.parametrize("bad", ["fast", "Ghost", "", None])
def test_unknown_engine_name(bad):
    with pytest.raises(ValueError, match="one of"):
        make_engine(nn.Linear(3, 2), bad)


# ---------------------------------------------------------------------------
# Cases that once broke the ghost engine
# ---------------------------------------------------------------------------


class TiedNet(nn.Module):
    """Two Linear modules sharing ONE weight Parameter (weight tying)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))



def test_tied_weights_are_not_ghost_supported():
    assert not GhostNormEngine.supports(TiedNet())
    with pytest.raises(ValueError, match="grad_engine='ghost' supports"):
        make_engine(TiedNet(), "ghost")


@pytest.mark.parametrize("engine_name", ["generic", "auto"])
def test_tied_weights_across_modules(engine_name):
    torch.manual_seed(5)
    module = TiedNet().double()
    X, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 4, (8,))
    c = torch.rand(8, dtype=torch.float64)
    ref_norms, ref_grads = reference(module, ce_loss, X, y, c)
    module.zero_grad(set_to_none=True)
    norms = run_engine(make_engine(module, engine_name), module, ce_loss, X, y, c)
    for p, g in zip(trainable(module), ref_grads):
        assert_grad_close(p.grad, g, 1e-10)
    assert_norms_close(norms, ref_norms, 1e-10)


class UnusedBranchNet(nn.Module):
    """A Linear that runs in forward but whose output does not reach the loss."""

    def __init__(self):
        super().__init__()
        self.main = nn.Linear(4, 3)
        self.aux = nn.Linear(4, 3)

    def forward(self, x):
        self.aux(x)
        return self.main(x)



@pytest.mark.parametrize(
    "engine_name",
    ["ghost", "generic", "auto"],
)
def test_layer_output_unused_by_loss(engine_name):
    torch.manual_seed(6)
    module = UnusedBranchNet().double()
    X, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    c = torch.rand(8, dtype=torch.float64)
    ref_norms, ref_grads = reference(module, ce_loss, X, y, c)
    module.zero_grad(set_to_none=True)
    norms = run_engine(make_engine(module, engine_name), module, ce_loss, X, y, c)
    assert_norms_close(norms, ref_norms, 1e-10)
    for p, g in zip(trainable(module), ref_grads):
        if torch.count_nonzero(g):
            assert_grad_close(p.grad, g, 1e-10)
        else:
            assert p.grad is None or torch.count_nonzero(p.grad) == 0



@pytest.mark.parametrize(
    "engine_name",
    ["ghost", "generic", "auto"],
)
def test_grads_are_plain_tensors(engine_name):
    module, loss_fn, X, y = build("mlp_dropout", torch.float32)
    module.zero_grad(set_to_none=True)
    c = torch.rand(len(X))
    run_engine(make_engine(module, engine_name), module, loss_fn, X, y, c)
    for p in trainable(module):
        assert p.grad is not None
        assert not p.grad.requires_grad
        assert p.grad.grad_fn is None


# ---------------------------------------------------------------------------
# compute_weights: the branch-free path (accelerators) against the CPU path
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_compute_weights_branch_free_path_matches_cpu_path(monkeypatch, dtype):
    import itertools
    import math

    import skrobust.weighting as weighting_mod

    gen = torch.Generator().manual_seed(17)
    batches = [torch.full((5,), 0.1, dtype=dtype), torch.tensor([2.0], dtype=dtype),
               torch.tensor([1.0, float("nan"), 1.0, float("inf")], dtype=dtype)]
    for n in (2, 7, 33):
        g = torch.rand(n, generator=gen, dtype=dtype) * 10
        batches.append(g)
        bad = g.clone()
        bad[::3] = float("nan")
        bad[1] = float("inf")
        batches.append(bad)
    rules = list(itertools.product(("truncate", "soft", "none"), ("mean_std", "median_iqr"),
                                   (0.0, 1.0, math.inf), (0.5, math.inf)))
    for norms in batches:
        for weighting, stats, alpha, beta in rules:
            kwargs = dict(weighting=weighting, stats=stats, alpha=alpha, beta=beta)
            monkeypatch.setattr(weighting_mod, "_HOST_BRANCHES", True)
            host = weighting_mod.compute_weights(norms, **kwargs)
            monkeypatch.setattr(weighting_mod, "_HOST_BRANCHES", False)
            branch_free = weighting_mod.compute_weights(norms, **kwargs)
            assert branch_free.dtype == host.dtype == dtype
            torch.testing.assert_close(branch_free, host, rtol=TOL[dtype], atol=0.0)
