"""RobustNetRegressor: skorch's NeuralNetRegressor with gradient-norm reweighting.

The training step, the engine, the rules and the per-row state are shared with
the classifier (:mod:`skrobust.core`); this module holds what regression adds:
targets standardised with statistics that corrupted targets cannot drag (and
mapped back at predict time), the outputs' checks, the running-average
predictions in the row memory, and the rows flagged for outlying residuals
(:mod:`skrobust.residuals`).
"""

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch import NeuralNetRegressor
from skorch.utils import to_tensor

from ._validation import check_regression_targets, check_sample_weight
from .core import RobustTrainingMixin
from .data import BatchLoader, RowIndexedDataset
from .modules import MLP
from .residuals import flag_outlying_residuals, residual_scores, robust_scale

__all__ = ["RobustNetRegressor"]

# Momentum of the prediction memory: a row's running-average prediction spans
# about two epochs, so that it follows the fit instead of remembering the
# untrained network's first outputs (whose residuals are just the targets).
_PREDICTION_MOMENTUM = 0.5


class RobustNetRegressor(RobustTrainingMixin, NeuralNetRegressor):
    """Neural network regressor that down-weights samples with corrupted targets.

    The regression counterpart of :class:`~skrobust.RobustNetClassifier`, on
    the same training step: at every step each sample's loss gradient norm is
    computed exactly, the weighting rule turns the norms (or the per-row
    memories) into weights, and the parameters are updated with
    ``(1/B) sum_i w_i grad_i`` through the configured torch optimizer.

    Targets are standardised internally with their median and their
    interquartile range, which a minority of wild values cannot drag, and
    predictions are mapped back to the original scale: prices in thousands or
    scores in hundreds need no scaling by the user. ``y`` may have several
    columns (one output per target).

    Parameters
    ----------
    module : torch.nn.Module class or instance, default=MLP
        The network; it must return ``(batch_size, n_targets)`` outputs. The
        default :class:`~skrobust.modules.MLP` takes its input and output sizes
        from the data (``n_classes`` is the number of targets); set its other
        arguments with ``module__hidden_layer_sizes``, ``module__activation``
        and ``module__dropout``. BatchNorm layers are refused.
    weighting : {"adaptive", "truncate", "soft", "small_loss", "none"}, \
            default="adaptive"
        The weighting rule. ``"adaptive"`` judges rows: after
        ``warmup_epochs`` epochs, and again after every epoch, it leaves out of
        training the rows in :attr:`target_issues_`, those whose running-average
        residual lies more than 3 robust standard deviations from the others'
        (and is at least half the targets' robust spread) and whose
        running-average standardised gradient norm is above the batch median
        (see :func:`skrobust.residuals.flag_outlying_residuals`). The
        threshold is in units of the residuals' own spread, so the share left
        out follows the share of corrupted targets, and on clean targets with
        Gaussian noise almost no row is. The original method's batch rules:
        ``"truncate"`` zeroes samples outside ``[mu - beta*sigma, mu +
        alpha*sigma]``; ``"soft"`` gives ``exp(-(g - mu)^2 / (2 sigma^2))``.
        ``"small_loss"`` keeps the ``1 - forget_rate`` share of each batch with
        the smallest losses. ``"none"`` trains plainly through the same code
        path.
    stats : {"mean_std", "median_iqr"}, default="mean_std"
        Centre and spread of a batch's norms for ``"truncate"`` and ``"soft"``.
    alpha : float, default=1.0
        Upper cut of ``"truncate"``, in units of sigma above mu.
    beta : float, default=inf
        Lower cut of ``"truncate"``, in units of sigma below mu.
    warmup_epochs : int, default=30
        Epochs of plain training before reweighting starts. With
        ``"adaptive"``, the network first learns what the features predict;
        the rows whose targets disagree are left out from then on (the last 20
        of the default 50 epochs). Deciding later spares correct but hard rows,
        which the network fits in the meantime; deciding earlier removes
        corrupted rows before they pull the network far.
    normalize_weights : bool, default=False
        Divide the weights by their batch mean, so the step size does not
        shrink when samples are dropped.
    forget_rate : float or "auto", default="auto"
        For ``weighting="small_loss"``: the share of each batch, the samples
        with the largest losses, left out of the update; ``"auto"`` uses the
        share of rows that :attr:`target_issues_` currently flags.
    grad_engine : {"auto", "ghost", "generic"}, default="auto"
        The per-sample gradient engine (see :mod:`skrobust.engines`).
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, dropout masks of the default module and
        shuffling, without touching torch's global generator.
    criterion : torch criterion class or instance, default=torch.nn.MSELoss
        Loss on the standardised targets, built with ``reduction="none"``; the
        per-sample loss is its mean over the targets. Robust alternatives:
        :class:`skrobust.losses.HuberLoss`, :class:`skrobust.losses.TukeyBiweightLoss`.
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
        skorch's internal validation split; ``None`` trains on every row.
    iterator_train, iterator_valid : class, default=BatchLoader
        Batch iterators; the default slices in-memory tensors and gives each
        batch its row indices.
    dataset : class, default=RowIndexedDataset
        Kept for compatibility with skorch; ``fit`` always holds the validated
        data in a :class:`~skrobust.data.RowIndexedDataset`.
    **kwargs
        Any other parameter of :class:`skorch.NeuralNet` (``device``,
        ``callbacks``, ``verbose``, ``module__*``, ``optimizer__*``, ...).

    Attributes
    ----------
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names, when ``X`` was a DataFrame with string column names.
    n_targets_ : int
        Number of targets (columns of ``y``).
    target_center_, target_scale_ : ndarray of shape (n_targets,)
        Median and robust spread (``IQR / 1.349``, with fallbacks when it is
        0) of each target at the first fit; the network learns
        ``(y - target_center_) / target_scale_``.
    noise_scores_ : ndarray of shape (n_samples,)
        One score per row of the ``X`` given to ``fit``: the row's
        running-average residual, centred and divided by the residuals'
        robust spread (root mean square over the targets). Higher means more
        likely corrupted; NaN for rows held out by ``train_split``.
    target_issues_ : ndarray of shape (n_samples,), dtype bool
        Rows judged to have corrupted targets at the end of training (the rows
        that ``weighting="adaptive"`` leaves out), whatever the weighting mode.
    norm_memory_, prediction_memory_ : skrobust.memory.RowMemory
        Per-row running averages of the standardised gradient norm and of the
        prediction (in the standardised target scale).
    grad_engine_ : str
        The engine used: ``"ghost"``, ``"hybrid"`` or ``"generic"``.
    module_, criterion_, optimizer_, history_
        As in skorch; ``history_`` has the epoch columns ``weight_mean`` and
        ``weight_low`` as well.

    See Also
    --------
    RobustNetClassifier : The classifier on the same training step.
    skrobust.noise.add_target_noise : Corrupt targets on purpose.

    Notes
    -----
    User ``sample_weight`` multiplies the robust weights. The score
    ``R^2`` (:meth:`score`) is computed on the original scale.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skrobust import RobustNetRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> reg = make_pipeline(StandardScaler(),
    ...                     RobustNetRegressor(max_epochs=20, verbose=0, random_state=0))
    >>> reg.fit(X, y).score(X, y) > 0.4
    True
    """

    _output_memory_name = "prediction_memory_"

    def __init__(
        self,
        module=MLP,
        *,
        weighting="adaptive",
        stats="mean_std",
        alpha=1.0,
        beta=float("inf"),
        warmup_epochs=30,
        normalize_weights=False,
        forget_rate="auto",
        grad_engine="auto",
        random_state=None,
        criterion=torch.nn.MSELoss,
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
                 forget_rate=forget_rate, grad_engine=grad_engine,
                 random_state=random_state),
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    # ------------------------------------------------------------- components
    def _default_module_sizes(self, module_kwargs):
        if not hasattr(self, "n_features_in_") and "n_features" not in module_kwargs:
            raise ValueError(
                "The default MLP is sized from the data: call fit(X, y) instead of "
                "initialize(), or pass module__n_features and module__n_classes (the "
                "number of targets)."
            )
        sizes = {}
        if hasattr(self, "n_features_in_"):
            sizes["n_features"] = self.n_features_in_
        if hasattr(self, "n_targets_"):
            sizes["n_classes"] = self.n_targets_
        return sizes

    def get_per_sample_loss(self, y_pred, y_true, X=None, training=False):
        """One loss per sample: the criterion's mean over the targets.

        Parameters
        ----------
        y_pred : torch.Tensor of shape (batch_size, n_targets)
            The module's output.
        y_true : torch.Tensor of shape (batch_size, n_targets)
            Standardised targets.
        X : torch.Tensor, default=None
            The batch's features (unused).
        training : bool, default=False
            Whether this is a training step.

        Returns
        -------
        losses : torch.Tensor of shape (batch_size,)
        """
        y_true = to_tensor(y_true, device=self.device)
        if y_true.dim() == 1 and y_pred.dim() == 2:
            y_true = y_true.reshape(len(y_true), -1)
        losses = self.criterion_(y_pred, y_true.to(y_pred.dtype))
        if losses.dim() == 0 or losses.shape[0] != y_true.shape[0]:
            raise ValueError(
                f"The criterion returned shape {tuple(losses.shape)}; it must return one "
                f"loss per sample or per target, shape ({y_true.shape[0]}, ...). Use "
                "reduction='none'."
            )
        return losses.reshape(len(losses), -1).mean(1)

    # -------------------------------------------------------------------- data
    def _validate_features(self, X, reset):
        X = validate_data(
            self, X, reset=reset, accept_sparse=("csr", "csc", "coo"),
            dtype=(np.float64, np.float32), ensure_min_samples=1,
        )
        if hasattr(X, "toarray"):
            X = X.toarray()
        return torch.as_tensor(np.asarray(X, dtype=np.float32))

    def _prepare_fit_data(self, X, y, sample_weight, reset):
        if y is None:
            raise ValueError(
                "RobustNetRegressor requires y to be passed, but the target y is None.")
        y = check_regression_targets(y)
        Xt = self._validate_features(X, reset=reset)
        if reset and len(Xt) < 2:
            raise ValueError(
                f"Got n_samples={len(Xt)}; training needs at least 2 samples.")
        if len(y) != len(Xt):
            raise ValueError(f"X has {len(Xt)} rows but y has {len(y)} targets.")
        y2 = y.reshape(len(y), -1)
        if reset:
            self._y_ndim = y.ndim
            self.n_targets_ = y2.shape[1]
            centre, spread = robust_scale(torch.as_tensor(y2, dtype=torch.float64), dim=0)
            self.target_center_ = centre.numpy()
            self.target_scale_ = spread.numpy()
        elif y2.shape[1] != self.n_targets_:
            raise ValueError(
                f"y has {y2.shape[1]} targets, but {type(self).__name__} was fitted "
                f"with {self.n_targets_}.")
        y_std = ((y2 - self.target_center_) / self.target_scale_).astype(np.float32)
        weights = check_sample_weight(sample_weight, len(y))
        return RowIndexedDataset(Xt, torch.as_tensor(y_std)), y_std, weights

    # --------------------------------------------------------------------- fit
    def fit(self, X, y, sample_weight=None, **fit_params):
        """Fit the network to targets of which some may be corrupted.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Training features: numeric numpy arrays, pandas DataFrames or scipy
            sparse matrices. They are copied to float32, never modified.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Numeric targets, on any scale.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; they multiply the robust weights.
        **fit_params : dict
            Passed on to the module's ``forward``, as in skorch.

        Returns
        -------
        self : RobustNetRegressor
        """
        reset = not (self.warm_start and self.initialized_)
        dataset, y_std, weights = self._prepare_fit_data(X, y, sample_weight, reset=reset)
        return self._train(dataset, y_std, reset=reset, routing_method="fit",
                           sample_weight=weights, fit_params=fit_params)

    def partial_fit(self, X, y, sample_weight=None, **fit_params):
        """Continue training on ``(X, y)`` for ``max_epochs`` epochs.

        The first call initializes the network and the target scaling; later
        calls keep them, with the optimizer state and the per-row memories (as
        long as the number of rows stays the same).

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Training features.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Numeric targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; they multiply the robust weights.
        **fit_params : dict
            Passed on to the module's ``forward``.

        Returns
        -------
        self : RobustNetRegressor
        """
        reset = not self.initialized_
        dataset, y_std, weights = self._prepare_fit_data(X, y, sample_weight, reset=reset)
        return self._train(dataset, y_std, reset=reset, routing_method="partial_fit",
                           sample_weight=weights, fit_params=fit_params)

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        """As the core does; the prediction memory follows the fit closely.

        Parameters
        ----------
        net : RobustNetRegressor
            This estimator (skorch passes the net to its callbacks).
        X : RowIndexedDataset
            The training data.
        y : array-like or None, default=None
            The standardised targets.
        **kwargs : dict
            Passed on to skorch.
        """
        super().on_train_begin(net, X=X, y=y, **kwargs)
        self.prediction_memory_.momentum = _PREDICTION_MOMENTUM

    # ------------------------------------------------- the core's task hooks
    @property
    def _memory_width(self):
        return self.n_targets_

    def _check_output(self, y_pred):
        n_targets = self.n_targets_
        if y_pred.dim() != 2 or y_pred.shape[1] != n_targets:
            raise ValueError(
                f"The module returned shape {tuple(y_pred.shape)}; it must return "
                f"(batch_size, n_targets) = (*, {n_targets}) outputs."
            )

    def _output_to_memory(self, outputs):
        return outputs.reshape(len(outputs), -1)

    def _flag_rows(self, state):
        return flag_outlying_residuals(state.output_memory.values, state.targets,
                                       state.norm_memory.values)

    # ----------------------------------------------------------------- predict
    def predict(self, X):
        """Predicted targets, on the scale of the ``y`` given to ``fit``.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Features.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
            The shape follows the ``y`` of the first fit.
        """
        check_is_fitted(self, "module_")
        dataset = RowIndexedDataset(self._validate_features(X, reset=False))
        out = NeuralNetRegressor.predict_proba(self, dataset).astype(np.float64)
        out = out.reshape(len(out), -1) * self.target_scale_ + self.target_center_
        return out.ravel() if self._y_ndim == 1 else out

    @property
    def predict_proba(self):
        """Not available: a regressor predicts values (use :meth:`predict`)."""
        raise AttributeError(
            "RobustNetRegressor has no predict_proba: it predicts values; use predict.")

    @property
    def noise_scores_(self):
        """Per-row target-noise scores of the last fit; higher = more likely corrupted.

        The row's running-average residual in robust standard deviations of
        all rows' residuals (root mean square over the targets); NaN for rows
        never trained on.
        """
        check_is_fitted(self, "prediction_memory_")
        return residual_scores(self.prediction_memory_.values,
                               self._row_state.targets).numpy()

    @property
    def target_issues_(self):
        """Boolean mask over the rows of the last fit: rows judged to have corrupted targets.

        A row is flagged when its residual score (:attr:`noise_scores_`) is
        above 3, its residual at least half the targets' robust spread, and its
        running-average gradient norm above its batches' median; see
        :func:`skrobust.residuals.flag_outlying_residuals`. With
        ``weighting="adaptive"`` these rows were left out of training.
        """
        check_is_fitted(self, "norm_memory_")
        return self._row_state.flags().numpy()
