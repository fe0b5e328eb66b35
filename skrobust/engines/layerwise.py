"""The layer-wise engine: per-layer closed forms, and ``torch.func`` for other leaf layers.

One backward pass of ``losses.sum()`` to the outputs of the layers that hold
trainable parameters gives, for each layer call, the gradient ``d_i`` of every
sample's loss with respect to that output. Each layer's form turns its inputs
and these gradients into the layer's share of the per-sample norms and of the
weighted update (:mod:`~skrobust.engines.forms`,
:mod:`~skrobust.engines.func_form`).
"""

import contextlib
import warnings
from typing import NamedTuple

import torch

from ._autograd import detached, like, own_trainable, used_only_within
from ._recording import Recording
from .func_form import FuncForm, NotPerSample
from .generic import GenericEngine
from .registry import NormTotal, closed_form

__all__ = ["GhostNormEngine", "HybridEngine", "LayerwiseEngine"]


class _Unsupported(Exception):
    """A module that a layer-wise engine does not cover."""


def _form_classes(module, func_layers):
    """``layer -> form class`` for each layer holding trainable parameters.

    Raises
    ------
    _Unsupported
        If a layer has no form, or a parameter is registered in two layers
        (their parts of the norms would not add up).
    """
    classes, owners = {}, {}
    for layer in module.modules():
        own = own_trainable(layer)
        if not own:
            continue
        form = closed_form(layer)
        if form is None and func_layers and FuncForm.applies_to(layer):
            form = FuncForm
        if form is None:
            raise _Unsupported(f"{type(layer).__name__} has no "
                               + ("per-layer form" if func_layers else "closed form"))
        classes[layer] = form
        for p in own:
            if owners.setdefault(id(p), layer) is not layer:
                raise _Unsupported("a parameter is registered in two modules")
    return classes


class _Plan(NamedTuple):
    """The layer calls one step differentiates at."""

    #: ``(layer, calls)`` for each covered layer that ran.
    units: list
    #: The gradient edges of the calls' outputs, in the order of ``units``.
    edges: list


class _Fallback:
    """:class:`GenericEngine`, for the steps that the layer forms cannot take."""

    def __init__(self, module):
        self.generic = GenericEngine(module)
        self.active = False  # the current step uses it
        self.given_up = None  # why every step uses it, from now on

    def norms(self, losses, recording):
        self.active = True
        # Its chunk size counts the activations: here, the recorded outputs.
        self.generic._activations = 0 if recording is None else recording.activations()
        return self.generic.norms(losses)

    def give_up(self, engine, layer, exc):
        self.given_up = f"{type(layer).__name__}: {exc}"
        warnings.warn(
            f"{type(engine).__name__}: per-sample gradients of the layer "
            f"{type(layer).__name__} cannot be computed one sample at a time with torch.func "
            f"({exc}). The exact but slower GenericEngine is used from now on.",
            RuntimeWarning, stacklevel=3,
        )

    def backward(self, coefficients):
        self.active = False
        self.generic.backward(coefficients)

    def release(self):
        self.active = False
        self.generic.release()


