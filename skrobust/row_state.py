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

#: Steps whose results :meth:`RowState.record` joins into one tensor of each kind.
CHUNK = 64


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
        self._pending = []

    def start_epoch(self):
        """Start an empty record for the epoch."""
        self._record = []
        self._pending = []

    def record(self, rows, norms, weights, outputs):
        """Keep a training step's results for the end of the epoch (no host sync).

        Every :data:`CHUNK` steps the kept results are joined into one tensor
        per kind: thousands of small tensors kept for a whole epoch would
        scatter the memory that the steps allocate and free in between, and
        the process would hold many times their size.

        Parameters
        ----------
        rows : torch.Tensor of shape (B,) or None
            The batch's row indices (``None`` when the iterator gives none).
        norms, weights : torch.Tensor of shape (B,)
            Per-sample gradient norms and robust weights.
        outputs : torch.Tensor of shape (B, ...)
            The module's outputs.
        """
        self._pending.append((rows, norms, weights, outputs.detach()))
        if len(self._pending) >= CHUNK:
            self._join_pending()

    def _join_pending(self):
        """Join the steps kept since the last join into one entry of the record."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        rows, norms, weights, outputs = zip(*pending)
        self._record.append((
            None if any(r is None for r in rows) else torch.cat(rows),
            torch.cat(norms), [len(n) for n in norms], torch.cat(weights),
            torch.cat(outputs)))

    def end_epoch(self):
        """Fold the epoch's record into the memories.

        Each row is folded in once per epoch; the steps are folded one joined
        entry (:data:`CHUNK` steps) at a time.

        Returns
        -------
        summary : dict or None
            ``weight_mean`` (the mean weight of the epoch's samples) and
            ``weight_low`` (the share below :data:`LOW_WEIGHT`), or ``None``
            when nothing was recorded.
        """
        self._join_pending()
        record, self._record = self._record, []
        if not record:
            return None
        weights = torch.cat([entry[3] for entry in record])
        mean, low = torch.stack(
            [weights.mean(), (weights < LOW_WEIGHT).to(weights.dtype).mean()]).tolist()
        if all(entry[0] is not None for entry in record):
            # Entry by entry: the same updates (each row's depends only on its own
            # values), with temporaries the size of an entry, not of the data.
            for rows, norms, sizes, _, outputs in record:
                rows = rows.cpu()
                self.norm_memory.update(rows, standardize_batches(torch.split(norms, sizes)))
                self.output_memory.update(rows, self._to_memory(outputs))
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
