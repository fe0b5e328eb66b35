"""Per-row memory of training signals across epochs.

The weighting rules of :mod:`skrobust.weighting` see one batch at a time. The
memory keeps, for every row of the data given to ``fit``, an exponential moving
average of what the training step saw for that row: its standardised gradient
norm and its predicted class probabilities (the inputs of
:mod:`skrobust.selection`; the probabilities also give
:attr:`RobustNetClassifier.noise_scores_`).
"""

import torch

from .weighting import _IQR_TO_SIGMA

__all__ = ["RowMemory", "standardize", "standardize_batches"]


def standardize(norms):
    """Distance of each norm from the batch median, in units of the batch spread.

    Parameters
    ----------
    norms : torch.Tensor of shape (n_samples,)
        Per-sample gradient norms of one batch.

    Returns
    -------
    z : torch.Tensor of shape (n_samples,)
        ``(g - median) / (IQR / 1.349)`` over the finite norms; ``0`` where the
        spread is ``0`` (up to rounding) or a norm is not finite.
    """
    return standardize_batches([norms])


def standardize_batches(batches):
    """:func:`standardize` applied to each batch of a list at once.

    The training step only stores each batch's norms; this standardises a whole
    epoch's batches in a few tensor operations (batches of equal size are stacked
    and reduced along their rows) instead of a dozen operations per step.

    Parameters
    ----------
    batches : list of torch.Tensor of shape (batch_size,)
        The norms of each batch, in order.

    Returns
    -------
    z : torch.Tensor of shape (sum of the batch sizes,)
        The standardised norms of every batch, concatenated in order.
    """
    out = [None] * len(batches)
    by_size = {}
    for i, norms in enumerate(batches):
        by_size.setdefault(norms.numel(), []).append(i)
    for size, members in by_size.items():
        block = torch.stack([batches[i] for i in members])
        finite = torch.isfinite(block)
        kept = torch.where(finite, block, float("nan"))
        if size < 2:
            z = torch.zeros_like(block)
        else:
            q = torch.nanquantile(kept, block.new_tensor([0.25, 0.5, 0.75]), dim=1,
                                  keepdim=True)
            mu, sigma = q[1], (q[2] - q[0]) / _IQR_TO_SIGMA
            floor = torch.finfo(block.dtype).eps * mu.abs() * finite.sum(1, keepdim=True)
            spread = torch.isfinite(sigma) & (sigma > floor)
            z = (block - mu) / torch.where(spread, sigma, torch.ones_like(sigma))
            z = torch.where(finite & spread, z, torch.zeros_like(z))
        for row, i in enumerate(members):
            out[i] = z[row]
    return torch.cat(out) if out else torch.zeros(0)


class RowMemory:
    """Exponential moving average of a per-row value (a scalar or a vector).

    Parameters
    ----------
    n_rows : int
        Number of rows of the data given to ``fit``.
    width : int or None, default=None
        ``None`` for one scalar per row, else the length of each row's vector.
    momentum : float, default=0.9
        Weight of the past at each update: ``v <- momentum * v + (1 - momentum) * x``.
        A row's first update sets it to ``x``. Each row is seen once per epoch,
        so the average spans about ``1 / (1 - momentum)`` recent epochs.

    Attributes
    ----------
    values : torch.Tensor of shape (n_rows,) or (n_rows, width)
        The running averages, float64 on the CPU; NaN for rows never updated.
    counts : torch.Tensor of shape (n_rows,)
        How many times each row was updated.
    """

    def __init__(self, n_rows, width=None, momentum=0.9):
        shape = (n_rows,) if width is None else (n_rows, width)
        self.momentum = momentum
        self.values = torch.full(shape, float("nan"), dtype=torch.float64)
        self.counts = torch.zeros(n_rows, dtype=torch.long)

    def __len__(self):
        return len(self.counts)

    def update(self, rows, values):
        """Fold ``values`` into the averages of ``rows``.

        Parameters
        ----------
        rows : torch.Tensor of shape (k,)
            Row indices, unique within one call.
        values : torch.Tensor of shape (k,) or (k, width)
            New observations for those rows.
        """
        rows = rows.cpu()
        values = values.detach().to("cpu", torch.float64)
        # index_select / index_copy_: the same values as advanced indexing, in a
        # fraction of its time on wide memories.
        seen = self.counts.index_select(0, rows) > 0
        if values.dim() > 1:
            seen = seen.unsqueeze(1)
        blended = self.values.index_select(0, rows).mul_(self.momentum).add_(
            values * (1 - self.momentum))
        self.values.index_copy_(0, rows, torch.where(seen, blended, values))
        self.counts.index_add_(0, rows, torch.ones_like(rows))

    @property
    def seen(self):
        """Boolean mask of the rows updated at least once."""
        return self.counts > 0

    def state_dict(self):
        """The memory as a dict of tensors, for ``torch.save`` and skorch checkpoints.

        Returns
        -------
        state : dict
        """
        return {"values": self.values.clone(), "counts": self.counts.clone(),
                "momentum": torch.tensor(self.momentum, dtype=torch.float64)}

    def load_state_dict(self, state):
        """Restore a memory saved with :meth:`state_dict`.

        Parameters
        ----------
        state : dict
            As returned by :meth:`state_dict`.
        """
        if state["values"].shape != self.values.shape:
            raise ValueError(
                f"Saved memory has shape {tuple(state['values'].shape)}, this one "
                f"{tuple(self.values.shape)}: it belongs to other training data."
            )
        self.values = state["values"].to(torch.float64).clone()
        self.counts = state["counts"].to(torch.long).clone()
        self.momentum = float(state["momentum"])
