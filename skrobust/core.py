"""The robust-training core shared by the estimators: the training step and its state.

:class:`RobustTrainingMixin` goes in front of a skorch net class
(``class RobustNetClassifier(RobustTrainingMixin, NeuralNetClassifier)``) and
gives it the reweighted training step:

1. the forward pass runs inside the per-sample gradient engine's capture
   (:mod:`skrobust.engines`);
2. :meth:`~RobustTrainingMixin.get_loss` (``training=True``) computes one loss
   and one gradient norm per sample, asks the weighting rule
   (:mod:`skrobust.rules`) for one weight per sample and returns the
   reweighted objective ``sum_i c_i loss_i``, ``c_i = w_i / B``;
3. the engine accumulates ``sum_i c_i grad_i`` into the parameters' ``.grad``
   (or autograd does, when a subclass or a mixin changes the objective), and
   skorch's optimizer step follows;
4. the step's rows, norms, weights and outputs go to the per-row state
   (:mod:`skrobust.row_state`), which folds them into the row memories at the
   end of the epoch, when the rule updates itself.

The estimator supplies what depends on the task: checking the module's output
(:meth:`_check_output`), the output in memory form (:meth:`_output_to_memory`,
:attr:`_memory_width`), the rows it flags (:meth:`_flag_rows`) and the default
module's sizes (:meth:`_default_module_sizes`).
"""

import contextlib
import inspect
import threading
import warnings
from types import MappingProxyType

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from skorch.utils import to_tensor

from ._validation import check_hyperparameters
from .collectives import gather_columns, process_group_info
from .data import BatchLoader
from .engines import check_per_sample_module, make_engine
from .memory import RowMemory
from .modules import MLP
from .row_state import RowState
from .rules import RULES, NoWeighting, make_rule

__all__ = ["RobustTrainingMixin"]

# Serialises seeding of torch's global generator while a user module is built.
_GLOBAL_RNG_LOCK = threading.Lock()

# Hyperparameters that only some rules read: a value set for a rule that ignores
# it is reported.
_RULE_PARAMETERS = ("stats", "alpha", "beta", "forget_rate")


class _Step:
    """The training step in progress: its rows and, once weighed, its results."""

    __slots__ = ("rows", "objective", "coefficients", "result")

    def __init__(self, rows):
        self.rows = rows
        self.objective = self.coefficients = self.result = None


