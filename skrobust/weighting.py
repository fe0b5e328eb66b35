"""Weighting rules: per-sample gradient norms in, per-sample weights out.

Everything here is a pure function of a batch's norms. The training step of
:class:`~skrobust.RobustNetClassifier` calls :func:`compute_weights` and nothing
else, so what is tested here is exactly what trains the model.
"""

import math

import torch

from ._checks import check_option

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
    check_option(stats, "stats", STATS)
    if norms.numel() < 2:
        centre = norms.mean() if norms.numel() else norms.new_zeros(())
        return centre, norms.new_zeros(())
    if stats == "mean_std":
        return norms.mean(), norms.std()
    q25, q50, q75 = torch.quantile(norms, norms.new_tensor([0.25, 0.5, 0.75]))
    return q50, (q75 - q25) / _IQR_TO_SIGMA


_EPS = {}


def _eps(dtype):
    """``torch.finfo(dtype).eps``, cached (finfo costs microseconds per call)."""
    eps = _EPS.get(dtype)
    if eps is None:
        eps = _EPS[dtype] = torch.finfo(dtype).eps
    return eps


def _finite_statistics(norms, zeroed, finite, weights, stats):
    """:func:`batch_statistics` over the finite norms only, without indexing.

    ``norms[finite]`` would need the number of finite norms on the host (a
    device synchronisation on a GPU); here the non-finite entries are masked
    out arithmetically instead, in a fixed, small number of tensor operations.

    Parameters
    ----------
    norms : torch.Tensor of shape (n,)
        Floating norms, possibly NaN or infinite.
    zeroed : torch.Tensor of shape (n,)
        ``norms`` with the non-finite entries set to 0.
    finite : torch.Tensor of shape (n,)
        ``torch.isfinite(norms)``.
    weights : torch.Tensor of shape (n,)
        ``finite`` as ``norms.dtype``.
    stats : {"mean_std", "median_iqr"}

    Returns
    -------
    mu, sigma : torch.Tensor
        Zero-dimensional centre and spread of the finite norms (NaN when there
        is no finite norm; sigma NaN with a single one).
    spread : torch.Tensor
        Zero-dimensional bool: sigma finite and above the rounding error of the
        statistics of identical norms (``eps * |mu| * n``).
    dev : torch.Tensor of shape (n,) or None
        ``norms - mu`` at the finite norms and ``0`` elsewhere (``None`` for
        ``"median_iqr"``, where it is not needed for the statistics).
    """
    eps = _eps(norms.dtype)
    count = weights.sum()
    if stats == "mean_std":
        total = zeroed.sum()
        mu = total / count
        dev = (zeroed - mu).mul_(weights)
        sigma = (torch.dot(dev, dev) / (count - 1)).sqrt_()
        # |sum| = |mu| * count: the rounding floor eps * |mu| * n.
        floor = total.abs().mul_(eps)
    else:
        q25, mu, q75 = _quartiles(norms, finite, count)
        sigma = (q75 - q25) / _IQR_TO_SIGMA
        dev = None
        floor = (mu.abs() * count).mul_(eps)
    # NaN or inf sigma (fewer than two finite norms, overflow) -> 0: no spread.
    spread = sigma.nan_to_num(0.0, 0.0, 0.0) > floor
    return mu, sigma, spread, dev


