"""Weighting rules as objects: which samples train, and how much, at each step.

A rule turns what the training step knows about a batch (per-sample gradient
norms, per-sample losses, the batch's rows) into one weight per sample, and may
update itself at the end of every epoch from the per-row state
(:class:`~skrobust.row_state.RowState`). The estimators look a rule up by the
value of their ``weighting`` parameter in :data:`RULES`; a new rule is one
class registered with :func:`register_rule`, without touching the training
step. The arithmetic lives in pure functions (:mod:`skrobust.weighting`,
:mod:`skrobust.selection`); the classes here only decide when and with which
settings to apply it.
"""

import torch

from .weighting import compute_weights, small_loss_weights

__all__ = [
    "RULES",
    "AdaptiveRule",
    "BatchNormRule",
    "NoWeighting",
    "SmallLossRule",
    "SoftRule",
    "TruncateRule",
    "WeightingRule",
    "make_rule",
    "register_rule",
]

#: Registered rules: the value of ``weighting`` -> the rule class.
RULES = {}


def register_rule(name):
    """Class decorator: make a :class:`WeightingRule` available as ``weighting=name``.

    Parameters
    ----------
    name : str
        The value of the estimators' ``weighting`` parameter that selects the rule.

    Returns
    -------
    decorator : callable
        Registers the class under ``name``, sets its ``name`` attribute and
        returns it unchanged.

    Examples
    --------
    >>> import torch
    >>> from skrobust.rules import RULES, WeightingRule, register_rule
    >>> @register_rule("half")
    ... class Half(WeightingRule):
    ...     def batch_weights(self, norms, losses, rows, epoch, state):
    ...         return torch.full_like(norms, 0.5)
    >>> RULES["half"] is Half
    True
    >>> del RULES["half"]
    """
    def decorator(cls):
        if not (isinstance(cls, type) and issubclass(cls, WeightingRule)):
            raise TypeError(f"register_rule expects a WeightingRule subclass, got {cls!r}.")
        cls.name = name
        RULES[name] = cls
        return cls

    return decorator


def make_rule(estimator):
    """The rule selected by ``estimator.weighting``, built from its hyperparameters.

    Parameters
    ----------
    estimator : object
        Has a ``weighting`` attribute naming a registered rule, a
        ``warmup_epochs`` attribute, and an attribute for each name in the
        rule's :attr:`~WeightingRule.uses`.

    Returns
    -------
    rule : WeightingRule
    """
    try:
        cls = RULES[estimator.weighting]
    except (KeyError, TypeError):
        raise ValueError(
            f"weighting must be one of {tuple(RULES)}; got {estimator.weighting!r}."
        ) from None
    return cls(warmup_epochs=estimator.warmup_epochs,
               **{name: getattr(estimator, name) for name in cls.uses})


class WeightingRule:
    """Base class of the weighting rules.

    A rule is built once per fit by :func:`make_rule`, with the estimator's
    ``warmup_epochs`` and the hyperparameters named in :attr:`uses`.

    Parameters
    ----------
    warmup_epochs : int, default=0
        Epochs of plain training before the rule acts.
    **params : dict
        The values of the hyperparameters named in :attr:`uses`.

    Attributes
    ----------
    name : str
        The value of ``weighting`` that selects the rule (set by
        :func:`register_rule`).
    uses : tuple of str
        The estimator hyperparameters the rule reads, besides
        ``warmup_epochs``. The estimators warn when a user sets one that the
        chosen rule does not read.
    needs_rows : bool
        Whether the rule needs each batch's row indices (per-row decisions).
    """

    name = None
    uses = ()
    needs_rows = False

    def __init__(self, warmup_epochs=0, **params):
        self.warmup_epochs = warmup_epochs
        unknown = set(params) - set(self.uses)
        if unknown:
            raise TypeError(f"{type(self).__name__} does not use {sorted(unknown)}.")
        for key, value in params.items():
            setattr(self, key, value)

    def is_active(self, epoch):
        """Whether the rule weighs the batches of ``epoch`` (counted from 1).

        Parameters
        ----------
        epoch : int
            The running epoch, ``1`` for the first.

        Returns
        -------
        active : bool
            ``True`` after the warm-up.
        """
        return epoch > self.warmup_epochs

    def batch_weights(self, norms, losses, rows, epoch, state):
        """One weight per sample of a batch.

        Parameters
        ----------
        norms : torch.Tensor of shape (B,)
            Per-sample gradient norms.
        losses : torch.Tensor of shape (B,)
            Per-sample losses.
        rows : torch.Tensor of shape (B,) or None
            The batch's row indices into the training data (on the CPU).
        epoch : int
            The running epoch, ``1`` for the first.
        state : RowState
            The per-row state of the fit.

        Returns
        -------
        weights : torch.Tensor of shape (B,)
            Non-negative weights, on the device and in the dtype of ``norms``.
        """
        raise NotImplementedError

    def end_epoch(self, epoch, state):
        """Update the rule after an epoch (its memories are up to date).

        Parameters
        ----------
        epoch : int
            The epoch just finished, ``1`` for the first.
        state : RowState
            The per-row state of the fit.
        """


