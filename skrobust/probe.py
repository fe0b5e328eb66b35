"""The held-out self-check of ``weighting="adaptive"``: probe networks on a slice.

Before the real training starts, two copies of the freshly initialised network
train on two thirds of the rows with a bare torch loop, one plainly and one
leaving out the rows that :func:`skrobust.selection.flag_noisy_rows` flags, and
after every epoch predict the held-out third. :func:`skrobust.selection.choose_recipe`
then picks the recipe that the held-out rows support (plain training unless
early stopping or the selection is clearly better), and the real training on
all rows follows it. The probes cost about as much as one plain fit on the
rows (two networks on two thirds, no per-sample gradients beyond the last
layer's).
"""

import copy

import numpy as np
import torch

from .memory import RowMemory, standardize_batches
from .selection import flag_noisy_rows

__all__ = ["held_out_split", "probe_curve"]

#: Training steps whose results a probe joins into one tensor of each kind.
_JOIN = 64
#: Held-out rows a probe predicts at once.
_EVAL_ROWS = 4096

#: The smallest held-out slice (rows) and rows per class that the check needs. Below 50
#: held-out rows one row is 2 points of accuracy, and a paired comparison rests on a
#: handful of disagreements: too few to tell a real gain from chance.
MIN_HELD_OUT = 50
MIN_PER_CLASS = 3


def held_out_split(labels, n_classes, *, share=1 / 3, generator=None):
    """Stratified split of the rows into a training part and a held-out part.

    Parameters
    ----------
    labels : torch.Tensor of shape (n_rows,)
        Encoded given labels.
    n_classes : int
        Number of classes.
    share : float, default=1/3
        Share of each class's rows held out (rounded down, at least one row of
        every class that has :data:`MIN_PER_CLASS` rows).
    generator : torch.Generator, default=None
        Source of the random order.

    Returns
    -------
    split : tuple of two torch.Tensor, or None
        ``(train_rows, held_out_rows)``, or ``None`` when the data is too small
        for a check (fewer than ``MIN_HELD_OUT`` = 50 held-out rows).
    """
    held = []
    for c in range(n_classes):
        rows = torch.nonzero(labels == c).flatten()
        if len(rows) < MIN_PER_CLASS:
            continue
        rows = rows[torch.randperm(len(rows), generator=generator)]
        held.append(rows[:max(1, int(share * len(rows)))])
    held = torch.cat(held) if held else torch.zeros(0, dtype=torch.long)
    if len(held) < MIN_HELD_OUT:
        return None
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[held] = True
    return torch.nonzero(~mask).flatten(), torch.nonzero(mask).flatten()


def _last_linear(module):
    layers = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return layers[-1] if layers else None


def _join(pending, seen, probas, norms):
    """Move the pending steps' rows, probabilities and standardised norms into the lists."""
    if pending:
        rows, p, norm = zip(*pending)
        seen.append(torch.cat(rows))
        probas.append(torch.cat(p))
        norms.append(standardize_batches(norm))
        pending.clear()


def probe_curve(module, criterion, make_optimizer, X, y, train, held_out, *, epochs,
                batch_size, generator, select=False, warmup_epochs=5, sample_weight=None):
    """Train a copy of ``module`` on rows ``train``; judge rows ``held_out`` after each epoch.

    Parameters
    ----------
    module : torch.nn.Module
        The freshly initialised network (copied, never changed).
    criterion : callable
        ``criterion(logits, targets)`` -> one loss per sample.
    make_optimizer : callable
        ``make_optimizer(parameters)`` -> a torch optimizer.
    X : torch.Tensor of shape (n_rows, ...)
        Features.
    y : torch.Tensor of shape (n_rows,)
        Encoded given labels.
    train, held_out : torch.Tensor of int
        Row indices to train on and to judge.
    epochs : int
        Epochs to train.
    batch_size : int
        Batch size (``-1``: all training rows).
    generator : torch.Generator
        Source of the shuffling.
    select : bool, default=False
        Leave out, from the end of epoch ``warmup_epochs`` on, the rows that
        :func:`~skrobust.selection.flag_noisy_rows` flags from running averages
        of the predictions and of the last layer's per-sample gradient norms.
    warmup_epochs : int, default=5
        Epochs before the selection starts.
    sample_weight : torch.Tensor of shape (n_rows,), default=None
        User weights of the rows.

    Returns
    -------
    right : numpy.ndarray of bool, shape (epochs, len(held_out))
        After each epoch: is the prediction of each held-out row its given label.
    """
    module = copy.deepcopy(module)
    optimizer = make_optimizer(module.parameters())
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if X.device == device:
        # Each batch gathers its rows from X: no copy of the data's two thirds.
        X_train, train_rows = X, train.to(device)
    else:
        X_train, train_rows = X[train].to(device), None
    y_train, y_held = y[train].to(device), y[held_out].to(device)
    weight = (sample_weight[train].to(device) if sample_weight is not None
              else torch.ones(len(train), device=device))
    n_rows = len(train)
    size = n_rows if batch_size == -1 else min(batch_size, n_rows)
    keep = torch.ones(n_rows, device=device)
    last = _last_linear(module)
    inputs = {}
    hook = None
    if select and last is not None:
        hook = last.register_forward_hook(lambda m, i, o: inputs.__setitem__("h", i[0]))
    proba_memory = norm_memory = None
    right = []
    try:
        for epoch in range(1, epochs + 1):
            module.train()
            order = torch.randperm(n_rows, generator=generator).to(device)
            seen, probas, norms = [], [], []  # joined, joined, standardised and joined
            pending = []
            for start in range(0, n_rows, size):
                rows = order[start:start + size]
                logits = module(X_train[rows if train_rows is None else train_rows[rows]])
                losses = criterion(logits, y_train[rows])
                coef = weight[rows] * (keep[rows] if select and epoch > warmup_epochs else 1.0)
                optimizer.zero_grad()
                (coef.detach() * losses).sum().div(len(rows)).backward()
                optimizer.step()
                if select:
                    with torch.no_grad():
                        p = torch.softmax(logits.detach(), dim=-1)
                        g = (p - torch.nn.functional.one_hot(y_train[rows], p.shape[1]))
                        norm = g.norm(dim=1)
                        if "h" in inputs:
                            h = inputs.pop("h").detach().reshape(len(rows), -1)
                            norm = norm * (h.pow(2).sum(1) + 1.0).sqrt()
                    pending.append((rows.cpu(), p, norm))
                    if len(pending) == _JOIN:  # few large tensors, not thousands of small
                        _join(pending, seen, probas, norms)
            if select:
                _join(pending, seen, probas, norms)
                if proba_memory is None:
                    proba_memory = RowMemory(n_rows, width=probas[0].shape[1])
                    norm_memory = RowMemory(n_rows)
                rows = torch.cat(seen)
                proba_memory.update(rows, torch.cat(probas))
                norm_memory.update(rows, torch.cat(norms))
                if epoch >= warmup_epochs:
                    flags = flag_noisy_rows(proba_memory.values, y_train.cpu(),
                                            norm_memory.values)
                    keep = (~flags).to(device, torch.float32)
            module.eval()
            with torch.no_grad():
                # In slices: activations of the whole held-out third would be
                # several times the size of the data.
                predicted = torch.cat([
                    module(X[held_out[i:i + _EVAL_ROWS]].to(device)).argmax(1)
                    for i in range(0, len(held_out), _EVAL_ROWS)])
                right.append((predicted == y_held).cpu().numpy())
    finally:
        if hook is not None:
            hook.remove()
    return np.array(right, dtype=bool).reshape(epochs, len(held_out))
