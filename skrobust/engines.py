"""Per-sample gradient engines: norms and the weighted update from one forward pass.

An engine is used in three moves around a single forward pass::

    with engine.capture():                 # hooks record what the engine needs
        losses = loss_fn(module(X), y)     # one loss per sample
    norms = engine.norms(losses)           # true per-sample gradient L2 norms
    engine.backward(coefficients)          # p.grad += sum_i c_i * grad_i

Both moves reuse the graph of that forward pass, so stochastic layers such as
Dropout use the same masks for the norms and for the update.

Three engines exist; :func:`make_engine` with ``"auto"`` takes the first of
them that supports the module:

* :class:`GhostNormEngine` (fast): for modules whose trainable parameters all
  live in ``Linear``, ``LayerNorm`` and ``Embedding`` layers, with any
  sample-wise operations in between (activations, in-place ones included,
  Dropout, residual sums, a layer applied several times, ...). It needs one
  backward pass to the layer outputs and computes norms and weighted gradients
  in closed form, without materialising per-sample gradients.
* :class:`HybridEngine`: the same closed forms, plus any other *leaf* layer that
  owns its parameters (``Conv1d``, a custom layer with its own
  ``nn.Parameter``, ...). From the same backward pass to the layer outputs, the
  per-sample gradients of such a layer come from ``torch.func`` (``vmap`` over
  ``vjp`` of that layer alone, one sample at a time).
* :class:`GenericEngine` (exact, any module): per-sample gradients with a
  batched backward (``is_grads_batched``) over the whole graph, in chunks that
  bound the memory, then one weighted backward pass. Its cost grows with the
  square of the batch size.

Every step, the two layer-wise engines check in the autograd graph that each
covered layer's parameters are used only inside that layer's own forward, and
that no layer input was modified in place since the layer read it. A step that
fails a check silently uses :class:`GenericEngine` instead, which is exact.
"""

import contextlib
import math
import warnings

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "ENGINES",
    "GenericEngine",
    "GhostNormEngine",
    "HybridEngine",
    "check_per_sample_module",
    "make_engine",
    "per_sample_grad_norms",
]

#: Engine names accepted by :func:`make_engine`.
ENGINES = ("auto", "ghost", "generic")

# Memory budget for one chunk of GenericEngine: per-sample gradients of the
# parameters and of the activations.
_GENERIC_CHUNK_BYTES = 128 * 2**20

# Memory budget for the per-sample gradients of one HybridEngine layer. Within
# it they are kept from norms() to backward(); above it they are computed in
# chunks for the norms and the update is a batched vector-Jacobian product.
_HYBRID_KEEP_BYTES = 128 * 2**20

# Next sequence number autograd gives to a node created in this thread: the
# nodes a layer creates while it runs are numbered in [number before, number
# after). Private torch API; without it the parameter-ownership check is off.
_sequence_nr = getattr(getattr(torch._C, "_autograd", None), "_get_sequence_nr", None)
_ACCUMULATE_GRAD = getattr(getattr(torch._C, "_functions", None), "AccumulateGrad", None)
_OWNERSHIP_CHECK = _sequence_nr is not None and _ACCUMULATE_GRAD is not None
if _sequence_nr is None:  # pragma: no cover - private torch API missing

    def _sequence_nr():
        return 0


def _gradient_edges_work():
    """Whether ``torch.autograd.grad`` accepts ``GradientEdge`` inputs (torch >= 2.4)."""
    try:
        from torch.autograd.graph import get_gradient_edge

        with torch.inference_mode(False), torch.enable_grad():
            x = torch.zeros(1, requires_grad=True)
            y = x * 2
            edge = get_gradient_edge(y)
            y.add_(1)  # the edge still names the output of `x * 2`
            (g,) = torch.autograd.grad((y * 3).sum(), [edge])
        return bool(g.item() == 3)
    except Exception:  # noqa: BLE001 - any failure: use the output tensors instead
        return False


if _gradient_edges_work():
    from torch.autograd.graph import GradientEdge as _GradientEdge
else:  # pragma: no cover - old torch
    _GradientEdge = None


def _trainable(module):
    return [p for p in module.parameters() if p.requires_grad]


def _accumulate(param, grad):
    if param.grad is None:
        param.grad = grad if grad.dtype == param.dtype else grad.to(param.dtype)
    else:
        param.grad.add_(grad)


