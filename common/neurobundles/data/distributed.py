"""One shard of the subjects per process for ``torchrun`` training, cached once per process."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch.distributed as dist
from monai.data import CacheDataset, partition_dataset

__all__ = ["ShardedCacheDataset"]


class ShardedCacheDataset(CacheDataset):
    """MONAI's ``CacheDataset`` over this process's share of ``data``.

    The sub-volume sampler streams crops (an iterable dataset), so a ``DistributedSampler`` cannot
    shard it; sharding the subjects before caching does, and each process caches only its own
    volumes. ``multi_gpu_train.json`` swaps this class in for ``CacheDataset`` and keeps every other
    argument, so whatever fills ``train#dataset#data`` (a split, MONAI Label) is what gets sharded.

    Args:
        data: the datalist.
        transform: the (deterministic) preprocessing to cache.
        even_divisible: repeat a few subjects so every process gets as many: training steps in lockstep, and a
            process with an empty validation shard would leave the others waiting in the metric's all-gather.
        seed: seed of the shuffle before sharding (the same in every process).
        rank, world_size: default from ``torch.distributed`` when it is initialised, else one shard of everything.
        kwargs: passed to ``CacheDataset``.
    """

    def __init__(
        self,
        data: Sequence,
        transform: Any = None,
        even_divisible: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        world_size = world_size if world_size is not None else (dist.get_world_size() if distributed else 1)
        rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}.")
        items = list(data)
        if items and even_divisible and len(items) < world_size:
            items = items * math.ceil(world_size / len(items))  # fewer subjects than processes: repeat them
        if len(items) >= world_size:
            shards = partition_dataset(
                items, num_partitions=world_size, shuffle=True, seed=seed, even_divisible=even_divisible
            )
            items = shards[rank]
        else:  # no data (MONAI Label without validation), or uneven shards were asked for
            items = items[rank : rank + 1]
        super().__init__(data=items, transform=transform, **kwargs)
