"""Weighting rules: per-sample gradient norms in, per-sample weights out.

Everything here is a pure function of a batch's norms. The training step of
:class:`~skrobust.RobustNetClassifier` calls :func:`compute_weights` and nothing
else, so what is tested here is exactly what trains the model.
"""

import math

import torch

__all__ = ["WEIGHTINGS", "STATS", "batch_statistics", "compute_weights", "small_loss_weights"]

#: Weighting modes accepted by :func:`compute_weights`.
WEIGHTINGS = ("truncate", "soft", "none")

#: Batch statistics accepted by :func:`compute_weights`.
STATS = ("mean_std", "median_iqr")

# sigma of a normal distribution is its interquartile range divided by this.
_IQR_TO_SIGMA = 1.349


def batch_statistics(norms, stats="mean_std"):
    """Centre and spread of a batch of gradient norms.

    Parameters
    ----------
    norms : torch.Tensor of shape (n_samples,)
        Finite per-sample gradient norms.
    stats : {"mean_std", "median_iqr"}, default="mean_std"
        ``"mean_std"``: the mean and the standard deviation (``ddof=1``).
        ``"median_iqr"``: the median and ``IQR / 1.349``, the standard
        deviation of a normal distribution with that interquartile range.

    Returns
    -------
    mu : torch.Tensor
        Zero-dimensional tensor, the centre.
    sigma : torch.Tensor
        Zero-dimensional tensor, the spread; ``0`` when the batch has fewer
        than two samples.
    """
    if stats not in STATS:
        raise ValueError(f"stats must be one of {STATS}, got {stats!r}.")
    if norms.numel() < 2:
        centre = norms.mean() if norms.numel() else norms.new_zeros(())
        return centre, norms.new_zeros(())
    if stats == "mean_std":
        return norms.mean(), norms.std()
    q25, q50, q75 = torch.quantile(norms, norms.new_tensor([0.25, 0.5, 0.75]))
    return q50, (q75 - q25) / _IQR_TO_SIGMA


def _has_spread(norms, mu, sigma):
    """Whether sigma exceeds the rounding error of identical norms' statistics."""
    noise_floor = torch.finfo(norms.dtype).eps * mu.abs() * max(norms.numel(), 1)
    return torch.isfinite(sigma) & (sigma > noise_floor)


def compute_weights(norms, *, weighting="truncate", stats="mean_std", alpha=1.0,
                    beta=float("inf")):
    """Per-sample weights from per-sample gradient norms.

    Parameters
    ----------
    norms : array-like or torch.Tensor of shape (n_samples,)
        Per-sample gradient L2 norms of one batch.
    weighting : {"truncate", "soft", "none"}, default="truncate"
        ``"truncate"``: ``w_i = 0`` when ``g_i > mu + alpha * sigma`` or
        ``g_i < mu - beta * sigma``, else ``1``.
        ``"soft"``: ``w_i = exp(-(g_i - mu)**2 / (2 * sigma**2))``; ``alpha`` and
        ``beta`` are not used.
        ``"none"``: every weight is ``1``.
    stats : {"mean_std", "median_iqr"}, default="mean_std"
        How ``mu`` and ``sigma`` are estimated from the batch, see
        :func:`batch_statistics`.
    alpha : float, default=1.0
        Upper threshold, in units of ``sigma`` above ``mu``. ``inf`` keeps every
        large norm.
    beta : float, default=inf
        Lower threshold, in units of ``sigma`` below ``mu``. ``inf`` keeps every
        small norm.

    Returns
    -------
    weights : torch.Tensor of shape (n_samples,)
        Weights in ``[0, 1]``, never NaN, on the device and in the floating dtype
        of ``norms``.

    Notes
    -----
    Non-finite norms (NaN or inf, e.g. from a diverged loss) get weight ``0``
    and are left out of the statistics. When ``sigma`` is ``0`` (up to rounding) or
    not finite (identical norms, or a batch of one sample) no sample stands out
    and every finite norm gets weight ``1``.

    Examples
    --------
    >>> import torch
    >>> from skrobust import compute_weights
    >>> norms = torch.tensor([1.0, 1.1, 0.9, 1.0, 5.0])
    >>> compute_weights(norms, weighting="truncate", alpha=1.0)
    tensor([1., 1., 1., 1., 0.])
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}.")
    if stats not in STATS:
        raise ValueError(f"stats must be one of {STATS}, got {stats!r}.")
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
            raise ValueError(f"{name} must be a number >= 0 (inf allowed), got {value!r}.")

    norms = torch.as_tensor(norms)
    if not norms.is_floating_point():
        norms = norms.to(torch.get_default_dtype())
    norms = norms.detach().reshape(-1)
    finite = torch.isfinite(norms)
    weights = finite.to(norms.dtype)
    if weighting == "none":
        return weights

    kept = norms[finite]
    mu, sigma = batch_statistics(kept, stats)
    # Branch-free on purpose: no host-device synchronisation in the train step.
    spread = _has_spread(kept, mu, sigma)
    sigma = torch.where(spread, sigma, torch.ones_like(sigma))
    safe = torch.where(finite, norms, mu)
    if weighting == "soft":
        rule = torch.exp(-0.5 * ((safe - mu) / sigma) ** 2)
    else:
        inside = torch.ones_like(finite)
        if math.isfinite(alpha):
            inside &= safe <= mu + alpha * sigma
        if math.isfinite(beta):
            inside &= safe >= mu - beta * sigma
        rule = inside.to(norms.dtype)
    return torch.where(spread, weights * rule, weights)


def small_loss_weights(losses, forget_rate):
    """Keep the ``1 - forget_rate`` share of a batch with the smallest losses.

    The sample-selection rule of co-teaching (Han et al., 2018): networks learn
    clean patterns before they memorise wrong labels, so early in training the
    mislabelled samples are among the high-loss ones.

    Parameters
    ----------
    losses : torch.Tensor of shape (n_samples,)
        Per-sample losses of one batch.
    forget_rate : float
        Share of the batch to drop, in ``[0, 1)``. At least one sample is kept.

    Returns
    -------
    weights : torch.Tensor of shape (n_samples,)
        ``1`` for the ``max(1, round((1 - forget_rate) * n))`` smallest finite
        losses, ``0`` for the others and for non-finite losses.

    References
    ----------
    B. Han et al. "Co-teaching: Robust training of deep neural networks with
    extremely noisy labels". NeurIPS 2018.

    Examples
    --------
    >>> import torch
    >>> from skrobust.weighting import small_loss_weights
    >>> small_loss_weights(torch.tensor([0.1, 2.0, 0.3, 0.2]), forget_rate=0.25)
    tensor([1., 0., 1., 1.])
    """
    if not isinstance(forget_rate, (int, float)) or not 0 <= forget_rate < 1:
        raise ValueError(f"forget_rate must be in [0, 1), got {forget_rate!r}.")
    losses = losses.detach().reshape(-1)
    n = losses.numel()
    weights = torch.zeros_like(losses, dtype=losses.dtype if losses.is_floating_point()
                               else torch.get_default_dtype())
    if n == 0:
        return weights
    keep = max(1, round((1 - forget_rate) * n))
    finite = torch.isfinite(losses)
    ranked = torch.where(finite, losses, torch.full_like(losses, float("inf")))
    chosen = torch.argsort(ranked)[:keep]
    weights[chosen] = 1
    return weights * finite.to(weights.dtype)