class RobustTrainingMixin:
    """The gradient-norm reweighted training step, for a skorch net class.

    Put it first in the bases of an estimator built on a skorch net (see the
    module docstring for what the estimator supplies). It stores its
    hyperparameters as skorch stores its own, validates them once per fit,
    builds the per-sample gradient engine and the weighting rule, keeps the
    per-row memories (``norm_memory_`` and a task-specific output memory), and
    records the history columns ``weight_mean`` and ``weight_low``.
    """

    # skorch sets these in __init__; scikit-learn wants __init__ to store only
    # parameters. Class-level defaults keep skorch working until initialize().
    history_ = None
    initialized_ = False
    virtual_params_ = MappingProxyType({})

    #: Name of the fitted output memory (e.g. ``proba_memory_``).
    _output_memory_name = "output_memory_"

    # ------------------------------------------------------------ construction
    def _construct(self, net_init, robust_params, **net_params):
        """Run the skorch net's ``__init__`` and store the robust hyperparameters.

        skorch lets ``__init__`` store torch module instances (e.g. a criterion
        instance) only while the net has no ``initialized_``; the class-level
        default above hides that state, so it is recreated while constructing.
        """
        vars(self)["_constructing"] = True
        net_init(**net_params)
        for name, value in robust_params.items():
            setattr(self, name, value)
        for name in ("initialized_", "virtual_params_", "_constructing"):
            vars(self).pop(name, None)
        if vars(self).get("history_") is None:  # history=MyHistory() is kept, as in skorch
            vars(self).pop("history_", None)

    def __setattr__(self, name, attr):
        # Before and during construction, store as Python does (as skorch does
        # before its net has `initialized_`); afterwards, through skorch's checks.
        if vars(self).get("_constructing", "_params_to_validate" not in vars(self)):
            object.__setattr__(self, name, attr)
        else:
            super().__setattr__(name, attr)

    def set_params(self, **params):
        """Set parameters as skorch does; a new ``callbacks`` list is checked when fitting.

        skorch builds the callbacks as soon as ``callbacks`` is set; before the
        net is initialized, the value is only stored here and built by
        ``initialize()``, as scikit-learn asks (validation in ``fit``).

        Parameters
        ----------
        **params : dict
            Parameter names and values, as for skorch's ``set_params``.

        Returns
        -------
        self : object
        """
        if "callbacks" in params and not self.initialized_:
            self.callbacks = params.pop("callbacks")
            if not params:
                return self
        return super().set_params(**params)

    def _get_param_names(self):
        return [k for k in vars(self) if not k.endswith("_") and not k.startswith("_")]

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_engine", None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.non_deterministic = self.random_state is None
        return tags

    # ---------------------------------------------------------- initialization
    def initialize(self):
        """Check the hyperparameters, then initialize as skorch does.

        Returns
        -------
        self : object
        """
        check_hyperparameters(self)
        return super().initialize()

    def initialize_virtual_params(self):
        """skorch's first initialization step; here also the robust state.

        A mixin that re-implements :meth:`initialize` (e.g.
        :class:`skorch.hf.AccelerateMixin`) still calls this first, so the
        seeds and per-row state are set up before the module is built.
        """
        super().initialize_virtual_params()
        self._draw_seeds()
        self._engine = None
        for name in ("norm_memory_", self._output_memory_name, "_row_state", "_rule"):
            vars(self).pop(name, None)

    def _draw_seeds(self):
        seeds = np.random.SeedSequence(
            check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        ).generate_state(2)
        self._module_seed = int(seeds[0])
        self._shuffle_generator = torch.Generator().manual_seed(int(seeds[1]))

    def initialize_module(self):
        """Build the module: the default MLP sized from the data, seeded by ``random_state``.

        Returns
        -------
        self : object
        """
        if not hasattr(self, "_module_seed"):
            self._draw_seeds()
        kwargs = self.get_params_for("module")
        module = self.module
        if isinstance(module, type) and issubclass(module, MLP):
            kwargs = {**self._default_module_sizes(kwargs), **kwargs}
            kwargs.setdefault("random_state", self._module_seed)
            self.module_ = module(**kwargs)
        else:
            with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._module_seed)
                self.module_ = self.initialized_instance(module, kwargs)
        check_per_sample_module(self.module_)
        return self

    def initialize_criterion(self):
        """Build the criterion with ``reduction="none"`` (one loss per sample).

        Returns
        -------
        self : object
        """
        kwargs = self.get_params_for("criterion")
        if isinstance(self.criterion, type):
            kwargs.setdefault("reduction", "none")
        criterion = self.initialized_instance(self.criterion, kwargs)
        if getattr(criterion, "reduction", "none") != "none":
            raise ValueError(
                f"The criterion must return one loss per sample, but it has "
                f"reduction={criterion.reduction!r}. Pass the criterion class (it is "
                "then built with reduction='none'), or an instance built with "
                "reduction='none'."
            )
        self.criterion_ = criterion
        return self

    def get_params_for_optimizer(self, prefix, named_parameters):
        """As skorch does; Adam and AdamW get ``fused=True`` unless the user chose.

        torch's default Adam on CPU updates each parameter tensor with about
        ten separate operations; the fused implementation does it in one
        kernel per tensor, the same update. It applies when the optimizer is
        ``torch.optim.Adam`` or ``torch.optim.AdamW``, none of ``fused``,
        ``foreach`` and ``differentiable`` is set (``optimizer__fused=False``
        restores torch's default), and every parameter is a floating-point
        tensor on the CPU or a CUDA device.

        Parameters
        ----------
        prefix : str
            The optimizer's name (``"optimizer"``).
        named_parameters : iterable of (str, torch.nn.Parameter)
            The parameters to optimize.

        Returns
        -------
        args : tuple
            The parameter groups.
        kwargs : dict
            The optimizer's other arguments.
        """
        named_parameters = list(named_parameters)
        args, kwargs = super().get_params_for_optimizer(prefix, named_parameters)
        optimizer = getattr(self, prefix, None)
        if (optimizer in (torch.optim.Adam, torch.optim.AdamW)
                and not {"fused", "foreach", "differentiable"} & set(kwargs)
                and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                        for _, p in named_parameters)):
            kwargs["fused"] = True
        return args, kwargs

    # -------------------------------------------------------------------- data
    def get_iterator(self, dataset, training=False):
        """Batch iterator; shuffles training data by default, seeded by ``random_state``.

        Parameters
        ----------
        dataset : torch Dataset
            The data to iterate over.
        training : bool, default=False
            Whether the iterator serves training.

        Returns
        -------
        iterator : iterable of batches
        """
        if not training:
            return super().get_iterator(dataset, training=False)
        kwargs = self.get_params_for("iterator_train")
        kwargs.setdefault("shuffle", True)
        kwargs.setdefault("batch_size", self.batch_size)
        if kwargs["batch_size"] == -1:
            kwargs["batch_size"] = len(dataset)
        if kwargs["shuffle"] and "generator" not in kwargs:
            kwargs["generator"] = self._shuffle_generator
        return self.iterator_train(dataset, **kwargs)

    def check_data(self, X, y):
        """Do nothing: the data is validated in ``fit`` already.

        Parameters
        ----------
        X : RowIndexedDataset
            The training data, as built by ``fit``.
        y : array-like or None
            The encoded targets.
        """

    def _train(self, dataset, y, *, reset, routing_method, sample_weight, fit_params):
        """Train on validated data: (re)initialize if asked, then skorch's partial_fit."""
        if reset:
            self.initialize()
        else:
            check_hyperparameters(self)
        self._fit_sample_weight = sample_weight
        self._fit_params = fit_params
        try:
            # skorch's NeuralNet.partial_fit: the data is validated already.
            return super().partial_fit(dataset, y, _routing_method=routing_method,
                                       **fit_params)
        finally:
            self._fit_sample_weight = self._fit_params = None

    # ------------------------------------------------------ epoch bookkeeping
    def on_train_begin(self, net, X=None, y=None, **kwargs):
        """Build the rule; start or keep the row memories.

        It runs after every callback's ``on_train_begin`` and after the module's
        output was checked on two rows (see :meth:`notify`): callbacks such as
        :class:`skorch.callbacks.InputShapeSetter` may resize the module first.

        The memories are kept across ``partial_fit`` calls and warm-started fits
        on data with the same number of rows, and started anew otherwise.

        Parameters
        ----------
        net : object
            This estimator (skorch passes the net to its callbacks).
        X : RowIndexedDataset
            The training data.
        y : array-like or None, default=None
            The encoded targets.
        **kwargs : dict
            Passed on to skorch.
        """
        super().on_train_begin(net, X=X, y=y, **kwargs)
        self._check_monitors()
        # A new rule each time: what it selects comes from the memories, which are kept.
        self._rule = make_rule(self)
        self._check_rule_inputs(self._rule)
        self._warn_unused_parameters(self._rule)
        self._start_memories(X)
        self._row_state = RowState(
            X.y, self.norm_memory_, getattr(self, self._output_memory_name),
            to_memory=self._output_to_memory, flag_rows=self._flag_rows)
        self._rule.begin_fit(self, X)

    def _start_memories(self, X):
        """Empty row memories for ``X``, unless those of an earlier fit on as many rows."""
        memory = getattr(self, "norm_memory_", None)
        if memory is None or len(memory) != len(X):
            self.norm_memory_ = RowMemory(len(X))
            setattr(self, self._output_memory_name,
                    RowMemory(len(X), width=self._memory_width))

    def _check_monitors(self):
        """Refuse callbacks that monitor validation scores when there is no validation split."""
        if self.train_split is not None:
            return
        for name, callback in self.callbacks_:
            monitor = getattr(callback, "monitor", None)
            if isinstance(monitor, str) and monitor.startswith("valid_"):
                raise ValueError(
                    f"The callback {name!r} monitors {monitor!r}, a score of the internal "
                    f"validation split, but train_split=None ({type(self).__name__}'s "
                    "default; skorch's is ValidSplit(5)): no validation score is recorded. "
                    "Monitor the training loss instead (e.g. "
                    "EarlyStopping(monitor='train_loss')), or set a split, e.g. "
                    "train_split=skorch.dataset.ValidSplit(5)."
                )

    def notify(self, method_name, **cb_kwargs):
        """As skorch does, except that ``on_train_begin`` reaches the callbacks first.

        The callbacks may still change the module there (e.g.
        :class:`skorch.callbacks.InputShapeSetter` resizes it); the estimator's
        own ``on_train_begin`` then sets up the rule and the memories for the
        module that trains, and the module's output is checked on two rows.

        Parameters
        ----------
        method_name : str
            The callback method to call.
        **cb_kwargs : dict
            Passed on to the callbacks.

        Returns
        -------
        None
        """
        if method_name != "on_train_begin":
            return super().notify(method_name, **cb_kwargs)
        # The memories exist before the callbacks run: e.g. LoadInitState restores them.
        self._start_memories(cb_kwargs["X"])
        for _, callback in self.callbacks_:
            callback.on_train_begin(self, **cb_kwargs)
        self._dry_run(cb_kwargs["X"].X[:2], getattr(self, "_fit_params", None) or {})
        self.on_train_begin(self, **cb_kwargs)
        return None

    def _dry_run(self, sample, fit_params):
        """A forward pass on two rows: a wrong output fails before any training."""
        self._set_training(False)
        param = next(self.module_.parameters(), None)
        if param is not None:
            sample = sample.to(param.device)
        with torch.no_grad():
            self._check_output(self.infer(sample, **fit_params))

    def _check_rule_inputs(self, rule):
        needs_rows = rule.needs_rows or getattr(self, "_fit_sample_weight", None) is not None
        iterator = self.iterator_train
        if needs_rows and not (isinstance(iterator, type) and issubclass(iterator, BatchLoader)):
            raise ValueError(
                f"sample_weight and weighting={rule.name!r} need each batch's row indices, "
                "which only the default iterator_train (skrobust.data.BatchLoader) "
                "provides."
            )

    def _warn_unused_parameters(self, rule):
        defaults = inspect.signature(type(self).__init__).parameters
        for name in _RULE_PARAMETERS:
            default = defaults[name].default if name in defaults else None
            value = getattr(self, name)
            if name in rule.uses or value == default or value is default:
                continue
            users = tuple(k for k, cls in RULES.items() if name in cls.uses)
            warnings.warn(
                f"{name}={value!r} has no effect with weighting={rule.name!r}; it is read "
                f"by weighting in {users}.", UserWarning, stacklevel=2)
        last_epoch = len(self.history) + self.max_epochs
        if (self.max_epochs > 0 and not isinstance(rule, NoWeighting)
                and not rule.is_active(last_epoch)):
            warnings.warn(
                f"weighting={rule.name!r} never acts in this fit: its warm-up "
                f"(warmup_epochs={self.warmup_epochs}) outlasts the fit's last epoch "
                f"({last_epoch}). Lower warmup_epochs or raise max_epochs.",
                UserWarning, stacklevel=2)

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        """Start the epoch's record; or end the fit here when the rule says so.

        Parameters
        ----------
        net : object
            This estimator (skorch passes the net to its callbacks).
        dataset_train, dataset_valid : Dataset or None, default=None
            The epoch's training and validation data.
        **kwargs : dict
            Passed on to skorch.
        """
        if self._rule.stops_before(len(self.history) + 1):
            # skorch ends a fit on KeyboardInterrupt (as its EarlyStopping does) and
            # runs on_train_end; raised before the epoch starts, the history keeps
            # only complete epochs.
            raise KeyboardInterrupt
        super().on_epoch_begin(net, dataset_train=dataset_train,
                               dataset_valid=dataset_valid, **kwargs)
        self._row_state.start_epoch()

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        """Fold the epoch into the memories and the history; check it was finite; update the rule.

        Parameters
        ----------
        net : object
            This estimator (skorch passes the net to its callbacks).
        dataset_train, dataset_valid : Dataset or None, default=None
            The epoch's training and validation data.
        **kwargs : dict
            Passed on to skorch.
        """
        super().on_epoch_end(net, dataset_train=dataset_train,
                             dataset_valid=dataset_valid, **kwargs)
        summary = self._row_state.end_epoch()
        for key, value in (summary or {}).items():
            self.history.record(key, value)
        self._check_finite()
        self._rule.end_epoch(len(self.history), self._row_state)

    def _check_finite(self):
        losses = [b["train_loss"] for b in self.history[-1]["batches"] if "train_loss" in b]
        loss = float(np.mean(losses)) if losses else 0.0
        if np.isfinite(losses).all() and all(
                bool(torch.isfinite(p).all()) for p in self.module_.parameters()):
            return
        raise FloatingPointError(
            f"Training diverged in epoch {len(self.history)}: the training loss is "
            f"{loss} and/or the module's parameters are no longer finite. The usual "
            f"cause is a learning rate that is too high (lr={self.lr}); also check "
            "that the features are scaled (e.g. StandardScaler in a Pipeline). The "
            "model was left as it was at the failure and should not be used."
        )

    # ------------------------------------------------------------ train step
    def _current_engine(self):
        engine = getattr(self, "_engine", None)
        if engine is None or engine.module is not self.module_:
            engine = self._engine = make_engine(self.module_, self.grad_engine)
        return engine

    @property
    def grad_engine_(self):
        """Name of the per-sample gradient engine in use."""
        check_is_fitted(self, "module_")
        return self._current_engine().name

    def infer(self, x, **fit_params):
        """The module's forward pass; inside a training step, within the engine's capture.

        Parameters
        ----------
        x : input data
            A batch of features.
        **fit_params : dict
            Passed on to the module's ``forward``.

        Returns
        -------
        y_pred : torch.Tensor
        """
        if getattr(self, "_step", None) is None:
            return super().infer(x, **fit_params)
        with self._current_engine().capture():
            return super().infer(x, **fit_params)

    def get_per_sample_loss(self, y_pred, y_true, X=None, training=False):
        """One loss per sample, from the criterion built with ``reduction="none"``.

        Parameters
        ----------
        y_pred : torch.Tensor of shape (batch_size, ...)
            The module's output.
        y_true : torch.Tensor of shape (batch_size, ...)
            Targets.
        X : torch.Tensor, default=None
            The batch's features (unused; for subclasses).
        training : bool, default=False
            Whether this is a training step.

        Returns
        -------
        losses : torch.Tensor of shape (batch_size,)
        """
        y_true = to_tensor(y_true, device=self.device)
        losses = self.criterion_(y_pred, y_true)
        if losses.dim() != 1 or losses.shape[0] != y_true.shape[0]:
            raise ValueError(
                f"The criterion returned shape {tuple(losses.shape)}; it must return one "
                f"loss per sample, shape ({y_true.shape[0]},). Use reduction='none'."
            )
        return losses

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The mean per-sample loss or, in a training step, the reweighted objective.

        In a training step (``training=True``) this computes each sample's
        gradient norm, the rule's weights ``w_i`` and returns
        ``sum_i c_i * loss_i`` with detached coefficients ``c_i = w_i / B``
        (times the user's ``sample_weight``): its gradient is the update
        ``(1/B) sum_i w_i grad_i``. Under data parallelism the norms of all
        processes are gathered first (:func:`skrobust.distributed.gather_columns`),
        so the weights are those of the global batch. A subclass may add terms
        to what this returns (e.g. a penalty): the training step then
        backpropagates the whole objective.

        Parameters
        ----------
        y_pred : torch.Tensor of shape (batch_size, ...)
            The module's output.
        y_true : torch.Tensor of shape (batch_size, ...)
            Targets.
        X : torch.Tensor, default=None
            The batch's features.
        training : bool, default=False
            Whether this is a training step.

        Returns
        -------
        loss : torch.Tensor
            A scalar.
        """
        losses = self.get_per_sample_loss(y_pred, y_true, X=X, training=training)
        step = getattr(self, "_step", None)
        if not training or step is None or step.objective is not None:
            return losses.mean()
        return self._weigh(step, y_pred, losses)

    def _weigh(self, step, y_pred, losses):
        """Norms, weights and the reweighted objective of the step's batch."""
        norms = self._current_engine().norms(losses, retain_graph=True)
        world_size, _ = process_group_info()
        if world_size == 1:
            return self._weigh_local(step, y_pred, losses, norms)
        columns = [norms, losses, y_pred.reshape(len(losses), -1)]
        if step.rows is not None:
            columns.append(step.rows)
        gathered, local = gather_columns(columns)
        norms, all_losses, outputs = gathered[:3]
        rows = gathered[3].cpu() if step.rows is not None else None
        epoch = len(self.history)
        if self._rule.is_active(epoch):
            weights = self._rule.batch_weights(norms, all_losses, rows, epoch, self._row_state)
        else:
            weights = torch.ones_like(norms)
        coefficients = self._coefficients(weights, rows)
        step.coefficients = coefficients[local]
        step.result = {
            "loss": (coefficients * all_losses).sum(), "norms": norms, "weights": weights,
            "outputs": outputs.reshape(len(norms), *y_pred.shape[1:]), "rows": rows,
            "local": local,
        }
        step.objective = (step.coefficients.detach() * world_size * losses).sum()
        return step.objective

    def _weigh_local(self, step, y_pred, losses, norms):
        """:meth:`_weigh` in a single process: nothing to gather, one objective."""
        rows = step.rows.cpu() if step.rows is not None else None
        norms = norms.detach()
        all_losses = losses.detach()
        epoch = len(self.history)
        if self._rule.is_active(epoch):
            weights = self._rule.batch_weights(norms, all_losses, rows, epoch, self._row_state)
        else:
            weights = torch.ones_like(norms)
        step.coefficients = coefficients = self._coefficients(weights, rows).detach()
        step.objective = objective = (coefficients * losses).sum()
        step.result = {
            "loss": objective.detach(), "norms": norms, "weights": weights,
            "outputs": y_pred.detach(), "rows": rows, "local": slice(0, len(norms)),
        }
        return objective

    def _coefficients(self, weights, rows):
        """``c_i`` of the update ``sum_i c_i grad_i``: robust times user weights, over B."""
        coefficients = weights
        user_weights = getattr(self, "_fit_sample_weight", None)
        if user_weights is not None:
            coefficients = coefficients * user_weights[rows].to(weights.device)
        if self.normalize_weights:
            mean = coefficients.mean()
            coefficients = coefficients / torch.where(mean > 0, mean, torch.ones_like(mean))
        return coefficients / len(weights)

    @contextlib.contextmanager
    def _open_step(self, batch):
        """The training step of ``batch`` in progress; the engine's records dropped after."""
        self._step = step = _Step(getattr(batch, "rows", None))
        try:
            yield step
        finally:
            self._current_engine().release()
            self._step = None

    def train_step_single(self, batch, **fit_params):
        """Forward pass, reweighted objective, and its gradient.

        Parameters
        ----------
        batch : IndexedBatch or (X, y) tuple
            A batch from the training iterator.
        **fit_params : dict
            Passed on to the module's ``forward``.

        Returns
        -------
        step : dict
            ``loss`` (the objective), ``y_pred``, and the batch's ``norms`` and
            robust ``weights``.
        """
        step = getattr(self, "_step", None)
        if step is None:  # called on its own, not through train_step
            with self._open_step(batch):
                return self.train_step_single(batch, **fit_params)
        self._set_training(True)
        Xi, yi = batch
        y_pred = self.infer(Xi, **fit_params)
        self._check_output(y_pred)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        if step.objective is not None and loss is step.objective:
            # The objective as computed: the engine's exact, cheaper update.
            self._current_engine().backward(step.coefficients)
        else:
            loss.backward()
        out = {"loss": loss, "y_pred": y_pred}
        if step.result is not None:
            local = step.result["local"]
            out.update(norms=step.result["norms"][local], weights=step.result["weights"][local])
        return out

    def train_step(self, batch, **fit_params):
        """skorch's optimizer step around the reweighted step; then its bookkeeping.

        Parameters
        ----------
        batch : IndexedBatch or (X, y) tuple
            A batch from the training iterator.
        **fit_params : dict
            Passed on to the module's ``forward``.

        Returns
        -------
        step : dict
            ``loss`` (the reweighted objective of the batch), ``y_pred``, and the
            batch's ``norms`` and robust ``weights``.
        """
        with self._open_step(batch) as step:
            out = super().train_step(batch, **fit_params)
        result = step.result
        if result is None:
            raise RuntimeError(
                f"{type(self).__name__}.train_step_single did not call "
                "get_loss(..., training=True), which computes the robust weights; "
                "a train_step_single that replaces the estimator's must call it and "
                "backpropagate its result."
            )
        self._row_state.record(result["rows"], result["norms"], result["weights"],
                               result["outputs"])
        local = result["local"]
        # The loss as returned by get_loss, with its graph (skorch passes it to
        # on_batch_end); under data parallelism its value is the global batch's.
        loss = out["loss"] + (result["loss"] - step.objective).detach()
        out.update(loss=loss, norms=result["norms"][local], weights=result["weights"][local])
        return out

    # ------------------------------------------------------ per-row results
    @property
    def _memory_width(self):
        """Width of a row's output in memory form (None: a scalar)."""
        raise NotImplementedError

    def _check_output(self, y_pred):
        """Raise a ValueError if the module's output has the wrong shape."""
        raise NotImplementedError

    def _output_to_memory(self, outputs):
        """A batch of outputs in the form kept by the output memory."""
        raise NotImplementedError

    def _flag_rows(self, state):
        """Boolean mask of the training rows judged wrongly labelled."""
        raise NotImplementedError

    def _default_module_sizes(self, module_kwargs):
        """Arguments that size the default MLP from the data."""
        raise NotImplementedError