def _quartiles(norms, finite, count):
    """``torch.nanquantile`` of the finite norms at 0.25, 0.5, 0.75, with no sync.

    The same linear interpolation between the sorted values, with the ranks
    computed on the device: ``torch.quantile`` checks a tensor ``q`` on the host.
    """
    ranked = torch.where(finite, norms, float("nan")).sort().values  # NaN last
    ranks = torch.arange(1, 4, device=norms.device, dtype=norms.dtype).mul_(0.25)
    ranks = ranks.mul_(count - 1)  # NaN-free: count is a number of norms
    below = ranks.long()
    above = ranks.ceil().long()
    low = ranked.gather(0, below.clamp_(min=0))
    high = ranked.gather(0, above.clamp_(min=0))
    return low.lerp_(high, ranks - below).unbind()


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

    On an accelerator the computation never waits for the device (no
    host-device synchronisation): the non-finite norms are masked out
    arithmetically and the rules are applied branch-free. On the CPU, where
    branching costs nothing, it takes the shortest path to the same weights.

    Examples
    --------
    >>> import torch
    >>> from skrobust import compute_weights
    >>> norms = torch.tensor([1.0, 1.1, 0.9, 1.0, 5.0])
    >>> compute_weights(norms, weighting="truncate", alpha=1.0)
    tensor([1., 1., 1., 1., 0.])
    """
    check_option(weighting, "weighting", WEIGHTINGS)
    check_option(stats, "stats", STATS)
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
            raise ValueError(f"{name} must be a number >= 0 (inf allowed), got {value!r}.")

    if not isinstance(norms, torch.Tensor):
        norms = torch.as_tensor(norms)
    if not norms.is_floating_point():
        norms = norms.to(torch.get_default_dtype())
    # Each tensor operation costs microseconds on small batches: skip no-ops.
    if norms.requires_grad:
        norms = norms.detach()
    if norms.dim() != 1:
        norms = norms.reshape(-1)
    if (weighting != "none" and _HOST_BRANCHES and norms.device.type == "cpu"
            and norms.numel()):
        return _host_weights(norms, weighting, stats, alpha, beta)
    # isfinite() costs four kernels; this costs two and gives `zeroed` as well.
    zeroed = norms.nan_to_num(0.0, 0.0, 0.0)
    finite = zeroed == norms  # False exactly at NaN and +-inf
    weights = finite.to(norms.dtype)
    if weighting == "none" or norms.numel() == 0:
        return weights

    # On an accelerator: branch-free, no host-device synchronisation in the
    # train step. Non-finite norms are masked arithmetically (weight 0, out of
    # the statistics); where there is no spread, the rule is not applied at all.
    mu, sigma, spread, dev = _finite_statistics(norms, zeroed, finite, weights, stats)
    if weighting == "soft":
        if dev is None:
            dev = torch.where(finite, norms - mu, 0.0)
        rule = _soft_rule(dev, torch.where(spread, sigma, 1.0))
    else:
        # NaN and inf norms compare False or are already at weight 0.
        rule = _truncate_rule(norms, mu, sigma, alpha, beta)
        if rule is None:
            return weights
    return torch.where(spread, weights * rule, weights)


def _truncate_rule(norms, mu, sigma, alpha, beta):
    """The truncate rule: ``mu - beta * sigma <= g_i <= mu + alpha * sigma``.

    Returns a bool tensor (False at NaN norms), or ``None`` when ``alpha`` and
    ``beta`` are both infinite and the rule keeps every norm.
    """
    rule = None
    if math.isfinite(alpha):
        rule = norms <= mu + alpha * sigma
    if math.isfinite(beta):
        low = norms >= mu - beta * sigma
        rule = low if rule is None else rule & low
    return rule


def _soft_rule(dev, sigma):
    """The soft rule: ``exp(-dev**2 / (2 * sigma**2))`` with ``dev = g_i - mu``."""
    return torch.exp(-0.5 * (dev / sigma) ** 2)


# compute_weights on CPU tensors: Python branches cost no device synchronisation
# there and save about half the tensor operations. The tests switch it off to
# run the branch-free path of the accelerators on the CPU.
_HOST_BRANCHES = True


def _host_weights(norms, weighting, stats, alpha, beta):
    """:func:`compute_weights` for CPU tensors, with the same rules and statistics."""
    # A finite mean (or sum) means every norm is finite: the common case, where
    # the weights are the rule itself.
    probe = norms.mean() if stats == "mean_std" else norms.sum()
    if math.isfinite(probe.item()):
        finite = weights = None
        kept = norms
        if stats == "mean_std":
            mu = probe
            sigma = norms.std() if len(norms) > 1 else norms.new_zeros(())
        else:
            mu, sigma = batch_statistics(kept, stats)
    else:
        finite = torch.isfinite(norms)
        weights = finite.to(norms.dtype)
        kept = norms[finite]
        mu, sigma = batch_statistics(kept, stats)
    # The same spread check, in Python numbers: sigma > eps * |mu| * n.
    s = sigma.item()
    if not (math.isfinite(s)
            and s > _eps(norms.dtype) * abs(mu.item()) * max(kept.numel(), 1)):
        return torch.ones_like(norms) if weights is None else weights
    if weighting == "soft":
        safe = norms if finite is None else torch.where(finite, norms, mu)
        rule = _soft_rule(safe - mu, sigma)
        return rule if weights is None else rule.mul_(weights)
    # NaN and inf norms compare False, or are at weight 0 already.
    rule = _truncate_rule(norms, mu, sigma, alpha, beta)
    if rule is None:
        return torch.ones_like(norms) if weights is None else weights
    return rule.to(norms.dtype) if weights is None else weights * rule


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
