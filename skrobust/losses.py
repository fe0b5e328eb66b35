"""Noise-robust classification losses.

Every loss in this module is a :class:`torch.nn.Module` criterion that takes
unnormalized ``logits`` of shape ``(n_samples, n_classes)`` and integer class
``target`` of shape ``(n_samples,)``, like :class:`torch.nn.CrossEntropyLoss`.
They all accept ``reduction`` in ``{"none", "mean", "sum"}``; with
``reduction="none"`` one loss value per sample is returned.

All computations happen in the dtype and on the device of ``logits``, so the
criteria work with float32 and float64 inputs on CPU or GPU and can be passed
directly as ``criterion`` to :class:`skorch.NeuralNetClassifier`.

The module also provides :func:`estimate_transition_matrix`, the anchor-point
estimator of the label-noise transition matrix used by
:class:`ForwardCorrectedCrossEntropy`.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import as_float64_array, check_option, check_real, check_transition_matrix

__all__ = [
    "ActivePassiveLoss",
    "ForwardCorrectedCrossEntropy",
    "GeneralizedCrossEntropy",
    "HuberLoss",
    "NormalizedCrossEntropy",
    "ReverseCrossEntropy",
    "SymmetricCrossEntropy",
    "TukeyBiweightLoss",
    "estimate_transition_matrix",
]

_REDUCTIONS = ("none", "mean", "sum")

# Value substituted for log(0) in the reverse cross entropy (``A`` in
# Wang et al., 2019), so that RCE = -A * (1 - p_y).
_RCE_LOG_ZERO = -4.0


# ---------------------------------------------------------------------------
# Private helpers: argument validation
# ---------------------------------------------------------------------------


def _check_weights(alpha, beta):
    """Validate the two non-negative weights of a combined loss."""
    alpha = check_real(alpha, "alpha", low=0.0)
    beta = check_real(beta, "beta", low=0.0)
    if alpha == 0.0 and beta == 0.0:
        raise ValueError(
            "alpha and beta must not both be 0, got alpha=0.0 and beta=0.0; "
            "set at least one of them to a positive value."
        )
    return alpha, beta


def _check_inputs(logits, target):
    """Validate the shapes and dtypes of a criterion's inputs."""
    if logits.ndim != 2:
        raise ValueError(
            f"logits must be a 2-D tensor of shape (n_samples, n_classes), "
            f"got shape {tuple(logits.shape)}."
        )
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating point tensor, got dtype {logits.dtype}.")
    if logits.shape[1] < 2:
        raise ValueError(f"logits must have at least 2 classes (columns), got {logits.shape[1]}.")
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"target must be a 1-D tensor of shape (n_samples,) = ({logits.shape[0]},), "
            f"got shape {tuple(target.shape)}."
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(
            f"target must be an integer tensor of class indices, got dtype {target.dtype}."
        )


# ---------------------------------------------------------------------------
# Private helpers: per-sample loss terms
# ---------------------------------------------------------------------------


def _gather_target(values, target):
    """Return ``values[i, target[i]]`` for every row ``i``."""
    return values.gather(1, target.long().unsqueeze(1)).squeeze(1)


def _log_softmax_and_target(logits, target):
    """Return the log-probabilities ``(n, C)`` and those of the target ``(n,)``."""
    log_p = F.log_softmax(logits, dim=1)
    return log_p, _gather_target(log_p, target)


def _ce_term(log_p_y):
    return -log_p_y


def _rce_term(log_p_y):
    # -A * (1 - p_y); expm1 keeps precision when p_y is close to 1.
    return _RCE_LOG_ZERO * torch.expm1(log_p_y)


def _nce_term(log_p, log_p_y):
    return log_p_y / log_p.sum(dim=1)


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class _Criterion(nn.Module):
    """Base class of every loss here: the ``reduction`` argument and the ``repr``.

    Subclasses list the attributes shown in their ``repr`` in
    ``_repr_attributes``.
    """

    _repr_attributes = ()

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = check_option(reduction, "reduction", _REDUCTIONS)

    def extra_repr(self):
        parts = [f"{name}={getattr(self, name)!r}" for name in self._repr_attributes]
        parts.append(f"reduction={self.reduction!r}")
        return ", ".join(parts)


