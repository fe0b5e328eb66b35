"""Per-row memory of how far each training row's gradient norm stands out.

The weighting rules see one batch at a time; the memory keeps, for every row of
the data given to ``fit``, an exponential moving average of its standardised
gradient norm across the epochs. It is the source of
:attr:`RobustNetClassifier.noise_scores_`.
"""

import torch

from .weighting import _has_spread, batch_statistics

__all__ = ["RowScoreMemory", "standardize"]


def standardize(norms, stats="median_iqr"):
    """Distance of each norm from the batch centre, in units of the batch spread.

    Parameters
    ----------
    norms : torch.Tensor of shape (n_samples,)
        Per-sample gradient norms of one batch.
    stats : {"mean_std", "median_iqr"}, default="median_iqr"
        Statistics of the centre and spread, see
        :func:`skrobust.weighting.batch_statistics`.

    Returns
    -------
    z : torch.Tensor of shape (n_samples,)
        ``(g - mu) / sigma``; ``0`` where sigma is ``0`` or a norm is not finite.
    """
    finite = torch.isfinite(norms)
    kept = norms[finite]
    mu, sigma = batch_statistics(kept, stats)
    spread = _has_spread(kept, mu, sigma)
    z = (norms - mu) / torch.where(spread, sigma, torch.ones_like(sigma))
    return torch.where(finite & spread, z, torch.zeros_like(z))


class RowScoreMemory:
    """Exponential moving average of a score per dataset row.

    Parameters
    ----------
    n_rows : int
        Number of rows of the data given to ``fit``.
    momentum : float, default=0.9
        Weight of the past at each update: ``s <- momentum * s + (1 - momentum) * z``.
        The first update of a row sets it to ``z``.

    Attributes
    ----------
    scores : torch.Tensor of shape (n_rows,)
        The running scores; NaN for rows never updated.
    counts : torch.Tensor of shape (n_rows,)
        How many times each row was updated.
    """

    def __init__(self, n_rows, momentum=0.9):
        self.momentum = momentum
        self.scores = torch.full((n_rows,), float("nan"), dtype=torch.float64)
        self.counts = torch.zeros(n_rows, dtype=torch.long)

    def __len__(self):
        return len(self.counts)

    def update(self, rows, values):
        """Fold ``values`` into the scores of ``rows``.

        Parameters
        ----------
        rows : torch.Tensor of shape (k,)
            Row indices, unique within one call.
        values : torch.Tensor of shape (k,)
            New observations for those rows.
        """
        rows = rows.cpu()
        values = values.detach().to("cpu", torch.float64)
        seen = self.counts[rows] > 0
        old = self.scores[rows]
        blended = self.momentum * old + (1 - self.momentum) * values
        self.scores[rows] = torch.where(seen, blended, values)
        self.counts[rows] += 1
