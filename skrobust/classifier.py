"""RobustNetClassifier: skorch's NeuralNetClassifier with gradient-norm reweighting."""

import threading
from types import MappingProxyType

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch import NeuralNetClassifier
from skorch.callbacks import EpochScoring, EpochTimer, PassthroughScoring, PrintLog
from skorch.utils import to_tensor

from ._validation import check_hyperparameters, check_sample_weight, check_targets
from .data import BatchLoader, IndexedBatch, RowIndexedDataset
from .engines import check_per_sample_module, make_engine
from .losses import ForwardCorrectedCrossEntropy, estimate_transition_matrix
from .memory import RowMemory, standardize_batches
from .modules import MLP
from .selection import flag_noisy_rows
from .weighting import compute_weights, small_loss_weights

__all__ = ["RobustNetClassifier"]

# Serialises seeding of torch's global generator while a user module is built.
_GLOBAL_RNG_LOCK = threading.Lock()

# Below this weight a sample counts as down-weighted in the history.
_LOW_WEIGHT = 0.5


def _softmax(logits):
    return torch.softmax(logits, dim=-1)


def _valid_accuracy(net, X, y):
    """Accuracy on the internal validation split, in encoded label space."""
    proba = NeuralNetClassifier.predict_proba(net, X)
    return float(np.mean(proba.argmax(1) == np.asarray(y)))


