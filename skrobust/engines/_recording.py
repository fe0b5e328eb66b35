"""Recording the calls of the layers a layer-wise engine covers, during one forward pass."""

import torch

from ._autograd import GradientEdge, sequence_nr


class LayerCall:
    """One call of a covered layer: what it read, what it returned, and when.

    The layer forms read ``args`` and ``output_grad``; the rest serves the
    engine's checks.

    Parameters
    ----------
    args : tuple
        The positional arguments, without their graph.
    kwargs : dict or None
        The keyword arguments, without their graph (``None`` for closed forms).
    inputs : tuple of torch.Tensor
        The tensors the call read, whose versions are recorded now.
    output : torch.Tensor
        The call's output.
    rows : tuple of torch.Tensor
        The tensors whose first dimension must be the batch.
    window : tuple of int
        Sequence numbers of the autograd nodes the call created: ``[first, end)``.
    signature : tuple, optional
        For torch.func forms: what decides whether the per-row outputs were checked.
    check : torch.Tensor, optional
        For torch.func forms: the output to compare the per-row outputs with.
    """

    __slots__ = ("args", "check", "edge", "kwargs", "output", "output_grad", "rows",
                 "signature", "versions", "watched", "window")

    def __init__(self, args, kwargs, inputs, output, rows, window, signature=None,
                 check=None):
        self.args = args
        self.kwargs = kwargs
        if GradientEdge is None:  # pragma: no cover - old torch: the output itself is
            inputs = (*inputs, output)  # differentiated, so it must not change either
            self.edge = output
        else:
            self.edge = GradientEdge(output.grad_fn, output.output_nr)
        self.watched = inputs  # must not be modified in place before the backward pass
        self.versions = tuple(t._version for t in inputs)
        self.output = output  # keeps the node of `edge` alive
        self.rows = rows
        self.window = window
        self.signature = signature
        self.check = check
        self.output_grad = None  # set by the engine: gradient of sum(losses) at the output

    def intact(self, n):
        """Whether the call's tensors are unmodified and have ``n`` rows each."""
        for t, version in zip(self.watched, self.versions):
            if t._version != version:
                return False  # modified in place after the layer read it
        for t in self.rows:
            if t.dim() == 0 or t.shape[0] != n:
                return False
        return True


class Recording:
    """The calls of the covered layers in one forward pass.

    Parameters
    ----------
    forms : dict
        ``layer -> form`` for the layers to record.
    func_layers : set
        The layers of ``forms`` whose form is a :class:`~.func_form.FuncForm`:
        their calls are recorded with all arguments, the others with their one
        input.
    """

    def __init__(self, forms, func_layers):
        self.forms = forms
        self.func_layers = func_layers
        self.calls = {layer: [] for layer in forms}
        self.invalid = None  # why this step cannot use the layer forms
        self._replaced = []  # (layer, its own instance forward or None)

    def install(self):
        """Make each layer's ``forward`` record its calls (undone by :meth:`uninstall`)."""
        for layer in self.calls:
            # An instance attribute shadows the class's forward: cheaper than a
            # pair of hooks, and it sees the layer's own output, before any
            # forward hook could replace it.
            own = layer.__dict__.get("forward")
            layer.__dict__["forward"] = self._recorder(layer, layer.forward)
            self._replaced.append((layer, own))

    def uninstall(self):
        """Give each layer back the ``forward`` it had before :meth:`install`."""
        while self._replaced:
            layer, own = self._replaced.pop()
            if own is None:
                del layer.__dict__["forward"]
            else:
                layer.__dict__["forward"] = own

    def _recorder(self, layer, forward):
        calls = self.calls[layer]
        if layer in self.func_layers:
            form = self.forms[layer]

            def forward_and_record(*args, **kwargs):
                start = sequence_nr()
                output = forward(*args, **kwargs)
                if self._usable(output):
                    calls.append(form.record(args, kwargs, output, (start, sequence_nr())))
                return output
        else:

            def forward_and_record(*args, **kwargs):
                start = sequence_nr()
                output = forward(*args, **kwargs)
                if (type(output) is torch.Tensor and output.grad_fn is not None
                        and len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)):
                    x = args[0]
                    calls.append(LayerCall((x.detach() if x.requires_grad else x,), None, args,
                                           output, (x, output), (start, sequence_nr())))
                elif self._usable(output):
                    self.invalid = f"{type(layer).__name__} called with unusual arguments"
                return output
        return forward_and_record

    def _usable(self, output):
        """Whether a call's output must be recorded; flags the step if it cannot be."""
        if not isinstance(output, torch.Tensor):
            self.invalid = "a layer output is not a tensor"
            return False
        if not output.requires_grad:
            return False  # no graph (e.g. torch.no_grad): the call adds no gradient
        if output.grad_fn is None:
            self.invalid = "a layer output is a leaf tensor"
            return False
        return True

    def activations(self):
        """Number of elements of the recorded outputs."""
        return sum(call.output.numel() for calls in self.calls.values() for call in calls)
