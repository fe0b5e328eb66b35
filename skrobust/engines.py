"""Per-sample gradient engines: norms and the weighted update from one forward pass.

An engine is used in three moves around a single forward pass::

    with engine.capture():                 # hooks record what the engine needs
        losses = loss_fn(module(X), y)     # one loss per sample
    norms = engine.norms(losses)           # true per-sample gradient L2 norms
    engine.backward(coefficients)          # p.grad += sum_i c_i * grad_i

Both moves reuse the graph of that forward pass, so stochastic layers such as
Dropout use the same masks for the norms and for the update.

Two engines exist:

* :class:`GhostNormEngine` (fast): for modules whose trainable parameters all
  live in ``Linear``, ``LayerNorm`` and ``Embedding`` layers, with any
  sample-wise operations in between (activations, Dropout, residual sums, ...).
  It needs one backward pass to the layer outputs and computes norms and
  weighted gradients in closed form, without materialising per-sample
  gradients.
* :class:`GenericEngine` (exact, any module): per-sample gradients with a
  batched backward (``is_grads_batched``), in chunks that bound the memory,
  then one weighted backward pass.
"""

import contextlib

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "ENGINES",
    "GenericEngine",
    "GhostNormEngine",
    "check_per_sample_module",
    "make_engine",
    "per_sample_grad_norms",
]

#: Engine names accepted by :func:`make_engine`.
ENGINES = ("auto", "ghost", "generic")

# Memory budget for the per-sample gradients of one chunk in GenericEngine.
_GENERIC_CHUNK_BYTES = 128 * 2**20


def _trainable(module):
    return [p for p in module.parameters() if p.requires_grad]


def _accumulate(param, grad):
    if param.grad is None:
        param.grad = grad.to(param.dtype)
    else:
        param.grad.add_(grad)


def check_per_sample_module(module):
    """Raise if ``module`` mixes samples in a way per-sample gradients cannot express.

    Parameters
    ----------
    module : torch.nn.Module
        The module to check.

    Raises
    ------
    ValueError
        If the module contains a BatchNorm layer: in train mode it normalises
        each sample with statistics of the whole batch, so a sample's loss
        depends on every other sample and per-sample gradients are not defined.
    """
    for name, sub in module.named_modules():
        if isinstance(sub, _BatchNorm):
            raise ValueError(
                f"The module contains a BatchNorm layer ({name or 'the module itself'}: "
                f"{type(sub).__name__}). In train mode BatchNorm mixes the samples of a "
                "batch, so per-sample gradients are not defined. Use "
                "torch.nn.LayerNorm (or GroupNorm) instead, or drop the normalisation "
                "layer; tabular inputs are usually standardised beforehand, e.g. with "
                "sklearn.preprocessing.StandardScaler in a Pipeline."
            )


