"""Closed forms of the built-in layers: ``Linear``, ``LayerNorm`` and ``Embedding``.

Each form follows the protocol of :func:`~skrobust.engines.register_layer_form`
and is registered with it.
"""

import math
from typing import NamedTuple, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ._autograd import accumulate, accumulate_mm, accumulate_mv, like
from .registry import register_layer_form


def _joined(calls, rows_x, rows_d):
    """Input and output gradient of a layer, its calls joined along axis 1."""
    if len(calls) == 1:
        call = calls[0]
        return call.args[0], call.output_grad
    return (torch.cat([rows_x(call.args[0]) for call in calls], 1),
            torch.cat([rows_d(call.output_grad) for call in calls], 1))


def _as_sequence(t):
    """View (n, ..., d) as (n, T, d)."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _trainable_or_none(param):
    return param if param is not None and param.requires_grad else None


class LinearState(NamedTuple):
    """What the update of a Linear layer needs."""

    #: Inputs ``A``, shape (n, d_in) or (n, T, d_in); ``None`` when the weight is frozen.
    inputs: Optional[torch.Tensor]
    #: Output gradients ``D``, shape (n, d_out) or (n, T, d_out).
    output_grads: torch.Tensor
    #: Per-sample bias gradients (n, d_out) for 3-D inputs, else ``None`` (they are ``D``).
    bias_grads: Optional[torch.Tensor]


@register_layer_form(nn.Linear)
class LinearForm:
    """``nn.Linear``: weight gradient ``d_i a_i^T`` per sample, bias ``d_i``."""

    def __init__(self, layer):
        self.weight = _trainable_or_none(layer.weight)
        self.bias = _trainable_or_none(layer.bias)
        # The update scales the narrower of input and output gradient by c.
        self.scale_input = layer.in_features < layer.out_features

    def norms(self, calls, total):
        a, d = _joined(calls, _as_sequence, _as_sequence)
        if d.dim() == 2:
            # Row norms in one kernel each: ||d_i a_i^T|| = ||a_i|| ||d_i||.
            d_norm = torch.linalg.vector_norm(d, dim=1)
            if self.weight is not None:
                total.add_norm(torch.linalg.vector_norm(a, dim=1).mul_(d_norm))
            if self.bias is not None:
                total.add_norm(d_norm)
            return LinearState(a, d, None)
        a, d = _as_sequence(a), _as_sequence(d)
        if self.weight is not None:
            steps, n_in, n_out = a.shape[1], a.shape[2], d.shape[2]
            if steps * steps <= n_in * n_out:
                gram = torch.bmm(a, a.transpose(1, 2)).mul_(torch.bmm(d, d.transpose(1, 2)))
                total.add_square(gram.sum((1, 2)))
            else:
                total.add_square(torch.bmm(d.transpose(1, 2), a).square_().sum((1, 2)))
        bias_grads = None
        if self.bias is not None:
            bias_grads = d.sum(1)
            total.add_norm(torch.linalg.vector_norm(bias_grads, dim=1))
        return LinearState(a if self.weight is not None else None, d, bias_grads)

    def update(self, state, c):
        a, d, bias_grads = state
        c = like(c, d)
        if d.dim() == 2:
            dt = d.t()
            if self.weight is not None:  # (c * D)^T A
                if self.scale_input:
                    accumulate_mm(self.weight, dt, a * c.unsqueeze(1))
                else:
                    accumulate_mm(self.weight, dt * c, a)
            if self.bias is not None:
                accumulate_mv(self.bias, dt, c)
            return
        if self.weight is not None:
            wd = (d * c.view(-1, 1, 1)).reshape(-1, d.shape[-1])
            accumulate_mm(self.weight, wd.t(), a.reshape(-1, a.shape[-1]))
        if self.bias is not None:
            accumulate_mv(self.bias, bias_grads.t(), c)


class AffineGrads(NamedTuple):
    """Per-sample gradients of a LayerNorm's affine parameters, (n, size) each."""

    #: ``sum_t d_it * xhat_it``; ``None`` when the weight is frozen or absent.
    weight: Optional[torch.Tensor]
    #: ``sum_t d_it``; ``None`` when the bias is frozen or absent.
    bias: Optional[torch.Tensor]


