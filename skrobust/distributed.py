"""Training on several processes: global-batch statistics, sharded batches, accelerate.

Two kinds of "more than one process" meet :class:`~skrobust.RobustNetClassifier`:

* **Hyperparameter search on a cluster** (e.g. Dask through joblib): every fit
  runs in one worker process, so nothing here is needed beyond keeping torch to
  one thread per task (see :func:`limit_torch_threads`).
* **Data-parallel training** of one model (``torch.distributed``, e.g. through
  Hugging Face ``accelerate``): each process sees a slice of every batch, while
  the weighting rules compare a sample's gradient norm with the *whole* batch.
  :func:`gather_norms` (and :func:`gather_columns`) concatenate per-sample values
  of all processes, so every process computes the weights of the global batch;
  :class:`ShardedBatchLoader` gives each process its slice of the same global
  batches; :class:`AcceleratedRobustNetClassifier` puts it together with
  :class:`skorch.hf.AccelerateMixin` (only defined when ``accelerate`` is
  installed).

Everything here degrades to the single-process behaviour when
``torch.distributed`` is not initialised.
"""

import torch

from .classifier import RobustNetClassifier
from .collectives import (
    broadcast_from_first,
    gather_columns,
    gather_norms,
    process_group_info,
)
from .data import BatchLoader, IndexedBatch
from .modules import MLP

__all__ = [
    "ShardedBatchLoader",
    "gather_columns",
    "gather_norms",
    "limit_torch_threads",
    "process_group_info",
]


class ShardedBatchLoader(BatchLoader):
    """A :class:`~skrobust.data.BatchLoader` that gives each process its share of every batch.

    Every process walks through the same global batches of ``batch_size``
    rows (in the same shuffled order: the order of the first process is
    broadcast at every pass) and keeps a contiguous slice of each: with ``P``
    processes, the first ``B mod P`` get ``ceil(B/P)`` rows and the others
    ``floor(B/P)``. The concatenation of the slices in rank order is the global
    batch, which is how :func:`gather_norms` sees it. Every process runs the
    same number of steps, as ``DistributedDataParallel`` requires. With one
    process (or no ``torch.distributed``) it is a plain ``BatchLoader``.

    Parameters
    ----------
    dataset : RowIndexedDataset or torch.utils.data.Subset of one
        The data to iterate over.
    batch_size : int, default=128
        Rows per *global* batch (all processes together).
    shuffle : bool, default=False
        Draw a new random order at every pass.
    drop_last : bool, default=False
        Drop the last global batch if it is smaller than ``batch_size``.
    generator : torch.Generator or None, default=None
        Random source for shuffling (the first process's draw is used).
    group : torch.distributed.ProcessGroup or None, default=None
        The processes that share the batches; ``None`` is the default group.
    """

    def __init__(self, dataset, batch_size=128, shuffle=False, drop_last=False,
                 generator=None, group=None):
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle,
                         drop_last=drop_last, generator=generator)
        self.group = group

    def _permutation(self, n):
        # Every process walks the first process's order.
        order = super()._permutation(n)
        world, _ = process_group_info(self.group)
        return order if world == 1 else broadcast_from_first(order, self.group)

    def _share(self, index):
        world, rank = process_group_info(self.group)
        return index if world == 1 else torch.tensor_split(index, world)[rank]


class _DeviceBatches:
    """Iterate over a ``BatchLoader``, moving features and targets to ``device``.

    accelerate moves the batches of the ``DataLoader`` objects it prepares;
    ``BatchLoader`` is not one, so its batches are moved here. Row indices stay
    on the CPU, where the per-row state lives.
    """

    def __init__(self, loader, device):
        self.loader = loader
        self.device = device

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield IndexedBatch(batch[0].to(self.device, non_blocking=True),
                               batch[1].to(self.device, non_blocking=True), batch.rows)