class LayerwiseEngine:
    """Per-sample gradient norms and weighted update, layer by layer.

    The implementation shared by :class:`GhostNormEngine` (closed forms only)
    and :class:`HybridEngine` (closed forms, and ``torch.func`` for the other
    leaf layers); use one of them, or :func:`~skrobust.engines.make_engine`.

    Parameters
    ----------
    module : torch.nn.Module
        A module that :meth:`supports` accepts.

    Attributes
    ----------
    name : str
        The name the estimator reports as ``grad_engine_``: ``"ghost"`` or
        ``"hybrid"``.
    func_layers : bool
        Whether leaf layers without a closed form get their per-sample
        gradients from ``torch.func``.

    Raises
    ------
    TypeError
        If the engine does not support ``module``.

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
    closed forms, and :func:`~skrobust.engines.register_layer_form` adds others.

    The gradients are taken at the layer outputs as the layers produced them
    (``torch.autograd.graph.GradientEdge``), so an in-place operation on an
    output afterwards (``nn.ReLU(inplace=True)``) does not matter. A layer
    called several times in one forward pass (weight sharing across calls) is
    exact too: its per-sample gradient is the sum over its calls, the closed
    form of the calls joined along a sequence axis.

    Closed forms go by exact layer type (a subclass may change the maths), and
    a parameter registered in two modules makes the module unsupported. During
    :meth:`capture` the covered layers' ``forward`` is wrapped (an instance
    attribute, removed afterwards) to record each call. Each step checks, from
    the autograd graph, that every trainable parameter is used only inside its
    own layer's forward (not, e.g., ``h @ emb.weight.T`` in a parent module),
    that no layer input was modified in place after the layer read it, and
    that the layers' inputs and outputs have the batch as first dimension. A
    step failing a check silently uses :class:`GenericEngine` instead, which
    is exact but slower. Which parameters are trainable is read again at each
    :meth:`capture`.

    The closed forms assume that each layer treats the rows of its input (the
    first dimension) as the samples, as these layers do when called on
    batch-first tensors.
    """

    name = None
    func_layers = False

    def __init__(self, module):
        self.module = module
        self._params = list(module.parameters())
        self._fallback = _Fallback(module)
        self._recording = None
        self._states = None
        self._ones = None
        self._setup(strict=True)

    def _setup(self, strict):
        """(Re)build the forms from the parameters that are trainable now."""
        self._flags = [p.requires_grad for p in self._params]
        try:
            classes = _form_classes(self.module, self.func_layers)
        except _Unsupported as exc:
            if strict:
                raise TypeError(
                    f"{type(self).__name__} does not support this module: {exc}.") from None
            self._unsupported = str(exc)
            return
        self._unsupported = None
        self._forms = {layer: form(layer) for layer, form in classes.items()}
        self._func = {layer for layer, form in classes.items() if form is FuncForm}
        self._owned = {layer: own_trainable(layer) for layer in classes}

    @classmethod
    def supports(cls, module):
        """Whether every trainable parameter of ``module`` lives in a layer this engine covers.

        :class:`GhostNormEngine` covers the layers with a closed form:
        ``torch.nn.Linear``, ``torch.nn.LayerNorm``, ``torch.nn.Embedding``
        (dense, without ``scale_grad_by_freq``) and the types registered with
        :func:`~skrobust.engines.register_layer_form`, by exact type.
        :class:`HybridEngine` also covers any other leaf module (no submodules)
        holding its parameters itself, except BatchNorm and layers with sparse
        or frequency-scaled gradients. For both, no parameter may be registered
        in two modules.

        Parameters
        ----------
        module : torch.nn.Module
            The module to check.

        Returns
        -------
        supported : bool
            ``True`` when the engine can compute the module's norms layer by layer.
        """
        try:
            _form_classes(module, cls.func_layers)
        except _Unsupported:
            return False
        return True

    @contextlib.contextmanager
    def capture(self):
        """Record each covered layer's calls during the forward pass.

        Yields
        ------
        engine : LayerwiseEngine
            This engine.
        """
        if [p.requires_grad for p in self._params] != self._flags:
            self._setup(strict=False)
        self.release()
        # Nothing to record when this engine already knows it will use GenericEngine.
        if self._unsupported is not None or self._fallback.given_up is not None:
            yield self
            return
        recording = self._recording = Recording(self._forms, self._func)
        try:
            recording.install()
            yield self
        finally:
            recording.uninstall()

    def _plan(self, recording, losses):
        """The calls to differentiate at, or ``None`` when GenericEngine must take the step."""
        if (recording is None or recording.invalid is not None or losses.dim() != 1
                or not losses.requires_grad):
            return None
        n = losses.shape[0]
        units, edges = [], []
        for layer, calls in recording.calls.items():
            if not calls:
                continue
            for call in calls:
                if not call.intact(n):
                    return None
                edges.append(call.edge)
            units.append((layer, calls))
        if not edges:
            return None
        # Every node reading a covered parameter must come from its layer's calls.
        spans = {id(p): [call.window for call in recording.calls[layer]]
                 for layer, params in self._owned.items() for p in params}
        if not used_only_within(losses, spans):
            return None
        return _Plan(units, edges)

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
        recording, self._recording = self._recording, None
        plan = self._plan(recording, losses)
        if plan is None:
            return self._fallback.norms(losses, recording)
        # torch.func forms may fail (or fail their check): keep the graph for
        # GenericEngine until they are done. allow_unused: a layer whose output
        # does not reach the losses gets no gradient.
        grads = iter(torch.autograd.grad(
            losses, plan.edges, self._grad_of_sum(losses), allow_unused=True,
            retain_graph=retain_graph or bool(self._func)))
        total, states = NormTotal(), []
        for layer, calls in plan.units:
            reached = []
            for call in calls:
                call.output_grad = next(grads)
                if call.output_grad is not None:
                    reached.append(call)
            if not reached:
                continue
            form = self._forms[layer]
            try:
                states.append((form, form.norms(reached, total)))
            except NotPerSample as exc:
                self._fallback.give_up(self, layer, exc)
                return self._fallback.norms(losses, recording)
        self._states = states
        norms = total.result()
        return losses.new_zeros(losses.shape[0]) if norms is None else like(norms, losses)

    def backward(self, coefficients):
        """Accumulate ``sum_i coefficients[i] * grad_i`` into ``p.grad``.

        Parameters
        ----------
        coefficients : torch.Tensor of shape (n,)
            One coefficient per sample of the last :meth:`norms` call, e.g.
            ``w_i / B``; treated as constants.

        Raises
        ------
        RuntimeError
            If no :meth:`norms` call on the same forward pass came before.
        """
        if self._fallback.active:
            self._fallback.backward(coefficients)
            return
        states, self._states = self._states, None
        if states is None:
            raise RuntimeError("backward() needs a norms() call on the same forward pass.")
        c = detached(coefficients)
        while states:  # drop each layer's tensors as soon as they are used
            form, state = states.pop()
            form.update(state, c)

    def release(self):
        """Drop what :meth:`capture` and :meth:`norms` kept (layer records, graph)."""
        self._recording = None
        self._states = None
        self._fallback.release()


