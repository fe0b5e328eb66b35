"""Private helpers around autograd: graph inspection and ``.grad`` accumulation."""

import torch

# Next sequence number autograd gives to a node created in this thread: the
# nodes a layer creates while it runs are numbered in [number before, number
# after). Private torch API; without it the parameter-ownership check is off.
_get_sequence_nr = getattr(getattr(torch._C, "_autograd", None), "_get_sequence_nr", None)
_ACCUMULATE_GRAD = getattr(getattr(torch._C, "_functions", None), "AccumulateGrad", None)
_OWNERSHIP_CHECK = _get_sequence_nr is not None and _ACCUMULATE_GRAD is not None

if _get_sequence_nr is not None:
    sequence_nr = _get_sequence_nr
else:  # pragma: no cover - private torch API missing

    def sequence_nr():
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
    from torch.autograd.graph import GradientEdge
else:  # pragma: no cover - old torch
    GradientEdge = None


def used_only_within(losses, spans):
    """Whether each parameter of ``spans`` is read only by nodes created in its spans.

    Parameters
    ----------
    losses : torch.Tensor
        The root of the graph to walk.
    spans : dict
        ``id(parameter) -> list of (first, end)`` sequence-number windows: the
        nodes created while the parameter's layer ran.

    Returns
    -------
    ok : bool
        ``False`` if a node of the graph that reads one of these parameters was
        created outside all of its windows. Always ``True`` without torch's
        private sequence-number API.
    """
    if not _OWNERSHIP_CHECK:  # pragma: no cover - private torch API missing
        return True
    root = losses.grad_fn
    seen = {root}
    stack = [root]
    while stack:
        node = stack.pop()
        for child, _ in node.next_functions:
            if child is None:
                continue
            if type(child) is _ACCUMULATE_GRAD:
                windows = spans.get(id(child.variable))
                if windows is not None:
                    number = node._sequence_nr()
                    if not any(lo <= number < hi for lo, hi in windows):
                        return False
            elif child not in seen:
                seen.add(child)
                stack.append(child)
    return True


def trainable(module):
    """The parameters of ``module`` that require gradients."""
    return [p for p in module.parameters() if p.requires_grad]


def own_trainable(layer):
    """The parameters registered on ``layer`` itself that require gradients."""
    return [p for p in layer.parameters(recurse=False) if p.requires_grad]


def detached(t):
    """``t`` without its graph when it is a tensor that requires gradients."""
    if isinstance(t, torch.Tensor) and t.requires_grad:
        return t.detach()
    return t


def accumulate(param, grad):
    """``param.grad += grad``, creating ``param.grad`` in the parameter's dtype."""
    if param.grad is None:
        param.grad = grad if grad.dtype == param.dtype else grad.to(param.dtype)
    else:
        param.grad.add_(grad)


def accumulate_mm(param, m1, m2):
    """``param.grad += m1 @ m2``, in place when possible."""
    grad = param.grad
    if grad is not None and grad.dtype == m1.dtype == m2.dtype:
        grad.addmm_(m1, m2)
    else:
        accumulate(param, torch.mm(m1, m2))


def accumulate_mv(param, mat, vec):
    """``param.grad += (mat @ vec).view(param.shape)``, in place when possible."""
    grad = param.grad
    if grad is not None and grad.dim() == 1 and grad.dtype == mat.dtype == vec.dtype:
        grad.addmv_(mat, vec)
    else:
        result = torch.mv(mat, vec)
        accumulate(param, result if param.dim() == 1 else result.view(param.shape))


def like(c, t):
    """``c`` in the dtype of ``t`` (no copy when it already is)."""
    return c if c.dtype == t.dtype else c.to(t.dtype)


def row_sq(t):
    """Squared L2 norm of each row of a 2-D tensor."""
    return torch.linalg.vecdot(t, t)