@register_layer_form(nn.LayerNorm)
class LayerNormForm:
    """``nn.LayerNorm``: weight gradient ``sum(d_i * xhat_i)``, bias ``sum(d_i)``."""

    def __init__(self, layer):
        self.weight = _trainable_or_none(layer.weight)
        self.bias = _trainable_or_none(layer.bias)
        self.size = math.prod(layer.normalized_shape)
        self.eps = layer.eps

    def _rows(self, t):
        return t.reshape(t.shape[0], -1, self.size)

    def norms(self, calls, total):
        x, d = _joined(calls, self._rows, self._rows)
        x, d = self._rows(x), self._rows(d)
        single = d.shape[1] == 1
        weight_grads = bias_grads = None
        if self.weight is not None:
            prod = F.layer_norm(x, (self.size,), None, None, self.eps).mul_(d)
            weight_grads = prod[:, 0] if single else prod.sum(1)
            total.add_norm(torch.linalg.vector_norm(weight_grads, dim=1))
        if self.bias is not None:
            bias_grads = d[:, 0] if single else d.sum(1)
            total.add_norm(torch.linalg.vector_norm(bias_grads, dim=1))
        return AffineGrads(weight_grads, bias_grads)

    def update(self, state, c):
        for param, per_sample in zip((self.weight, self.bias), state):
            if per_sample is not None:
                accumulate_mv(param, per_sample.t(), like(c, per_sample))


class EmbeddingState(NamedTuple):
    """What the update of an Embedding layer needs."""

    #: Token ids, shape (n, T).
    ids: torch.Tensor
    #: Output gradients, shape (n, T, dim), zero at ``padding_idx``.
    output_grads: torch.Tensor


@register_layer_form(nn.Embedding)
class EmbeddingForm:
    """``nn.Embedding``: per sample, the output gradients added into the looked-up rows."""

    def __init__(self, layer):
        self.weight = layer.weight
        self.dim = layer.embedding_dim
        self.padding_idx = layer.padding_idx

    @staticmethod
    def applies_to(layer):
        """Whether the closed form is the layer's gradient.

        Sparse gradients and per-batch frequency scaling are not per-sample sums.
        """
        return not (layer.sparse or layer.scale_grad_by_freq)

    def _ids(self, t):
        return t.reshape(t.shape[0], -1)

    def _rows(self, t):
        return t.reshape(t.shape[0], -1, self.dim)

    def norms(self, calls, total):
        ids, d = _joined(calls, self._ids, self._rows)
        ids, d = self._ids(ids), self._rows(d)
        if self.padding_idx is not None:
            d = d.masked_fill((ids == self.padding_idx).unsqueeze(-1), 0)
        if ids.shape[1] == 1:
            total.add_norm(torch.linalg.vector_norm(d[:, 0], dim=1))
        else:  # rows looked up twice in one sample add up before the norm
            same = ids.unsqueeze(2) == ids.unsqueeze(1)
            total.add_square(torch.bmm(d, d.transpose(1, 2)).mul_(same).sum((1, 2)))
        return EmbeddingState(ids, d)

    def update(self, state, c):
        ids, d = state
        wd = (d * like(c, d).view(-1, 1, 1)).reshape(-1, d.shape[-1])
        grad = self.weight.grad
        if grad is None or grad.dtype != wd.dtype:
            grad = torch.zeros_like(self.weight, dtype=wd.dtype)
            grad.index_add_(0, ids.reshape(-1), wd)
            accumulate(self.weight, grad)
        else:
            grad.index_add_(0, ids.reshape(-1), wd)