def _accumulate_mm(param, m1, m2):
    """``param.grad += m1 @ m2``, in place when possible."""
    grad = param.grad
    if grad is not None and grad.dtype == m1.dtype == m2.dtype:
        grad.addmm_(m1, m2)
    else:
        _accumulate(param, torch.mm(m1, m2))


def _accumulate_mv(param, mat, vec):
    """``param.grad += (mat @ vec).view(param.shape)``, in place when possible."""
    grad = param.grad
    if grad is not None and grad.dim() == 1 and grad.dtype == mat.dtype == vec.dtype:
        grad.addmv_(mat, vec)
    else:
        result = torch.mv(mat, vec)
        _accumulate(param, result if param.dim() == 1 else result.view(param.shape))


class _Total:
    """Per-sample gradient norms summed over layers, in few kernels.

    Parts come as row norms (reduced together at the end: one stack, one norm)
    or as squared row norms (added up in place).
    """

    __slots__ = ("norms", "squares")

    def __init__(self):
        self.norms = []
        self.squares = None

    def add_norm(self, t):
        self.norms.append(t)

    def add_square(self, t):
        self.squares = t if self.squares is None else self.squares.add_(t)

    def result(self):
        norms = self.norms
        if self.squares is not None:
            norms.append(self.squares.sqrt_())
        if len(norms) < 2:
            return norms[0] if norms else None
        return torch.linalg.vector_norm(torch.stack(norms, 1), dim=1)


