"""Training sub-volumes as MedicalZooPytorch draws them: random crops holding a share of the subject's labelled voxels.

MedicalZoo (``create_sub_volumes`` / ``find_non_zero_labels_mask``) draws a crop position uniformly, counts the
non-zero label voxels inside, and keeps the crop when that count divided by the subject's number of non-zero
label voxels is at least ``threshold`` (0.1); otherwise it draws again (forever, if no crop can qualify). It
writes the kept crops to ``.npy`` files before training.

Here the same rule runs on the fly. A summed-volume table of the foreground (one cumulative sum per axis) gives
any crop's count from 2^ndim lookups, so candidates are drawn and tested in vectorised batches and the accepted
ones are kept in draw order: the crops are uniform over the acceptable positions, as MedicalZoo's. Should a
batch budget pass without enough accepted crops, the counts of *every* position are computed at once and the
crops drawn from the acceptable ones — or, when there are none, a fallback applies (``"relax"``: accept crops
holding at least ``relax_ratio`` of the best share any crop reaches, with a warning naming the subject;
``"raise"``: an error). Positions range over every crop that fits (MedicalZoo's ``np.random.randint(size - roi)``
never draws the last one).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform, SpatialCrop
from monai.transforms.traits import MultiSampleTrait

__all__ = [
    "FALLBACKS",
    "RandForegroundFractionCrop",
    "RandForegroundFractionCropd",
    "all_box_sums",
    "box_sums",
    "foreground_fraction_starts",
    "summed_volume_table",
]

FALLBACKS = ("relax", "raise")


def summed_volume_table(foreground: np.ndarray) -> np.ndarray:
    """``T`` with ``T[i, j, k] = foreground[:i, :j, :k].sum()`` (a leading plane of zeros per axis), int32/int64."""
    dtype = np.int32 if foreground.size < 2**31 else np.int64
    table = np.zeros(tuple(s + 1 for s in foreground.shape), dtype=dtype)
    inner = table[(slice(1, None),) * foreground.ndim]
    np.cumsum(foreground, axis=0, dtype=dtype, out=inner)
    for axis in range(1, foreground.ndim):
        np.cumsum(inner, axis=axis, out=inner)
    return table


def box_sums(
    table: np.ndarray, starts: np.ndarray, roi: Sequence[int], offset: Sequence[int] | None = None
) -> np.ndarray:
    """Foreground counts of the boxes ``[start, start + roi)`` for ``(n, ndim)`` starts (inclusion–exclusion).

    ``table`` may cover only a sub-block of the volume beginning at ``offset`` (the foreground's bounding box):
    box corners are clamped to it, which counts exactly the foreground inside each box.
    """
    origin = np.zeros(table.ndim, dtype=np.int64) if offset is None else np.asarray(offset, dtype=np.int64)
    size = np.asarray(table.shape, dtype=np.int64) - 1
    starts = np.asarray(starts, dtype=np.int64) - origin
    ends = np.clip(starts + np.asarray(roi, dtype=np.int64), 0, size)
    starts = np.clip(starts, 0, size)
    total = np.zeros(len(starts), dtype=np.int64)
    for upper in itertools.product((False, True), repeat=table.ndim):
        corner = tuple(np.where(u, ends[:, a], starts[:, a]) for a, u in enumerate(upper))
        sign = -1 if (len(upper) - sum(upper)) % 2 else 1
        total += sign * table[corner]
    return total


def all_box_sums(
    table: np.ndarray, roi: Sequence[int], shape: Sequence[int], offset: Sequence[int] | None = None
) -> np.ndarray:
    """Foreground counts of every box of size ``roi`` that fits in ``shape``, indexed by the box's first voxel."""
    origin = [0] * table.ndim if offset is None else [int(o) for o in offset]
    size = [n - 1 for n in table.shape]
    lower = [np.clip(np.arange(n - r + 1) - o, 0, m) for n, r, o, m in zip(shape, roi, origin, size)]
    higher = [np.clip(np.arange(n - r + 1) + r - o, 0, m) for n, r, o, m in zip(shape, roi, origin, size)]
    total = np.zeros([len(i) for i in lower], dtype=np.int64)
    for upper in itertools.product((False, True), repeat=table.ndim):
        corner = np.ix_(*[h if u else lo for u, lo, h in zip(upper, lower, higher)])
        sign = -1 if (len(upper) - sum(upper)) % 2 else 1
        total += sign * table[corner]
    return total


def foreground_fraction_starts(
    foreground: np.ndarray,
    roi_size: Sequence[int],
    num_samples: int,
    threshold: float,
    rng: np.random.RandomState,
    fallback: str = "relax",
    relax_ratio: float = 0.5,
    batch_size: int = 512,
    max_candidates: int = 65536,
    source: str = "the label map",
) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, fractions)``: first voxels of ``num_samples`` crops and the share of the foreground each holds.

    A crop is acceptable when it holds at least ``threshold`` of all foreground voxels (MedicalZoo's rule).
    Randomness comes only from ``rng``.

    Args:
        foreground: boolean volume (non-zero labels).
        roi_size: crop size per axis.
        num_samples: crops to return.
        threshold: smallest share of the foreground a crop must hold, in [0, 1].
        rng: the caller's random state (``self.R`` in a MONAI transform).
        fallback: ``"relax"`` or ``"raise"`` when no crop reaches ``threshold``.
        relax_ratio: with ``"relax"``, accept crops holding this share of the best crop's share.
        batch_size: candidates tested per round.
        max_candidates: candidates tested before every position is counted at once.
        source: name of the label map, for messages.
    """
    shape = np.asarray(foreground.shape, dtype=np.int64)
    roi = np.asarray(roi_size, dtype=np.int64)
    if roi.shape != shape.shape:
        raise ValueError(f"roi_size {tuple(roi_size)} and volume shape {tuple(shape)} differ in length.")
    if (roi < 1).any() or (roi > shape).any():
        raise ValueError(
            f"{source}: crops of {tuple(roi.tolist())} do not fit in its volume of {tuple(shape.tolist())}; "
            "pad the volume first (MONAI SpatialPadd) or use a smaller roi_size."
        )
    high = shape - roi + 1
    total = int(np.count_nonzero(foreground))
    if threshold <= 0:
        starts = rng.randint(0, high, size=(num_samples, len(shape)))
        return starts, np.full(num_samples, np.nan)
    if total == 0:
        if fallback == "raise":
            raise ValueError(f"{source}: has no non-zero label voxel, so no crop can hold {threshold:.0%} of them.")
        warnings.warn(f"{source}: no non-zero label voxel; sub-volumes are drawn uniformly.", stacklevel=2)
        return rng.randint(0, high, size=(num_samples, len(shape))), np.full(num_samples, np.nan)
    inside = [
        np.flatnonzero(np.any(foreground, axis=tuple(a for a in range(len(shape)) if a != axis)))
        for axis in range(len(shape))
    ]
    offset = [int(i[0]) for i in inside]
    table = summed_volume_table(foreground[tuple(slice(i[0], i[-1] + 1) for i in inside)])  # the foreground's box
    starts, fractions, tested = [np.zeros((0, len(shape)), dtype=np.int64)], [np.zeros(0)], 0
    while tested < max_candidates and sum(len(s) for s in starts) < num_samples:
        candidates = rng.randint(0, high, size=(batch_size, len(shape)))
        share = box_sums(table, candidates, roi, offset) / total
        keep = share >= threshold
        starts.append(candidates[keep])
        fractions.append(share[keep])
        tested += batch_size
    found = np.concatenate(starts)[:num_samples]
    shares = np.concatenate(fractions)[:num_samples]
    if len(found) == num_samples:
        return found, shares
    # rare positions (or none): count every position once and draw among the acceptable ones
    every = all_box_sums(table, roi, shape, offset) / total
    limit = threshold
    if not (every >= limit).any():
        best = float(every.max())
        if fallback == "raise":
            raise ValueError(
                f"{source}: no crop of {tuple(roi.tolist())} holds {threshold:.0%} of the labelled voxels "
                f"(the best holds {best:.1%}); use larger crops or a lower threshold."
            )
        limit = relax_ratio * best
        warnings.warn(
            f"{source}: no crop of {tuple(roi.tolist())} holds {threshold:.0%} of the labelled voxels (best "
            f"{best:.1%}); accepting crops holding at least {limit:.1%}.",
            stacklevel=2,
        )
    positions = np.flatnonzero(every >= limit)
    chosen = positions[rng.randint(0, len(positions), size=num_samples - len(found))]
    extra = np.stack(np.unravel_index(chosen, every.shape), axis=1)
    return np.concatenate([found, extra]), np.concatenate([shares, every.reshape(-1)[chosen]])


def _as_foreground(label: torch.Tensor | np.ndarray) -> np.ndarray:
    values = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if values.ndim < 2 or values.shape[0] != 1:
        raise ValueError(f"expected a channel-first label map with one channel, got shape {values.shape}.")
    return values[0] != 0


class RandForegroundFractionCrop(RandomizableTransform, MultiSampleTrait):
    """``num_samples`` random crops each holding at least ``threshold`` of the label map's non-zero voxels.

    MedicalZoo's acceptance rule, drawn on the fly (see the module's description). Returns a list of crops of a
    channel-first image (MetaTensors whose affine follows the crop, MONAI ``SpatialCrop``), with
    ``patch_index`` and ``foreground_fraction`` in their metadata.

    Args:
        roi_size: crop size (MedicalZoo: 64³; the blog used 128×128×64).
        num_samples: crops per call.
        threshold: smallest share of the subject's non-zero label voxels a crop must hold (MedicalZoo: 0.1).
        fallback: when no crop can reach ``threshold``: ``"relax"`` (accept ``relax_ratio`` of the best share, warn)
            or ``"raise"``.
        relax_ratio: see ``fallback``.
        batch_size: candidates tested at once.
        max_candidates: candidates tested before counting every position.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int = 64,
        num_samples: int = 1,
        threshold: float = 0.1,
        fallback: str = "relax",
        relax_ratio: float = 0.5,
        batch_size: int = 512,
        max_candidates: int = 65536,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}.")
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold is a share of the labelled voxels, in [0, 1]; got {threshold}.")
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}.")
        self.roi_size, self.num_samples, self.threshold = roi_size, int(num_samples), float(threshold)
        self.fallback, self.relax_ratio = fallback, float(relax_ratio)
        self.batch_size, self.max_candidates = int(batch_size), int(max_candidates)
        self.starts = np.zeros((0, 3), dtype=np.int64)
        self.fractions = np.zeros(0)

    def _roi(self, ndim: int) -> tuple[int, ...]:
        return (int(self.roi_size),) * ndim if isinstance(self.roi_size, int) else tuple(int(r) for r in self.roi_size)

    def randomize(self, label: torch.Tensor | np.ndarray) -> None:
        foreground = _as_foreground(label)
        source = str(label.meta.get("filename_or_obj", "the label map")) if isinstance(label, MetaTensor) else None
        self.starts, self.fractions = foreground_fraction_starts(
            foreground,
            self._roi(foreground.ndim),
            self.num_samples,
            self.threshold,
            self.R,
            self.fallback,
            self.relax_ratio,
            self.batch_size,
            self.max_candidates,
            source or "the label map",
        )

    def __call__(
        self, img: torch.Tensor, label: torch.Tensor | None = None, randomize: bool = True
    ) -> list[torch.Tensor]:
        if randomize:
            self.randomize(img if label is None else label)
        roi = np.asarray(self._roi(img.ndim - 1))
        crops = []
        for index, (start, fraction) in enumerate(zip(self.starts, self.fractions)):
            crop = SpatialCrop(roi_start=start, roi_end=start + roi)(img)
            if isinstance(crop, MetaTensor):
                crop.meta["patch_index"] = index
                crop.meta["foreground_fraction"] = float(fraction)
            crops.append(crop)
        return crops


