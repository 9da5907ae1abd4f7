"""DeepNAT's training samples: class-balanced 23³ patches with coordinates and seven targets, per stage.

DeepNAT trains two networks (Wachinger et al., 2018). Stage 1 separates foreground (the 25 structures) from
background inside the brain mask; stage 2 labels the 25 structures. Patches are drawn class by class: for
stage 2 the same number per structure, twice as many for cerebral white and grey matter (they vary most);
for stage 1 half foreground, half background. Each sample is the image patch around a voxel, the six
coordinates at that voxel and the labels of the voxel and its six face neighbours (the network's seven heads,
in :data:`~neurobundles.subvolumes.HEAD_OFFSETS` order).

MONAI's ``RandCropByLabelClassesd`` draws crop centres by class ratio too, but returns one full dictionary per
crop and moves centres that sit near the border; DeepNAT needs thousands of small patches per volume at their
exact voxel, so this transform cuts them all in one indexing operation.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform
from monai.transforms.traits import MultiSampleTrait

from neurobundles.subvolumes import HEAD_OFFSETS, extract_patches

__all__ = [
    "STAGE_CLASSES",
    "WHITE_GREY_CLASSES",
    "RandDeepNATPatchesd",
    "StageTargets",
    "StageTargetsd",
    "default_class_weights",
    "stage_targets",
]

STAGE_CLASSES: dict[int, int] = {1: 2, 2: 26}
"""Outputs of each stage's network: 1 → background/foreground; 2 → background + the 25 structures."""

WHITE_GREY_CLASSES: tuple[int, ...] = (1, 2, 3, 4)
"""Classes of left/right cerebral white matter and grey matter (:data:`neurobundles.data.miccai2012.STRUCTURES`)."""


def stage_targets(classes: torch.Tensor | np.ndarray, stage: int) -> torch.Tensor | np.ndarray:
    """Targets of one stage from class indices 0..25: stage 1 → 1 for any structure, else 0; stage 2 → unchanged."""
    if stage not in STAGE_CLASSES:
        raise ValueError(f"stage must be 1 or 2, got {stage}.")
    if stage == 2:
        return classes
    return (classes > 0).to(classes.dtype) if isinstance(classes, torch.Tensor) else (classes > 0).astype(classes.dtype)