def _row_sq(t):
    """Squared L2 norm of each row of a 2-D tensor."""
    return torch.linalg.vecdot(t, t)


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
    over the graph of the forward pass: row ``i`` of the batched output
    gradient is the ``i``-th unit vector, and each row costs about one backward
    pass of the whole batch. The cost of the norms therefore grows with the
    **square** of the batch size: about ``B`` plain backward passes, e.g.
    ~100x a plain training step at batch 128 and ~400x at batch 512 for a small
    MLP on one CPU thread. It is exact for any module, Dropout masks included,
    and is the fallback of the layer-wise engines (:class:`GhostNormEngine`,
    :class:`HybridEngine`) for what they cannot split per layer: parameters
    shared by several modules or used outside their module's forward, modules
    with both parameters and submodules.

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
        as :meth:`GhostNormEngine.norms`.

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
        params = _trainable(self.module)
        n = losses.shape[0]
        per_row = sum(p.numel() for p in params) + self._activations
        itemsize = losses.element_size()
        chunk = max(1, min(n, _GENERIC_CHUNK_BYTES // max(1, per_row * itemsize)))
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


class _Call:
    """One call of a recorded layer during the forward pass."""

    __slots__ = ("args", "check", "edge", "inputs", "kwargs", "out_version", "output",
                 "signature", "versions", "window")

    def __init__(self, args, inputs, output, window, kwargs=None, signature=None, check=None):
        self.args = args  # detached
        self.kwargs = kwargs
        self.inputs = inputs  # the tensors read, and their versions then
        self.versions = tuple(t._version for t in inputs)
        self.output = output  # keeps the node of `edge` alive
        self.out_version = output._version
        self.edge = (output if _GradientEdge is None
                     else _GradientEdge(output.grad_fn, output.output_nr))
        self.window = window  # sequence numbers of the autograd nodes it created
        self.signature = signature
        self.check = check


class _NotPerSample(Exception):
    """A layer that torch.func cannot differentiate one sample at a time."""


def _detached(t):
    if isinstance(t, torch.Tensor) and t.requires_grad:
        return t.detach()
    return t


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

    The gradients are taken at the layer outputs as the layers produced them
    (``torch.autograd.graph.GradientEdge``), so an in-place operation on an
    output afterwards (``nn.ReLU(inplace=True)``) does not matter. A layer
    called several times in one forward pass (weight sharing across calls) is
    exact too: its per-sample gradient is the sum over its calls, the closed
    form of the calls joined along a sequence axis.

    Only these exact layer types are covered (a subclass may change the maths),
    and a parameter registered in two modules makes the module unsupported.
    During :meth:`capture` the covered layers' ``forward`` is wrapped (an
    instance attribute, removed afterwards) to record each call. Each step
    checks, from the autograd graph, that every trainable parameter is used
    only inside its own layer's forward (not, e.g., ``h @ emb.weight.T`` in a
    parent module), that no layer input was modified in place after the layer
    read it, and that the layers' inputs and outputs have the batch as first
    dimension. A step failing a check silently uses :class:`GenericEngine`
    instead, which is exact but slower. Which parameters are trainable is read
    again at each :meth:`capture`.

    The closed forms assume that each layer treats the rows of its input (the
    first dimension) as the samples, as these layers do when called on
    batch-first tensors.
    """

    name = "ghost"

    def __init__(self, module):
        self.module = module
        self._params = list(module.parameters())
        self._records = {}
        self._invalid = None
        self._states = None
        self._generic = None
        self._given_up = None
        self._ones = None
        self._setup(strict=True)

    def _setup(self, strict):
        """(Re)build the covered layers from the parameters that are trainable now."""
        self._flags = [p.requires_grad for p in self._params]
        self.layers = [m for m in self.module.modules()
                       if any(p.requires_grad for p in m.parameters(recurse=False))]
        self._owned = {layer: [p for p in layer.parameters(recurse=False) if p.requires_grad]
                       for layer in self.layers}
        self._unsupported = None
        self._has_func = False
        try:
            self._forms = {layer: self._form(layer) for layer in self.layers}
        except TypeError as exc:
            if strict:
                raise
            self._forms = {}
            self._unsupported = str(exc)
            return
        self._has_func = any(not form.closed for form in self._forms.values())
        if not strict and not type(self).supports(self.module):
            self._unsupported = "the trainable parameters changed"

    def _form(self, layer):
        return _closed_form(layer)(layer)

    @staticmethod
    def supports(module):
        """Whether every trainable parameter of ``module`` has a closed form here.

        Parameters
        ----------
        module : torch.nn.Module
            The module to check.

        Returns
        -------
        supported : bool
            ``True`` when the engine can compute the module's norms in closed form.
        """
        owners = {}
        for layer in module.modules():
            own = [p for p in layer.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            # Exact types only: a subclass may change forward or add parameters.
            if type(layer) not in _CLOSED_FORMS or not _closed_form_exact(layer):
                return False
            for p in own:
                if owners.setdefault(id(p), layer) is not layer:
                    return False  # a tensor shared by two layers: norms would not add
        return True

    @contextlib.contextmanager
    def capture(self):
        """Record each covered layer's calls during the forward pass.

        Yields
        ------
        engine : GhostNormEngine
            This engine.
        """
        if [p.requires_grad for p in self._params] != self._flags:
            self._setup(strict=False)
        # Nothing to record when this engine already knows it will use GenericEngine.
        usable = self._unsupported is None and self._given_up is None
        self._records = {layer: [] for layer in self.layers} if usable else {}
        self._invalid = None
        self._states = None
        self._generic = None
        patched = []
        try:
            for layer in self._records:
                # An instance attribute shadows the class's forward: cheaper than a
                # pair of hooks, and it sees the layer's own output, before any
                # forward hook could replace it.
                own = layer.__dict__.get("forward")
                layer.__dict__["forward"] = self._recorder(layer, layer.forward)
                patched.append((layer, own))
            yield self
        finally:
            for layer, own in patched:
                if own is None:
                    del layer.__dict__["forward"]
                else:
                    layer.__dict__["forward"] = own

    def _recorder(self, layer, forward):
        calls = self._records[layer]
        if isinstance(self._forms[layer], _FuncForm):
            def forward_and_record(*args, **kwargs):
                start = _sequence_nr()
                output = forward(*args, **kwargs)
                self._record_func(layer, calls, args, kwargs, output, (start, _sequence_nr()))
                return output
        else:
            def forward_and_record(*args, **kwargs):
                start = _sequence_nr()
                output = forward(*args, **kwargs)
                if (type(output) is torch.Tensor and output.grad_fn is not None and args
                        and not kwargs and isinstance(args[0], torch.Tensor)):
                    x = args[0]
                    calls.append(_Call((x.detach() if x.requires_grad else x,), (x,), output,
                                       (start, _sequence_nr())))
                elif self._usable(output):
                    self._invalid = f"{type(layer).__name__} called with unusual arguments"
                return output
        return forward_and_record

    def _usable(self, output):
        """Whether a call's output must be recorded; flags the step if it cannot be."""
        if not isinstance(output, torch.Tensor):
            self._invalid = "a layer output is not a tensor"
            return False
        if not output.requires_grad:
            return False  # no graph (e.g. torch.no_grad): the call adds no gradient
        if output.grad_fn is None:
            self._invalid = "a layer output is a leaf tensor"
            return False
        return True

    def _record_func(self, layer, calls, args, kwargs, output, window):
        if not self._usable(output):
            return
        form = self._forms[layer]
        signature = form.signature(layer, args, kwargs)
        # New input shapes: check the per-row outputs against this output.
        check = None if signature in form.validated else output.detach().clone()
        inputs = tuple(t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor))
        calls.append(_Call(
            tuple(_detached(a) for a in args), inputs, output, window,
            kwargs={k: _detached(v) for k, v in kwargs.items()}, signature=signature,
            check=check,
        ))

    def _plan(self, losses):
        """The calls to use this step, or ``None`` when GenericEngine must do it."""
        if (self._unsupported is not None or self._given_up is not None
                or self._invalid is not None or losses.dim() != 1
                or not losses.requires_grad):
            return None
        n = losses.shape[0]
        units, edges = [], []
        for layer, calls in self._records.items():
            if not calls:
                continue
            form = self._forms[layer]
            for call in calls:
                for t, version in zip(call.inputs, call.versions):
                    if t._version != version:
                        return None  # modified in place after the layer read it
                if call.output.dim() == 0 or call.output.shape[0] != n:
                    return None
                if form.closed:
                    if call.args[0].dim() == 0 or call.args[0].shape[0] != n:
                        return None
                    if _GradientEdge is None and call.output._version != call.out_version:
                        return None  # pragma: no cover - old torch: no gradient edges
                edges.append(call.edge)
            units.append((form, calls))
        if not edges or not self._used_only_by_owners(losses):
            return None
        return units, edges

    def _used_only_by_owners(self, losses):
        """Whether each covered parameter is used only inside its layer's forward.

        Walks the graph of ``losses``: every node that reads a covered
        parameter must have been created while that parameter's layer ran.
        """
        if not _OWNERSHIP_CHECK:  # pragma: no cover - private torch API missing
            return True
        windows = {}
        for layer, params in self._owned.items():
            spans = [call.window for call in self._records[layer]]
            for p in params:
                if windows.setdefault(id(p), spans) is not spans:
                    return False  # registered in two layers: the forms would not add up
        root = losses.grad_fn
        seen = {root}
        stack = [root]
        while stack:
            node = stack.pop()
            for child, _ in node.next_functions:
                if child is None:
                    continue
                if type(child) is _ACCUMULATE_GRAD:
                    spans = windows.get(id(child.variable))
                    if spans is not None:
                        number = node._sequence_nr()
                        if not any(lo <= number < hi for lo, hi in spans):
                            return False
                elif child not in seen:
                    seen.add(child)
                    stack.append(child)
        return True

    def _use_generic(self, losses):
        generic = self._generic = GenericEngine(self.module)
        generic._activations = sum(
            call.output.numel() for calls in self._records.values() for call in calls)
        self._records = {}
        return generic.norms(losses)

    def _grad_of_sum(self, losses):
        """Ones as the output gradient of ``losses`` (cached: no kernel per step)."""
        ones = self._ones
        if ones is None or ones.shape != losses.shape or ones.dtype != losses.dtype or (
                ones.device != losses.device):
            ones = self._ones = torch.ones_like(losses, memory_format=torch.contiguous_format)
        return ones

    def norms(self, losses, retain_graph=False):
        """Per-sample gradient L2 norms of ``losses`` (shape ``(n,)``).

        With ``retain_graph=True`` the graph of the forward pass survives, so the
        caller may run its own backward pass through ``losses`` afterwards (e.g.
        a weighted objective under ``DistributedDataParallel``) instead of
        :meth:`backward`; then call :meth:`release`.

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
        self._states = None
        self._generic = None
        plan = self._plan(losses)
        if plan is None:
            return self._use_generic(losses)
        units, edges = plan
        # torch.func layers may fail (or fail their check): keep the graph for
        # GenericEngine until they are done.
        func = self._has_func
        # allow_unused: a layer whose output does not reach the loss gets no gradient.
        grads = torch.autograd.grad(losses, edges, self._grad_of_sum(losses),
                                    allow_unused=True, retain_graph=retain_graph or func)
        total, states, k = _Total(), [], 0
        for form, calls in units:
            ds = grads[k:k + len(calls)]
            k += len(calls)
            if form.closed:
                state = form.norms(calls, ds, total)
            else:
                try:
                    state = form.norms(calls, ds, total)
                except Exception as exc:  # noqa: BLE001 - fall back to the exact engine
                    self._give_up(form.layer, exc)
                    return self._use_generic(losses)
            if state is not None:
                states.append((form, state))
        del grads
        self._records = {}
        self._states = states
        norms = total.result()
        if norms is None:
            return losses.new_zeros(losses.shape[0])
        return norms if norms.dtype == losses.dtype else norms.to(losses.dtype)

    def _give_up(self, layer, exc):
        """Use GenericEngine from now on: ``layer`` cannot be split off per sample."""
        self._given_up = f"{type(layer).__name__}: {exc}"
        warnings.warn(
            f"{type(self).__name__}: per-sample gradients of the layer {type(layer).__name__} "
            f"cannot be computed one sample at a time with torch.func ({exc}). The "
            "exact but slower GenericEngine is used from now on.",
            RuntimeWarning, stacklevel=3,
        )

    def backward(self, coefficients):
        """Accumulate ``sum_i coefficients[i] * grad_i`` into ``p.grad``.

        Parameters
        ----------
        coefficients : torch.Tensor of shape (n,)
            One coefficient per sample of the last :meth:`norms` call, e.g.
            ``w_i / B``; treated as constants.
        """
        if self._generic is not None:
            self._generic.backward(coefficients)
            self._generic = None
            return
        states, self._states = self._states, None
        if states is None:
            raise RuntimeError("backward() needs a norms() call on the same forward pass.")
        c = _detached(coefficients)
        while states:  # drop each layer's tensors as soon as they are used
            form, state = states.pop()
            form.update(state, c)

    def release(self):
        """Drop what :meth:`capture` and :meth:`norms` kept (layer records, graph)."""
        self._records = {}
        self._states = None
        self._generic = None


class HybridEngine(GhostNormEngine):
    """Closed forms where they exist, ``torch.func`` for the other leaf layers.

    Parameters
    ----------
    module : torch.nn.Module
        A module whose trainable parameters each belong to one layer that is
        either covered by :class:`GhostNormEngine` or a leaf module (no
        submodules) holding them itself, e.g. ``Conv1d`` or a custom layer with
        its own ``nn.Parameter`` (see :meth:`supports`).

    Notes
    -----
    One backward pass to the layer outputs gives, for every layer, the gradient
    ``d_i`` of each sample's loss with respect to the layer's output, as in
    :class:`GhostNormEngine`. For a leaf layer without a closed form, the
    per-sample gradients of its own parameters are the vector-Jacobian
    products of the layer alone, one sample at a time::

        vmap(vjp(lambda p: functional_call(layer, p, x_i[None])))(...)(d_i)

    and its share of the update is ``sum_i c_i g_i``. This is exact when the
    layer is deterministic and treats the rows of its input as independent
    samples: its output for row ``i`` depends only on row ``i`` of its inputs
    (positional tensor arguments whose first dimension is the batch are split
    into rows; other arguments are passed whole to every row). Random
    operations inside the layer make ``vmap`` fail, and the first step of each
    new input shape compares the per-row outputs with the layer's real output.
    A layer failing either test makes the engine warn and use
    :class:`GenericEngine` from then on. The per-sample gradients of a layer
    are kept between :meth:`norms` and :meth:`backward` when they fit in 128
    MiB; otherwise they are computed in chunks for the norms and the update is
    one vector-Jacobian product of the layer on the whole batch, weighted.

    The checks of :class:`GhostNormEngine` apply: a parameter used outside its
    layer's forward makes that step use :class:`GenericEngine`.
    """

    name = "hybrid"

    def _form(self, layer):
        if type(layer) in _CLOSED_FORMS and _closed_form_exact(layer):
            return _CLOSED_FORMS[type(layer)](layer)
        if _func_leaf(layer):
            return _FuncForm(layer)
        raise TypeError(f"No per-layer form for {type(layer).__name__}.")

    @staticmethod
    def supports(module):
        """Whether every trainable parameter of ``module`` lives in a layer this engine covers.

        Covered: the layers of :meth:`GhostNormEngine.supports`, and any other
        leaf module (no submodules) holding its parameters itself, except
        BatchNorm and layers with sparse or frequency-scaled gradients. No
        parameter may be registered in two modules.

        Parameters
        ----------
        module : torch.nn.Module
            The module to check.

        Returns
        -------
        supported : bool
        """
        owners = {}
        for layer in module.modules():
            own = [p for p in layer.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            if type(layer) in _CLOSED_FORMS:
                if not _closed_form_exact(layer):
                    return False
            elif not _func_leaf(layer):
                return False
            for p in own:
                if owners.setdefault(id(p), layer) is not layer:
                    return False
        return True


def _closed_form_exact(layer):
    """Whether the closed form of an exactly-typed layer is its gradient."""
    # Sparse gradients and per-batch frequency scaling are not per-sample sums.
    return not (isinstance(layer, nn.Embedding) and (layer.sparse or layer.scale_grad_by_freq))


def _func_leaf(layer):
    """Whether torch.func may differentiate ``layer`` alone, one sample at a time."""
    return (next(layer.children(), None) is None and not isinstance(layer, _BatchNorm)
            and not getattr(layer, "sparse", False)
            and not getattr(layer, "scale_grad_by_freq", False))


def _merge(calls, ds, rows_x, rows_d):
    """First input and output gradient of a layer, its calls joined along axis 1."""
    if len(calls) == 1:
        return calls[0].args[0], ds[0]
    pairs = [(call.args[0], d) for call, d in zip(calls, ds) if d is not None]
    if not pairs:
        return None, None
    if len(pairs) == 1:
        return pairs[0]
    return (torch.cat([rows_x(x) for x, _ in pairs], 1),
            torch.cat([rows_d(d) for _, d in pairs], 1))


def _as_sequence(t):
    """View (n, ..., d) as (n, T, d)."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _trainable_or_none(param):
    return param if param is not None and param.requires_grad else None


