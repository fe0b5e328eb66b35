"""An independent reference for one training step, for the tests that check the update.

:func:`one_step` trains a :class:`~skrobust.RobustNetClassifier` for one
full-batch SGD step and returns the parameters before and after it;
:func:`per_sample_gradients` and :func:`expected_step` compute what that step
must be, from a plain loop over the samples (one backward pass each) and the
formulas of the weighting rules written out here, not taken from skrobust.
"""

import numpy as np
import torch
from sklearn.base import clone

from skrobust import RobustNetClassifier


def flat_parameters(module):
    """All parameters of ``module`` as one float64 vector."""
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).double()


def one_step(X, y, *, sample_weight=None, **params):
    """A classifier's parameters before and after one full-batch SGD step.

    Parameters
    ----------
    X, y : arrays
        The training data; the batch is all of it.
    sample_weight : array or None
        Passed to ``fit``.
    **params
        Hyperparameters of the classifier (SGD, ``lr=1``, ``random_state=0``
        and a one-layer MLP of width 8 unless given).

    Returns
    -------
    module : torch.nn.Module
        The module before the step (a fit with ``max_epochs=0``).
    before, after : torch.Tensor
        The flattened parameters before and after the step.
    net : RobustNetClassifier
        The classifier after the step.
    """
    settings = dict(optimizer=torch.optim.SGD, lr=1.0, batch_size=len(X), max_epochs=0,
                    warmup_epochs=0, random_state=0, verbose=0, train_split=None)
    if "module" not in params:
        settings["module__hidden_layer_sizes"] = (8,)
    settings.update(params)
    start = RobustNetClassifier(**settings).fit(X, y, sample_weight=sample_weight)
    net = clone(start).set_params(max_epochs=1).fit(X, y, sample_weight=sample_weight)
    return start.module_, flat_parameters(start.module_), flat_parameters(net.module_), net


def per_sample_gradients(module, X, y):
    """Each sample's cross-entropy gradient (one row each) and its L2 norm, in float64."""
    params = [p for p in module.parameters() if p.requires_grad]
    X = torch.as_tensor(np.asarray(X, dtype=np.float32))
    y = torch.as_tensor(np.asarray(y, dtype=np.int64))
    rows = []
    for i in range(len(X)):
        loss = torch.nn.functional.cross_entropy(module(X[i:i + 1]), y[i:i + 1])
        grads = torch.autograd.grad(loss, params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]).double())
    grads = torch.stack(rows)
    return grads, grads.norm(dim=1)


def centre_and_spread(norms, stats):
    """The batch's ``mu`` and ``sigma``: mean and std (ddof=1), or median and IQR / 1.349."""
    g = norms.numpy()
    if stats == "mean_std":
        return g.mean(), g.std(ddof=1)
    q25, q50, q75 = np.quantile(g, [0.25, 0.5, 0.75])
    return q50, (q75 - q25) / 1.349


def truncate_weights(norms, *, alpha, beta, stats="mean_std"):
    """1 inside ``[mu - beta * sigma, mu + alpha * sigma]``, 0 outside.

    Asserts that no norm lies within rounding distance of a cut, where float32
    and float64 arithmetic could disagree.
    """
    mu, sigma = centre_and_spread(norms, stats)
    g = norms.numpy()
    keep = np.ones(len(g), dtype=bool)
    for cut, inside in ((mu + alpha * sigma, g <= mu + alpha * sigma),
                        (mu - beta * sigma, g >= mu - beta * sigma)):
        if np.isfinite(cut):
            assert np.abs(g - cut).min() > 1e-4 * sigma, "a norm sits on a cut"
            keep &= inside
    return torch.as_tensor(keep, dtype=torch.float64)


def soft_weights(norms, *, stats="mean_std"):
    """``exp(-(g - mu)^2 / (2 sigma^2))``."""
    mu, sigma = centre_and_spread(norms, stats)
    return torch.exp(-0.5 * ((norms - mu) / sigma) ** 2)


def expected_step(grads, weights, *, lr=1.0, normalize=False, sample_weight=None):
    """The SGD step ``-lr * (1/B) sum_i c_i grad_i``, ``c = w * sample_weight`` (/ mean)."""
    c = weights.double()
    if sample_weight is not None:
        c = c * torch.as_tensor(np.asarray(sample_weight), dtype=torch.float64)
    if normalize:
        c = c / c.mean()
    return -lr * (c[:, None] * grads).sum(0) / len(c)


def assert_step(before, after, expected):
    """The parameters moved by ``expected`` (float32 training: relative 1e-4)."""
    torch.testing.assert_close(after - before, expected, rtol=1e-4,
                               atol=1e-5 * float(expected.abs().max()))