class _RobustLoss(_Criterion):
    """Base class of the classification losses: checked inputs, per-sample losses, reduced.

    Subclasses implement ``_per_sample_loss(logits, target)``.
    """

    def forward(self, logits, target):
        """Compute the loss.

        Parameters
        ----------
        logits : torch.Tensor of shape (n_samples, n_classes)
            Unnormalized scores (floating point).
        target : torch.Tensor of shape (n_samples,)
            Integer class indices in ``[0, n_classes)``.

        Returns
        -------
        loss : torch.Tensor
            Scalar if ``reduction`` is ``"mean"`` or ``"sum"``, otherwise a
            tensor of shape ``(n_samples,)`` with one loss per sample.
        """
        _check_inputs(logits, target)
        return _reduce(self._per_sample_loss(logits, target), self.reduction)

    def _per_sample_loss(self, logits, target):  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------------------
# Public losses
# ---------------------------------------------------------------------------


class GeneralizedCrossEntropy(_RobustLoss):
    r"""Generalized cross entropy (:math:`\mathcal{L}_q`) loss.

    Interpolates between the cross entropy (``q -> 0``) and the mean absolute
    error (``q = 1``), which is robust to label noise.

    Parameters
    ----------
    q : float, default=0.7
        Exponent in ``(0, 1]``. Larger values are more robust to noisy labels
        but slower to train.
    reduction : {"mean", "sum", "none"}, default="mean"
        How per-sample losses are reduced; ``"none"`` returns one loss per
        sample.

    Notes
    -----
    With :math:`p = \mathrm{softmax}(z)` and target class :math:`y`,

    .. math:: \ell(z, y) = \frac{1 - p_y^q}{q}.

    :math:`p_y^q` is computed stably as :math:`\exp(q \log p_y)` from the
    log-softmax.

    References
    ----------
    .. [1] Z. Zhang and M. R. Sabuncu, "Generalized Cross Entropy Loss for
       Training Deep Neural Networks with Noisy Labels", NeurIPS 2018.

    Examples
    --------
    >>> import torch
    >>> from skrobust.losses import GeneralizedCrossEntropy
    >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    >>> target = torch.tensor([0, 2])
    >>> loss = GeneralizedCrossEntropy(q=0.7, reduction="none")(logits, target)
    >>> [round(v, 4) for v in loss.tolist()]
    [0.1601, 0.9463]
    """

    _repr_attributes = ("q",)

    def __init__(self, q=0.7, reduction="mean"):
        super().__init__(reduction=reduction)
        self.q = check_real(q, "q", low=0.0, high=1.0, low_inclusive=False)

    def _per_sample_loss(self, logits, target):
        _, log_p_y = _log_softmax_and_target(logits, target)
        # (1 - exp(q * log p_y)) / q, with expm1 for precision at small q.
        return -torch.expm1(self.q * log_p_y) / self.q


class ReverseCrossEntropy(_RobustLoss):
    r"""Reverse cross entropy loss.

    The cross entropy with the roles of prediction and label swapped, where
    :math:`\log 0` is replaced by the constant :math:`A = -4`.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default="mean"
        How per-sample losses are reduced; ``"none"`` returns one loss per
        sample.

    Notes
    -----
    With :math:`p = \mathrm{softmax}(z)`, one-hot label :math:`e_y` and
    :math:`\log 0 := A = -4`,

    .. math:: \ell(z, y) = -\sum_k p_k \log (e_y)_k = -A (1 - p_y) = 4 (1 - p_y).

    References
    ----------
    .. [1] Y. Wang, X. Ma, Z. Chen, Y. Luo, J. Yi and J. Bailey, "Symmetric
       Cross Entropy for Robust Learning with Noisy Labels", ICCV 2019.

    Examples
    --------
    >>> import torch
    >>> from skrobust.losses import ReverseCrossEntropy
    >>> logits = torch.tensor([[0.0, 0.0], [3.0, -3.0]])
    >>> target = torch.tensor([0, 0])
    >>> loss = ReverseCrossEntropy(reduction="none")(logits, target)
    >>> [round(v, 4) for v in loss.tolist()]
    [2.0, 0.0099]
    """

    def _per_sample_loss(self, logits, target):
        _, log_p_y = _log_softmax_and_target(logits, target)
        return _rce_term(log_p_y)


