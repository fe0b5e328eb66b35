"""Collectives over the processes of a data-parallel fit.

Each process of ``torch.distributed`` holds a slice of every batch, while the
weighting rules compare a sample with the whole batch: the functions here
concatenate per-sample values of all processes. Everything degrades to the
single-process behaviour when ``torch.distributed`` is not initialised. Nothing
here knows about the estimators.
"""

import torch
from torch import distributed as dist

__all__ = ["broadcast_from_first", "gather_columns", "gather_norms", "process_group_info"]


def process_group_info(group=None):
    """Number of processes and this process's rank in ``group``.

    Parameters
    ----------
    group : torch.distributed.ProcessGroup or None, default=None
        The process group; ``None`` is the default (world) group.

    Returns
    -------
    world_size : int
        ``1`` when ``torch.distributed`` is not available or not initialised.
    rank : int
        ``0`` when ``torch.distributed`` is not available or not initialised.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def _collective_device(group, fallback):
    """The device collectives of ``group`` need (NCCL: the current CUDA device)."""
    if "nccl" in str(dist.get_backend(group)) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return fallback


def gather_columns(tensors, group=None):
    """Concatenate per-sample tensors of every process, in rank order.

    The processes may hold different numbers of samples (e.g. the last batch
    of an epoch): the rows are padded for the collective and trimmed again.
    All tensors travel in one ``all_gather`` as float64 columns, which holds
    float32/float16 values and integer row indices below ``2**53`` exactly.

    Parameters
    ----------
    tensors : sequence of torch.Tensor
        Tensors with the same first dimension (the local samples), on one
        device; each is detached, gathered and returned in its own dtype.
    group : torch.distributed.ProcessGroup or None, default=None
        The process group; ``None`` is the default (world) group.

    Returns
    -------
    gathered : list of torch.Tensor
        For each input, the concatenation over the processes of ``group``
        (rank 0 first). Without ``torch.distributed`` (or with one process),
        the inputs themselves, detached.
    local : slice
        Where this process's samples lie in each gathered tensor.

    Examples
    --------
    >>> import torch
    >>> from skrobust.distributed import gather_columns
    >>> (norms, rows), local = gather_columns([torch.ones(3), torch.arange(3)])
    >>> local, norms.shape
    (slice(0, 3, None), torch.Size([3]))
    """
    tensors = [t.detach() for t in tensors]
    if not tensors:
        raise ValueError("gather_columns needs at least one tensor.")
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(
            f"All tensors need the same first dimension; got "
            f"{[tuple(t.shape) for t in tensors]}.")
    world, rank = process_group_info(group)
    if world == 1:
        return tensors, slice(0, n)
    device = _collective_device(group, tensors[0].device)
    columns = [t.reshape(n, -1).to(device=device, dtype=torch.float64) for t in tensors]
    widths = [c.shape[1] for c in columns]
    payload = torch.cat(columns, dim=1)

    size = torch.tensor([n], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size, group=group)
    sizes = torch.cat(sizes).tolist()
    padded = payload.new_zeros((max(sizes), payload.shape[1]))
    padded[:n] = payload
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    full = torch.cat([part[:k] for part, k in zip(parts, sizes)])

    gathered, offset = [], 0
    for t, width in zip(tensors, widths):
        block = full[:, offset:offset + width].reshape((-1, *t.shape[1:]))
        gathered.append(block.to(device=t.device, dtype=t.dtype))
        offset += width
    start = sum(sizes[:rank])
    return gathered, slice(start, start + n)


def gather_norms(norms, group=None):
    """Per-sample gradient norms of the global batch, from every process.

    The weighting rules (:func:`skrobust.compute_weights`) compare each norm
    with the centre and spread of its batch. Under data parallelism each
    process holds a slice of the batch; computing the weights on the gathered
    norms gives every process the weights of the whole batch, identical to one
    process that sees the whole batch.

    Parameters
    ----------
    norms : torch.Tensor of shape (n_local,)
        This process's per-sample norms.
    group : torch.distributed.ProcessGroup or None, default=None
        The process group; ``None`` is the default (world) group.

    Returns
    -------
    norms : torch.Tensor of shape (n_global,)
        The norms of all processes, rank 0 first.
    local : slice
        This process's norms within them: ``weights[local]`` are its weights.

    Examples
    --------
    >>> import torch
    >>> from skrobust import compute_weights
    >>> from skrobust.distributed import gather_norms
    >>> everyone, local = gather_norms(torch.tensor([1.0, 1.1, 5.0]))
    >>> compute_weights(everyone)[local]
    tensor([1., 1., 0.])
    """
    (gathered,), local = gather_columns([norms.reshape(-1)], group=group)
    return gathered, local


def broadcast_from_first(tensor, group=None):
    """``tensor`` as held by the first process of ``group``.

    Parameters
    ----------
    tensor : torch.Tensor
        This process's tensor; every process passes one of the same shape and dtype.
    group : torch.distributed.ProcessGroup or None, default=None
        The process group; ``None`` is the default (world) group.

    Returns
    -------
    tensor : torch.Tensor
        The first process's values, on the device of ``tensor``.
    """
    device = _collective_device(group, tensor.device)
    moved = tensor.to(device)
    src = dist.get_global_rank(group, 0) if group is not None else 0
    dist.broadcast(moved, src=src, group=group)
    return moved.to(tensor.device)