class GenericEngine:
    """Exact per-sample gradients for any module, through a batched backward.

    Parameters
    ----------
    module : torch.nn.Module
        The module whose trainable parameters are differentiated.

    Notes
    -----
    The norms come from ``torch.autograd.grad(..., is_grads_batched=True)``
    over the graph of the forward pass, in chunks of rows whose per-sample
    gradients fit in 128 MiB. The update is one ``backward`` with the
    coefficients as ``grad_tensors``. Cost: several times a plain step; memory:
    bounded by the chunk size.
    """

    name = "generic"

    def __init__(self, module):
        self.module = module
        self._losses = None

    @contextlib.contextmanager
    def capture(self):
        """Context for the forward pass (nothing to record for this engine)."""
        yield self

    def norms(self, losses):
        """Per-sample gradient L2 norms of ``losses`` (shape ``(n,)``)."""
        self._losses = losses
        params = _trainable(self.module)
        n = losses.shape[0]
        n_params = sum(p.numel() for p in params)
        itemsize = losses.element_size()
        chunk = max(1, min(n, _GENERIC_CHUNK_BYTES // max(1, n_params * itemsize)))
        eye = torch.eye(n, dtype=losses.dtype, device=losses.device)
        squares = []
        for start in range(0, n, chunk):
            grads = torch.autograd.grad(
                losses, params, grad_outputs=eye[start:start + chunk],
                is_grads_batched=True, retain_graph=True, allow_unused=True,
            )
            total = losses.new_zeros(min(chunk, n - start))
            for g in grads:
                if g is not None:
                    total = total + g.reshape(g.shape[0], -1).pow(2).sum(1)
            squares.append(total)
        return torch.cat(squares).sqrt().detach() if squares else losses.new_zeros(0)

    def backward(self, coefficients):
        """Accumulate ``sum_i coefficients[i] * grad_i`` into ``p.grad``."""
        losses, self._losses = self._losses, None
        torch.autograd.backward(losses, grad_tensors=coefficients.detach())


class _Record:
    """What a hooked layer saw during the forward pass."""

    __slots__ = ("calls", "input", "output", "version")

    def __init__(self):
        self.calls = 0
        self.input = self.output = None
        self.version = None


class GhostNormEngine:
    """Per-sample gradient norms in closed form for Linear, LayerNorm and Embedding.

    Parameters
    ----------
    module : torch.nn.Module
        A module whose trainable parameters all belong to ``torch.nn.Linear``,
        ``torch.nn.LayerNorm`` or ``torch.nn.Embedding`` layers (see
        :meth:`supports`).

    Notes
    -----
    For a Linear layer with input ``a_i`` and gradient ``d_i`` of sample ``i``'s
    loss with respect to the layer's output, sample ``i``'s weight gradient is
    the outer product ``d_i a_i^T``; its squared norm is
    ``||a_i||^2 ||d_i||^2`` and the weighted gradient of the batch is
    ``(c * D)^T A``. One backward pass to the layer outputs gives every ``d_i``,
    and no second backward pass is needed for the update. Inputs with more than
    two dimensions (a sequence axis) use the Gram-matrix form of the same
    identity. LayerNorm and Embedding follow the same pattern with their own
    closed forms.

    Only these exact layer types are covered (a subclass may change the maths),
    and a parameter shared by two layers makes the module unsupported. If a
    layer is called more than once in a forward pass or its output is modified
    in place, the closed form does not apply: that step silently uses
    :class:`GenericEngine` instead, which is exact but slower.
    """

    name = "ghost"

    def __init__(self, module):
        self.module = module
        self.layers = [m for m in module.modules()
                       if any(p.requires_grad for p in m.parameters(recurse=False))]
        self._forms = {layer: _closed_form(layer) for layer in self.layers}
        self._records = {}
        self._grads = None
        self._generic = None

    @staticmethod
    def supports(module):
        """Whether every trainable parameter of ``module`` has a closed form here.

        Parameters
        ----------
        module : torch.nn.Module

        Returns
        -------
        supported : bool
        """
        owners = {}
        for layer in module.modules():
            own = [p for p in layer.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            # Exact types only: a subclass may change forward or add parameters.
            if type(layer) not in _CLOSED_FORMS:
                return False
            if isinstance(layer, nn.Embedding) and (layer.sparse or layer.scale_grad_by_freq):
                return False
            for p in own:
                if owners.setdefault(id(p), layer) is not layer:
                    return False  # a tensor shared by two layers: norms would not add
        return True

    @contextlib.contextmanager
    def capture(self):
        """Record each layer's input and output during the forward pass."""
        self._records = {layer: _Record() for layer in self.layers}
        self._grads = None
        handles = [layer.register_forward_hook(self._hook) for layer in self.layers]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, layer, inputs, output):
        record = self._records[layer]
        record.calls += 1
        record.input = inputs[0].detach()
        record.output = output
        record.version = output._version

    def _closed_form_applies(self):
        return all(
            r.calls == 1 and r.output.requires_grad and r.output._version == r.version
            for r in self._records.values()
        ) and any(r.calls for r in self._records.values())

    def norms(self, losses):
        """Per-sample gradient L2 norms of ``losses`` (shape ``(n,)``)."""
        if not self._closed_form_applies():
            self._generic = GenericEngine(self.module)
            return self._generic.norms(losses)
        self._generic = None
        records = list(self._records.items())
        outputs = [r.output for _, r in records]
        # allow_unused: a layer whose output does not reach the loss gets no gradient.
        self._grads = torch.autograd.grad(losses.sum(), outputs, allow_unused=True)
        sq = losses.new_zeros(losses.shape[0])
        for (layer, record), grad in zip(records, self._grads):
            if grad is not None:
                sq = sq + self._forms[layer][0](layer, record.input, grad)
        return sq.sqrt().detach()

    def backward(self, coefficients):
        """Accumulate ``sum_i coefficients[i] * grad_i`` into ``p.grad``."""
        if self._generic is not None:
            self._generic.backward(coefficients)
            self._generic = None
            return
        c = coefficients.detach()
        for (layer, record), grad in zip(self._records.items(), self._grads):
            if grad is None:
                continue
            weighted = grad * c.reshape((-1,) + (1,) * (grad.dim() - 1))
            self._forms[layer][1](layer, record.input, weighted)
        self._records = {}
        self._grads = None


def _as_sequence(t):
    """View (n, ..., d) as (n, T, d)."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _linear_squared_norms(layer, a, d):
    if a.dim() == 2:
        bias_sq = d.pow(2).sum(1)
        weight_sq = a.pow(2).sum(1) * bias_sq
    else:
        a, d = _as_sequence(a), _as_sequence(d)
        steps, n_in, n_out = a.shape[1], a.shape[2], d.shape[2]
        if steps * steps <= n_in * n_out:
            gram = torch.bmm(a, a.transpose(1, 2)) * torch.bmm(d, d.transpose(1, 2))
            weight_sq = gram.sum((1, 2))
        else:
            weight_sq = torch.bmm(d.transpose(1, 2), a).pow(2).sum((1, 2))
        bias_sq = d.sum(1).pow(2).sum(1)
    sq = d.new_zeros(d.shape[0])
    if layer.weight.requires_grad:
        sq = sq + weight_sq
    if layer.bias is not None and layer.bias.requires_grad:
        sq = sq + bias_sq
    return sq


def _linear_weighted_grads(layer, a, wd):
    a2 = a.reshape(-1, a.shape[-1])
    wd2 = wd.reshape(-1, wd.shape[-1])
    if layer.weight.requires_grad:
        _accumulate(layer.weight, wd2.t() @ a2)
    if layer.bias is not None and layer.bias.requires_grad:
        _accumulate(layer.bias, wd2.sum(0))


def _normalized(layer, x):
    with torch.no_grad():
        return F.layer_norm(x, layer.normalized_shape, None, None, layer.eps)


def _layer_norm_parts(layer, x, d):
    """Per-sample gradients of weight and bias, shape (n, *normalized_shape)."""
    k = len(layer.normalized_shape)
    lead = tuple(range(1, d.dim() - k))
    parts = {}
    if layer.weight is not None and layer.weight.requires_grad:
        prod = d * _normalized(layer, x)
        parts["weight"] = prod.sum(lead) if lead else prod
    if layer.bias is not None and layer.bias.requires_grad:
        parts["bias"] = d.sum(lead) if lead else d
    return parts


def _layer_norm_squared_norms(layer, x, d):
    sq = d.new_zeros(d.shape[0])
    for g in _layer_norm_parts(layer, x, d).values():
        sq = sq + g.reshape(g.shape[0], -1).pow(2).sum(1)
    return sq


def _layer_norm_weighted_grads(layer, x, wd):
    for name, g in _layer_norm_parts(layer, x, wd).items():
        _accumulate(getattr(layer, name), g.sum(0))


def _embedding_rows(layer, idx, d):
    """Indices (n, K) and output gradients (n, K, dim) with padding rows zeroed."""
    idx = idx.reshape(idx.shape[0], -1)
    d = d.reshape(idx.shape[0], idx.shape[1], -1)
    if layer.padding_idx is not None:
        d = d * (idx != layer.padding_idx).unsqueeze(-1).to(d.dtype)
    return idx, d


def _embedding_squared_norms(layer, idx, d):
    idx, d = _embedding_rows(layer, idx, d)
    if idx.shape[1] == 1:
        return d.pow(2).sum((1, 2))
    same = (idx.unsqueeze(2) == idx.unsqueeze(1)).to(d.dtype)
    return (same * torch.bmm(d, d.transpose(1, 2))).sum((1, 2))


def _embedding_weighted_grads(layer, idx, wd):
    idx, wd = _embedding_rows(layer, idx, wd)
    grad = torch.zeros_like(layer.weight)
    grad.index_add_(0, idx.reshape(-1), wd.reshape(-1, wd.shape[-1]).to(grad.dtype))
    _accumulate(layer.weight, grad)


# Layer type -> (per-sample squared norms, weighted gradient accumulation).
_CLOSED_FORMS = {
    nn.Linear: (_linear_squared_norms, _linear_weighted_grads),
    nn.LayerNorm: (_layer_norm_squared_norms, _layer_norm_weighted_grads),
    nn.Embedding: (_embedding_squared_norms, _embedding_weighted_grads),
}


def _closed_form(layer):
    for cls in type(layer).__mro__:
        if cls in _CLOSED_FORMS:
            return _CLOSED_FORMS[cls]
    raise TypeError(f"No closed form for {type(layer).__name__}.")


def make_engine(module, engine="auto"):
    """The per-sample gradient engine for ``module``.

    Parameters
    ----------
    module : torch.nn.Module
        The module to train.
    engine : {"auto", "ghost", "generic"}, default="auto"
        ``"auto"`` picks :class:`GhostNormEngine` when it supports the module and
        :class:`GenericEngine` otherwise.

    Returns
    -------
    engine : GhostNormEngine or GenericEngine

    Raises
    ------
    ValueError
        If ``engine`` is unknown, if ``"ghost"`` is asked for a module it does
        not support, or if the module contains BatchNorm.
    """
    if engine not in ENGINES:
        raise ValueError(f"grad_engine must be one of {ENGINES}, got {engine!r}.")
    check_per_sample_module(module)
    ghost_ok = GhostNormEngine.supports(module)
    if engine == "ghost" and not ghost_ok:
        raise ValueError(
            "grad_engine='ghost' supports modules whose trainable parameters all live in "
            "torch.nn.Linear, LayerNorm or Embedding (dense, no scale_grad_by_freq) "
            "layers; this module has others. Use grad_engine='auto' or 'generic'."
        )
    if engine == "generic" or not ghost_ok:
        return GenericEngine(module)
    return GhostNormEngine(module)


def per_sample_grad_norms(module, loss_fn, X, y, *, engine="auto"):
    """True per-sample gradient L2 norms over a module's trainable parameters.

    Parameters
    ----------
    module : torch.nn.Module
        The model. Its train/eval mode is used as it is.
    loss_fn : callable
        ``loss_fn(module(X), y)`` must return one loss per sample, shape
        ``(len(X),)`` (e.g. ``torch.nn.CrossEntropyLoss(reduction="none")``).
    X : torch.Tensor
        Inputs, first dimension the samples.
    y : torch.Tensor
        Targets.
    engine : {"auto", "ghost", "generic"}, default="auto"
        Which engine computes the norms, see :func:`make_engine`.

    Returns
    -------
    norms : torch.Tensor of shape (len(X),)
        ``norms[i] = sqrt(sum over every trainable tensor p of ||d loss_i / d p||^2)``.

    Examples
    --------
    >>> import torch
    >>> from skrobust import per_sample_grad_norms
    >>> module = torch.nn.Linear(3, 2)
    >>> X, y = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])
    >>> loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
    >>> per_sample_grad_norms(module, loss_fn, X, y).shape
    torch.Size([5])
    """
    worker = make_engine(module, engine)
    with worker.capture():
        losses = loss_fn(module(X), y)
    n = len(X)
    if losses.dim() != 1 or losses.shape[0] != n:
        raise ValueError(
            f"loss_fn must return one loss per sample, shape ({n},); got shape "
            f"{tuple(losses.shape)}. Build the loss with reduction='none'."
        )
    return worker.norms(losses)

