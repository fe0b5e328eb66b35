"""The per-layer fallback of the layer-wise engines: per-sample gradients by ``torch.func``.

For a leaf layer without a closed form, sample ``i``'s gradient of the layer's
own parameters is the vector-Jacobian product of the layer alone on row ``i``
of its inputs, with row ``i`` of its output gradient: ``vmap`` over ``vjp``.
"""

from typing import NamedTuple, Optional

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from ._autograd import accumulate, accumulate_mv, detached, like, row_sq
from ._recording import LayerCall

# Memory budget for the per-sample gradients of one layer. Within it they are
# kept from norms() to update(); above it they are computed in chunks for the
# norms and the update is a batched vector-Jacobian product.
_KEEP_BYTES = 128 * 2**20


class NotPerSample(Exception):
    """A layer that torch.func cannot differentiate one sample at a time."""


class FuncState(NamedTuple):
    """What the update of a torch.func layer needs: one of the two fields."""

    #: ``name -> per-sample gradients`` (n, ...) when they fit in the budget.
    per_sample: Optional[dict]
    #: Otherwise the layer's calls, for a weighted vector-Jacobian product each.
    calls: Optional[list]


class FuncForm:
    """Any leaf layer: per-sample gradients with ``torch.func`` (vmap over vjp).

    Exact when the layer is deterministic and treats the rows of its input as
    independent samples. Random operations make ``vmap`` fail, and the first
    call of each new input signature compares the per-row outputs with the
    layer's real output; :meth:`norms` raises :class:`NotPerSample` when
    either fails.

    Parameters
    ----------
    layer : torch.nn.Module
        A layer for which :meth:`applies_to` is true.
    """

    def __init__(self, layer):
        self.layer = layer
        self.names = [name for name, p in layer.named_parameters(recurse=False)
                      if p.requires_grad]
        self.validated = set()  # call signatures whose per-row outputs matched

    @staticmethod
    def applies_to(layer):
        """Whether torch.func may differentiate ``layer`` alone, one sample at a time."""
        return (next(layer.children(), None) is None and not isinstance(layer, _BatchNorm)
                and not getattr(layer, "sparse", False)
                and not getattr(layer, "scale_grad_by_freq", False))

    def record(self, args, kwargs, output, window):
        """The record of one call, with every argument (and a check on new shapes)."""
        values = (*args, *kwargs.values())
        signature = (self.layer.training, *(
            (tuple(a.shape), a.dtype, a.device) if isinstance(a, torch.Tensor) else type(a)
            for a in values
        ))
        # New input shapes: check the per-row outputs against this output.
        check = None if signature in self.validated else output.detach().clone()
        inputs = tuple(t for t in values if isinstance(t, torch.Tensor))
        return LayerCall(tuple(detached(a) for a in args),
                         {k: detached(v) for k, v in kwargs.items()},
                         inputs, output, (output,), window, signature=signature, check=check)

    def _params(self):
        return {name: self.layer._parameters[name].detach() for name in self.names}

    def norms(self, calls, total):
        """Add the layer's squared per-sample norms to ``total``; the update's state.

        Raises
        ------
        NotPerSample
            If torch.func fails on the layer, or its per-row outputs differ
            from its output on the batch.
        """
        try:
            return self._norms(calls, total)
        except NotPerSample:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure: the layer is not per-sample
            raise NotPerSample(exc) from exc

    def _norms(self, calls, total):
        n = calls[0].output.shape[0]
        params = self._params()
        size = sum(p.numel() for p in params.values())
        itemsize = next(iter(params.values())).element_size()
        keep = n * size * itemsize <= _KEEP_BYTES
        step = n if keep else max(1, _KEEP_BYTES // max(1, size * itemsize))
        parts, kept = [], None
        for start in range(0, n, step):
            rows = slice(start, min(n, start + step))
            grads_sum = None
            for call in calls:
                grads = _per_sample_grads(self.layer, params, call, rows, n)
                grads_sum = grads if grads_sum is None else {
                    k: grads_sum[k].add_(g) for k, g in grads.items()}
            flat = [g.reshape(g.shape[0], -1) for g in grads_sum.values()]
            part = row_sq(flat[0])
            for g in flat[1:]:
                part.add_(row_sq(g))
            parts.append(part)
            if keep:
                kept = grads_sum
        for call in calls:
            if call.check is not None:
                self.validated.add(call.signature)
        total.add_square(parts[0] if len(parts) == 1 else torch.cat(parts))
        return FuncState(kept, None) if kept is not None else FuncState(None, calls)

    def update(self, state, c):
        """Add ``sum_i c_i g_i`` to the ``.grad`` of the layer's trainable parameters."""
        params = self.layer._parameters
        if state.per_sample is not None:
            for name, g in state.per_sample.items():
                accumulate_mv(params[name], g.reshape(g.shape[0], -1).t(), like(c, g))
            return
        from torch.func import functional_call, vjp

        for call in state.calls:
            d = call.output_grad
            weighted = d * c.to(d.dtype).view(-1, *([1] * (d.dim() - 1)))
            _, pullback = vjp(lambda p, call=call: functional_call(
                self.layer, p, call.args, call.kwargs), self._params())
            for name, g in pullback(weighted)[0].items():
                accumulate(params[name], g)


def _per_sample_grads(layer, params, call, rows, n):
    """Per-sample gradients of ``layer``'s ``params`` for the samples ``rows`` of one call."""
    from torch.func import functional_call, vjp, vmap

    args, kwargs = call.args, call.kwargs
    split = [isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == n for a in args]
    if not any(split):
        raise NotPerSample("no positional tensor argument has the batch as first dimension")
    per_row = tuple(a[rows] for a, s in zip(args, split) if s)

    def one(p, row, d_row):
        parts = iter(row)
        full = tuple(next(parts).unsqueeze(0) if s else a for a, s in zip(args, split))
        out, pullback = vjp(lambda q: functional_call(layer, q, full, kwargs), p)
        return pullback(d_row.unsqueeze(0))[0], out.squeeze(0)

    grads, out = vmap(one, in_dims=(None, 0, 0))(params, per_row, call.output_grad[rows])
    if call.check is not None:
        expected = call.check[rows]
        tol = torch.finfo(expected.dtype).eps ** 0.5 * max(expected.abs().max().item(), 1e-30)
        if out.shape != expected.shape or not (out - expected).abs().max().item() <= tol:
            raise NotPerSample(
                "its output for one row alone differs from its output for that row in "
                "the batch: the layer mixes samples or is not deterministic")
    return grads