class _LinearForm:
    """``nn.Linear``: weight gradient ``d_i a_i^T`` per sample, bias ``d_i``."""

    closed = True

    def __init__(self, layer):
        self.layer = layer
        self.weight = _trainable_or_none(layer.weight)
        self.bias = _trainable_or_none(layer.bias)
        # The update scales the narrower of input and output gradient by c.
        self.scale_input = layer.in_features < layer.out_features

    def norms(self, calls, ds, total):
        a, d = _merge(calls, ds, _as_sequence, _as_sequence)
        if d is None:
            return None
        if d.dim() == 2:
            # Row norms in one kernel each: ||d_i a_i^T|| = ||a_i|| ||d_i||.
            d_norm = torch.linalg.vector_norm(d, dim=1)
            if self.weight is not None:
                total.add_norm(torch.linalg.vector_norm(a, dim=1).mul_(d_norm))
            if self.bias is not None:
                total.add_norm(d_norm)
            return (a, d, None)
        a, d = _as_sequence(a), _as_sequence(d)
        if self.weight is not None:
            steps, n_in, n_out = a.shape[1], a.shape[2], d.shape[2]
            if steps * steps <= n_in * n_out:
                gram = torch.bmm(a, a.transpose(1, 2)).mul_(torch.bmm(d, d.transpose(1, 2)))
                total.add_square(gram.sum((1, 2)))
            else:
                total.add_square(torch.bmm(d.transpose(1, 2), a).square_().sum((1, 2)))
        bias_rows = None
        if self.bias is not None:
            bias_rows = d.sum(1)  # per-sample bias gradients
            total.add_norm(torch.linalg.vector_norm(bias_rows, dim=1))
        return (a if self.weight is not None else None, d, bias_rows)

    def update(self, state, c):
        a, d, bias_rows = state
        if c.dtype != d.dtype:
            c = c.to(d.dtype)
        if d.dim() == 2:
            dt = d.t()
            if self.weight is not None:  # (c * D)^T A
                if self.scale_input:
                    _accumulate_mm(self.weight, dt, a * c.unsqueeze(1))
                else:
                    _accumulate_mm(self.weight, dt * c, a)
            if self.bias is not None:
                _accumulate_mv(self.bias, dt, c)
            return
        if self.weight is not None:
            wd = (d * c.view(-1, 1, 1)).reshape(-1, d.shape[-1])
            _accumulate_mm(self.weight, wd.t(), a.reshape(-1, a.shape[-1]))
        if self.bias is not None:
            _accumulate_mv(self.bias, bias_rows.t(), c)


