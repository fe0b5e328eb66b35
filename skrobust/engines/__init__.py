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
  live in layers with a closed form (``Linear``, ``LayerNorm``, ``Embedding``,
  and those added with :func:`register_layer_form`), with any sample-wise
  operations in between (activations, in-place ones included, Dropout,
  residual sums, a layer applied several times, ...). It needs one backward
  pass to the layer outputs and computes norms and weighted gradients in
  closed form, without materialising per-sample gradients.
* :class:`HybridEngine`: the same closed forms, plus any other *leaf* layer that
  owns its parameters (``Conv1d``, a custom layer with its own
  ``nn.Parameter``, ...). From the same backward pass to the layer outputs, the
  per-sample gradients of such a layer come from ``torch.func`` (``vmap`` over
  ``vjp`` of that layer alone, one sample at a time).
* :class:`GenericEngine` (exact, any module): per-sample gradients with a
  batched backward (``is_grads_batched``) over the whole graph, in chunks that
  bound the memory, then one weighted backward pass. Its cost grows with the
  square of the batch size.

The first two are configurations of one engine, :class:`LayerwiseEngine`.
Every step it checks in the autograd graph that each covered layer's
parameters are used only inside that layer's own forward, and that no layer
input was modified in place since the layer read it. A step that fails a check
silently uses :class:`GenericEngine` instead, which is exact.

The package's modules: :mod:`~skrobust.engines.generic` (the generic engine),
:mod:`~skrobust.engines.layerwise` (the layer-wise engine),
:mod:`~skrobust.engines.registry` (:func:`register_layer_form` and the form
protocol), :mod:`~skrobust.engines.forms` (the built-in closed forms) and
:mod:`~skrobust.engines.func_form` (the ``torch.func`` form).
"""

from torch.nn.modules.batchnorm import _BatchNorm

from . import forms  # noqa: F401 - registers the built-in closed forms
from .generic import GenericEngine
from .layerwise import GhostNormEngine, HybridEngine, LayerwiseEngine
from .registry import register_layer_form

__all__ = [
    "ENGINES",
    "GenericEngine",
    "GhostNormEngine",
    "HybridEngine",
    "LayerwiseEngine",
    "check_per_sample_module",
    "make_engine",
    "per_sample_grad_norms",
    "register_layer_form",
]

#: Engine names accepted by :func:`make_engine`.
ENGINES = ("auto", "ghost", "generic")


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
        The engine, bound to ``module``.

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
            "layers, or in layers registered with skrobust.engines.register_layer_form; "
            "this module has others. Use grad_engine='auto' or 'generic'."
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

    Raises
    ------
    ValueError
        If ``loss_fn`` does not return one loss per sample, or for the reasons
        of :func:`make_engine`.

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
