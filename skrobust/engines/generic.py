"""The generic engine: exact per-sample gradients of any module, by a batched backward."""

import contextlib

import torch

from ._autograd import trainable

__all__ = ["GenericEngine"]

# Memory budget for one chunk of rows: per-sample gradients of the parameters
# and of the activations.
_CHUNK_BYTES = 128 * 2**20


class GenericEngine:
    """Exact per-sample gradients for any module, through a batched backward.

    Parameters
    ----------
    module : torch.nn.Module
        The module whose trainable parameters are differentiated.

    Notes
    -----
    The norms come from ``torch.autograd.grad(..., is_grads_batched=True)``
    over the graph of the forward pass: row ``i`` of the batched output
    gradient is the ``i``-th unit vector, and each row costs about one backward
    pass of the whole batch. The cost of the norms therefore grows with the
    **square** of the batch size: about ``B`` plain backward passes, e.g.
    ~100x a plain training step at batch 128 and ~400x at batch 512 for a small
    MLP on one CPU thread. It is exact for any module, Dropout masks included,
    and is the fallback of the layer-wise engines
    (:class:`~skrobust.engines.GhostNormEngine`,
    :class:`~skrobust.engines.HybridEngine`) for what they cannot split per
    layer: parameters shared by several modules or used outside their module's
    forward, modules with both parameters and submodules.

    The rows are processed in chunks that fit in 128 MiB: each row of a chunk
    holds a gradient for every trainable parameter *and* one for the
    activations of the whole batch (their size is measured during
    :meth:`capture`: the outputs of the leaf modules). The update is one
    ``backward`` with the coefficients as ``grad_tensors``.
    """

    name = "generic"

    def __init__(self, module):
        self.module = module
        self._losses = None
        self._activations = 0

    @contextlib.contextmanager
    def capture(self):
        """Context for the forward pass: measures the activations (for the chunk size).

        Yields
        ------
        engine : GenericEngine
            This engine.
        """
        self._activations = 0
        handles = [m.register_forward_hook(self._count) for m in self.module.modules()
                   if next(m.children(), None) is None]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _count(self, layer, inputs, output):
        if isinstance(output, torch.Tensor):
            self._activations += output.numel()

    def norms(self, losses, retain_graph=False):
        """Per-sample gradient L2 norms of ``losses`` (shape ``(n,)``).

        The graph of ``losses`` is always kept (for :meth:`backward`), so
        ``retain_graph`` has no effect here; it exists for the same signature
        as :meth:`LayerwiseEngine.norms <skrobust.engines.LayerwiseEngine.norms>`.

        Parameters
        ----------
        losses : torch.Tensor of shape (n,)
            One loss per sample, computed inside :meth:`capture`.
        retain_graph : bool, default=False
            Keep the graph of the forward pass after computing the norms.

        Returns
        -------
        norms : torch.Tensor of shape (n,)
            The L2 norm of each sample's gradient over all trainable parameters.
        """
        self._losses = losses
        params = trainable(self.module)
        n = losses.shape[0]
        per_row = sum(p.numel() for p in params) + self._activations
        itemsize = losses.element_size()
        chunk = max(1, min(n, _CHUNK_BYTES // max(1, per_row * itemsize)))
        squares = []
        for start in range(0, n, chunk):
            rows = min(chunk, n - start)
            # Rows of the identity matrix, without building all n x n of it.
            one_hot = losses.new_zeros(rows, n)
            one_hot[:, start:start + rows].fill_diagonal_(1)
            grads = torch.autograd.grad(
                losses, params, grad_outputs=one_hot,
                is_grads_batched=True, retain_graph=True, allow_unused=True,
            )
            total = losses.new_zeros(rows)
            for g in grads:
                if g is not None:
                    total = total + g.reshape(g.shape[0], -1).pow(2).sum(1)
            squares.append(total)
        return torch.cat(squares).sqrt().detach() if squares else losses.new_zeros(0)

    def backward(self, coefficients):
        """Accumulate ``sum_i coefficients[i] * grad_i`` into ``p.grad``.

        Parameters
        ----------
        coefficients : torch.Tensor of shape (n,)
            One coefficient per sample of the last :meth:`norms` call, e.g.
            ``w_i / B``; treated as constants.
        """
        losses, self._losses = self._losses, None
        torch.autograd.backward(losses, grad_tensors=coefficients.detach())

    def release(self):
        """Drop the losses kept since :meth:`norms` (and the graph they hold)."""
        self._losses = None
