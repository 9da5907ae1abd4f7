"""One item per axial slice of cached multi-modal volumes, for 2D networks (MRISeg's SegNet on BraTS).

:class:`SliceDataset` serves every slice of every case of a MONAI dataset of volumes (the cases read once, by a
``CacheDataset(copy_cache=False, as_contiguous=False)``, or a few at a time). :class:`VolumeBlockSampler` shuffles
slices within a few cases at a time, so a dataset that does not cache (``Dataset``, ``PersistentDataset``) still
loads every case once per epoch instead of once per slice, and gives every ``torchrun`` process the same number of
items (:func:`min_across_ranks`) so that their steps stay in lockstep.

Tumour slices are the minority (the seed weights the positive class for the same reason). ``tumour_repeats=r``
lists every tumour-bearing slice r times per epoch: with T tumour slices and N others, the tumour fraction of
the items becomes r·T / (r·T + N) (the ``tumour_fraction`` property measures it). On the test fixture (3 cases
from fsaverage, 177 of 465 slices with tumour) it goes 0.38 → 0.55 → 0.65 → 0.71 for r = 1, 2, 3, 4; each
epoch grows by (r − 1)·T items. ``skip_empty`` drops slices without brain (6 of 465 there; real BraTS cases
have more empty slices at both ends).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from monai.data import MetaTensor
from monai.transforms import Transform, apply_transform
from torch.utils.data import Dataset, Sampler

__all__ = ["SliceDataset", "VolumeBlockSampler", "min_across_ranks"]


def min_across_ranks(value: int) -> int:
    """The smallest ``value`` over the ``torchrun`` processes (``value`` itself without a process group).

    Processes holding different cases have different numbers of slices; giving every one the smallest epoch
    keeps ``DistributedDataParallel``'s gradient exchanges matched.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return int(value)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor([int(value)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


class SliceDataset(Dataset):
    """One item per slice of every volume of a MONAI dataset of cases.

    Items are ``{key: (C, H, W) tensor for each of keys, "id": case id, "slice": index, "case": position}``
    plus the case's other non-array entries (paths), in case order then slice order (unless skipped or
    repeated). The volumes come from ``volumes[i]``: make it a ``CacheDataset(copy_cache=False,
    as_contiguous=False)`` to read each case once for the whole run (``copy_cache=True`` would copy a whole case
    for every slice), or pair a plain dataset with :class:`VolumeBlockSampler`; the last ``cached_volumes``
    cases read are kept here either way. Items are copies: transforms may change them in place.

    Args:
        volumes: a sequence (MONAI dataset) of dictionaries holding (C, *spatial) arrays.
        transform: applied to every slice item (e.g. :func:`neurobundles.transforms.slices.slice_transforms`).
        keys: the arrays to slice; others are copied when they are not arrays.
        axis: spatial axis to slice across (2, the last: axial slices of BraTS's LPS grid).
        image_key: the key whose non-zero voxels mark brain (for ``skip_empty``).
        label_key: the key whose non-zero voxels mark tumour (for ``tumour_repeats``); absent keys mean none.
        skip_empty: leave out slices with no brain (every channel zero).
        tumour_repeats: list every slice holding tumour this many times (oversampling; 1 = once).
        cached_volumes: how many read volumes to keep (a small least-recently-used cache).
    """

    def __init__(
        self,
        volumes: Sequence[Mapping[Hashable, object]],
        transform: Transform | None = None,
        keys: Sequence[str] = ("image", "label"),
        axis: int = 2,
        image_key: str = "image",
        label_key: str = "label",
        skip_empty: bool = False,
        tumour_repeats: int = 1,
        cached_volumes: int = 2,
    ) -> None:
        if int(tumour_repeats) < 1:
            raise ValueError(f"tumour_repeats must be a whole number >= 1, got {tumour_repeats}.")
        self.volumes = volumes
        self.transform = transform
        self.keys = tuple(keys)
        self.axis = int(axis)
        self.image_key, self.label_key = image_key, label_key
        self.cached_volumes = max(1, int(cached_volumes))
        self._cache: OrderedDict[int, Mapping[Hashable, object]] = OrderedDict()
        self.index: list[tuple[int, int]] = []
        """``(case, slice)`` of every item."""
        self.tumour: list[bool] = []
        """Whether each item's slice holds tumour."""
        self.stats = {"cases": len(volumes), "slices": 0, "brain_slices": 0, "tumour_slices": 0}
        """Counts over the volumes before skipping and repeating."""
        for case in range(len(volumes)):
            brain, tumour = self._slice_content(self._volume(case))
            self.stats["slices"] += len(brain)
            self.stats["brain_slices"] += int(brain.sum())
            self.stats["tumour_slices"] += int(tumour.sum())
            for position, (has_brain, has_tumour) in enumerate(zip(brain.tolist(), tumour.tolist())):
                if skip_empty and not has_brain:
                    continue
                for _ in range(int(tumour_repeats) if has_tumour else 1):
                    self.index.append((case, position))
                    self.tumour.append(bool(has_tumour))

    def _slice_content(self, volume: Mapping[Hashable, object]) -> tuple[np.ndarray, np.ndarray]:
        """Per slice: any non-zero image voxel (brain), any non-zero label voxel (tumour)."""
        image = torch.as_tensor(volume[self.image_key])
        others = tuple(d for d in range(image.ndim) if d != self.axis + 1)
        brain = (image != 0).any(dim=others)
        label = volume.get(self.label_key)
        tumour = torch.zeros_like(brain) if label is None else (torch.as_tensor(label) != 0).any(dim=others)
        return brain.cpu().numpy(), tumour.cpu().numpy()

    def _volume(self, case: int) -> Mapping[Hashable, object]:
        if case in self._cache:
            self._cache.move_to_end(case)
            return self._cache[case]
        volume = self.volumes[case]
        self._cache[case] = volume
        while len(self._cache) > self.cached_volumes:
            self._cache.popitem(last=False)
        return volume

    @property
    def tumour_fraction(self) -> float:
        """Fraction of the items whose slice holds tumour (after skipping and repeating)."""
        return float(np.mean(self.tumour)) if self.tumour else 0.0

    def case_of(self, item: int) -> int:
        """Position, in ``volumes``, of the case an item comes from."""
        return self.index[item][0]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict[Hashable, object]:
        case, position = self.index[item]
        volume = self._volume(case)
        out: dict[Hashable, object] = {}
        for key, value in volume.items():
            if key in self.keys:
                tensor = value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)
                out[key] = tensor.select(self.axis + 1, position).clone(memory_format=torch.contiguous_format)
            elif not isinstance(value, (torch.Tensor, np.ndarray)):
                out[key] = value
        out["slice"] = position
        out["case"] = case
        return apply_transform(self.transform, out) if self.transform is not None else out