class _LayerNormForm:
    """``nn.LayerNorm``: weight gradient ``sum(d_i * xhat_i)``, bias ``sum(d_i)``."""

    closed = True

    def __init__(self, layer):
        self.layer = layer
        self.weight = _trainable_or_none(layer.weight)
        self.bias = _trainable_or_none(layer.bias)
        self.size = math.prod(layer.normalized_shape)
        self.eps = layer.eps

    def _rows(self, t):
        return t.reshape(t.shape[0], -1, self.size)

    def norms(self, calls, ds, total):
        x, d = _merge(calls, ds, self._rows, self._rows)
        if d is None:
            return None
        x, d = self._rows(x), self._rows(d)
        single = d.shape[1] == 1
        weight_rows = bias_rows = None
        if self.weight is not None:
            prod = F.layer_norm(x, (self.size,), None, None, self.eps).mul_(d)
            weight_rows = prod[:, 0] if single else prod.sum(1)
            total.add_norm(torch.linalg.vector_norm(weight_rows, dim=1))
        if self.bias is not None:
            bias_rows = d[:, 0] if single else d.sum(1)
            total.add_norm(torch.linalg.vector_norm(bias_rows, dim=1))
        return (weight_rows, bias_rows)

    def update(self, state, c):
        for param, per_sample in zip((self.weight, self.bias), state):
            if per_sample is not None:
                _accumulate_mv(param, per_sample.t(),
                               c if c.dtype == per_sample.dtype else c.to(per_sample.dtype))