class NormalizedCrossEntropy(_RobustLoss):
    r"""Normalized cross entropy loss.

    The cross entropy of the target class divided by the sum of the cross
    entropies of all classes. The normalization makes the loss robust to
    label noise (but prone to underfitting alone; see
    :class:`ActivePassiveLoss`).

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default="mean"
        How per-sample losses are reduced; ``"none"`` returns one loss per
        sample.

    Notes
    -----
    With :math:`p = \mathrm{softmax}(z)`,

    .. math:: \ell(z, y) = \frac{-\log p_y}{-\sum_k \log p_k}
              = \frac{\log p_y}{\sum_k \log p_k},

    which lies in :math:`[0, 1]`.

    References
    ----------
    .. [1] X. Ma, H. Huang, Y. Wang, S. Romano, S. Erfani and J. Bailey,
       "Normalized Loss Functions for Deep Learning with Noisy Labels",
       ICML 2020.

    Examples
    --------
    >>> import torch
    >>> from skrobust.losses import NormalizedCrossEntropy
    >>> logits = torch.tensor([[0.0, 0.0], [3.0, -3.0]])
    >>> target = torch.tensor([0, 1])
    >>> loss = NormalizedCrossEntropy(reduction="none")(logits, target)
    >>> [round(v, 4) for v in loss.tolist()]
    [0.5, 0.9996]
    """

    def _per_sample_loss(self, logits, target):
        log_p, log_p_y = _log_softmax_and_target(logits, target)
        return _nce_term(log_p, log_p_y)


class SymmetricCrossEntropy(_RobustLoss):
    r"""Symmetric cross entropy loss.

    A weighted sum of the cross entropy and the noise-robust reverse cross
    entropy (see :class:`ReverseCrossEntropy`).

    Parameters
    ----------
    alpha : float, default=0.1
        Non-negative weight of the cross entropy term.
    beta : float, default=1.0
        Non-negative weight of the reverse cross entropy term. ``alpha`` and
        ``beta`` must not both be 0.
    reduction : {"mean", "sum", "none"}, default="mean"
        How per-sample losses are reduced; ``"none"`` returns one loss per
        sample.

    Notes
    -----
    With :math:`p = \mathrm{softmax}(z)` and :math:`A = -4` standing for
    :math:`\log 0` in the reverse term,

    .. math:: \ell(z, y) = -\alpha \log p_y + \beta \, (-A) (1 - p_y).

    References
    ----------
    .. [1] Y. Wang, X. Ma, Z. Chen, Y. Luo, J. Yi and J. Bailey, "Symmetric
       Cross Entropy for Robust Learning with Noisy Labels", ICCV 2019.

    Examples
    --------
    >>> import torch
    >>> from skrobust.losses import SymmetricCrossEntropy
    >>> logits = torch.tensor([[0.0, 0.0], [3.0, -3.0]])
    >>> target = torch.tensor([0, 0])
    >>> loss = SymmetricCrossEntropy(alpha=0.1, beta=1.0, reduction="none")(logits, target)
    >>> [round(v, 4) for v in loss.tolist()]
    [2.0693, 0.0101]
    """

    _repr_attributes = ("alpha", "beta")

    def __init__(self, alpha=0.1, beta=1.0, reduction="mean"):
        super().__init__(reduction=reduction)
        self.alpha, self.beta = _check_weights(alpha, beta)

    def _per_sample_loss(self, logits, target):
        _, log_p_y = _log_softmax_and_target(logits, target)
        return self.alpha * _ce_term(log_p_y) + self.beta * _rce_term(log_p_y)


