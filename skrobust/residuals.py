"""Row-level selection for regression: outlying residuals, from the row memories.

The regressor's per-row memory keeps each row's running-average prediction
(in the internal, standardised target scale). Its residual against the given
target stays large for a row whose target is wrong, because the rest of the
data pulls the prediction towards the value the features imply. The functions
here turn the memories into scores and flags with thresholds set by the data:
pure functions, memory in, scores or flags out.
"""

import torch

__all__ = [
    "ISSUE_THRESHOLD",
    "MIN_RESIDUAL",
    "flag_outlying_residuals",
    "residual_scores",
    "robust_scale",
]

#: Residual score (in robust standard deviations) above which a row is flagged.
#:
#: A Gaussian residual exceeds it with probability 0.27%.
ISSUE_THRESHOLD = 3.0

#: Smallest residual of a flagged row, in units of the targets' robust spread.
#:
#: A near-perfect fit (or a constant target) has tiny residuals whose spread is
#: no measure of corruption.
MIN_RESIDUAL = 0.5

# MAD -> standard deviation of a Gaussian.
_MAD_TO_SIGMA = 1.4826


def robust_scale(values, dim=0):
    """Centre and spread of ``values`` that a minority of wild values cannot drag.

    The centre is the median; the spread is ``1.4826 * MAD`` (the standard
    deviation for Gaussian data), falling back to the mean absolute deviation
    from the median (times ``sqrt(pi / 2)``) where more than half of the values
    are equal, and to 1 where all are.

    Parameters
    ----------
    values : torch.Tensor of shape (n, ...)
        Finite values.
    dim : int, default=0
        The dimension reduced.

    Returns
    -------
    centre, spread : torch.Tensor
        Shaped as ``values`` without ``dim``; the spread is positive.

    Examples
    --------
    >>> import torch
    >>> from skrobust.residuals import robust_scale
    >>> centre, spread = robust_scale(torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0]))
    >>> float(centre), round(float(spread), 4)
    (3.0, 1.4826)
    """
    centre = values.median(dim=dim, keepdim=True).values
    deviation = (values - centre).abs()
    spread = _MAD_TO_SIGMA * deviation.median(dim=dim, keepdim=True).values
    fallback = 1.2533 * deviation.mean(dim=dim, keepdim=True)
    tiny = torch.finfo(values.dtype).eps * (1.0 + centre.abs()) * 16
    spread = torch.where(spread > tiny, spread, fallback)
    spread = torch.where(spread > tiny, spread, torch.ones_like(spread))
    return centre.squeeze(dim), spread.squeeze(dim)


def residual_scores(predictions, targets):
    """How far each row's residual lies from the others', in robust standard deviations.

    With ``r_ij = prediction_ij - target_ij`` for row ``i`` and target ``j``,
    each target's residuals are centred at their median and divided by their
    robust spread (:func:`robust_scale`); a row's score is the root mean square
    of its standardised residuals over the targets.

    Parameters
    ----------
    predictions : torch.Tensor of shape (n_rows, n_targets)
        Per-row running-average predictions; NaN for rows never trained on.
    targets : torch.Tensor of shape (n_rows, n_targets)
        The given targets, in the same scale.

    Returns
    -------
    scores : torch.Tensor of shape (n_rows,), float64
        Non-negative; NaN for rows never trained on.

    Examples
    --------
    >>> import torch
    >>> from skrobust.residuals import residual_scores
    >>> pred = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    >>> target = torch.tensor([[0.1], [0.9], [2.0], [3.1], [9.0]])
    >>> [round(v, 2) for v in residual_scores(pred, target).tolist()]
    [0.0, 1.35, 0.67, 0.0, 33.05]
    """
    predictions = predictions.to(torch.float64).reshape(len(predictions), -1)
    targets = targets.to(torch.float64).reshape(len(targets), -1)
    scores = torch.full((len(predictions),), float("nan"), dtype=torch.float64)
    seen = torch.isfinite(predictions).all(1)
    if not seen.any():
        return scores
    residuals = predictions[seen] - targets[seen]
    centre, spread = robust_scale(residuals, dim=0)
    z = (residuals - centre) / spread
    scores[seen] = z.square().mean(1).sqrt()
    return scores


def flag_outlying_residuals(predictions, targets, norm_scores, *,
                            threshold=ISSUE_THRESHOLD, min_residual=MIN_RESIDUAL):
    """Rows whose targets look wrong: outlying residual and above-median gradient.

    A row is flagged when its residual score (:func:`residual_scores`) exceeds
    ``threshold`` robust standard deviations, its residual (root mean square
    over the targets) is at least ``min_residual`` *and* its running-average
    standardised gradient norm is above its batches' median (``0``). The
    threshold is in units of the residuals' own spread, so it follows the
    data: on clean targets with Gaussian noise about 0.3% of the rows pass it,
    and the share flagged grows with the share of corrupted targets.

    Parameters
    ----------
    predictions : torch.Tensor of shape (n_rows, n_targets)
        Per-row running-average predictions; NaN for rows never trained on.
    targets : torch.Tensor of shape (n_rows, n_targets)
        The given targets, in the same scale.
    norm_scores : torch.Tensor of shape (n_rows,)
        Per-row running-average standardised gradient norms.
    threshold : float, default=ISSUE_THRESHOLD
        Minimum residual score of a flagged row.
    min_residual : float, default=MIN_RESIDUAL
        Minimum residual of a flagged row, in the scale of ``targets`` (the
        regressor's targets have a robust spread of 1).

    Returns
    -------
    flags : torch.Tensor of shape (n_rows,), bool
        Never set for rows not trained on.
    """
    scores = residual_scores(predictions, targets)
    residuals = (predictions.to(torch.float64).reshape(len(predictions), -1)
                 - targets.to(torch.float64).reshape(len(targets), -1))
    size = residuals.square().mean(1).sqrt()
    norms = norm_scores.to(torch.float64)
    return (scores > threshold) & (size >= min_residual) & (norms > 0)