class RandForegroundFractionCropd(Randomizable, MapTransform, MultiSampleTrait):
    """Dictionary version of :class:`RandForegroundFractionCrop`: the same crops of every key; a list of dicts.

    The rule reads ``label_key``; keys not cropped are copied into every sample. All cropped keys must share
    one spatial shape.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        roi_size: Sequence[int] | int = 64,
        num_samples: int = 1,
        threshold: float = 0.1,
        fallback: str = "relax",
        relax_ratio: float = 0.5,
        batch_size: int = 512,
        max_candidates: int = 65536,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.label_key = label_key
        self.cropper = RandForegroundFractionCrop(
            roi_size, num_samples, threshold, fallback, relax_ratio, batch_size, max_candidates
        )

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> Randomizable:
        super().set_random_state(seed, state)
        self.cropper.set_random_state(seed, state)
        return self

    def randomize(self, label: torch.Tensor) -> None:
        self.cropper.randomize(label)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> list[dict[Hashable, torch.Tensor]]:
        keys = list(self.key_iterator(data))
        if not keys:
            raise KeyError(f"none of the keys {list(self.keys)} is in the data.")
        if self.label_key not in data:
            raise KeyError(f"label_key {self.label_key!r} is not in the data; the crops are chosen from the labels.")
        shapes = {key: tuple(data[key].shape[1:]) for key in keys} | {
            self.label_key: tuple(data[self.label_key].shape[1:])
        }
        if len(set(shapes.values())) > 1:
            raise ValueError(f"cannot crop keys of different spatial shapes together: {shapes}.")
        self.randomize(data[self.label_key])
        samples = [
            {key: deepcopy(value) for key, value in data.items() if key not in keys}
            for _ in range(self.cropper.num_samples)
        ]
        for key in keys:
            for sample, crop in zip(samples, self.cropper(data[key], randomize=False)):
                sample[key] = crop
        return samples
