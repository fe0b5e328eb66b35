"""The registry of per-layer closed forms, and what a form must provide."""

import torch
from torch import nn

__all__ = ["register_layer_form"]

# Layer type -> its closed form (a class built from the layer).
_FORMS = {}


def register_layer_form(layer_type):
    """Register the closed form of a layer type for the layer-wise engines.

    A closed form computes a layer's share of the per-sample gradient norms,
    and of the weighted update, from the layer's inputs and output gradients,
    without a backward pass through the layer. With a form registered, a module
    whose trainable layers all have one runs on
    :class:`~skrobust.engines.GhostNormEngine` (``grad_engine_ == "ghost"``);
    otherwise on :class:`~skrobust.engines.HybridEngine`, which uses it next to
    ``torch.func`` for the other layers. Registering a type again replaces its
    form, the built-in ones (``torch.nn.Linear``, ``torch.nn.LayerNorm``,
    ``torch.nn.Embedding``) included. Engines created before keep their forms.

    Parameters
    ----------
    layer_type : type
        A subclass of ``torch.nn.Module``. Only layers of exactly this type use
        the form: a subclass may change the computation, and needs a form of its
        own.

    Returns
    -------
    decorator : callable
        Registers the class it is applied to, and returns that class.

    Raises
    ------
    TypeError
        If ``layer_type`` is not a subclass of ``torch.nn.Module``.

    See Also
    --------
    make_engine : Picks the engine, from the forms registered when it is called.

    Notes
    -----
    The decorated class is the form. The engine builds one per layer of that
    type holding trainable parameters, ``form = Form(layer)``, when it is
    created and again whenever the set of trainable parameters changes (so the
    constructor may read ``p.requires_grad``). Each training step, after one
    backward pass of ``losses.sum()`` to the outputs of the layers, it calls:

    ``form.norms(calls, total)``
        ``calls`` is a list with one entry per call of the layer in the forward
        pass whose output reached the losses (a layer applied twice has two).
        ``call.args`` is the tuple of the call's positional arguments, detached
        from the graph: a form is only used for calls with exactly one
        positional tensor argument and no keyword arguments, so ``args[0]`` is
        the layer's input. ``call.output_grad`` is the gradient of
        ``losses.sum()`` with respect to the call's output; since each loss
        depends on its own sample only, its row ``i`` is the gradient of sample
        ``i``'s loss. Both have the batch as first dimension (the engine
        checks). The method adds the layer's part of the per-sample norms to
        ``total``: ``total.add_square(s)`` adds a tensor of shape ``(n,)`` of
        squared L2 norms (it may be modified in place), ``total.add_norm(r)``
        adds one of L2 norms. The parts must cover each trainable parameter of
        the layer once, with sample ``i``'s gradient summed over the calls. It
        returns a state, passed to ``update``.

    ``form.update(state, coefficients)``
        In the engine's ``backward``: adds ``sum_i coefficients[i] * g_i`` to
        ``p.grad`` of each trainable parameter ``p`` of the layer (setting
        ``p.grad`` when it is ``None``), where ``g_i`` is sample ``i``'s
        gradient of ``p`` and ``coefficients`` is a tensor of shape ``(n,)``
        without graph.

    The class may also define a static method ``applies_to(layer)``; a layer for
    which it returns ``False`` is treated as having no closed form.

    The engine checks at each step, in the autograd graph, that the layer's
    parameters are used only inside its ``forward`` and that its input was not
    modified in place after the call; a step failing a check uses
    :class:`~skrobust.engines.GenericEngine`. The form itself must be exact for
    every call it accepts, dtype and device included.

    Examples
    --------
    An element-wise scale, ``x * scale``, on inputs of shape ``(n, dim)``: sample
    ``i``'s gradient of ``scale`` is ``x_i * d_i``, summed over the calls.

    >>> import torch
    >>> from torch import nn
    >>> from skrobust.engines import make_engine, register_layer_form
    >>> class Scale(nn.Module):
    ...     def __init__(self, dim):
    ...         super().__init__()
    ...         self.scale = nn.Parameter(torch.ones(dim))
    ...
    ...     def forward(self, x):
    ...         return x * self.scale
    >>> @register_layer_form(Scale)
    ... class ScaleForm:
    ...     def __init__(self, layer):
    ...         self.scale = layer.scale
    ...
    ...     def norms(self, calls, total):
    ...         grads = sum(call.args[0] * call.output_grad for call in calls)
    ...         total.add_norm(torch.linalg.vector_norm(grads, dim=1))
    ...         return grads
    ...
    ...     def update(self, grads, coefficients):
    ...         step = coefficients @ grads
    ...         if self.scale.grad is None:
    ...             self.scale.grad = step
    ...         else:
    ...             self.scale.grad += step
    >>> module = nn.Sequential(Scale(3), nn.Linear(3, 2))
    >>> make_engine(module).name
    'ghost'
    """
    if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Module)):
        raise TypeError(
            f"register_layer_form needs a subclass of torch.nn.Module, got {layer_type!r}.")

    def register(form):
        _FORMS[layer_type] = form
        return form

    return register


def closed_form(layer):
    """The closed-form class registered for ``layer``'s exact type, or ``None``."""
    form = _FORMS.get(type(layer))
    if form is None:
        return None
    applies_to = getattr(form, "applies_to", None)
    return form if applies_to is None or applies_to(layer) else None


class NormTotal:
    """Per-sample gradient norms summed over layers, in few kernels.

    Parts come as row norms (reduced together at the end: one stack, one norm)
    or as squared row norms (added up in place).
    """

    __slots__ = ("norms", "squares")

    def __init__(self):
        self.norms = []
        self.squares = None

    def add_norm(self, t):
        """Add the L2 norms ``t`` (shape ``(n,)``) of a part of each sample's gradient."""
        self.norms.append(t)

    def add_square(self, t):
        """Add the squared L2 norms ``t`` (shape ``(n,)``); ``t`` may be modified."""
        self.squares = t if self.squares is None else self.squares.add_(t)

    def result(self):
        """The total L2 norms, or ``None`` when nothing was added."""
        norms = self.norms
        if self.squares is not None:
            norms.append(self.squares.sqrt_())
        if len(norms) < 2:
            return norms[0] if norms else None
        return torch.linalg.vector_norm(torch.stack(norms, 1), dim=1)
