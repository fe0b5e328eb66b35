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

    def begin_fit(self, net, dataset):
        """Prepare for a fit, before its first epoch (the module is built).

        Parameters
        ----------
        net : object
            The estimator.
        dataset : RowIndexedDataset
            The training data.
        """

    def stops_before(self, epoch):
        """Whether the fit ends before ``epoch`` (counted from 1) starts.

        Parameters
        ----------
        epoch : int
            The epoch about to start.

        Returns
        -------
        stop : bool
            ``False``: the fit runs its ``max_epochs``.
        """
        return False

    def filter_flags(self, flags):
        """The rows the estimator reports as issues, given the memories' flags.

        Parameters
        ----------
        flags : torch.Tensor of shape (n_rows,), bool
            The rows flagged from the per-row memories.

        Returns
        -------
        flags : torch.Tensor of shape (n_rows,), bool
            ``flags`` unchanged.
        """
        return flags


@register_rule("adaptive")
class AdaptiveRule(WeightingRule):
    """Plain training unless a held-out slice shows that something else does better.

    Where the estimator offers a held-out self-check (the classifier's, see
    :mod:`skrobust.probe`), :meth:`begin_fit` runs it: two probe networks train
    on two thirds of the rows, plainly and with row selection, and are judged
    after every epoch on the remaining third. The recipe that wins there by
    more than ``alpha`` standard deviations (see
    :func:`skrobust.selection.choose_recipe`) is followed on all rows: plain
    training (the default, also when the data is too small to check), plain
    training stopped early, or row selection (optionally stopped early).

    Row selection: after ``warmup_epochs`` epochs, and again after every
    epoch, the rows that :meth:`RowState.flags` marks (see
    :func:`skrobust.selection.flag_noisy_rows`) get weight 0 for the next
    epoch. Without a self-check (an estimator that offers none), the rule
    always selects.

    Parameters
    ----------
    warmup_epochs : int, default=0
        Epochs before the selection starts.
    alpha : float, default=1.0
        Margin of the self-check, in standard deviations of the held-out
        accuracy difference; larger keeps plain training more often.

    Attributes
    ----------
    recipe : dict or None
        What the self-check chose (``mode``, ``epochs``, ``gains``; see
        :func:`~skrobust.selection.choose_recipe`), ``None`` without one.
    """

    uses = ("alpha",)
    needs_rows = True

    def __init__(self, warmup_epochs=0, alpha=1.0):
        super().__init__(warmup_epochs=warmup_epochs, alpha=alpha)
        self._keep = None
        self.recipe = None
        self._first_epoch = None  # epochs before this fit, read when its first epoch starts
        self._max_epochs = None

    def begin_fit(self, net, dataset):
        """Run the estimator's held-out self-check, where it has one.

        Parameters
        ----------
        net : object
            The estimator; its ``_held_out_check(dataset, alpha=, warmup_epochs=)``
            returns the recipe.
        dataset : RowIndexedDataset
            The training data.
        """
        self._first_epoch = None
        self._max_epochs = getattr(net, "max_epochs", None)
        check = getattr(net, "_held_out_check", None)
        if check is not None:
            self.recipe = check(dataset, alpha=self.alpha, warmup_epochs=self.warmup_epochs)

    def _selects(self):
        return self.recipe is None or self.recipe["mode"] == "select"

    def is_active(self, epoch):
        """Whether the rows flagged are left out in ``epoch``.

        Parameters
        ----------
        epoch : int
            The running epoch, ``1`` for the first.

        Returns
        -------
        active : bool
            After the warm-up, when the rule selects rows.
        """
        return self._selects() and epoch - (self._first_epoch or 0) > self.warmup_epochs

    def batch_weights(self, norms, losses, rows, epoch, state):
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
        if self._selects() and epoch - (self._first_epoch or 0) >= self.warmup_epochs:
            self._select(state)

    def stops_before(self, epoch):
        """Whether the recipe's epochs are done before ``epoch`` starts.

        Parameters
        ----------
        epoch : int
            The epoch about to start, ``1`` for the first.

        Returns
        -------
        stop : bool
            ``True`` after the recipe's last epoch (early stopping).
        """
        if self._first_epoch is None:
            self._first_epoch = epoch - 1
            if self._first_epoch and self.recipe is not None and self._max_epochs is not None:
                # The fit continues an earlier one (e.g. a checkpoint loaded when training
                # began): keep the recipe's mode and train all of this fit's epochs.
                self.recipe = {**self.recipe, "epochs": self._max_epochs}
        return self.recipe is not None and epoch - self._first_epoch > self.recipe["epochs"]

    def filter_flags(self, flags):
        """No issues reported when the self-check found no sign of label noise.

        Parameters
        ----------
        flags : torch.Tensor of shape (n_rows,), bool
            The rows flagged from the per-row memories.

        Returns
        -------
        flags : torch.Tensor of shape (n_rows,), bool
            All ``False`` when the recipe is plain training to the end; else
            ``flags``.
        """
        if self.recipe is not None and self.recipe["mode"] == "plain" and \
                self.recipe.get("full", True):
            return torch.zeros_like(flags)
        return flags

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
        params = {name: getattr(self, name) for name in self.uses}
        return compute_weights(norms, weighting=self.name, **params)


@register_rule("truncate")
class TruncateRule(BatchNormRule):
    """Weight 0 outside ``[mu - beta*sigma, mu + alpha*sigma]``, else 1.

    Parameters
    ----------
    warmup_epochs : int, default=0
        Epochs of plain training first.
    **params : dict
        ``stats``, ``alpha`` and ``beta``, as in :func:`skrobust.compute_weights`.
    """

    uses = ("stats", "alpha", "beta")


@register_rule("soft")
class SoftRule(BatchNormRule):
    """Weight ``exp(-(g - mu)^2 / (2 sigma^2))``.

    Parameters
    ----------
    warmup_epochs : int, default=0
        Epochs of plain training first.
    **params : dict
        ``stats``, as in :func:`skrobust.compute_weights`.
    """

    uses = ("stats",)


@register_rule("small_loss")
class SmallLossRule(WeightingRule):
    """Keep the share of each batch with the smallest losses (co-teaching's selection).

    The share left out is ``forget_rate``, ramped up linearly over the first
    ``warmup_epochs`` epochs; with ``forget_rate="auto"`` it is the share of
    rows that the estimator's row flags (``label_issues_``) mark after each
    epoch, an estimate of the noise rate. The rule acts from the first epoch:
    the rate ramps up during the warm-up instead.

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
        return True

    def batch_weights(self, norms, losses, rows, epoch, state):
        if self._rate is None:
            self._rate = state.flag_rate()
        ramp = min(epoch / max(self.warmup_epochs, 1), 1.0)
        return small_loss_weights(losses, min(self._rate * ramp, 0.99)).to(norms.dtype)

    def end_epoch(self, epoch, state):
        if self.forget_rate == "auto":
            self._rate = state.flag_rate()


@register_rule("none")
class NoWeighting(WeightingRule):
    """Plain training: every sample has weight 1, through the same code path.

    It is never active, so every batch gets weight 1.

    Parameters
    ----------
    warmup_epochs : int, default=0
        Ignored: there is nothing to warm up.
    **params : dict
        None are used.
    """

    def is_active(self, epoch):
        return False

    def batch_weights(self, norms, losses, rows, epoch, state):
        return torch.ones_like(norms)
