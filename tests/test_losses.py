"""Tests for skrobust.losses."""

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skrobust.losses import (
    ActivePassiveLoss,
    ForwardCorrectedCrossEntropy,
    GeneralizedCrossEntropy,
    NormalizedCrossEntropy,
    ReverseCrossEntropy,
    SymmetricCrossEntropy,
    estimate_transition_matrix,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

N_CLASSES = 4
NOISY_T = np.array(
    [
        [0.70, 0.10, 0.10, 0.10],
        [0.05, 0.80, 0.10, 0.05],
        [0.00, 0.20, 0.80, 0.00],
        [0.25, 0.00, 0.00, 0.75],
    ]
)


# ---------------------------------------------------------------------------
# Independent numpy references, written from the formulas
# ---------------------------------------------------------------------------


def np_softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def np_p_y(logits, y):
    return np_softmax(logits)[np.arange(len(y)), y]


def ref_gce(logits, y, q):
    return (1.0 - np_p_y(logits, y) ** q) / q


def ref_ce(logits, y):
    return -np.log(np_p_y(logits, y))


def ref_rce(logits, y):
    # -sum_k p_k * log(onehot_k), with log(0) replaced by A = -4 and log(1) = 0.
    p = np_softmax(logits)
    log_onehot = np.full_like(p, -4.0)
    log_onehot[np.arange(len(y)), y] = 0.0
    return -(p * log_onehot).sum(axis=1)


def ref_nce(logits, y):
    log_p = np.log(np_softmax(logits))
    return -log_p[np.arange(len(y)), y] / -log_p.sum(axis=1)


def ref_sce(logits, y, alpha, beta):
    return alpha * ref_ce(logits, y) + beta * ref_rce(logits, y)


def ref_apl(logits, y, alpha, beta):
    return alpha * ref_nce(logits, y) + beta * ref_rce(logits, y)


def ref_forward(logits, y, T):
    noisy = np_softmax(logits) @ T
    return -np.log(noisy[np.arange(len(y)), y])


# (id, factory(reduction) -> criterion, numpy reference(logits, y) -> per-sample losses)
CASES = [
    ("gce-default", GeneralizedCrossEntropy, partial(ref_gce, q=0.7)),
    ("gce-q0.3", partial(GeneralizedCrossEntropy, q=0.3), partial(ref_gce, q=0.3)),
    ("gce-q1", partial(GeneralizedCrossEntropy, q=1.0), partial(ref_gce, q=1.0)),
    ("sce-default", SymmetricCrossEntropy, partial(ref_sce, alpha=0.1, beta=1.0)),
    (
        "sce-weights",
        partial(SymmetricCrossEntropy, alpha=0.5, beta=0.0),
        partial(ref_sce, alpha=0.5, beta=0.0),
    ),
    ("nce", NormalizedCrossEntropy, ref_nce),
    ("rce", ReverseCrossEntropy, ref_rce),
    ("apl-default", ActivePassiveLoss, partial(ref_apl, alpha=1.0, beta=1.0)),
    (
        "apl-weights",
        partial(ActivePassiveLoss, alpha=10.0, beta=0.1),
        partial(ref_apl, alpha=10.0, beta=0.1),
    ),
    (
        "forward-T",
        partial(ForwardCorrectedCrossEntropy, NOISY_T),
        partial(ref_forward, T=NOISY_T),
    ),
    (
        "forward-identity",
        partial(ForwardCorrectedCrossEntropy, np.eye(N_CLASSES)),
        ref_ce,
    ),
]
CASE_IDS = [case[0] for case in CASES]
FACTORIES = [case[1] for case in CASES]

LOSS_CLASSES = [
    GeneralizedCrossEntropy,
    SymmetricCrossEntropy,
    NormalizedCrossEntropy,
    ReverseCrossEntropy,
    ActivePassiveLoss,
    ForwardCorrectedCrossEntropy,
]


def make_criterion(loss_cls, **kwargs):
    """Build any loss; the forward-corrected one gets NOISY_T."""
    if loss_cls is ForwardCorrectedCrossEntropy:
        return loss_cls(NOISY_T, **kwargs)
    return loss_cls(**kwargs)


def make_inputs(n=7, n_classes=N_CLASSES, dtype=torch.float64, scale=2.0, seed=0):
    rng = np.random.default_rng(seed)
    logits = scale * rng.standard_normal((n, n_classes))
    target = rng.integers(0, n_classes, size=n)
    target[:n_classes] = np.arange(n_classes)  # every class appears
    return torch.tensor(logits, dtype=dtype), torch.tensor(target, dtype=torch.int64)


# ---------------------------------------------------------------------------
# Values, shapes and dtypes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(("factory", "reference"), [c[1:] for c in CASES], ids=CASE_IDS)
def test_values_match_numpy_reference(factory, reference, reduction):
    logits, target = make_inputs()
    expected = reference(logits.numpy(), target.numpy())
    expected = {"none": expected, "mean": expected.mean(), "sum": expected.sum()}[reduction]

    loss = factory(reduction=reduction)(logits, target)

    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("factory", FACTORIES, ids=CASE_IDS)
def test_shape_and_dtype(factory, reduction, dtype):
    n = 5
    logits, target = make_inputs(n=n, dtype=dtype)

    loss = factory(reduction=reduction)(logits, target)

    assert loss.dtype == dtype
    assert loss.shape == ((n,) if reduction == "none" else ())
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("factory", FACTORIES, ids=CASE_IDS)
def test_float32_close_to_float64(factory):
    logits, target = make_inputs(dtype=torch.float64)
    criterion = factory(reduction="none")

    loss64 = criterion(logits, target)
    loss32 = criterion(logits.float(), target)

    np.testing.assert_allclose(loss32.numpy(), loss64.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factory", FACTORIES, ids=CASE_IDS)
def test_default_reduction_is_mean(factory):
    logits, target = make_inputs()
    mean_loss = factory()(logits, target)
    per_sample = factory(reduction="none")(logits, target)
    assert factory().reduction == "mean"
    torch.testing.assert_close(mean_loss, per_sample.mean())


@pytest.mark.parametrize("target_dtype", [torch.int32, torch.int64, torch.uint8])
@pytest.mark.parametrize("loss_cls", LOSS_CLASSES)
def test_integer_target_dtypes(loss_cls, target_dtype):
    logits, target = make_inputs()
    criterion = make_criterion(loss_cls, reduction="none")
    torch.testing.assert_close(
        criterion(logits, target.to(target_dtype)), criterion(logits, target)
    )


def test_bounded_losses_stay_in_range():
    logits, target = make_inputs(n=50, scale=5.0)
    assert (NormalizedCrossEntropy(reduction="none")(logits, target) <= 1).all()
    rce = ReverseCrossEntropy(reduction="none")(logits, target)
    assert ((rce >= 0) & (rce <= 4)).all()
    gce = GeneralizedCrossEntropy(q=0.5, reduction="none")(logits, target)
    assert ((gce >= 0) & (gce <= 1 / 0.5)).all()


def test_gce_tends_to_cross_entropy_for_small_q():
    logits, target = make_inputs()
    gce = GeneralizedCrossEntropy(q=1e-9, reduction="none")(logits, target)
    ce = F.cross_entropy(logits, target, reduction="none")
    torch.testing.assert_close(gce, ce, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("loss_cls", LOSS_CLASSES)
def test_extreme_logits_give_finite_loss_and_gradients(loss_cls, dtype):
    logits = torch.tensor([[100.0, -100.0, 0.0, 0.0], [-100.0, 100.0, 0.0, 0.0]], dtype=dtype)
    logits.requires_grad_(True)
    target = torch.tensor([0, 0])  # second sample confidently wrong

    loss = make_criterion(loss_cls, reduction="sum")(logits, target)
    loss.backward()

    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("factory", FACTORIES, ids=CASE_IDS)
def test_gradcheck(factory, reduction):
    logits, target = make_inputs(n=4, scale=1.0, seed=1)
    logits.requires_grad_(True)
    criterion = factory(reduction=reduction)
    assert torch.autograd.gradcheck(lambda z: criterion(z, target), (logits,))


# ---------------------------------------------------------------------------
# ForwardCorrectedCrossEntropy specifics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_forward_identity_equals_cross_entropy(reduction, dtype):
    logits, target = make_inputs(n=9, dtype=dtype, scale=4.0)
    criterion = ForwardCorrectedCrossEntropy(torch.eye(N_CLASSES), reduction=reduction)
    torch.testing.assert_close(
        criterion(logits, target), F.cross_entropy(logits, target, reduction=reduction)
    )


def test_forward_transition_matrix_is_a_buffer():
    criterion = ForwardCorrectedCrossEntropy(NOISY_T.tolist())
    buffers = dict(criterion.named_buffers())
    assert "transition_matrix" in buffers
    assert "transition_matrix" in criterion.state_dict()
    np.testing.assert_array_equal(buffers["transition_matrix"].numpy(), NOISY_T)
    assert criterion.n_classes == N_CLASSES
    assert "n_classes=4" in repr(criterion)

    # Casting the module does not prevent using other logits dtypes.
    criterion.to(torch.float32)
    assert criterion.transition_matrix.dtype == torch.float32
    logits, target = make_inputs(dtype=torch.float64)
    assert criterion(logits, target).dtype == torch.float64


def test_forward_accepts_tensor_transition_matrix():
    logits, target = make_inputs()
    from_numpy = ForwardCorrectedCrossEntropy(NOISY_T)(logits, target)
    from_tensor = ForwardCorrectedCrossEntropy(torch.tensor(NOISY_T, dtype=torch.float32))
    torch.testing.assert_close(from_tensor(logits, target), from_numpy, rtol=1e-6, atol=1e-7)


def test_forward_zero_corrected_probability_is_clamped():
    # Noisy label 1 is impossible from true class 0; a sure class-0 prediction
    # gives corrected probability 0, which must not produce inf.
    T = np.array([[1.0, 0.0], [0.5, 0.5]])
    logits = torch.tensor([[200.0, -200.0]], requires_grad=True)
    loss = ForwardCorrectedCrossEntropy(T)(logits, torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


@CUDA
@pytest.mark.parametrize("factory", FACTORIES, ids=CASE_IDS)
def test_cuda_matches_cpu(factory):
    logits, target = make_inputs()
    criterion = factory(reduction="none")
    expected = criterion(logits, target)
    got = criterion.to("cuda")(logits.cuda(), target.cuda())
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), expected)


# ---------------------------------------------------------------------------
# Argument and input validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (partial(GeneralizedCrossEntropy, q=0.0), r"q must be in \(0, 1\], got 0\.0"),
        (partial(GeneralizedCrossEntropy, q=1.5), r"q must be in \(0, 1\], got 1\.5"),
        (partial(GeneralizedCrossEntropy, q=-0.2), r"q must be in \(0, 1\]"),
        (partial(GeneralizedCrossEntropy, q=float("nan")), r"q must be in \(0, 1\], got nan"),
        (partial(GeneralizedCrossEntropy, q="0.5"), r"q must be a real number in \(0, 1\]"),
        (partial(GeneralizedCrossEntropy, q=True), r"q must be a real number"),
        (partial(SymmetricCrossEntropy, alpha=-1.0), r"alpha must be in \[0, inf\), got -1\.0"),
        (partial(SymmetricCrossEntropy, beta=-0.5), r"beta must be in \[0, inf\), got -0\.5"),
        (partial(SymmetricCrossEntropy, alpha=0, beta=0), r"alpha and beta must not both be 0"),
        (partial(ActivePassiveLoss, alpha=-2.0), r"alpha must be in \[0, inf\)"),
        (partial(ActivePassiveLoss, beta=float("inf")), r"beta must be in \[0, inf\), got inf"),
        (partial(ActivePassiveLoss, alpha=0.0, beta=0.0), r"alpha and beta must not both be 0"),
        (partial(NormalizedCrossEntropy, reduction="avg"), r"reduction must be one of .*'avg'"),
        (partial(ReverseCrossEntropy, reduction=None), r"reduction must be one of .*None"),
        (
            partial(ForwardCorrectedCrossEntropy, NOISY_T, reduction="batchmean"),
            r"reduction must be one of",
        ),
    ],
)
def test_invalid_constructor_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize(
    ("transition_matrix", "match"),
    [
        (np.ones((2, 3)) / 3, r"must be a square 2-D array .* got shape \(2, 3\)"),
        (np.ones((2, 2, 2)) / 2, r"must be a square 2-D array"),
        (np.array([0.5, 0.5]), r"must be a square 2-D array"),
        (np.ones((1, 1)), r"n_classes >= 2"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), r"finite"),
        (np.array([[1.5, -0.5], [0.0, 1.0]]), r"non-negative, got minimum entry -0\.5"),
        (np.array([[0.5, 0.4], [0.0, 1.0]]), r"rows must sum to 1 .* row 0 summing to 0\.9"),
        ([["a", "b"], ["c", "d"]], r"numeric array-like"),
    ],
)
def test_invalid_transition_matrix(transition_matrix, match):
    with pytest.raises(ValueError, match=match):
        ForwardCorrectedCrossEntropy(transition_matrix)