class ActivePassiveLoss(_RobustLoss):
    r"""Active-passive loss combining normalized and reverse cross entropy.

    The "NCE + RCE" active-passive loss: the active term
    (:class:`NormalizedCrossEntropy`) maximizes the probability of the labeled
    class, the passive term (:class:`ReverseCrossEntropy`) minimizes the
    probabilities of the other classes. Both terms are robust to label noise,
    and their combination avoids the underfitting of NCE alone.

    Parameters
    ----------
    alpha : float, default=1.0
        Non-negative weight of the normalized cross entropy term.
    beta : float, default=1.0
        Non-negative weight of the reverse cross entropy term. ``alpha`` and
        ``beta`` must not both be 0.
    reduction : {"mean", "sum", "none"}, default="mean"
        How per-sample losses are reduced; ``"none"`` returns one loss per
        sample.

    Notes
    -----
    With :math:`p = \mathrm{softmax}(z)`,

    .. math:: \ell(z, y) = \alpha \frac{\log p_y}{\sum_k \log p_k}
              + \beta \cdot 4 (1 - p_y).

    References
    ----------
    .. [1] X. Ma, H. Huang, Y. Wang, S. Romano, S. Erfani and J. Bailey,
       "Normalized Loss Functions for Deep Learning with Noisy Labels",
       ICML 2020.

    Examples
    --------
    >>> import torch
    >>> from skrobust.losses import ActivePassiveLoss
    >>> logits = torch.tensor([[0.0, 0.0], [3.0, -3.0]])
    >>> target = torch.tensor([0, 1])
    >>> loss = ActivePassiveLoss(alpha=1.0, beta=1.0, reduction="none")(logits, target)
    >>> [round(v, 4) for v in loss.tolist()]
    [2.5, 4.9897]
    """

    _repr_attributes = ("alpha", "beta")

    def __init__(self, alpha=1.0, beta=1.0, reduction="mean"):
        super().__init__(reduction=reduction)
        self.alpha, self.beta = _check_weights(alpha, beta)

    def _per_sample_loss(self, logits, target):
        log_p, log_p_y = _log_softmax_and_target(logits, target)
        return self.alpha * _nce_term(log_p, log_p_y) + self.beta * _rce_term(log_p_y)


class ForwardCorrectedCrossEntropy(_RobustLoss):
    r"""Cross entropy with forward loss correction for class-conditional noise.

    The model's clean-label posterior is pushed through the noise transition
    matrix before computing the cross entropy with the (noisy) label, so the
    model learns the clean posterior while being fitted to noisy labels.

    Parameters
    ----------
    transition_matrix : array-like or torch.Tensor of shape (n_classes, n_classes)
        Row-stochastic noise transition matrix ``T`` with
        ``T[i, j] = P(noisy label j | true label i)``: non-negative, finite,
        rows summing to 1 within ``1e-4`` (used as given, not renormalised).
        It can be estimated with :func:`estimate_transition_matrix`. Stored as the float64 buffer
        ``transition_matrix`` (moved along by ``.to(device)``) and cast to the
        dtype of the logits at use time.
    reduction : {"mean", "sum", "none"}, default="mean"
        How per-sample losses are reduced; ``"none"`` returns one loss per
        sample.

    Notes
    -----
    With :math:`p = \mathrm{softmax}(z)`,

    .. math:: \ell(z, y) = -\log \big( (p^\top T)_y \big)
              = -\log \sum_i p_i T_{iy}.

    The corrected probability is clamped below at the smallest positive
    normal number of the logits' dtype to avoid :math:`-\infty`. With
    ``T`` the identity this is the ordinary cross entropy.

    References
    ----------
    .. [1] G. Patrini, A. Rozza, A. K. Menon, R. Nock and L. Qu, "Making Deep
       Neural Networks Robust to Label Noise: a Loss Correction Approach",
       CVPR 2017.

    Examples
    --------
    >>> import torch
    >>> from skrobust.losses import ForwardCorrectedCrossEntropy
    >>> T = [[0.8, 0.2], [0.3, 0.7]]
    >>> logits = torch.tensor([[0.0, 0.0], [3.0, -3.0]])
    >>> target = torch.tensor([0, 1])
    >>> loss = ForwardCorrectedCrossEntropy(T, reduction="none")(logits, target)
    >>> [round(v, 4) for v in loss.tolist()]
    [0.5978, 1.6033]
    """

    def __init__(self, transition_matrix, reduction="mean"):
        super().__init__(reduction=reduction)
        T = check_transition_matrix(transition_matrix)
        self.register_buffer("transition_matrix", torch.from_numpy(T))

    @property
    def n_classes(self):
        """Number of classes, the size of the transition matrix."""
        return self.transition_matrix.shape[0]

    def _per_sample_loss(self, logits, target):
        if logits.shape[1] != self.n_classes:
            raise ValueError(
                f"logits have {logits.shape[1]} classes but transition_matrix is "
                f"{self.n_classes} x {self.n_classes}; they must match."
            )
        T = self.transition_matrix.to(device=logits.device, dtype=logits.dtype)
        noisy_p = F.softmax(logits, dim=1) @ T
        noisy_p_y = _gather_target(noisy_p, target)
        return -torch.log(noisy_p_y.clamp_min(torch.finfo(logits.dtype).tiny))

    def extra_repr(self):
        return f"n_classes={self.n_classes}, reduction={self.reduction!r}"