class _EmbeddingForm:
    """``nn.Embedding``: per sample, the output gradients added into the looked-up rows."""

    closed = True

    def __init__(self, layer):
        self.layer = layer
        self.weight = layer.weight
        self.dim = layer.embedding_dim
        self.padding_idx = layer.padding_idx

    def _ids(self, t):
        return t.reshape(t.shape[0], -1)

    def _rows(self, t):
        return t.reshape(t.shape[0], -1, self.dim)

    def norms(self, calls, ds, total):
        idx, d = _merge(calls, ds, self._ids, self._rows)
        if d is None:
            return None
        idx, d = self._ids(idx), self._rows(d)
        if self.padding_idx is not None:
            d = d.masked_fill((idx == self.padding_idx).unsqueeze(-1), 0)
        if idx.shape[1] == 1:
            total.add_norm(torch.linalg.vector_norm(d[:, 0], dim=1))
        else:  # rows looked up twice in one sample add up before the norm
            same = idx.unsqueeze(2) == idx.unsqueeze(1)
            total.add_square(torch.bmm(d, d.transpose(1, 2)).mul_(same).sum((1, 2)))
        return (idx, d)

    def update(self, state, c):
        idx, d = state
        c = c if c.dtype == d.dtype else c.to(d.dtype)
        wd = (d * c.view(-1, 1, 1)).reshape(-1, d.shape[-1])
        grad = self.weight.grad
        if grad is None or grad.dtype != wd.dtype:
            grad = torch.zeros_like(self.weight, dtype=wd.dtype)
            grad.index_add_(0, idx.reshape(-1), wd)
            _accumulate(self.weight, grad)
        else:
            grad.index_add_(0, idx.reshape(-1), wd)


