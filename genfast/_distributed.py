"""Scale-out of `genfast.sample` on torch.distributed: which items a rank
samples, and the gather that puts the global batch back together.

A global batch of B items over W ranks: rank r samples the contiguous items
[lo, hi) with lo = r (B // W) + min(r, B % W) (the first B % W ranks take one
item more). Item i's noise depends only on (seed, i) (genfast.randn with
``sample_offset=lo``), so the union of the shares is the single-process batch
bit for bit. The gather pads each share to ceil(B / W) items so that every
rank sends the same shape (gloo's all_gather needs it), then drops the pad.
"""

from __future__ import annotations

import torch


def world(group=None):
    """(rank, world size) in ``group`` (the default group when None), or None
    when there is no process group to split over."""
    import torch.distributed as dist
    if not dist.is_available():
        if group is not None:
            raise ValueError("group= given but torch.distributed is not available in this build")
        return None
    if group is None:
        if not dist.is_initialized():
            return None
        return dist.get_rank(), dist.get_world_size()
    if not dist.is_initialized():
        raise ValueError("group= given but no process group is initialised "
                         "(torch.distributed.init_process_group)")
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("group= does not contain this process")
    return rank, dist.get_world_size(group)


def share(batch: int, rank: int, size: int) -> tuple[int, int]:
    """The contiguous items [lo, hi) of ``rank`` out of ``batch`` over ``size`` ranks."""
    base, rem = divmod(batch, size)
    lo = rank * base + min(rank, rem)
    return lo, lo + base + (1 if rank < rem else 0)


def gather(x: torch.Tensor, batch: int, rank: int, size: int, group=None) -> torch.Tensor:
    """The global batch on every rank from each rank's share ``x``."""
    import torch.distributed as dist
    most = -(-batch // size)
    padded = x.new_zeros((most,) + tuple(x.shape[1:]))
    padded[:x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded, group=group)
    keep = []
    for r, part in enumerate(parts):
        lo, hi = share(batch, r, size)
        keep.append(part[:hi - lo])
    return torch.cat(keep)
