"""RobustNetClassifier: skorch's NeuralNetClassifier with gradient-norm reweighting.

The training step, the engine, the rules and the per-row state are shared with
the other estimators (:mod:`skrobust.core`); this module holds what
classification adds: label encoding, the logits' checks, the predicted
probabilities in the row memory, the rows flagged as mislabeled, and forward
loss correction.
"""

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch import NeuralNetClassifier
from skorch.callbacks import EpochScoring, EpochTimer, PassthroughScoring, PrintLog

from ._validation import check_sample_weight, check_targets
from .core import RobustTrainingMixin
from .data import BatchLoader, RowIndexedDataset
from .losses import ForwardCorrectedCrossEntropy, estimate_transition_matrix
from .modules import MLP
from .probe import held_out_split, probe_curve
from .selection import choose_recipe, flag_noisy_rows

__all__ = ["RobustNetClassifier"]


def _softmax(logits):
    return torch.softmax(logits, dim=-1)


def _valid_accuracy(net, X, y):
    """Accuracy on the internal validation split, in encoded label space."""
    proba = NeuralNetClassifier.predict_proba(net, X)
    return float(np.mean(proba.argmax(1) == np.asarray(y)))


class RobustNetClassifier(RobustTrainingMixin, NeuralNetClassifier):
    """Neural network classifier that down-weights samples with outlying gradients.

    At every training step, for each sample ``i`` of the batch, the classifier
    computes ``g_i``, the L2 norm of that sample's loss gradient over all
    trainable parameters; models the batch's norms by a centre ``mu`` and a
    spread ``sigma``; turns each norm into a weight ``w_i`` (see
    :func:`~skrobust.compute_weights`); and updates the parameters with
    ``(1/B) sum_i w_i grad_i`` through the configured torch optimizer. Samples
    whose labels are wrong tend to have outlying gradient norms, so they
    contribute less to the model.

    It is a :class:`skorch.NeuralNetClassifier`: skorch's parameters,
    callbacks and override points work, plus the behaviour of a scikit-learn
    classifier (numpy, pandas and sparse inputs, any label type, pipelines,
    grid searches). The differences from skorch, and why, are listed in the
    documentation's page "Differences from skorch".

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
        The weighting rule. The original method's batch rules: ``"truncate"`` zeroes
        samples outside ``[mu - beta*sigma, mu + alpha*sigma]``; ``"soft"``
        gives ``exp(-(g - mu)^2 / (2 sigma^2))``. ``"adaptive"`` trains plainly
        unless a held-out self-check shows that something else does better:
        before training, two probe copies of the network train on two thirds
        of the rows (one plainly, one leaving out the rows flagged by
        :func:`skrobust.selection.flag_noisy_rows`) and are judged on the
        other third after every epoch; the fit on all rows then follows the
        recipe that won by more than ``alpha`` standard deviations (plain,
        plain stopped early, or row selection; see
        :func:`skrobust.selection.choose_recipe` and ``adaptive_recipe_``).
        ``"small_loss"`` keeps the ``1 - forget_rate`` share of
        each batch with the smallest losses. ``"none"`` trains plainly through
        the same code path.
    stats : {"mean_std", "median_iqr"}, default="mean_std"
        Centre and spread of a batch's norms for ``"truncate"`` and ``"soft"``:
        mean and standard deviation (``ddof=1``), or median and ``IQR / 1.349``.
    alpha : float, default=1.0
        A threshold in standard deviations. ``"truncate"``: the upper cut, in
        units of sigma above mu. ``"adaptive"``: the margin by which a recipe
        must beat plain training on the held-out rows, in standard deviations
        of the paired difference (larger: plain training more often).
    beta : float, default=inf
        Lower cut of ``"truncate"``, in units of sigma below mu. The default
        keeps samples with small gradients (well-fitted samples).
    warmup_epochs : int, default=5
        Epochs of plain training before reweighting starts: early on every
        gradient is large and the norms do not yet separate noisy rows. With
        ``"adaptive"``, when its self-check chose row selection, the first rows
        are left out after this many epochs (in the probe and in the fit), and
        the selection is renewed after every epoch. A warm-up that outlasts
        the fit warns.
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
        Any torch optimizer; it receives the reweighted gradient. Adam and
        AdamW are built with ``fused=True`` (the same update in fewer kernels)
        unless ``optimizer__fused``, ``optimizer__foreach`` or
        ``optimizer__differentiable`` is set.
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
        Rows judged mislabeled at the end of training (see
        :func:`skrobust.selection.flag_noisy_rows`), whatever the weighting
        mode. With ``"adaptive"``: none when its self-check found no sign of
        label noise (plain training to the last epoch), and the rows left out
        when it chose row selection.
    adaptive_recipe_ : dict
        With ``weighting="adaptive"``: what the held-out self-check chose:
        ``mode`` (``"plain"`` or ``"select"``), ``epochs`` (the fit stops after
        them; ``len(history_)`` shows it), ``gains`` (each candidate's
        held-out gain over plain training and its standard deviation, in
        rows) and ``full`` (plain training to the last epoch).
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

    _output_memory_name = "proba_memory_"

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
        self._construct(
            super().__init__,
            dict(weighting=weighting, stats=stats, alpha=alpha, beta=beta,
                 warmup_epochs=warmup_epochs, normalize_weights=normalize_weights,
                 forget_rate=forget_rate, loss_correction=loss_correction,
                 grad_engine=grad_engine, random_state=random_state),
            module=module,
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

    @property
    def classes_(self):
        """Class labels: ``classes`` when given, else those seen by the first fit.

        ``classes=[]``, like ``None``, means the labels come from ``y``.
        """
        if self.classes is not None and not len(self.classes):
            try:
                return self.classes_inferred_
            except AttributeError:
                pass
        return super().classes_

    # ------------------------------------------------------------- components
    def _default_module_sizes(self, module_kwargs):
        if not hasattr(self, "n_features_in_") and "n_features" not in module_kwargs:
            raise ValueError(
                "The default MLP is sized from the data: call fit(X, y) instead of "
                "initialize(), or pass module__n_features and module__n_classes."
            )
        sizes = {}
        if hasattr(self, "n_features_in_"):
            sizes["n_features"] = self.n_features_in_
        if hasattr(self, "classes_inferred_") or self.classes is not None:
            sizes["n_classes"] = len(self.classes_)
        return sizes

    def initialize_criterion(self):
        """Build the criterion with ``reduction="none"``; with forward correction, its form.

        With ``loss_correction="forward"`` the criterion is
        :class:`~skrobust.losses.ForwardCorrectedCrossEntropy` with the identity
        matrix (the plain cross entropy) until the transition matrix is
        estimated, after ``warmup_epochs`` epochs.

        Returns
        -------
        self : RobustNetClassifier
        """
        vars(self).pop("transition_matrix_", None)
        if self.loss_correction != "forward":
            return super().initialize_criterion()
        n_classes = len(self.classes_)
        self.criterion_ = ForwardCorrectedCrossEntropy(np.eye(n_classes), reduction="none")
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
        if isinstance(X, torch.utils.data.Dataset):
            raise TypeError(
                f"{type(self).__name__} trains on arrays (numpy, pandas or scipy sparse), "
                f"not on a torch Dataset ({type(X).__name__}): it validates and encodes "
                "them and keeps per-row state. Prediction accepts a Dataset."
            )
        if y is None:
            raise ValueError(
                "RobustNetClassifier requires y to be passed, but the target y is None.")
        y = check_targets(y)
        # After initialize() (skorch's deployment and partial_fit pattern) the
        # labels and the feature count are learnt from the first data.
        Xt = self._validate_features(X, reset=reset or not hasattr(self, "n_features_in_"))
        if reset and len(Xt) < 2:
            raise ValueError(
                f"Got n_samples={len(Xt)}; training needs at least 2 samples of 2 classes.")
        if len(y) != len(Xt):
            raise ValueError(f"X has {len(Xt)} rows but y has {len(y)} labels.")
        if reset or not hasattr(self, "classes_"):
            labels = classes if classes is not None else self.classes
            labels = np.unique(y) if labels is None or not len(labels) else np.asarray(labels)
            if len(labels) < 2:
                raise ValueError(
                    f"y has a single class ({labels[0]!r}); a classifier needs samples of "
                    "at least 2 classes."
                )
            self.classes_inferred_ = labels
        y_enc = self._encode(y)
        weights = check_sample_weight(sample_weight, len(y))
        return RowIndexedDataset(Xt, torch.as_tensor(y_enc)), y_enc, weights

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

    def _outputs_are_probabilities(self):
        """skorch's convention: with ``NLLLoss`` the module returns probabilities."""
        return isinstance(getattr(self, "criterion_", None), torch.nn.NLLLoss)

    def _get_predict_nonlinearity(self):
        # "auto": softmax for every criterion on logits (skorch's picks the
        # identity for criteria it does not know, e.g. skrobust.losses).
        if self.predict_nonlinearity == "auto" and not self._outputs_are_probabilities():
            return _softmax
        return super()._get_predict_nonlinearity()

    def get_per_sample_loss(self, y_pred, y_true, X=None, training=False):
        """One loss per sample; with ``NLLLoss``, of the log of the module's probabilities.

        As in skorch, a module trained with ``criterion=torch.nn.NLLLoss``
        returns probabilities, and the criterion gets their log.

        Parameters
        ----------
        y_pred : torch.Tensor of shape (batch_size, n_classes)
            The module's output.
        y_true : torch.Tensor of shape (batch_size,)
            Encoded targets.
        X : torch.Tensor, default=None
            The batch's features (unused).
        training : bool, default=False
            Whether this is a training step.

        Returns
        -------
        losses : torch.Tensor of shape (batch_size,)
        """
        if self._outputs_are_probabilities():
            y_pred = torch.log(y_pred + torch.finfo(y_pred.dtype).eps)
        return super().get_per_sample_loss(y_pred, y_true, X=X, training=training)

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
        dataset, y_enc, weights = self._prepare_fit_data(X, y, sample_weight, reset=reset)
        return self._train(dataset, y_enc, reset=reset, routing_method="fit",
                           sample_weight=weights, fit_params=fit_params)

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
        dataset, y_enc, weights = self._prepare_fit_data(
            X, y, sample_weight, reset=reset, classes=classes)
        return self._train(dataset, y_enc, reset=reset, routing_method="partial_fit",
                           sample_weight=weights, fit_params=fit_params)

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        """As the core does; with forward correction, estimate the transition matrix.

        After ``warmup_epochs`` epochs, the matrix is estimated from the
        running-average predictions and set into the criterion.

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
        if (self.loss_correction == "forward" and len(self.history) == self.warmup_epochs
                and not hasattr(self, "transition_matrix_")):
            seen = self.proba_memory_.seen
            self.transition_matrix_ = estimate_transition_matrix(
                self.proba_memory_.values[seen].numpy())
            self.criterion_.transition_matrix.copy_(torch.as_tensor(self.transition_matrix_))

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        """As the core does; then keep what the rule's self-check chose.

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
        recipe = getattr(self._rule, "recipe", None)
        if recipe is not None:
            self.adaptive_recipe_ = recipe

    def _held_out_check(self, dataset, *, alpha, warmup_epochs):
        """The recipe of ``weighting="adaptive"`` for this fit (see :mod:`skrobust.probe`).

        A fit that continues an earlier one (``partial_fit``, warm start) keeps
        the earlier mode and trains its ``max_epochs``; data too small for a
        held-out slice gets plain training.
        """
        if len(self.history) and hasattr(self, "adaptive_recipe_"):
            return {**self.adaptive_recipe_, "epochs": self.max_epochs}
        plain = {"mode": "plain", "epochs": self.max_epochs, "gains": {}}
        # The probe networks call the module on X alone, with the criterion on its
        # output: fit parameters for forward, or NLLLoss's probabilities, would
        # not reach them.
        if (self.max_epochs < 1 or getattr(self, "_fit_params", None)
                or self._outputs_are_probabilities()):
            return plain
        generator = torch.Generator().manual_seed(self._module_seed + 1)
        split = held_out_split(dataset.y, len(self.classes_), generator=generator)
        if split is None:
            return plain
        train, held_out = split
        weights = getattr(self, "_fit_sample_weight", None)
        # The optimizer's arguments as the fit's own optimizer gets them (e.g. fused Adam).
        _, optimizer_params = self.get_params_for_optimizer(
            "optimizer", self.module_.named_parameters())
        optimizer_params.setdefault("lr", self.lr)
        curves = []
        for select in (False, True):
            curves.append(probe_curve(
                self.module_, self.criterion_,
                lambda params: self.optimizer(params, **optimizer_params),
                dataset.X, dataset.y, train, held_out, epochs=self.max_epochs,
                batch_size=self.batch_size,
                generator=torch.Generator().manual_seed(self._module_seed + 2),
                select=select, warmup_epochs=warmup_epochs,
                sample_weight=None if weights is None else torch.as_tensor(weights)))
        recipe = choose_recipe(*curves, alpha=alpha)
        recipe["full"] = recipe["mode"] == "plain" and recipe["epochs"] == self.max_epochs
        return recipe

    # ------------------------------------------------- the core's task hooks
    @property
    def _memory_width(self):
        return len(self.classes_)

    def _check_output(self, y_pred):
        n_classes = len(self.classes_)
        if y_pred.dim() != 2 or y_pred.shape[1] != n_classes:
            raise ValueError(
                f"The module returned shape {tuple(y_pred.shape)}; it must return "
                f"(batch_size, n_classes) = (*, {n_classes}) logits."
            )

    def _output_to_memory(self, outputs):
        if self._outputs_are_probabilities():
            proba = outputs.clamp_min(0)
            return proba / proba.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        return torch.softmax(outputs, dim=-1)

    def _flag_rows(self, state):
        flags = flag_noisy_rows(state.output_memory.values, state.targets,
                                state.norm_memory.values)
        rule = getattr(self, "_rule", None)
        return flags if rule is None else rule.filter_flags(flags)

    # ----------------------------------------------------------------- predict
    def _predict_dataset(self, X):
        check_is_fitted(self, "module_")
        if isinstance(X, torch.utils.data.Dataset):
            return X  # as skorch: batched by iterator_valid, never turned into an array
        return RowIndexedDataset(self._validate_features(X, reset=False))

    def predict_proba(self, X):
        """Class probabilities, columns in the order of :attr:`classes_`.

        Parameters
        ----------
        X : array-like, sparse matrix or torch Dataset of shape (n_samples, n_features)
            Features.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            With the default ``predict_nonlinearity="auto"``: probabilities in
            float64 that sum to 1. With ``None`` or a callable: the module's
            output passed through it, as skorch returns it.
        """
        proba = super().predict_proba(self._predict_dataset(X))
        if self.predict_nonlinearity != "auto":
            return proba
        proba = proba.astype(np.float64)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Predicted labels, taken from :attr:`classes_`.

        Parameters
        ----------
        X : array-like, sparse matrix or torch Dataset of shape (n_samples, n_features)
            Features.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels from :attr:`classes_`. As in skorch, the column index of the
            highest output instead when ``X`` is a torch Dataset (whose targets
            are encoded), or when the labels are unknown: a net that was only
            initialized and loaded with ``load_params``, built without
            ``classes``.
        """
        index = self.predict_proba(X).argmax(axis=1)
        if isinstance(X, torch.utils.data.Dataset) or not hasattr(self, "classes_"):
            return index
        return np.asarray(self.classes_)[index]

    @property
    def noise_scores_(self):
        """Per-row label-noise scores of the last fit; higher = more likely mislabeled.

        The norm of the output gradient ``p_i - e_{y_i}`` at the row's
        running-average prediction; NaN for rows never trained on.
        """
        check_is_fitted(self, "proba_memory_")
        proba = self.proba_memory_.values
        one_hot = torch.nn.functional.one_hot(self._row_state.targets, proba.shape[1])
        return torch.linalg.vector_norm(proba - one_hot, dim=1).numpy()

    @property
    def label_issues_(self):
        """Boolean mask over the rows of the last fit: rows judged mislabeled.

        A row is flagged when its running-average prediction confidently names
        another class (per-class thresholds, as in confident learning), gives
        its label less than ``1/K``, and its running-average gradient norm is
        above its batches' median; see :func:`skrobust.selection.flag_noisy_rows`.
        With ``weighting="adaptive"``: none when the self-check found no sign
        of label noise; when it chose row selection, these rows were left out.
        """
        check_is_fitted(self, "norm_memory_")
        return self._row_state.flags().numpy()