# ---------------------------------------------------------------------------
# Transition matrix estimation
# ---------------------------------------------------------------------------


def estimate_transition_matrix(probas, *, quantile=0.97):
    r"""Estimate the label-noise transition matrix from anchor points.

    Given the predicted class probabilities of a model trained on the noisy
    labels, the anchor point of class ``i`` is the sample that the model
    believes most surely belongs to class ``i``; its predicted noisy-label
    distribution estimates row ``i`` of the transition matrix.

    Parameters
    ----------
    probas : array-like of shape (n_samples, n_classes)
        Predicted probabilities ``P(noisy label | x)`` of a model trained on
        the noisy labels, ideally on held-out samples. Must be finite and
        non-negative, with at least 2 columns and rows of positive sum.
    quantile : float, default=0.97
        Quantile in ``(0, 1]`` of column ``i`` used to pick the anchor of
        class ``i``. ``1.0`` picks the sample with the largest probability;
        a value slightly below 1 is robust to outliers and overconfident
        predictions.

    Returns
    -------
    transition_matrix : ndarray of shape (n_classes, n_classes), dtype float64
        Estimated ``T`` with ``T[i, j] ~ P(noisy label j | true label i)``;
        rows sum to 1.

    Notes
    -----
    For each class :math:`i`, the anchor :math:`x_i` is the sample whose
    probability :math:`\hat p_i(x)` is the empirical ``quantile``-quantile of
    column :math:`i` (the smallest value :math:`v` such that a fraction
    ``quantile`` of the column is :math:`\le v`). Then

    .. math:: \hat T_{ij} = \frac{\hat p_j(x_i)}{\sum_k \hat p_k(x_i)}.

    The estimate is consistent when each class has anchor points
    (samples with clean posterior :math:`P(y = i \mid x) = 1`).

    References
    ----------
    .. [1] G. Patrini, A. Rozza, A. K. Menon, R. Nock and L. Qu, "Making Deep
       Neural Networks Robust to Label Noise: a Loss Correction Approach",
       CVPR 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from skrobust.losses import estimate_transition_matrix
    >>> probas = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    >>> estimate_transition_matrix(probas, quantile=1.0)
    array([[0.9, 0.1],
           [0.3, 0.7]])
    """
    probas = as_float64_array(probas, "probas")
    if probas.ndim != 2 or probas.shape[0] < 1 or probas.shape[1] < 2:
        raise ValueError(
            "probas must be a 2-D array of shape (n_samples, n_classes) with at least "
            f"1 sample and 2 classes, got shape {probas.shape}."
        )
    if not np.all(np.isfinite(probas)):
        raise ValueError("probas must contain only finite values (no NaN or inf).")
    if np.any(probas < 0):
        raise ValueError(f"probas must be non-negative, got minimum entry {probas.min():g}.")
    if np.any(probas.sum(axis=1) <= 0):
        raise ValueError("probas rows must have a positive sum; found an all-zero row.")
    quantile = check_real(quantile, "quantile", low=0.0, high=1.0, low_inclusive=False)

    n_samples = probas.shape[0]
    # Position of the empirical (inverted-CDF) quantile in each sorted column.
    # Rounding guards against float error, e.g. 0.97 * 100 = 97.00000000000001.
    rank = min(max(math.ceil(round(quantile * n_samples, 9)) - 1, 0), n_samples - 1)
    anchors = np.argsort(probas, axis=0, kind="stable")[rank]
    T = probas[anchors]
    return T / T.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------
# Robust regression losses
# ---------------------------------------------------------------------------


def _check_regression_inputs(input, target):
    """Validate the shapes and dtypes of a regression criterion's inputs."""
    if not input.is_floating_point():
        raise ValueError(f"input must be a floating point tensor, got dtype {input.dtype}.")
    if input.shape != target.shape:
        raise ValueError(
            f"input and target must have the same shape, got {tuple(input.shape)} and "
            f"{tuple(target.shape)}."
        )


