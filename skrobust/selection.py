"""Row-level selection: which training rows look mislabeled, from their memory.

The original method's rules judge each batch on its own. The functions here judge each
row on what the per-row memory (:mod:`skrobust.memory`) accumulated across
epochs, with thresholds set by the data, so that they adapt to the noise rate
and leave clean data alone. They are pure functions: memory in, flags out.
"""

import numpy as np
import torch

__all__ = [
    "choose_recipe",
    "confident_disagreement",
    "flag_noisy_rows",
    "held_out_gain",
]


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
    >>> proba = torch.tensor([[0.9, 0.1], [0.95, 0.05], [0.3, 0.7], [0.1, 0.9]])
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
    """Rows to leave out of training: three tests must agree.

    A row is flagged when its average prediction confidently disagrees with its
    label (:func:`confident_disagreement`), gives its label less than ``1/K``
    (``K`` classes: less than a uniform guess would), *and* its average
    standardised gradient norm is above ``norm_threshold`` (the batch median is
    ``0``). Requiring all three spares hard but correctly labelled rows, which
    the model may doubt (per-class thresholds are lowest for the classes that
    overlap) but whose given label it does not rule out.

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
    proba, labels_seen = proba[seen], labels[seen]
    disagree = confident_disagreement(proba, labels_seen)
    below_uniform = proba[torch.arange(len(labels_seen)), labels_seen] < 1.0 / proba.shape[1]
    flags = torch.zeros(len(labels), dtype=torch.bool)
    flags[seen] = disagree & below_uniform & (norm_scores[seen] > norm_threshold)
    return flags


def held_out_gain(right_new, right_old):
    """Paired comparison of two models on the same held-out rows (McNemar).

    Parameters
    ----------
    right_new, right_old : array-like of bool, shape (n_rows,)
        Whether each model's prediction of each held-out row is its given label.

    Returns
    -------
    gain : int
        Rows only the new model gets right minus rows only the old one gets right.
    se : float
        ``sqrt`` of the number of rows where the two disagree (at least 1): the
        standard deviation of ``gain`` if neither model were better.

    Examples
    --------
    >>> from skrobust.selection import held_out_gain
    >>> held_out_gain([True, True, True, False], [True, False, False, True])
    (1, 1.7320508075688772)
    """
    new = torch.as_tensor(right_new, dtype=torch.bool)
    old = torch.as_tensor(right_old, dtype=torch.bool)
    better, worse = int((new & ~old).sum()), int((old & ~new).sum())
    return better - worse, max(better + worse, 1) ** 0.5


def choose_recipe(plain_right, select_right, alpha=1.0):
    """The training recipe that a held-out slice supports: plain unless clearly beaten.

    Two probe networks were trained on the same rows, one plainly and one with
    row selection, and after every epoch judged on held-out rows (their given
    labels). The candidates are: the plain network stopped at its best epoch,
    the selecting network at its last epoch, and at its best epoch. Each is
    compared with the plain network at its last epoch (what plain training
    gives) by :func:`held_out_gain`; a candidate qualifies when its gain
    exceeds ``alpha`` standard deviations, and the qualifying candidate with
    the largest gain wins. With none, training is plain. Under label noise that
    depends on the class only, accuracy against the noisy held-out labels ranks
    models as accuracy against the true labels does, so noisy labels can judge.

    Parameters
    ----------
    plain_right, select_right : array-like of bool, shape (n_epochs, n_rows)
        Per epoch and held-out row: is the probe's prediction the given label.
    alpha : float, default=1.0
        Margin, in standard deviations of the paired difference.

    Returns
    -------
    recipe : dict
        ``mode`` (``"plain"`` or ``"select"``), ``epochs`` (how many epochs to
        train, counted as in the probes) and ``gains``: for each candidate,
        ``(gain, se)`` in held-out rows.

    Examples
    --------
    >>> import numpy as np
    >>> from skrobust.selection import choose_recipe
    >>> plain = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=bool)  # worse at the end
    >>> select = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=bool)
    >>> choose_recipe(plain, select, alpha=1.0)["mode"], choose_recipe(plain, select)["epochs"]
    ('plain', 1)
    """
    plain = torch.as_tensor(np.asarray(plain_right, dtype=bool))
    select = torch.as_tensor(np.asarray(select_right, dtype=bool))
    if plain.dim() != 2 or select.shape != plain.shape or plain.shape[0] < 1:
        raise ValueError("plain_right and select_right must be (n_epochs, n_rows) arrays "
                         f"of one shape; got {tuple(plain.shape)} and {tuple(select.shape)}.")
    n_epochs = plain.shape[0]
    final = plain[-1]
    plain_best = int(plain.sum(1).argmax())
    select_best = int(select.sum(1).argmax())
    candidates = {
        "plain_best": (plain[plain_best], "plain", plain_best + 1),
        "select": (select[-1], "select", n_epochs),
        "select_best": (select[select_best], "select", select_best + 1),
    }
    recipe = {"mode": "plain", "epochs": n_epochs, "gains": {}}
    best = 0.0
    for name, (right, mode, epochs) in candidates.items():
        gain, se = held_out_gain(right, final)
        recipe["gains"][name] = (gain, se)
        if gain > alpha * se and gain > best:
            best = gain
            recipe.update(mode=mode, epochs=epochs)
    return recipe
