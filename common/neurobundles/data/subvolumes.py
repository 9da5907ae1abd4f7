"""A fixed number of training sub-volumes per epoch, drawn on the fly from a few cached volumes, in random order.

MedicalZooPytorch draws ``samples_train`` (1024) crops from the training subjects and ``samples_val`` (128) from
the validation subjects before training, and shuffles them. :class:`SubVolumeDataset` gives the same epoch
on the fly: its length is the number of sub-volumes, index ``i`` takes a crop of volume ``i mod n`` (every
subject contributes equally), and a ``DataLoader`` with ``shuffle=True`` mixes subjects within batches. The
sampler (any multi-sample dictionary transform, e.g. ``RandForegroundFractionCropd``) draws several crops per
call, which are queued and handed out one by one, so its fixed cost per call is shared. With ``fixed=True``
(validation) the crops are drawn once from a seed and are the same in every epoch, so validation scores are
comparable from epoch to epoch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from monai.transforms import Randomizable, apply_transform
from torch.utils.data import Dataset

__all__ = ["SubVolumeDataset"]


class SubVolumeDataset(Dataset, Randomizable):
    """``num_samples`` random sub-volumes of ``data`` per epoch (see the module's description).

    Args:
        data: the volumes, preprocessed (a MONAI ``CacheDataset`` of the subjects, or any sequence of dicts).
        sampler: a multi-sample dictionary transform: one volume → a list of crops.
        num_samples: sub-volumes per epoch, the dataset's length (0 when ``data`` is empty).
        fixed: draw the crops once (from ``seed``) and return the same ones in every epoch (validation).
        transform: applied to each crop (augmentation, type conversion), optional.
        seed: seed of the fixed crops.
    """

    def __init__(
        self,
        data: Sequence[Any],
        sampler: Callable[[Any], list[dict]],
        num_samples: int = 1024,
        fixed: bool = False,
        transform: Callable | None = None,
        seed: int = 0,
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be at least 0, got {num_samples}.")
        self.data, self.sampler, self.transform = data, sampler, transform
        self.num_samples, self.fixed, self.seed = int(num_samples), fixed, int(seed)
        self._queues: dict[int, deque] = {}
        self._fixed: dict[int, list[dict]] = {}

    def __len__(self) -> int:
        return self.num_samples if len(self.data) else 0

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> Randomizable:
        """Seed the sampler (MONAI's ``DataLoader`` does, per worker); fixed crops keep their own seed."""
        super().set_random_state(seed, state)
        if not self.fixed and isinstance(self.sampler, Randomizable):
            self.sampler.set_random_state(seed, state)
        self._queues.clear()
        return self

    def randomize(self, data: Any = None) -> None:
        """Nothing to draw here: the sampler draws the crops."""

    def _draw(self, volume: int) -> list[dict]:
        crops = self.sampler(self.data[volume])
        return list(crops) if isinstance(crops, (list, tuple)) else [crops]

    def _fixed_crops(self, volume: int) -> list[dict]:
        if volume not in self._fixed:
            needed = len(range(volume, self.num_samples, len(self.data)))
            if isinstance(self.sampler, Randomizable):
                self.sampler.set_random_state(self.seed + volume)
            crops: list[dict] = []
            while len(crops) < needed:
                crops += self._draw(volume)
            self._fixed[volume] = crops[:needed]
        return self._fixed[volume]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} sub-volumes.")
        volume, rank = index % len(self.data), index // len(self.data)
        if self.fixed:
            crop = self._fixed_crops(volume)[rank]
        else:
            queue = self._queues.setdefault(volume, deque())
            if not queue:
                queue.extend(self._draw(volume))
            crop = queue.popleft()
        return apply_transform(self.transform, crop) if self.transform is not None else crop