def limit_torch_threads(n_threads=1):
    """Set torch's intra-op thread count in the calling process.

    Dask's nanny already starts worker processes with ``OMP_NUM_THREADS=1``, so
    torch uses one thread per worker process; several worker processes (or
    threads) per machine then share the cores without oversubscription. For
    workers started otherwise, run this on each of them, e.g.
    ``client.run(limit_torch_threads, 1)``.

    Parameters
    ----------
    n_threads : int, default=1
        Threads for torch's intra-op parallelism.

    Returns
    -------
    n_threads : int
        ``torch.get_num_threads()`` after the change.
    """
    if not isinstance(n_threads, int) or isinstance(n_threads, bool) or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}.")
    torch.set_num_threads(n_threads)
    return torch.get_num_threads()


try:  # AccelerateMixin needs an accelerate.Accelerator; skorch.hf imports without it.
    import accelerate  # noqa: F401
    from skorch.hf import AccelerateMixin
    from skorch.utils import to_tensor
except ImportError:  # pragma: no cover - depends on the environment
    AccelerateMixin = None


if AccelerateMixin is not None:
    __all__.append("AcceleratedRobustNetClassifier")

    class AcceleratedRobustNetClassifier(AccelerateMixin, RobustNetClassifier):
        """:class:`~skrobust.RobustNetClassifier` trained through Hugging Face ``accelerate``.

        ``AccelerateMixin`` runs its own training step (``infer``,
        ``get_loss(..., training=True)``, ``accelerator.backward``);
        ``RobustNetClassifier`` turns that ``get_loss`` into the reweighted
        objective ``sum_i c_i * loss_i`` with detached coefficients, computed
        from the norms of the global batch (see :func:`gather_norms`), so that
        after ``DistributedDataParallel`` averages the gradients every process
        holds ``(1/B) sum_i w_i grad_i`` over the ``B`` rows of the global batch:
        the update of one process that sees the whole batch. A plain
        ``class MyNet(AccelerateMixin, RobustNetClassifier)`` gets the same
        reweighting; this class adds what GPUs and multi-process runs need:

        * ``iterator_train`` defaults to :class:`ShardedBatchLoader`, so each
          process trains on its slice of every global batch of ``batch_size``
          rows (accelerate only shards ``torch.utils.data.DataLoader``);
        * batches of the default iterators are moved to the accelerator's
          device (accelerate moves only the ``DataLoader`` objects it prepares);
        * evaluation with the default ``iterator_valid`` (not sharded: every
          process predicts every row) skips accelerate's gather of the
          predictions, which would otherwise repeat each row once per process.

        Per-row state (``noise_scores_``, ``label_issues_``, the rows left out
        by ``weighting="adaptive"``) is updated with the rows of the global
        batch, so it is the same in every process.

        Launch the script with ``accelerate launch`` (or ``torchrun``), one
        process per GPU. In a single process it trains like
        ``RobustNetClassifier``.

        Parameters
        ----------
        module : torch.nn.Module class or instance, default=MLP
            As in :class:`~skrobust.RobustNetClassifier`.
        accelerator : accelerate.Accelerator
            The accelerator (e.g. ``Accelerator()``, or ``Accelerator(cpu=True)``
            for CPU processes with the gloo backend).
        iterator_train : class, default=ShardedBatchLoader
            Training batches; ``batch_size`` counts the rows of a global batch.
        **kwargs
            Any parameter of :class:`~skrobust.RobustNetClassifier` and of
            :class:`skorch.hf.AccelerateMixin` (``unwrap_after_train``, ...).
            Leave ``device=None``: accelerate places the module.

        See Also
        --------
        skrobust.RobustNetClassifier : The estimator and its parameters.
        gather_norms : How the weights of the global batch are computed.

        Notes
        -----
        Each step gathers the per-sample norms, losses, logits and row indices
        of all processes (two small ``all_gather`` calls, ``B * (n_classes + 3)``
        float64 values) in addition to DDP's gradient all-reduce.

        Examples
        --------
        >>> from accelerate import Accelerator
        >>> from sklearn.datasets import load_breast_cancer
        >>> from sklearn.preprocessing import scale
        >>> from skrobust.distributed import AcceleratedRobustNetClassifier
        >>> X, y = load_breast_cancer(return_X_y=True)
        >>> net = AcceleratedRobustNetClassifier(
        ...     accelerator=Accelerator(cpu=True), max_epochs=5, verbose=0,
        ...     random_state=0)
        >>> net.fit(scale(X), y).score(scale(X), y) > 0.9
        True
        """

        def __init__(self, module=MLP, *, accelerator, iterator_train=ShardedBatchLoader,
                     **kwargs):
            super().__init__(module, accelerator=accelerator,
                             iterator_train=iterator_train, **kwargs)

        def _initialize_accelerator(self):
            # On CPU processes (gloo) accelerate wraps every prepared module in
            # DistributedDataParallel, which refuses modules without trainable
            # parameters, e.g. the usual criterion; on GPUs accelerate skips
            # those itself. Nothing needs placing on CPU, so leave them alone.
            from accelerate.utils import DistributedType

            if (self._wrapped_with_accelerator
                    or self.accelerator.distributed_type != DistributedType.MULTI_CPU):
                return super()._initialize_accelerator()
            criteria = self._criteria
            self._criteria = [
                name for name in criteria
                if any(p.requires_grad for p in getattr(getattr(self, name + "_"),
                                                          "parameters", list)())
            ]
            try:
                return super()._initialize_accelerator()
            finally:
                self._criteria = criteria

        def _initialize_callbacks(self):
            # skorch's PrintLog honours verbose=0 only when its sink is print;
            # AccelerateMixin's "auto" sink (accelerator.print) would print anyway.
            if self.callbacks__print_log__sink == "auto" and not self.verbose:
                self.callbacks__print_log__sink = print
            return super()._initialize_callbacks()

        def infer(self, x, **fit_params):
            """Forward pass, with ``x`` moved to the accelerator's device first.

            Parameters
            ----------
            x : torch.Tensor or other input of ``skorch.utils.to_tensor``
                Features.
            **fit_params : dict
                Passed on to the module's ``forward``.

            Returns
            -------
            y_pred : torch.Tensor
            """
            if self.accelerator.device_placement and self.device is None:
                x = to_tensor(x, device=self.accelerator.device)
            return super().infer(x, **fit_params)

        def get_iterator(self, dataset, training=False):
            """The batch iterator, moving batches to the accelerator's device.

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
            iterator = super().get_iterator(dataset, training=training)
            device = torch.device(self.accelerator.device)
            if (isinstance(iterator, BatchLoader) and self.accelerator.device_placement
                    and device.type != "cpu"):
                iterator = _DeviceBatches(iterator, device)
            return iterator

        def evaluation_step(self, batch, training=False):
            """Predict one batch, gathering the predictions of sharded batches.

            With the default ``iterator_valid`` (a plain ``BatchLoader``) every
            process predicts every row, and the predictions are returned as they
            are. With ``iterator_valid=ShardedBatchLoader`` each process predicts
            its slice and the slices are concatenated (:func:`gather_columns`,
            which allows slices of different lengths). Other iterators (e.g. a
            ``DataLoader`` that accelerate shards) use accelerate's
            ``gather_for_metrics``.

            Parameters
            ----------
            batch : IndexedBatch or (X, y) tuple
                A batch from the evaluation iterator.
            training : bool, default=False
                Whether the module is in train mode.

            Returns
            -------
            y_pred : torch.Tensor
            """
            iterator = self.iterator_valid
            if isinstance(iterator, type) and issubclass(iterator, BatchLoader):
                y_pred = super(AccelerateMixin, self).evaluation_step(batch, training=training)
                if issubclass(iterator, ShardedBatchLoader):
                    (y_pred,), _ = gather_columns([y_pred])
                return y_pred
            return super().evaluation_step(batch, training=training)
else:  # pragma: no cover - depends on the environment

    def __getattr__(name):
        if name == "AcceleratedRobustNetClassifier":
            raise ImportError(
                "AcceleratedRobustNetClassifier needs the accelerate package: "
                "pip install 'skrobust[distributed]' (or pip install accelerate)."
            )
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