@pytest.mark.parametrize(
    "factory",
    [
        partial(GeneralizedCrossEntropy, q="0.5"),
        partial(SymmetricCrossEntropy, alpha=None),
        partial(ForwardCorrectedCrossEntropy, [["a", "b"], ["c", "d"]]),
    ],
)
def test_wrong_argument_type_is_both_value_and_type_error(factory):
    # ValueError as the losses always raised; TypeError as the noise tools raise.
    with pytest.raises(ValueError) as info:
        factory()
    assert isinstance(info.value, TypeError)


def test_transition_matrix_row_sum_tolerance():
    T = np.array([[0.9, 0.1 + 5e-5], [0.2, 0.8]])
    ForwardCorrectedCrossEntropy(T)  # within 1e-4: accepted
    with pytest.raises(ValueError, match="rows must sum to 1"):
        ForwardCorrectedCrossEntropy(np.array([[0.9, 0.1 + 5e-4], [0.2, 0.8]]))


@pytest.mark.parametrize("loss_cls", LOSS_CLASSES)
def test_invalid_forward_inputs(loss_cls):
    criterion = make_criterion(loss_cls)
    logits, target = make_inputs(n=5)
    with pytest.raises(ValueError, match=r"logits must be a 2-D tensor"):
        criterion(logits[0], target[:1])
    with pytest.raises(ValueError, match=r"target must be a 1-D tensor .* got shape \(2,\)"):
        criterion(logits, target[:2])
    with pytest.raises(ValueError, match=r"target must be a 1-D tensor"):
        criterion(logits, target[:, None])
    with pytest.raises(ValueError, match=r"target must be an integer tensor"):
        criterion(logits, target.double())
    with pytest.raises(ValueError, match=r"logits must be a floating point tensor"):
        criterion(target.reshape(5, 1).repeat(1, N_CLASSES), target)
    with pytest.raises(ValueError, match=r"at least 2 classes"):
        criterion(logits[:, :1], target)