class StageTargets(Transform):
    """Array version of :func:`stage_targets` (to score a stage on its own targets)."""

    def __init__(self, stage: int) -> None:
        if stage not in STAGE_CLASSES:
            raise ValueError(f"stage must be 1 or 2, got {stage}.")
        self.stage = stage

    def __call__(self, classes: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        return stage_targets(classes, self.stage)


class StageTargetsd(MapTransform):
    """Dictionary version of :class:`StageTargets`."""

    def __init__(self, keys: KeysCollection, stage: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = StageTargets(stage)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


def default_class_weights(stage: int) -> dict[int, float]:
    """The paper's balance: stage 1 equal foreground/background; stage 2 equal per structure, WM/GM doubled."""
    if stage == 1:
        return {0: 1.0, 1: 1.0}
    if stage == 2:
        return {c: 2.0 if c in WHITE_GREY_CLASSES else 1.0 for c in range(1, STAGE_CLASSES[2])}
    raise ValueError(f"stage must be 1 or 2, got {stage}.")


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


class RandDeepNATPatchesd(Randomizable, MapTransform, MultiSampleTrait):
    """``num_samples`` class-balanced training samples of one DeepNAT stage; returns a list of dictionaries.

    Each sample holds ``image_key``: the ``C×p×p×p`` patch (zeros outside the volume), ``coords_key``: the
    coordinates at its centre (``coord_channels`` floats), ``label_key``: the stage's targets of the centre and
    its six face neighbours (``num_heads`` int64, neighbours outside the volume are background), and
    ``centre_key``: the voxel. Entries that are not tensors or arrays (ids, file names) are copied into every
    sample; volumes are not.

    Classes are balanced exactly: the samples are split over the classes present in proportion to
    ``class_weights`` (largest remainders, ties broken at random), the voxels of each class are drawn uniformly
    with replacement, and the samples are shuffled. Centres come only from the brain mask (``mask_key``;
    every voxel if ``None``). All randomness comes from ``self.R``.

    Args:
        keys: the image key (one key).
        label_key: class indices 0..25 (``1×X×Y×Z``).
        coords_key: coordinate maps (``6×X×Y×Z``), or ``None`` for a network without coordinates.
        mask_key: brain mask (``1×X×Y×Z``), or ``None``.
        stage: 1 (foreground/background) or 2 (25 structures).
        num_samples: samples per call.
        patch_size: patch edge (23).
        class_weights: class → relative share (stage classes); default :func:`default_class_weights`.
        num_heads: targets per sample (7).
        centre_key: key of the centre voxel in the samples (``None`` to leave it out).
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        coords_key: str | None = "coords",
        mask_key: str | None = "mask",
        stage: int = 2,
        num_samples: int = 256,
        patch_size: int = 23,
        class_weights: Mapping[int, float] | None = None,
        num_heads: int = 7,
        centre_key: str | None = "centre",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"RandDeepNATPatchesd samples one image key, got {list(self.keys)}.")
        if stage not in STAGE_CLASSES:
            raise ValueError(f"stage must be 1 or 2, got {stage}.")
        if num_samples < 1 or patch_size % 2 != 1:
            raise ValueError(f"need num_samples ≥ 1 and an odd patch_size, got {num_samples} and {patch_size}.")
        self.label_key, self.coords_key, self.mask_key = label_key, coords_key, mask_key
        self.stage, self.num_samples, self.patch_size = stage, int(num_samples), int(patch_size)
        weights = default_class_weights(stage) if class_weights is None else dict(class_weights)
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError(f"class_weights must be non-negative with one positive, got {weights}.")
        self.class_weights = {int(c): float(w) for c, w in weights.items()}
        self.offsets = np.asarray(HEAD_OFFSETS[:num_heads], dtype=np.int64)
        self.centre_key = centre_key
        self.centres = np.zeros((0, 3), dtype=np.int64)

    def class_counts(self, present: Sequence[int]) -> dict[int, int]:
        """Samples per class among ``present`` classes: proportional to the weights, largest remainders."""
        classes = [c for c in present if self.class_weights.get(c, 0.0) > 0]
        if not classes:
            raise ValueError(
                f"no voxel of a class with a positive weight ({sorted(self.class_weights)}) inside the mask."
            )
        shares = np.array([self.class_weights[c] for c in classes])
        exact = self.num_samples * shares / shares.sum()
        counts = np.floor(exact).astype(np.int64)
        remainder = exact - counts
        order = np.lexsort((self.R.random_sample(len(classes)), -remainder))
        counts[order[: self.num_samples - counts.sum()]] += 1
        return dict(zip(classes, counts.tolist()))

    def randomize(self, targets: np.ndarray, mask: np.ndarray | None) -> None:
        """Draw the centres (``self.centres``, ``num_samples×3``) from stage targets ``X×Y×Z``."""
        candidates = np.flatnonzero(mask) if mask is not None else np.arange(targets.size)
        values = targets.reshape(-1)[candidates]
        order = np.argsort(values, kind="stable")
        present, starts, sizes = np.unique(values[order], return_index=True, return_counts=True)
        counts = self.class_counts(present.tolist())
        chosen = []
        for value, start, size in zip(present.tolist(), starts, sizes):
            count = counts.get(value, 0)
            if count:
                chosen.append(candidates[order[start + self.R.randint(0, size, size=count)]])
        flat = np.concatenate(chosen)[self.R.permutation(self.num_samples)]
        self.centres = np.stack(np.unravel_index(flat, targets.shape), axis=1).astype(np.int64)

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        keys = list(self.key_iterator(data))
        if not keys:
            raise KeyError(f"the image key {list(self.keys)} is not in the data.")
        image = data[keys[0]]
        if self.label_key not in data:
            raise KeyError(f"RandDeepNATPatchesd needs the class map under {self.label_key!r}.")
        classes = _numpy(data[self.label_key])
        classes = np.rint(classes[0] if classes.ndim == 4 else classes).astype(np.int64)
        spatial = tuple(image.shape[1:])
        if classes.shape != spatial:
            raise ValueError(f"{self.label_key!r} has shape {classes.shape}, the image {spatial}; they must match.")
        mask = None
        if self.mask_key is not None:
            if self.mask_key not in data:
                raise KeyError(f"RandDeepNATPatchesd needs the brain mask under {self.mask_key!r} (or mask_key=None).")
            mask = _numpy(data[self.mask_key])
            mask = (mask[0] if mask.ndim == 4 else mask) > 0
        targets = stage_targets(classes, self.stage)
        self.randomize(targets, mask)
        centres = torch.from_numpy(self.centres)
        values = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        patches = extract_patches(values, centres.to(values.device), self.patch_size)
        around = self.centres[:, None, :] + self.offsets  # n × heads × 3
        inside = ((around >= 0) & (around < np.asarray(spatial))).all(-1)
        clipped = np.clip(around, 0, np.asarray(spatial) - 1)
        heads = np.where(inside, targets[clipped[..., 0], clipped[..., 1], clipped[..., 2]], 0)
        labels = torch.from_numpy(heads.astype(np.int64))
        coords = None
        if self.coords_key is not None:
            if self.coords_key not in data:
                raise KeyError(f"RandDeepNATPatchesd needs coordinate maps under {self.coords_key!r}.")
            maps = data[self.coords_key]
            maps = maps.as_tensor() if hasattr(maps, "as_tensor") else torch.as_tensor(maps)
            coords = maps[:, centres[:, 0], centres[:, 1], centres[:, 2]].T.to(torch.float32)
        shared = {k: v for k, v in data.items() if not isinstance(v, (torch.Tensor, np.ndarray))}
        samples = []
        for index in range(self.num_samples):
            sample = dict(shared)
            sample[keys[0]] = patches[index]
            sample[self.label_key] = labels[index]
            if coords is not None:
                sample[self.coords_key] = coords[index]
            if self.centre_key is not None:
                sample[self.centre_key] = centres[index]
            samples.append(sample)
        return samples