class VolumeBlockSampler(Sampler[int]):
    """Shuffle a :class:`SliceDataset` a few cases at a time, so each case is read once per epoch.

    Cases are shuffled and grouped ``volumes_per_block`` at a time; the items of a group are shuffled together
    and served before the next group's. Batches thus mix slices of several cases while a plain (non-caching)
    volume dataset loads each case once per epoch (per data-loader worker), given
    ``SliceDataset(cached_volumes=volumes_per_block)``. The order depends only on ``seed`` and the epoch
    (``set_epoch``; each new iteration otherwise advances the epoch by one).

    Args:
        dataset: the slice dataset.
        volumes_per_block: cases whose slices are mixed together.
        shuffle: False serves items in dataset order.
        seed: seed of the shuffles.
        num_items: items per epoch: the first ``num_items`` of the order (fewer than the dataset holds), or the
            order followed by a second one's start (more); None serves every item once.
    """

    def __init__(
        self,
        dataset: SliceDataset,
        volumes_per_block: int = 4,
        shuffle: bool = True,
        seed: int = 0,
        num_items: int | None = None,
    ) -> None:
        if int(volumes_per_block) < 1:
            raise ValueError(f"volumes_per_block must be >= 1, got {volumes_per_block}.")
        if num_items is not None and int(num_items) < 0:
            raise ValueError(f"num_items must be >= 0, got {num_items}.")
        self.dataset = dataset
        self.volumes_per_block = int(volumes_per_block)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_items = None if num_items is None else int(num_items)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle the next iteration as epoch ``epoch`` (iterations advance it by one on their own)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset) if self.num_items is None else self.num_items

    def __iter__(self) -> Iterator[int]:
        if self.num_items is None:
            yield from self._order()
            return
        served = 0
        while served < self.num_items and len(self.dataset):
            for item in self._order():
                if served == self.num_items:
                    return
                yield item
                served += 1

    def _order(self) -> Iterator[int]:
        if not self.shuffle:
            yield from range(len(self.dataset))
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        items_of: dict[int, list[int]] = {}
        for item, (case, _) in enumerate(self.dataset.index):
            items_of.setdefault(case, []).append(item)
        cases = np.asarray(sorted(items_of))
        cases = cases[rng.permutation(len(cases))]
        for start in range(0, len(cases), self.volumes_per_block):
            block = np.concatenate([items_of[int(c)] for c in cases[start : start + self.volumes_per_block]])
            yield from block[rng.permutation(len(block))].tolist()