class RobustNetClassifier(NeuralNetClassifier):
    """Neural network classifier that down-weights samples with outlying gradients.

    At every training step, for each sample ``i`` of the batch, the classifier
    computes ``g_i``, the L2 norm of that sample's loss gradient over all
    trainable parameters; models the batch's norms by a centre ``mu`` and a
    spread ``sigma``; turns each norm into a weight ``w_i`` (see
    :func:`~skrobust.compute_weights`); and updates the parameters with
    ``(1/B) sum_i w_i grad_i`` through the configured torch optimizer. Samples
    whose labels are wrong tend to have outlying gradient norms, so they
    contribute less to the model.

    It is a :class:`skorch.NeuralNetClassifier`: every skorch parameter and
    callback works, plus the behaviour of a scikit-learn classifier (numpy,
    pandas and sparse inputs, any label type, pipelines, grid searches).

    Parameters
    ----------
    module : torch.nn.Module class or instance, default=MLP
        The network; it must return one logit per class. The default
        :class:`~skrobust.modules.MLP` takes its input and output sizes from the
        data; set its other arguments with ``module__hidden_layer_sizes``,
        ``module__activation`` and ``module__dropout``. BatchNorm layers are
        refused (they mix samples; use LayerNorm).
    weighting : {"adaptive", "truncate", "soft", "small_loss", "none"}, \
            default="adaptive"
        The weighting rule. The seed's batch rules: ``"truncate"`` zeroes
        samples outside ``[mu - beta*sigma, mu + alpha*sigma]``; ``"soft"``
        gives ``exp(-(g - mu)^2 / (2 sigma^2))``. ``"adaptive"`` judges rows,
        not batches: it leaves out of training the rows whose running-average
        prediction confidently names another class *and* whose running-average
        standardised gradient norm is above the batch median (see
        :func:`skrobust.selection.flag_noisy_rows`); the thresholds come from
        the data, so it adapts to the noise rate and flags almost nothing on
        clean labels. ``"small_loss"`` keeps the ``1 - forget_rate`` share of
        each batch with the smallest losses. ``"none"`` trains plainly through
        the same code path.
    stats : {"mean_std", "median_iqr"}, default="mean_std"
        Centre and spread of a batch's norms for ``"truncate"`` and ``"soft"``:
        mean and standard deviation (``ddof=1``), or median and ``IQR / 1.349``.
    alpha : float, default=1.0
        Upper cut of ``"truncate"``, in units of sigma above mu.
    beta : float, default=inf
        Lower cut of ``"truncate"``, in units of sigma below mu. The default
        keeps samples with small gradients (well-fitted samples).
    warmup_epochs : int, default=5
        Epochs of plain training before reweighting starts: early on every
        gradient is large and the norms do not yet separate noisy rows. With
        ``"adaptive"``, the first rows are left out after this many epochs, and
        the selection is renewed after every epoch.
    normalize_weights : bool, default=False
        Divide the weights by their batch mean, so the step size does not shrink
        when samples are dropped.
    forget_rate : float or "auto", default="auto"
        For ``weighting="small_loss"``: the share of each batch, the samples with
        the largest losses, left out of the update (co-teaching's selection).
        It ramps up linearly over the first ``warmup_epochs`` epochs. ``"auto"``
        uses the share of rows that :attr:`label_issues_` currently flags, an
        estimate of the noise rate.
    loss_correction : {None, "forward"}, default=None
        ``"forward"``: after ``warmup_epochs`` epochs, estimate the noise
        transition matrix ``T`` from the network's running-average predictions
        (anchor points, see :func:`skrobust.losses.estimate_transition_matrix`)
        and train from then on with the forward-corrected cross entropy
        ``-log((softmax(z) @ T)_y)``. Needs the default cross-entropy criterion
        and ``warmup_epochs >= 1``. Composes with any ``weighting``.
    grad_engine : {"auto", "ghost", "generic"}, default="auto"
        The per-sample gradient engine (see :mod:`skrobust.engines`). ``"auto"``
        uses the fast closed form for Linear/LayerNorm/Embedding networks, the
        hybrid engine (closed forms plus per-layer ``torch.func``) when other
        layers own their parameters, and the exact generic engine otherwise.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, dropout masks of the default module and
        shuffling, without touching torch's global generator.
    criterion : torch criterion class or instance, default=torch.nn.CrossEntropyLoss
        Loss on the logits. It is built with ``reduction="none"``: it must return
        one loss per sample (all torch losses and :mod:`skrobust.losses` do).
    optimizer : torch optimizer class, default=torch.optim.Adam
        Any torch optimizer; it receives the reweighted gradient.
    lr : float, default=1e-3
        Learning rate.
    max_epochs : int, default=50
        Number of epochs.
    batch_size : int, default=128
        Batch size; the batch is also the population whose norms are compared.
    train_split : callable or None, default=None
        skorch's internal validation split. ``None`` trains on every row (as
        ``MLPClassifier`` does) and gives every row a noise score; e.g.
        ``skorch.dataset.ValidSplit(5, stratified=True)`` holds out 20%.
    iterator_train, iterator_valid : class, default=BatchLoader
        Batch iterators; the default slices in-memory tensors and gives each
        batch its row indices.
    dataset : class, default=RowIndexedDataset
        Kept for compatibility with skorch: ``fit``, ``partial_fit`` and the
        prediction methods always hold the validated data in a
        :class:`~skrobust.data.RowIndexedDataset`, so another value has no
        effect.
    **kwargs
        Any other parameter of :class:`skorch.NeuralNet` (``device``,
        ``callbacks``, ``verbose``, ``module__*``, ``optimizer__*``, ...).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names, when ``X`` was a DataFrame with string column names.
    noise_scores_ : ndarray of shape (n_samples,)
        One score per row of the ``X`` given to ``fit``, in ``[0, sqrt(2)]``:
        ``||p_i - e_{y_i}||``, the norm of the cross-entropy gradient with
        respect to the logits, at the row's prediction averaged over the
        epochs (``proba_memory_``). Higher means more likely mislabeled. NaN
        for rows held out by ``train_split``. The full-parameter gradient norms
        are in ``norm_memory_``; they rank flipped rows a little worse, as they
        also grow with the size of each row's activations.
    label_issues_ : ndarray of shape (n_samples,), dtype bool
        Rows judged mislabeled at the end of training (the rows that
        ``weighting="adaptive"`` leaves out), whatever the weighting mode.
    transition_matrix_ : ndarray of shape (n_classes, n_classes)
        With ``loss_correction="forward"``: the estimated ``T[i, j] =
        P(given label j | true class i)``.
    norm_memory_, proba_memory_ : skrobust.memory.RowMemory
        Per-row running averages of the standardised gradient norm and of the
        predicted probabilities; kept by ``partial_fit`` and warm starts.
    grad_engine_ : str
        The engine used: ``"ghost"``, ``"hybrid"`` or ``"generic"``.
    module_, criterion_, optimizer_, history_
        As in skorch. ``history_`` has two more epoch columns: ``weight_mean``,
        the mean weight of the epoch's training samples, and ``weight_low``,
        the fraction of them with a weight below 0.5.

    See Also
    --------
    skrobust.compute_weights : The weighting rule, as a pure function.
    skrobust.per_sample_grad_norms : The per-sample gradient norms.

    Notes
    -----
    The per-sample losses come from one forward pass, which also gives the
    update, so Dropout masks agree between norms and update. Weights are
    constants in the update (no gradient flows through them). User
    ``sample_weight`` multiplies the robust weights.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skrobust import RobustNetClassifier
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> clf = make_pipeline(StandardScaler(),
    ...                     RobustNetClassifier(max_epochs=5, verbose=0, random_state=0))
    >>> clf.fit(X, y).score(X, y) > 0.9
    True
    """

    # skorch sets these in __init__; scikit-learn wants __init__ to store only
    # parameters. Class-level defaults keep skorch working until initialize().
    history_ = None
    initialized_ = False
    virtual_params_ = MappingProxyType({})

    # Set on subclasses where a class ahead of RobustNetClassifier in the MRO
    # (e.g. skorch.hf.AccelerateMixin) re-implements initialize() or
    # train_step_single() without calling ours; see __init_subclass__.
    _foreign_initialize = False
    _foreign_train_step = False
    # The batch of a train step run by such a train_step_single, while it runs.
    _foreign_batch = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)

        def foreign(name):
            owner = next(k for k in cls.__mro__ if name in vars(k))
            return not issubclass(owner, RobustNetClassifier)

        cls._foreign_initialize = foreign("initialize")
        cls._foreign_train_step = foreign("train_step_single")

    def __init__(
        self,
        module=MLP,
        *,
        weighting="adaptive",
        stats="mean_std",
        alpha=1.0,
        beta=float("inf"),
        warmup_epochs=5,
        normalize_weights=False,
        forget_rate="auto",
        loss_correction=None,
        grad_engine="auto",
        random_state=None,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        max_epochs=50,
        batch_size=128,
        train_split=None,
        iterator_train=BatchLoader,
        iterator_valid=BatchLoader,
        dataset=RowIndexedDataset,
        **kwargs,
    ):
        vars(self)["_constructing"] = True
        super().__init__(
            module,
            criterion=criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_split=train_split,
            iterator_train=iterator_train,
            iterator_valid=iterator_valid,
            dataset=dataset,
            **kwargs,
        )
        self.weighting = weighting
        self.stats = stats
        self.alpha = alpha
        self.beta = beta
        self.warmup_epochs = warmup_epochs
        self.normalize_weights = normalize_weights
        self.forget_rate = forget_rate
        self.loss_correction = loss_correction
        self.grad_engine = grad_engine
        self.random_state = random_state
        for name in ("history_", "initialized_", "virtual_params_", "_constructing"):
            vars(self).pop(name, None)

    def __setattr__(self, name, attr):
        # skorch lets __init__ store torch module instances (e.g. a criterion
        # instance) only while the net has no `initialized_`; the class-level
        # default above hides that state, so recreate it during construction.
        if vars(self).get("_constructing"):
            object.__setattr__(self, name, attr)
        else:
            super().__setattr__(name, attr)

    # ------------------------------------------------------------------ params
    def _get_param_names(self):
        return [k for k in vars(self) if not k.endswith("_") and not k.startswith("_")]

    @property
    def _default_callbacks(self):
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("valid_acc", EpochScoring(_valid_accuracy, name="valid_acc",
                                       lower_is_better=False)),
            ("print_log", PrintLog()),
        ]

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_engine", None)
        return state

    # -------------------------------------------------------------- initialize
    def initialize(self):
        """Initialize module, criterion, optimizer, history and robust state.

        Returns
        -------
        self : RobustNetClassifier
        """
        self._initialize_robust_state()
        super().initialize()
        return self

    def _initialize_robust_state(self):
        check_hyperparameters(self)
        seeds = np.random.SeedSequence(
            check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        ).generate_state(2)
        self._module_seed = int(seeds[0])
        self._shuffle_generator = torch.Generator().manual_seed(int(seeds[1]))
        self._engine = None
        self._row_keep = None
        self._noise_rate = 0.0
        for name in ("norm_memory_", "proba_memory_", "transition_matrix_",
                     "_corrected_criterion"):
            vars(self).pop(name, None)

    def initialize_virtual_params(self):
        """skorch's first initialization step; here also the robust state, for mixins.

        A mixin that re-implements :meth:`initialize` without calling ours (e.g.
        :class:`skorch.hf.AccelerateMixin`) still calls this first, so the seeds
        and per-row state are set up before the module is built.
        """
        super().initialize_virtual_params()
        if self._foreign_initialize:
            self._initialize_robust_state()

    def initialize_module(self):
        """Build the module, sizing the default MLP from the data.

        Returns
        -------
        self : RobustNetClassifier
        """
        kwargs = self.get_params_for("module")
        module = self.module
        if isinstance(module, type) and issubclass(module, MLP):
            if not hasattr(self, "n_features_in_") and "n_features" not in kwargs:
                raise ValueError(
                    "The default MLP is sized from the data: call fit(X, y) instead of "
                    "initialize(), or pass module__n_features and module__n_classes."
                )
            kwargs.setdefault("n_features", getattr(self, "n_features_in_", None))
            kwargs.setdefault("n_classes", len(self.classes_))
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
        self : RobustNetClassifier
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

    # -------------------------------------------------------------------- data
    def _validate_features(self, X, reset):
        X = validate_data(
            self, X, reset=reset, accept_sparse=("csr", "csc", "coo"),
            dtype=(np.float64, np.float32), ensure_min_samples=1,
        )
        if hasattr(X, "toarray"):
            X = X.toarray()
        return torch.as_tensor(np.asarray(X, dtype=np.float32))

    def _prepare_fit_data(self, X, y, sample_weight, reset, classes=None):
        check_hyperparameters(self)
        if y is None:
            raise ValueError(
                "RobustNetClassifier requires y to be passed, but the target y is None.")
        y = check_targets(y)
        Xt = self._validate_features(X, reset=reset)
        if reset and len(Xt) < 2:
            raise ValueError(
                f"Got n_samples={len(Xt)}; training needs at least 2 samples of 2 classes.")
        if len(y) != len(Xt):
            raise ValueError(f"X has {len(Xt)} rows but y has {len(y)} labels.")
        if reset:
            labels = classes if classes is not None else self.classes
            labels = np.unique(y) if labels is None or not len(labels) else np.asarray(labels)
            if len(labels) < 2:
                raise ValueError(
                    f"y has a single class ({labels[0]!r}); a classifier needs samples of "
                    "at least 2 classes."
                )
            self.classes_inferred_ = labels
        y_enc = self._encode(y)
        self._fit_sample_weight = check_sample_weight(sample_weight, len(y))
        needs_rows = self._fit_sample_weight is not None or self.weighting == "adaptive"
        if needs_rows and not (isinstance(self.iterator_train, type)
                               and issubclass(self.iterator_train, BatchLoader)):
            raise ValueError(
                "sample_weight and weighting='adaptive' need each batch's row indices, "
                "which only the default iterator_train (skrobust.data.BatchLoader) "
                "provides."
            )
        return RowIndexedDataset(Xt, torch.as_tensor(y_enc)), y_enc

    def _encode(self, y):
        classes = np.asarray(self.classes_)
        sorter = np.argsort(classes, kind="stable")
        pos = np.searchsorted(classes, y, sorter=sorter).clip(0, len(classes) - 1)
        encoded = sorter[pos]
        unknown = classes[encoded] != y
        if np.any(unknown):
            raise ValueError(
                f"y contains labels not seen in the classes of the first fit: "
                f"{np.unique(y[unknown])[:5].tolist()}; known classes: "
                f"{classes.tolist()}."
            )
        return encoded.astype(np.int64)

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

    def _get_predict_nonlinearity(self):
        if self.predict_nonlinearity == "auto":
            return _softmax
        return super()._get_predict_nonlinearity()

    def check_data(self, X, y):
        """Do nothing: the data is validated in :meth:`fit` already.

        Parameters
        ----------
        X : RowIndexedDataset
            The training data, as built by :meth:`fit`.
        y : array-like or None
            The encoded targets.
        """

    # --------------------------------------------------------------------- fit
    def fit(self, X, y, sample_weight=None, **fit_params):
        """Fit the network to noisy labels.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Training features: numeric numpy arrays, pandas DataFrames or scipy
            sparse matrices. They are copied to float32, never modified.
        y : array-like of shape (n_samples,)
            Labels of any type (strings, integers, ...).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; they multiply the robust weights.
        **fit_params : dict
            Passed on to the module's ``forward``, as in skorch.

        Returns
        -------
        self : RobustNetClassifier
        """
        reset = not (self.warm_start and self.initialized_)
        dataset, y_enc = self._prepare_fit_data(X, y, sample_weight, reset=reset)
        if reset:
            self.initialize()
        try:
            # NeuralNet.partial_fit, not ours: the data is validated already.
            return super().partial_fit(dataset, y_enc, _routing_method="fit", **fit_params)
        finally:
            self._fit_sample_weight = None

    def partial_fit(self, X, y, classes=None, sample_weight=None, **fit_params):
        """Continue training on ``(X, y)`` for ``max_epochs`` epochs.

        The first call initializes the network; later calls keep its parameters,
        optimizer state and per-row noise scores (as long as the number of rows
        stays the same).

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Training features.
        y : array-like of shape (n_samples,)
            Labels.
        classes : array-like of shape (n_classes,), default=None
            All labels that will ever appear; needed on the first call only if
            the first ``y`` misses some classes.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; they multiply the robust weights.
        **fit_params : dict
            Passed on to the module's ``forward``.

        Returns
        -------
        self : RobustNetClassifier
        """
        reset = not self.initialized_
        dataset, y_enc = self._prepare_fit_data(
            X, y, sample_weight, reset=reset, classes=classes)
        if reset:
            self.initialize()
        routing_method = fit_params.pop("_routing_method", "partial_fit")
        try:
            return super().partial_fit(
                dataset, y_enc, _routing_method=routing_method, **fit_params)
        finally:
            self._fit_sample_weight = None

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        """Check the module's output size; start the per-row memories, or keep them.

        The memories are kept across ``partial_fit`` calls and warm-started fits
        on data with the same number of rows, and started anew otherwise.

        Parameters
        ----------
        net : RobustNetClassifier
            This estimator (skorch passes the net to its callbacks).
        X : RowIndexedDataset
            The training data.
        y : array-like or None, default=None
            The encoded targets.
        **kwargs : dict
            Passed on to skorch.
        """
        super().on_train_begin(net, X=X, y=y, **kwargs)
        # A dry run on two rows: a wrong output size fails before any training.
        self._set_training(False)
        sample = X.X[:2]
        param = next(self.module_.parameters(), None)
        if param is not None:
            sample = sample.to(param.device)
        with torch.no_grad():
            self._check_logits(self.infer(sample))
        memory = getattr(self, "norm_memory_", None)
        if memory is None or len(memory) != len(X):
            self.norm_memory_ = RowMemory(len(X))
            self.proba_memory_ = RowMemory(len(X), width=len(self.classes_))
            self._row_keep = None
        self._train_labels = X.y

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        """Check the epoch was finite; update the row selection and loss correction.

        Parameters
        ----------
        net : RobustNetClassifier
            This estimator (skorch passes the net to its callbacks).
        dataset_train, dataset_valid : Dataset or None, default=None
            The epoch's training and validation data.
        **kwargs : dict
            Passed on to skorch.
        """
        super().on_epoch_end(net, dataset_train=dataset_train,
                             dataset_valid=dataset_valid, **kwargs)
        self._consolidate_epoch()
        self._check_finite()
        epoch = len(self.history)
        if self.weighting == "adaptive" and epoch >= self.warmup_epochs:
            self._update_row_keep()
        if self.weighting == "small_loss" and self.forget_rate == "auto":
            self._noise_rate = float(self._flag_rows()[self.norm_memory_.seen].float().mean())
        if (self.loss_correction == "forward" and epoch == self.warmup_epochs
                and not hasattr(self, "transition_matrix_")):
            seen = self.proba_memory_.seen
            self.transition_matrix_ = estimate_transition_matrix(
                self.proba_memory_.values[seen].numpy())
            # Built mid-fit from the data, so not through skorch's initialize_*
            # (whose __setattr__ guard refuses torch modules elsewhere); the loss
            # moves its matrix to the logits' device itself.
            vars(self)["_corrected_criterion"] = ForwardCorrectedCrossEntropy(
                self.transition_matrix_, reduction="none")

    def _update_row_keep(self):
        self._row_keep = (~self._flag_rows()).to(torch.float32)

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        """Start the epoch's record of per-batch norms, weights and predictions.

        Parameters
        ----------
        net : RobustNetClassifier
            This estimator (skorch passes the net to its callbacks).
        dataset_train, dataset_valid : Dataset or None, default=None
            The epoch's training and validation data.
        **kwargs : dict
            Passed on to skorch.
        """
        super().on_epoch_begin(net, dataset_train=dataset_train,
                               dataset_valid=dataset_valid, **kwargs)
        self._epoch_record = []

    def _record_step(self, rows, norms, weights, logits):
        """Keep a training step's results for the end of the epoch (no host sync)."""
        self._epoch_record.append((rows, norms, weights, logits.detach()))

    def _consolidate_epoch(self):
        """Fold the epoch's steps into the history and the per-row memories.

        Done once per epoch in a few tensor operations, rather than a dozen
        small ones and a host synchronisation at every step.
        """
        record = getattr(self, "_epoch_record", None)
        if not record:
            return
        rows, norms, weights, logits = zip(*record)
        weights = torch.cat(weights)
        mean, low = torch.stack(
            [weights.mean(), (weights < _LOW_WEIGHT).to(weights.dtype).mean()]).tolist()
        self.history.record("weight_mean", mean)
        self.history.record("weight_low", low)
        if all(r is not None for r in rows):
            rows = torch.cat(rows).cpu()
            self.norm_memory_.update(rows, standardize_batches(norms))
            self.proba_memory_.update(rows, torch.softmax(torch.cat(logits), dim=-1))
        self._epoch_record = []

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

    def _flag_rows(self):
        return flag_noisy_rows(self.proba_memory_.values, self._train_labels,
                               self.norm_memory_.values)

    # ------------------------------------------------------------- train step
    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Mean of :meth:`get_per_sample_loss`, or the reweighted objective.

        :meth:`train_step_single` does not call this. When a mixin's
        ``train_step_single`` runs the training step instead (e.g.
        :class:`skorch.hf.AccelerateMixin`, which backpropagates what this
        returns), ``training=True`` gives the reweighted objective
        ``sum_i c_i * loss_i`` with detached coefficients: its gradient is the
        update ``(1/B) sum_i w_i grad_i`` of :meth:`train_step_single`, with the
        weights computed over the global batch of all processes (see
        :func:`skrobust.distributed.gather_norms`).

        Parameters
        ----------
        y_pred : torch.Tensor of shape (batch_size, n_classes)
            Logits.
        y_true : torch.Tensor of shape (batch_size,)
            Encoded targets.
        X : torch.Tensor, default=None
            The batch's features.
        training : bool, default=False
            Whether this is a training step.

        Returns
        -------
        loss : torch.Tensor
            A scalar: the mean loss, or the reweighted objective.
        """
        losses = self.get_per_sample_loss(y_pred, y_true, X=X, training=training)
        if training and self._foreign_batch is not None:
            return self._foreign_objective(y_pred, losses)
        return losses.mean()

    def get_per_sample_loss(self, y_pred, y_true, X=None, training=False):
        """One loss per sample, from the criterion built with ``reduction="none"``.

        Parameters
        ----------
        y_pred : torch.Tensor of shape (batch_size, n_classes)
            Logits.
        y_true : torch.Tensor of shape (batch_size,)
            Encoded targets.
        X : torch.Tensor, default=None
            The batch's features (unused; for subclasses).
        training : bool, default=False
            Whether this is a training step.

        Returns
        -------
        losses : torch.Tensor of shape (batch_size,)
        """
        y_true = to_tensor(y_true, device=self.device)
        corrected = getattr(self, "_corrected_criterion", None)
        criterion = self.criterion_ if corrected is None else corrected
        losses = criterion(y_pred, y_true)
        if losses.dim() != 1 or losses.shape[0] != y_true.shape[0]:
            raise ValueError(
                f"The criterion returned shape {tuple(losses.shape)}; it must return one "
                f"loss per sample, shape ({y_true.shape[0]},). Use reduction='none'."
            )
        return losses

    def _check_logits(self, y_pred):
        n_classes = len(self.classes_)
        if y_pred.dim() != 2 or y_pred.shape[1] != n_classes:
            raise ValueError(
                f"The module returned shape {tuple(y_pred.shape)}; it must return "
                f"(batch_size, n_classes) = (*, {n_classes}) logits."
            )

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

    def _reweighting_active(self):
        # small_loss ramps its rate over the warm-up instead of waiting for it.
        return self.weighting == "small_loss" or len(self.history) > self.warmup_epochs

    def _batch_weights(self, batch, norms, losses):
        if self.weighting == "adaptive":
            if self._row_keep is None:
                if not self.norm_memory_.seen.any():
                    return torch.ones_like(norms)
                self._update_row_keep()  # e.g. memories just restored from a checkpoint
            return self._row_keep[batch.rows].to(norms.device, norms.dtype)
        if self.weighting == "small_loss":
            rate = self._noise_rate if self.forget_rate == "auto" else self.forget_rate
            ramp = min(len(self.history) / max(self.warmup_epochs, 1), 1.0)
            return small_loss_weights(losses, min(rate * ramp, 0.99)).to(norms.dtype)
        return compute_weights(norms, weighting=self.weighting, stats=self.stats,
                               alpha=self.alpha, beta=self.beta)

    def train_step_single(self, batch, **fit_params):
        """One forward pass; per-sample norms, weights and the weighted gradient.

        Parameters
        ----------
        batch : IndexedBatch or (X, y) tuple
            A batch from the training iterator.
        **fit_params : dict
            Passed on to the module's ``forward``.

        Returns
        -------
        step : dict
            ``loss`` (the weighted objective), ``y_pred``, and the batch's
            ``norms`` and robust ``weights``.
        """
        self._set_training(True)
        Xi, yi = batch
        engine = self._current_engine()
        with engine.capture():
            y_pred = self.infer(Xi, **fit_params)
        self._check_logits(y_pred)
        losses = self.get_per_sample_loss(y_pred, yi, X=Xi, training=True)
        norms = engine.norms(losses)
        if self._reweighting_active():
            weights = self._batch_weights(batch, norms, losses)
        else:
            weights = torch.ones_like(norms)
        coefficients = self._coefficients(weights, getattr(batch, "rows", None))
        engine.backward(coefficients)
        loss = (coefficients * losses.detach()).sum()
        return {"loss": loss, "y_pred": y_pred, "norms": norms, "weights": weights}

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

    def train_step(self, batch, **fit_params):
        """Optimizer step, then bookkeeping of the batch's weights and norms.

        Parameters
        ----------
        batch : IndexedBatch or (X, y) tuple
            A batch from the training iterator.
        **fit_params : dict
            Passed on to the module's ``forward``.

        Returns
        -------
        step : dict
            As returned by :meth:`train_step_single`.
        """
        if self._foreign_train_step:
            return self._train_step_foreign(batch, **fit_params)
        step = super().train_step(batch, **fit_params)
        self._record_step(getattr(batch, "rows", None), step["norms"], step["weights"],
                          step["y_pred"])
        return step

    # ------------------------------------------ train step run by a mixin
    def _train_step_foreign(self, batch, **fit_params):
        """The train step when a mixin supplies ``train_step_single``.

        The forward pass of the mixin's step runs inside the engine's capture;
        :meth:`get_loss` then returns the reweighted objective (see
        :meth:`_foreign_objective`) and leaves the global batch's norms,
        weights, logits and rows for the bookkeeping, which is the same on
        every process.
        """
        engine = self._current_engine()
        self._foreign_batch = batch
        self._foreign_result = None
        try:
            with engine.capture():
                step = super().train_step(batch, **fit_params)
            result = self._foreign_result
        finally:
            engine.release()
            for name in ("_foreign_batch", "_foreign_result"):
                vars(self).pop(name, None)
        if result is None:
            raise RuntimeError(
                f"{type(self).__name__}.train_step_single did not call "
                "get_loss(..., training=True), which computes the robust weights; "
                "a train_step_single that replaces RobustNetClassifier's must call it "
                "and backpropagate its result."
            )
        weights, norms, local = result["weights"], result["norms"], result["local"]
        self._record_step(result["rows"], norms, weights, result["logits"])
        step.update(loss=result["loss"], norms=norms[local], weights=weights[local])
        return step

    def _foreign_objective(self, y_pred, losses):
        """Weighted objective of this process's samples, weights from the global batch.

        Under ``DistributedDataParallel`` (which averages the gradients of the
        ``P`` processes) each process returns ``P * sum_{i local} c_i loss_i``,
        so the averaged gradient is ``sum_{i global} c_i grad_i``.
        """
        from .distributed import gather_columns, process_group_info  # imports this module

        engine = self._current_engine()
        norms = engine.norms(losses, retain_graph=True)
        rows = getattr(self._foreign_batch, "rows", None)
        columns = [norms, losses, y_pred.reshape(len(losses), -1)]
        if rows is not None:
            columns.append(rows)
        gathered, local = gather_columns(columns)
        all_norms, all_losses, all_logits = gathered[:3]
        all_rows = gathered[3].cpu() if rows is not None else None
        if self._reweighting_active():
            weights = self._batch_weights(IndexedBatch(None, None, all_rows), all_norms,
                                          all_losses)
        else:
            weights = torch.ones_like(all_norms)
        coefficients = self._coefficients(weights, all_rows)
        world_size, _ = process_group_info()
        self._foreign_result = {
            "loss": (coefficients * all_losses).sum(), "norms": all_norms,
            "weights": weights, "logits": all_logits, "rows": all_rows, "local": local,
        }
        return (coefficients[local].detach() * world_size * losses).sum()

    # ----------------------------------------------------------------- predict
    def _predict_dataset(self, X):
        check_is_fitted(self, "module_")
        return RowIndexedDataset(self._validate_features(X, reset=False))

    def predict_proba(self, X):
        """Class probabilities, columns in the order of :attr:`classes_`.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Features.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        proba = super().predict_proba(self._predict_dataset(X)).astype(np.float64)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Predicted labels, taken from :attr:`classes_`.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Features.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return np.asarray(self.classes_)[proba.argmax(axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.non_deterministic = self.random_state is None
        return tags

    @property
    def noise_scores_(self):
        """Per-row label-noise scores of the last fit; higher = more likely mislabeled.

        The norm of the output gradient ``p_i - e_{y_i}`` at the row's
        running-average prediction; NaN for rows never trained on.
        """
        check_is_fitted(self, "proba_memory_")
        proba = self.proba_memory_.values
        one_hot = torch.nn.functional.one_hot(self._train_labels, proba.shape[1])
        return torch.linalg.vector_norm(proba - one_hot, dim=1).numpy()

    @property
    def label_issues_(self):
        """Boolean mask over the rows of the last fit: rows judged mislabeled.

        A row is flagged when its running-average prediction confidently names
        another class (per-class thresholds, as in confident learning) and its
        running-average gradient norm is above its batches' median; see
        :func:`skrobust.selection.flag_noisy_rows`. With
        ``weighting="adaptive"`` these rows were left out of training.
        """
        check_is_fitted(self, "norm_memory_")
        return self._flag_rows().numpy()