@register_rule("adaptive")
class AdaptiveRule(WeightingRule):
    """Leave out the rows that the per-row state flags as mislabeled.

    After ``warmup_epochs`` epochs, and again after every epoch, the rows that
    :meth:`RowState.flags` marks get weight 0 for the next epoch (see
    :func:`skrobust.selection.flag_noisy_rows` for the classifier's flags).

    Parameters
    ----------
    warmup_epochs : int, default=0
        Epochs of plain training first.
    """

    needs_rows = True

    def __init__(self, warmup_epochs=0):
        super().__init__(warmup_epochs=warmup_epochs)
        self._keep = None

    def batch_weights(self, norms, losses, rows, epoch, state):
        """1 for the rows kept, 0 for the rows flagged.

        Parameters
        ----------
        norms, losses, rows, epoch, state
            As in :meth:`WeightingRule.batch_weights`.

        Returns
        -------
        weights : torch.Tensor of shape (B,)
        """
        if self._keep is None:
            if not state.norm_memory.seen.any():
                return torch.ones_like(norms)
            self._select(state)  # e.g. memories just restored from a checkpoint
        return self._keep[rows].to(norms.device, norms.dtype)

    def end_epoch(self, epoch, state):
        """Renew the selection from the memories, from the end of the warm-up on.

        Parameters
        ----------
        epoch : int
            The epoch just finished.
        state : RowState
            The per-row state of the fit.
        """
        if epoch >= self.warmup_epochs:
            self._select(state)

    def _select(self, state):
        self._keep = (~state.flags()).to(torch.float32)


class BatchNormRule(WeightingRule):
    """The original method's batch rules: each batch's norms against their own statistics.

    See :func:`skrobust.compute_weights`; the subclasses registered as
    ``"truncate"`` and ``"soft"`` differ only in the rule they apply.

    Parameters
    ----------
    warmup_epochs : int, default=0
        Epochs of plain training first.
    **params : dict
        ``stats`` (both), ``alpha`` and ``beta`` (``"truncate"``).
    """

    def batch_weights(self, norms, losses, rows, epoch, state):
        """Weights of :func:`skrobust.compute_weights` for the batch's norms.

        Parameters
        ----------
        norms, losses, rows, epoch, state
            As in :meth:`WeightingRule.batch_weights`.

        Returns
        -------
        weights : torch.Tensor of shape (B,)
        """
        params = {name: getattr(self, name) for name in self.uses}
        return compute_weights(norms, weighting=self.name, **params)


@register_rule("truncate")
class TruncateRule(BatchNormRule):
    """Weight 0 outside ``[mu - beta*sigma, mu + alpha*sigma]``, else 1."""

    uses = ("stats", "alpha", "beta")


@register_rule("soft")
class SoftRule(BatchNormRule):
    """Weight ``exp(-(g - mu)^2 / (2 sigma^2))``."""

    uses = ("stats",)


@register_rule("small_loss")
class SmallLossRule(WeightingRule):
    """Keep the share of each batch with the smallest losses (co-teaching's selection).

    The share left out is ``forget_rate``, ramped up linearly over the first
    ``warmup_epochs`` epochs; with ``forget_rate="auto"`` it is the share of
    rows that the estimator's row flags (``label_issues_``) mark after each
    epoch, an estimate of the noise rate.

    Parameters
    ----------
    warmup_epochs : int, default=0
        Epochs over which the rate ramps up.
    forget_rate : float or "auto", default="auto"
        Share of each batch left out.
    """

    uses = ("forget_rate",)

    def __init__(self, warmup_epochs=0, forget_rate="auto"):
        super().__init__(warmup_epochs=warmup_epochs, forget_rate=forget_rate)
        # "auto": the flagged share, read from the memories when first needed.
        self._rate = None if forget_rate == "auto" else float(forget_rate)

    def is_active(self, epoch):
        """Always: the rate ramps up during the warm-up instead.

        Parameters
        ----------
        epoch : int
            The running epoch.

        Returns
        -------
        active : bool
            ``True``.
        """
        return True

    def batch_weights(self, norms, losses, rows, epoch, state):
        """1 for the smallest losses, 0 for the others.

        Parameters
        ----------
        norms, losses, rows, epoch, state
            As in :meth:`WeightingRule.batch_weights`.

        Returns
        -------
        weights : torch.Tensor of shape (B,)
        """
        if self._rate is None:
            self._rate = state.flag_rate()
        ramp = min(epoch / max(self.warmup_epochs, 1), 1.0)
        return small_loss_weights(losses, min(self._rate * ramp, 0.99)).to(norms.dtype)

    def end_epoch(self, epoch, state):
        """With ``forget_rate="auto"``: the share of rows flagged now.

        Parameters
        ----------
        epoch : int
            The epoch just finished.
        state : RowState
            The per-row state of the fit.
        """
        if self.forget_rate == "auto":
            self._rate = state.flag_rate()


@register_rule("none")
class NoWeighting(WeightingRule):
    """Plain training: every sample has weight 1, through the same code path."""

    def is_active(self, epoch):
        """Never active.

        Parameters
        ----------
        epoch : int
            The running epoch.

        Returns
        -------
        active : bool
            ``False``.
        """
        return False

    def batch_weights(self, norms, losses, rows, epoch, state):
        """Ones.

        Parameters
        ----------
        norms, losses, rows, epoch, state
            As in :meth:`WeightingRule.batch_weights`.

        Returns
        -------
        weights : torch.Tensor of shape (B,)
        """
        return torch.ones_like(norms)