def test_forward_class_count_mismatch():
    logits, target = make_inputs(n_classes=3)
    with pytest.raises(ValueError, match=r"logits have 3 classes but transition_matrix is 4 x 4"):
        ForwardCorrectedCrossEntropy(NOISY_T)(logits, target)


# ---------------------------------------------------------------------------
# estimate_transition_matrix
# ---------------------------------------------------------------------------


def make_noisy_probas(T_true, n_per_class=200, anchor_fraction=0.5, seed=0):
    """Noisy-label posteriors = clean posteriors @ T_true, with near-one anchors.

    Anchors are ~8% of all samples per class, so the 97th percentile of each
    column falls among that class's anchors.
    """
    rng = np.random.default_rng(seed)
    n_classes = T_true.shape[0]
    clean = [rng.dirichlet(np.ones(n_classes), size=n_classes * n_per_class)]
    n_anchors = int(anchor_fraction * n_per_class)
    for i in range(n_classes):
        anchors = 0.01 * rng.dirichlet(np.ones(n_classes), size=n_anchors)
        anchors[:, i] += 0.99
        clean.append(anchors)
    clean = np.concatenate(clean)
    clean = clean[rng.permutation(len(clean))]
    return clean @ T_true


def test_estimate_transition_matrix_recovers_known_matrix():
    probas = make_noisy_probas(NOISY_T)

    T_hat = estimate_transition_matrix(probas)

    assert T_hat.shape == NOISY_T.shape
    assert T_hat.dtype == np.float64
    np.testing.assert_allclose(T_hat.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(T_hat, NOISY_T, atol=0.05)


def test_estimate_transition_matrix_exact_with_exact_anchors():
    clean = np.concatenate([np.eye(N_CLASSES), np.full((6, N_CLASSES), 1 / N_CLASSES)])
    T_hat = estimate_transition_matrix(clean @ NOISY_T, quantile=1.0)
    np.testing.assert_allclose(T_hat, NOISY_T, atol=1e-12)


def test_estimate_transition_matrix_quantile_ignores_outliers():
    probas = make_noisy_probas(NOISY_T)
    # A few overconfident outliers claiming pure class 0 would, as anchors,
    # wrongly make row 0 of T one-hot.
    outliers = np.tile(np.eye(N_CLASSES)[0], (3, 1))
    probas = np.concatenate([probas, outliers])

    robust = estimate_transition_matrix(probas, quantile=0.97)
    argmax = estimate_transition_matrix(probas, quantile=1.0)

    np.testing.assert_allclose(robust, NOISY_T, atol=0.05)
    np.testing.assert_allclose(argmax[0], np.eye(N_CLASSES)[0])


def test_estimate_transition_matrix_normalizes_rows_and_accepts_tensors():
    probas = 3.0 * make_noisy_probas(NOISY_T)  # rows summing to 3
    T_hat = estimate_transition_matrix(torch.tensor(probas, dtype=torch.float32))
    np.testing.assert_allclose(T_hat.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(T_hat, NOISY_T, atol=0.05)
    ForwardCorrectedCrossEntropy(T_hat)  # usable as is


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"probas": np.ones(4) / 4}, r"probas must be a 2-D array .* got shape \(4,\)"),
        ({"probas": np.ones((5, 1))}, r"2 classes, got shape \(5, 1\)"),
        ({"probas": np.ones((0, 3))}, r"at least 1 sample"),
        ({"probas": np.array([[0.5, np.inf]])}, r"probas must contain only finite values"),
        ({"probas": np.array([[1.2, -0.2]])}, r"probas must be non-negative"),
        ({"probas": np.array([[0.5, 0.5], [0.0, 0.0]])}, r"positive sum"),
        ({"probas": np.eye(2), "quantile": 0.0}, r"quantile must be in \(0, 1\], got 0\.0"),
        ({"probas": np.eye(2), "quantile": 1.01}, r"quantile must be in \(0, 1\], got 1\.01"),
        ({"probas": np.eye(2), "quantile": "high"}, r"quantile must be a real number"),
    ],
)
def test_estimate_transition_matrix_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        estimate_transition_matrix(**kwargs)


