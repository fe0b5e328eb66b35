"""Row-level selection: which training rows look mislabeled, from their memory.

The original method's rules judge each batch on its own. The functions here judge each
row on what the per-row memory (:mod:`skrobust.memory`) accumulated across
epochs, with thresholds set by the data, so that they adapt to the noise rate
and leave clean data alone. They are pure functions: memory in, flags out.
"""

import torch

__all__ = ["confident_disagreement", "flag_noisy_rows"]


def confident_disagreement(proba, labels):
    """Rows whose average prediction confidently names a class other than their label.

    This is the in-training form of confident learning (Northcutt et al., 2021):
    class ``k``'s confidence threshold ``t_k`` is the mean predicted probability of
    ``k`` over the rows labelled ``k``; a row is "confidently class ``k``" when
    ``p_k >= t_k``, and flagged when the most probable of its confident classes is
    not its label. Per-class thresholds keep classes that the model finds hard
    from being flagged wholesale.

    Parameters
    ----------
    proba : torch.Tensor of shape (n_rows, n_classes)
        Per-row predicted probabilities (e.g. a running average over epochs).
    labels : torch.Tensor of shape (n_rows,)
        Given (possibly wrong) labels, encoded ``0 .. n_classes - 1``.

    Returns
    -------
    flags : torch.Tensor of shape (n_rows,), bool

    References
    ----------
    C. Northcutt, L. Jiang, I. Chuang. "Confident Learning: Estimating
    Uncertainty in Dataset Labels". JAIR 70, 2021.

    Examples
    --------
    >>> import torch
    >>> from skrobust.selection import confident_disagreement
    >>> proba = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    >>> confident_disagreement(proba, torch.tensor([0, 1, 1, 1])).tolist()
    [False, True, False, False]
    """
    n_classes = proba.shape[1]
    one_hot = torch.nn.functional.one_hot(labels, n_classes).to(proba.dtype)
    per_class = one_hot.sum(0)
    thresholds = (proba * one_hot).sum(0) / per_class.clamp(min=1)
    # A class absent from the labels has no threshold: it is never "confident".
    thresholds = torch.where(per_class > 0, thresholds, torch.full_like(thresholds, 2.0))
    confident = proba >= thresholds
    best = torch.where(confident, proba, torch.full_like(proba, -1.0)).argmax(1)
    return confident.any(1) & (best != labels)


def flag_noisy_rows(proba, labels, norm_scores, *, norm_threshold=0.0):
    """Rows to leave out of training: two signals must agree.

    A row is flagged when its average prediction confidently disagrees with its
    label (:func:`confident_disagreement`) *and* its average standardised
    gradient norm is above ``norm_threshold`` (the batch median is ``0``).
    Requiring both signals spares hard but correctly labelled rows, which the
    model may doubt but whose gradients are not outlying.

    Parameters
    ----------
    proba : torch.Tensor of shape (n_rows, n_classes)
        Per-row running-average predicted probabilities.
    labels : torch.Tensor of shape (n_rows,)
        Encoded given labels.
    norm_scores : torch.Tensor of shape (n_rows,)
        Per-row running-average standardised gradient norms; NaN for rows not
        trained on (never flagged).
    norm_threshold : float, default=0.0
        Minimum norm score of a flagged row.

    Returns
    -------
    flags : torch.Tensor of shape (n_rows,), bool
    """
    seen = torch.isfinite(norm_scores)
    disagree = confident_disagreement(proba[seen], labels[seen])
    flags = torch.zeros(len(labels), dtype=torch.bool)
    flags[seen] = disagree & (norm_scores[seen] > norm_threshold)
    return flags