class _RegressionLoss(_Criterion):
    """Base class of the regression losses: ``rho(input - target)`` per element.

    Subclasses implement ``_rho(residual)`` and name their tuning constant in
    ``_repr_attributes``. With ``reduction="none"`` the result has the shape of
    ``input``, as for :class:`torch.nn.MSELoss`.
    """

    def forward(self, input, target):
        """Compute the loss.

        Parameters
        ----------
        input : torch.Tensor of shape (n_samples, ...)
            Predictions (floating point).
        target : torch.Tensor of the same shape
            Targets.

        Returns
        -------
        loss : torch.Tensor
            Scalar if ``reduction`` is ``"mean"`` or ``"sum"``, otherwise a
            tensor of the shape of ``input``.
        """
        _check_regression_inputs(input, target)
        residual = input - target.to(input.dtype)
        return _reduce(self._rho(residual), self.reduction)

    def _rho(self, residual):  # pragma: no cover - abstract
        raise NotImplementedError


class HuberLoss(_RegressionLoss):
    r"""Huber loss: squared for small residuals, linear for large ones.

    Parameters
    ----------
    delta : float, default=1.345
        Residual size where the loss turns from quadratic to linear, ``> 0``.
        The default gives 95% efficiency on Gaussian residuals of unit spread,
        the scale of :class:`~skrobust.RobustNetRegressor`'s standardised
        targets.
    reduction : {"mean", "sum", "none"}, default="mean"
        How the elementwise losses are reduced; ``"none"`` returns them in the
        shape of ``input``.

    Notes
    -----
    With residual :math:`r = \hat y - y`,

    .. math:: \rho(r) = \begin{cases} r^2 / 2 & |r| \le \delta \\
              \delta (|r| - \delta / 2) & |r| > \delta. \end{cases}

    Its gradient is bounded by :math:`\delta`: one wild target pulls no
    harder than any other large residual.

    References
    ----------
    .. [1] P. J. Huber, "Robust Estimation of a Location Parameter", Annals of
       Mathematical Statistics 35(1), 1964.

    Examples
    --------
    >>> import torch
    >>> from skrobust.losses import HuberLoss
    >>> loss = HuberLoss(delta=1.0, reduction="none")
    >>> loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0])).tolist()
    [0.125, 2.5]
    """

    _repr_attributes = ("delta",)

    def __init__(self, delta=1.345, reduction="mean"):
        super().__init__(reduction=reduction)
        self.delta = check_real(delta, "delta", low=0.0, low_inclusive=False)

    def _rho(self, residual):
        a = residual.abs()
        return torch.where(a <= self.delta, 0.5 * residual.square(),
                           self.delta * (a - 0.5 * self.delta))


class TukeyBiweightLoss(_RegressionLoss):
    r"""Tukey's biweight loss: a redescending loss that ignores gross residuals.

    Parameters
    ----------
    c : float, default=4.685
        Residual size beyond which the loss is constant (its gradient is 0),
        ``> 0``. The default gives 95% efficiency on Gaussian residuals of unit
        spread.
    reduction : {"mean", "sum", "none"}, default="mean"
        How the elementwise losses are reduced; ``"none"`` returns them in the
        shape of ``input``.

    Notes
    -----
    With residual :math:`r = \hat y - y`,

    .. math:: \rho(r) = \frac{c^2}{6} \begin{cases}
              1 - \left(1 - (r/c)^2\right)^3 & |r| \le c \\
              1 & |r| > c. \end{cases}

    Near 0 it is :math:`r^2 / 2`; a sample whose residual exceeds :math:`c`
    has no gradient, so the loss is not convex: start from a reasonable fit
    (e.g. some epochs with the squared error) when residuals are large at
    first.

    References
    ----------
    .. [1] A. E. Beaton and J. W. Tukey, "The Fitting of Power Series, Meaning
       Polynomials, Illustrated on Band-Spectroscopic Data", Technometrics
       16(2), 1974.

    Examples
    --------
    >>> import torch
    >>> from skrobust.losses import TukeyBiweightLoss
    >>> loss = TukeyBiweightLoss(c=2.0, reduction="none")
    >>> [round(v, 4) for v in loss(torch.tensor([1.0, 5.0]), torch.zeros(2)).tolist()]
    [0.3854, 0.6667]
    """

    _repr_attributes = ("c",)

    def __init__(self, c=4.685, reduction="mean"):
        super().__init__(reduction=reduction)
        self.c = check_real(c, "c", low=0.0, low_inclusive=False)

    def _rho(self, residual):
        u = (residual / self.c).square().clamp(max=1.0)
        # 1 - (1 - u)^3, written without the cancellation near u = 0
        return (self.c**2 / 6.0) * u * (3.0 - 3.0 * u + u.square())
