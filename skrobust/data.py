"""The in-memory data path: a dataset that knows its rows, and a slicing loader.

skorch's default path indexes a ``Dataset`` row by row and collates the rows
back into a batch. For arrays that already sit in memory, slicing the tensors
directly is several times faster, and it lets each batch carry the dataset
rows it holds: the training step needs them for per-row noise scores and user
sample weights.
"""

import torch
from torch.utils.data import Subset

__all__ = ["BatchLoader", "IndexedBatch", "RowIndexedDataset"]


class RowIndexedDataset(torch.utils.data.Dataset):
    """Features and targets held as tensors, addressed by row.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, ...)
        Features.
    y : torch.Tensor of shape (n_samples,) or None, default=None
        Targets; ``None`` for prediction, in which case dummy zeros stand in.

    Attributes
    ----------
    X : torch.Tensor
        The features, as given.
    y : torch.Tensor or None
        The targets, as given.
    """

    def __init__(self, X, y=None):
        if y is not None and len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}.")
        self.X = X
        self.y = y

    def __len__(self):
        return len(self.X)

    @property
    def shape(self):
        """Shape of the features, for code written for arrays (e.g. ``InputShapeSetter``)."""
        return tuple(self.X.shape)

    def __getitem__(self, i):
        return self.X[i], self._targets(i)

    def _targets(self, rows):
        if self.y is None:
            n = len(rows) if isinstance(rows, torch.Tensor) and rows.dim() else None
            return torch.zeros(n, dtype=torch.long) if n is not None else torch.tensor(0)
        return self.y[rows]


class IndexedBatch(tuple):
    """A ``(X, y)`` batch that also carries the dataset row of each sample.

    It unpacks like the pair skorch expects (``Xi, yi = batch``); the rows are
    in :attr:`rows`.

    Parameters
    ----------
    X : torch.Tensor
        The batch's features.
    y : torch.Tensor
        The batch's targets.
    rows : torch.Tensor of shape (batch_size,)
        Row of each sample in the dataset passed to ``fit``.
    """

    def __new__(cls, X, y, rows):
        batch = super().__new__(cls, (X, y))
        batch.rows = rows
        return batch

    def __reduce__(self):
        return (type(self), (self[0], self[1], self.rows))


def _resolve_rows(dataset):
    """The RowIndexedDataset under ``dataset`` and the rows it exposes (None: all).

    ``(None, None)`` when ``dataset`` is another kind of Dataset.
    """
    rows = None
    while isinstance(dataset, Subset):
        index = torch.as_tensor(dataset.indices, dtype=torch.long)
        rows = index if rows is None else index[rows]
        dataset = dataset.dataset
    if not isinstance(dataset, RowIndexedDataset):
        return None, None
    return dataset, rows


class BatchLoader:
    """Iterate over a :class:`RowIndexedDataset` by slicing its tensors.

    A drop-in replacement for ``torch.utils.data.DataLoader`` as skorch's
    ``iterator_train`` / ``iterator_valid`` for in-memory data: no per-row
    indexing, no collation, and every batch is an :class:`IndexedBatch`.
    Any other Dataset (e.g. a ``skorch.dataset.Dataset`` given to
    ``skorch.helper.predefined_split``, or passed to ``predict``) is iterated
    by a ``torch.utils.data.DataLoader`` with the same settings; its batches
    carry no rows.

    Parameters
    ----------
    dataset : RowIndexedDataset, torch.utils.data.Subset of one, or any Dataset
        The data to iterate over (skorch's validation split yields Subsets).
    batch_size : int, default=128
        Samples per batch.
    shuffle : bool, default=False
        Draw a new random order at every pass.
    drop_last : bool, default=False
        Drop the last batch if it is smaller than ``batch_size``.
    generator : torch.Generator or None, default=None
        Random source for shuffling; the global one when ``None``.
    """

    def __init__(self, dataset, batch_size=128, shuffle=False, drop_last=False,
                 generator=None):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator
        self._base, self._rows = _resolve_rows(dataset)

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        if self._base is None:
            yield from torch.utils.data.DataLoader(
                self.dataset, batch_size=self.batch_size, shuffle=self.shuffle,
                drop_last=self.drop_last, generator=self.generator)
            return
        base, rows, n = self._base, self._rows, len(self.dataset)
        if self.shuffle:
            order = self._permutation(n)
            rows = order if rows is None else rows[order]
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            end = min(start + self.batch_size, n)
            index = self._share(torch.arange(start, end) if rows is None else rows[start:end])
            if rows is None and len(index) == end - start:  # a view: no gather
                yield IndexedBatch(base.X[start:end], base._targets(index), index)
            else:
                yield IndexedBatch(base.X[index], base._targets(index), index)

    def _permutation(self, n):
        """A random order of ``n`` rows for one pass."""
        return torch.randperm(n, generator=self.generator)

    def _share(self, index):
        """The rows of a batch that this loader yields (all of them here)."""
        return index
