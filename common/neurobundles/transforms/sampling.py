"""Training sub-volumes: cubes whose centres are drawn from a Gaussian around the middle of the volume.

MeshNet's training recipe (Fedorov et al.; Catalyst.Neuro) crops 38³ sub-volumes from the conformed 256³
volume. The head is near the centre of a conformed volume, so centring the draws there keeps most crops on
brain rather than air. Each axis is an independent normal truncated so that the whole cube stays inside the
volume. The original code uses σ = 64 voxels (a quarter of 256); the Catalyst.Neuro blog describes the same
sampler as "diagonal covariance of 50": pass ``covariance=50`` for that (σ ≈ 7.1).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform, SpatialCrop
from monai.transforms.traits import MultiSampleTrait
from scipy.special import ndtr
from scipy.stats import truncnorm

__all__ = [
    "BLOG_COVARIANCE",
    "DEFAULT_SIGMA",
    "RandGaussianCrop",
    "RandGaussianCropd",
    "crop_sigmas",
    "gaussian_crop_starts",
]

DEFAULT_SIGMA = 64.0
"""Standard deviation of the crop centres in voxels, per axis, as in the original training code."""

BLOG_COVARIANCE = 50.0
"""The diagonal covariance (voxels²) the Catalyst.Neuro blog gives for the same sampler."""

Rng = np.random.RandomState | np.random.Generator


def crop_sigmas(
    sigma: float | Sequence[float] | None, covariance: float | Sequence[float] | None, ndim: int
) -> np.ndarray:
    """Per-axis σ from either ``sigma`` or a diagonal ``covariance`` (σ² per axis); neither gives 64 voxels."""
    if sigma is not None and covariance is not None:
        raise ValueError("give sigma or covariance (σ²), not both.")
    if covariance is not None:
        variances = np.broadcast_to(np.asarray(covariance, dtype=np.float64), (ndim,))
        if (variances < 0).any():
            raise ValueError(f"covariance must be non-negative, got {covariance}.")
        return np.sqrt(variances)
    sigmas = np.broadcast_to(np.asarray(DEFAULT_SIGMA if sigma is None else sigma, dtype=np.float64), (ndim,))
    if (sigmas < 0).any():
        raise ValueError(f"sigma must be non-negative, got {sigma}.")
    return sigmas.copy()


def gaussian_crop_starts(
    spatial_shape: Sequence[int],
    roi_size: Sequence[int],
    num_samples: int,
    rng: Rng,
    sigmas: Sequence[float] | np.ndarray = (DEFAULT_SIGMA,) * 3,
    centre: Sequence[float] | None = None,
) -> np.ndarray:
    """``(num_samples, ndim)`` first voxels of crops of ``roi_size`` lying wholly inside ``spatial_shape``.

    A crop's centre (``start + roi / 2``) follows, per axis, a normal of mean ``centre`` (default: the middle
    of the volume) and standard deviation ``sigmas``, truncated to the centres whose crop fits; the start is
    the centre's nearest whole voxel. Randomness comes only from ``rng`` (one uniform draw per axis and crop).
    """
    shape = np.asarray(spatial_shape, dtype=np.float64)
    roi = np.asarray(roi_size, dtype=np.float64)
    if roi.shape != shape.shape:
        raise ValueError(f"roi_size {tuple(roi_size)} and volume shape {tuple(spatial_shape)} differ in length.")
    if (roi > shape).any() or (roi < 1).any():
        raise ValueError(f"crops of {tuple(roi_size)} do not fit in a volume of shape {tuple(spatial_shape)}.")
    sigmas = np.broadcast_to(np.asarray(sigmas, dtype=np.float64), shape.shape)
    mean = shape / 2 if centre is None else np.asarray(centre, dtype=np.float64)
    low, high = roi / 2, shape - roi / 2
    uniform = rng.uniform(size=(int(num_samples), shape.size))
    centres = np.empty_like(uniform)
    for axis in range(shape.size):
        if sigmas[axis] == 0 or low[axis] == high[axis]:
            centres[:, axis] = np.clip(mean[axis], low[axis], high[axis])
            continue
        a, b = (low[axis] - mean[axis]) / sigmas[axis], (high[axis] - mean[axis]) / sigmas[axis]
        if ndtr(b) - ndtr(a) < 1e-12:  # the window lies far in one tail: every draw lands on its nearest edge
            centres[:, axis] = low[axis] if b <= 0 else high[axis]
            continue
        centres[:, axis] = truncnorm.ppf(uniform[:, axis], a, b, loc=mean[axis], scale=sigmas[axis])
    starts = np.rint(centres - roi / 2)
    return np.clip(starts, 0, shape - roi).astype(np.int64)


class RandGaussianCrop(RandomizableTransform, MultiSampleTrait):
    """``num_samples`` crops of ``roi_size`` from a channel-first image, centres Gaussian around the middle.

    Like MONAI's ``RandWeightedCrop`` it returns a list of crops; the crops are MetaTensors whose affine
    follows the crop (MONAI's ``SpatialCrop``), with ``patch_index`` in their metadata.

    Args:
        roi_size: crop size in voxels (the recipe's 38³).
        num_samples: crops per call (the recipe's 128 per brain and epoch).
        sigma: σ of the centres in voxels, one value or one per axis; default 64.
        covariance: or the diagonal covariance (σ²) instead, e.g. the blog's 50.
        centre: mean of the centres in voxels; default the middle of the volume.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        num_samples: int = 1,
        sigma: float | Sequence[float] | None = None,
        covariance: float | Sequence[float] | None = None,
        centre: Sequence[float] | None = None,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}.")
        self.roi_size = roi_size
        self.num_samples = int(num_samples)
        self.sigma, self.covariance, self.centre = sigma, covariance, centre
        self.starts = np.zeros((0, 3), dtype=np.int64)

    def _roi(self, ndim: int) -> tuple[int, ...]:
        return (self.roi_size,) * ndim if isinstance(self.roi_size, int) else tuple(int(r) for r in self.roi_size)

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        ndim = len(spatial_shape)
        sigmas = crop_sigmas(self.sigma, self.covariance, ndim)
        self.starts = gaussian_crop_starts(
            spatial_shape, self._roi(ndim), self.num_samples, self.R, sigmas, self.centre
        )

    def __call__(self, img: torch.Tensor, randomize: bool = True) -> list[torch.Tensor]:
        spatial_shape = tuple(img.shape[1:])
        if randomize:
            self.randomize(spatial_shape)
        roi = np.asarray(self._roi(len(spatial_shape)))
        crops = []
        for index, start in enumerate(self.starts):
            crop = SpatialCrop(roi_start=start, roi_end=start + roi)(img)
            if isinstance(crop, MetaTensor):
                crop.meta["patch_index"] = index
            crops.append(crop)
        return crops


class RandGaussianCropd(Randomizable, MapTransform, MultiSampleTrait):
    """Dictionary version of :class:`RandGaussianCrop`: the same crops of every key; returns a list of dicts.

    Keys not cropped are copied into every sample. All cropped keys must share one spatial shape.
    """

    def __init__(
        self,
        keys: KeysCollection,
        roi_size: Sequence[int] | int,
        num_samples: int = 1,
        sigma: float | Sequence[float] | None = None,
        covariance: float | Sequence[float] | None = None,
        centre: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.cropper = RandGaussianCrop(roi_size, num_samples, sigma, covariance, centre)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> Randomizable:
        super().set_random_state(seed, state)
        self.cropper.set_random_state(seed, state)
        return self

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        self.cropper.randomize(spatial_shape)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> list[dict[Hashable, torch.Tensor]]:
        keys = list(self.key_iterator(data))
        if not keys:
            raise KeyError(f"none of the keys {list(self.keys)} is in the data.")
        shapes = {key: tuple(data[key].shape[1:]) for key in keys}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"cannot crop keys of different spatial shapes together: {shapes}.")
        self.randomize(shapes[keys[0]])
        samples = [
            {key: deepcopy(value) for key, value in data.items() if key not in keys}
            for _ in range(self.cropper.num_samples)
        ]
        for key in keys:
            for sample, crop in zip(samples, self.cropper(data[key], randomize=False)):
                sample[key] = crop
        return samples
