"""Per-row state of a fit: the epoch's record, the row memories, the flags.

The training step only appends what it computed for a batch (rows, norms,
weights, outputs) to the epoch's record: no per-step host synchronisation. At
the end of the epoch :meth:`RowState.end_epoch` folds the record into the
per-row memories (:class:`~skrobust.memory.RowMemory`) in a few tensor
operations and returns the epoch's weight summary for the history. The
weighting rules (:mod:`skrobust.rules`) and the estimators' ``noise_scores_``
and ``label_issues_`` read the memories from here.
"""

import torch

from .memory import standardize_batches

__all__ = ["LOW_WEIGHT", "RowState"]

#: Below this weight a sample counts as down-weighted in the history (``weight_low``).
LOW_WEIGHT = 0.5


class RowState:
    """What a fit remembers about each training row.

    Parameters
    ----------
    targets : torch.Tensor of shape (n_rows, ...)
        The (encoded) training targets, in row order.
    norm_memory : RowMemory
        Running average of each row's standardised gradient norm.
    output_memory : RowMemory
        Running average of each row's output in memory form (the classifier's
        predicted probabilities).
    to_memory : callable
        ``to_memory(outputs) -> values``: a batch of module outputs in the
        form kept by ``output_memory`` (e.g. softmax of the logits).
    flag_rows : callable
        ``flag_rows(state) -> mask``: a boolean tensor over the rows, the rows
        judged wrongly labelled; what the estimator reports as its issues.
    """

    def __init__(self, targets, norm_memory, output_memory, to_memory, flag_rows):
        self.targets = targets
        self.norm_memory = norm_memory
        self.output_memory = output_memory
        self._to_memory = to_memory
        self._flag_rows = flag_rows
        self._record = []

    def start_epoch(self):
        """Start an empty record for the epoch."""
        self._record = []

    def record(self, rows, norms, weights, outputs):
        """Keep a training step's results for the end of the epoch (no host sync).

        Parameters
        ----------
        rows : torch.Tensor of shape (B,) or None
            The batch's row indices (``None`` when the iterator gives none).
        norms, weights : torch.Tensor of shape (B,)
            Per-sample gradient norms and robust weights.
        outputs : torch.Tensor of shape (B, ...)
            The module's outputs.
        """
        self._record.append((rows, norms, weights, outputs.detach()))

    def end_epoch(self):
        """Fold the epoch's record into the memories.

        Returns
        -------
        summary : dict or None
            ``weight_mean`` (the mean weight of the epoch's samples) and
            ``weight_low`` (the share below :data:`LOW_WEIGHT`), or ``None``
            when nothing was recorded.
        """
        record, self._record = self._record, []
        if not record:
            return None
        rows, norms, weights, outputs = zip(*record)
        weights = torch.cat(weights)
        mean, low = torch.stack(
            [weights.mean(), (weights < LOW_WEIGHT).to(weights.dtype).mean()]).tolist()
        if all(r is not None for r in rows):
            rows = torch.cat(rows).cpu()
            self.norm_memory.update(rows, standardize_batches(norms))
            self.output_memory.update(rows, self._to_memory(torch.cat(outputs)))
        return {"weight_mean": mean, "weight_low": low}

    def flags(self):
        """Rows judged wrongly labelled, from the memories.

        Returns
        -------
        flags : torch.Tensor of shape (n_rows,), bool
        """
        return self._flag_rows(self)

    def flag_rate(self):
        """Share of the rows trained on so far that :meth:`flags` marks.

        Returns
        -------
        rate : float
        """
        seen = self.norm_memory.seen
        if not seen.any():
            return 0.0
        return float(self.flags()[seen].float().mean())