class _FuncForm:
    """Any leaf layer: per-sample gradients with ``torch.func`` (vmap over vjp)."""

    closed = False

    def __init__(self, layer):
        self.layer = layer
        self.names = [name for name, p in layer.named_parameters(recurse=False)
                      if p.requires_grad]
        self.validated = set()  # call signatures whose per-row outputs matched

    @staticmethod
    def signature(layer, args, kwargs):
        return (layer.training, *(
            (tuple(a.shape), a.dtype, a.device) if isinstance(a, torch.Tensor) else type(a)
            for a in (*args, *kwargs.values())
        ))

    def _params(self):
        return {name: self.layer._parameters[name].detach() for name in self.names}

    def norms(self, calls, ds, total):
        n = calls[0].output.shape[0]
        params = self._params()
        size = sum(p.numel() for p in params.values())
        itemsize = next(iter(params.values())).element_size()
        keep = n * size * itemsize <= _HYBRID_KEEP_BYTES
        step = n if keep else max(1, _HYBRID_KEEP_BYTES // max(1, size * itemsize))
        parts, kept = [], None
        for start in range(0, n, step):
            rows = slice(start, min(n, start + step))
            grads_sum = None
            for call, d in zip(calls, ds):
                if d is None:
                    continue
                grads = _per_sample_grads(self.layer, params, call, d, rows, n)
                grads_sum = grads if grads_sum is None else {
                    k: grads_sum[k].add_(g) for k, g in grads.items()}
            if grads_sum is None:
                return None  # no gradient reached the layer
            flat = [g.reshape(g.shape[0], -1) for g in grads_sum.values()]
            part = _row_sq(flat[0])
            for g in flat[1:]:
                part.add_(_row_sq(g))
            parts.append(part)
            if keep:
                kept = grads_sum
        for call, d in zip(calls, ds):
            if call.check is not None and d is not None:
                self.validated.add(call.signature)
        total.add_square(parts[0] if len(parts) == 1 else torch.cat(parts))
        return (kept, None, None) if kept is not None else (None, calls, ds)

    def update(self, state, c):
        kept, calls, ds = state
        params = self.layer._parameters
        if kept is not None:
            for name, g in kept.items():
                _accumulate_mv(params[name], g.reshape(g.shape[0], -1).t(),
                               c if c.dtype == g.dtype else c.to(g.dtype))
            return
        from torch.func import functional_call, vjp

        for call, d in zip(calls, ds):
            if d is None:
                continue
            weighted = d * c.to(d.dtype).view(-1, *([1] * (d.dim() - 1)))
            _, pullback = vjp(lambda p, call=call: functional_call(
                self.layer, p, call.args, call.kwargs), self._params())
            for name, g in pullback(weighted)[0].items():
                _accumulate(params[name], g)


def _per_sample_grads(layer, params, call, d, rows, n):
    """Per-sample gradients of ``layer``'s ``params`` for the samples ``rows`` of one call."""
    from torch.func import functional_call, vjp, vmap

    args, kwargs = call.args, call.kwargs
    split = [isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == n for a in args]
    if not any(split):
        raise _NotPerSample("no positional tensor argument has the batch as first dimension")
    per_row = tuple(a[rows] for a, s in zip(args, split) if s)

    def one(p, row, d_row):
        parts = iter(row)
        full = tuple(next(parts).unsqueeze(0) if s else a for a, s in zip(args, split))
        out, pullback = vjp(lambda q: functional_call(layer, q, full, kwargs), p)
        return pullback(d_row.unsqueeze(0))[0], out.squeeze(0)

    grads, out = vmap(one, in_dims=(None, 0, 0))(params, per_row, d[rows])
    if call.check is not None:
        expected = call.check[rows]
        tol = torch.finfo(expected.dtype).eps ** 0.5 * max(expected.abs().max().item(), 1e-30)
        if out.shape != expected.shape or not (out - expected).abs().max().item() <= tol:
            raise _NotPerSample(
                "its output for one row alone differs from its output for that row in "
                "the batch: the layer mixes samples or is not deterministic")
    return grads


# Layer type -> its closed form: a class built from the layer, with
# norms(calls, grads, total) -> state (adding the layer's part to `total`) and
# update(state, coefficients).
_CLOSED_FORMS = {
    nn.Linear: _LinearForm,
    nn.LayerNorm: _LayerNormForm,
    nn.Embedding: _EmbeddingForm,
}


def _closed_form(layer):
    form = _CLOSED_FORMS.get(type(layer))
    if form is None:
        raise TypeError(f"No closed form for {type(layer).__name__}.")
    return form


def make_engine(module, engine="auto"):
    """The per-sample gradient engine for ``module``.

    Parameters
    ----------
    module : torch.nn.Module
        The module to train.
    engine : {"auto", "ghost", "generic"}, default="auto"
        ``"auto"`` picks :class:`GhostNormEngine` when it supports the module,
        else :class:`HybridEngine` when it does, else :class:`GenericEngine`.

    Returns
    -------
    engine : GhostNormEngine, HybridEngine or GenericEngine

    Raises
    ------
    ValueError
        If ``engine`` is unknown, if ``"ghost"`` is asked for a module it does
        not support, or if the module contains BatchNorm.
    """
    if engine not in ENGINES:
        raise ValueError(f"grad_engine must be one of {ENGINES}, got {engine!r}.")
    check_per_sample_module(module)
    if engine == "generic":
        return GenericEngine(module)
    if GhostNormEngine.supports(module):
        return GhostNormEngine(module)
    if engine == "ghost":
        raise ValueError(
            "grad_engine='ghost' supports modules whose trainable parameters all live in "
            "torch.nn.Linear, LayerNorm or Embedding (dense, no scale_grad_by_freq) "
            "layers; this module has others. Use grad_engine='auto' or 'generic'."
        )
    if HybridEngine.supports(module):
        return HybridEngine(module)
    return GenericEngine(module)


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