# ---------------------------------------------------------------------------
# Use as a skorch criterion
# ---------------------------------------------------------------------------


class TinyMLP(nn.Module):
    def __init__(self, n_features=6, n_classes=3):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(n_features, 16), nn.ReLU(), nn.Linear(16, n_classes))

    def forward(self, X):
        return self.layers(X)  # logits


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("loss_cls", LOSS_CLASSES)
def test_works_as_skorch_criterion(loss_cls, device):
    from sklearn.datasets import make_classification
    from skorch import NeuralNetClassifier

    n_classes = 3
    X, y = make_classification(
        n_samples=64, n_features=6, n_informative=4, n_classes=n_classes, random_state=0
    )
    X, y = X.astype(np.float32), y.astype(np.int64)
    criterion_kwargs = {}
    if loss_cls is ForwardCorrectedCrossEntropy:
        criterion_kwargs["criterion__transition_matrix"] = np.full(
            (n_classes, n_classes), 0.1
        ) + 0.7 * np.eye(n_classes)

    torch.manual_seed(0)
    net = NeuralNetClassifier(
        TinyMLP,
        module__n_features=X.shape[1],
        module__n_classes=n_classes,
        criterion=loss_cls,
        max_epochs=2,
        lr=0.1,
        batch_size=32,
        train_split=None,
        verbose=0,
        device=device,
        # skorch only infers softmax for CrossEntropyLoss; our criteria take logits too.
        predict_nonlinearity=partial(torch.softmax, dim=-1),
        **criterion_kwargs,
    )
    net.fit(X, y)

    train_losses = net.history[:, "train_loss"]
    assert len(train_losses) == 2
    assert np.all(np.isfinite(train_losses))
    assert isinstance(net.criterion_, loss_cls)
    for buffer in net.criterion_.buffers():
        assert buffer.device.type == device
    assert net.predict(X).shape == (len(X),)
    proba = net.predict_proba(X)
    assert proba.shape == (len(X), n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