class GhostNormEngine(LayerwiseEngine):
    """Per-sample gradient norms in closed form, for layers that have one.

    Parameters
    ----------
    module : torch.nn.Module
        A module whose trainable parameters all belong to layers with a closed
        form: ``torch.nn.Linear``, ``torch.nn.LayerNorm``, ``torch.nn.Embedding``
        or a type registered with :func:`~skrobust.engines.register_layer_form`
        (see :meth:`LayerwiseEngine.supports`).

    Raises
    ------
    TypeError
        If a trainable parameter of ``module`` lives outside such a layer.

    See Also
    --------
    LayerwiseEngine : The methods, and how the closed forms work.

    Notes
    -----
    It needs one backward pass to the layer outputs and computes the norms
    and the weighted gradient in closed form, without materialising
    per-sample gradients.
    """

    name = "ghost"
    func_layers = False


class HybridEngine(LayerwiseEngine):
    """Closed forms where they exist, ``torch.func`` for the other leaf layers.

    Parameters
    ----------
    module : torch.nn.Module
        A module whose trainable parameters each belong to one layer that either
        has a closed form or is a leaf module (no submodules) holding them
        itself, e.g. ``Conv1d`` or a custom layer with its own ``nn.Parameter``
        (see :meth:`LayerwiseEngine.supports`).

    Raises
    ------
    TypeError
        If a trainable parameter of ``module`` lives outside such a layer.

    See Also
    --------
    LayerwiseEngine : The methods, and how the closed forms work.

    Notes
    -----
    The one backward pass to the layer outputs gives, for every layer, the
    gradient ``d_i`` of each sample's loss with respect to the layer's output,
    as in :class:`GhostNormEngine`. For a leaf layer without a closed form, the
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
    are kept between :meth:`~LayerwiseEngine.norms` and
    :meth:`~LayerwiseEngine.backward` when they fit in 128 MiB; otherwise they
    are computed in chunks for the norms and the update is one vector-Jacobian
    product of the layer on the whole batch, weighted.

    The checks of :class:`LayerwiseEngine` apply: a parameter used outside its
    layer's forward makes that step use :class:`GenericEngine`.
    """

    name = "hybrid"
    func_layers = True
