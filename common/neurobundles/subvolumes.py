"""Where sub-volumes lie in a volume: cubes centred by a truncated Gaussian, a centred grid of cubes, patches.

MeshNet's training recipe (Fedorov et al.; Catalyst.Neuro) crops sub-volumes whose centres are drawn from a
Gaussian around the middle of the conformed volume; its inference segments a centred grid of cubes plus more
such draws; DeepNAT cuts small patches around voxels and predicts their face neighbours. Training transforms and
inferers share these, so they live below both.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import ndtr
from scipy.stats import truncnorm

__all__ = [
    "BLOG_COVARIANCE",
    "DEFAULT_SIGMA",
    "HEAD_OFFSETS",
    "crop_sigmas",
    "extract_patches",
    "gaussian_crop_starts",
    "grid_starts",
    "subvolume_starts",
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


def grid_starts(spatial_shape: Sequence[int], roi_size: Sequence[int]) -> np.ndarray:
    """First voxels of the non-overlapping cubes of a grid centred in the volume (the remainder is split
    evenly over both borders, as in the original code); ``(n, ndim)``, in C order."""
    axes = []
    for size, roi in zip(spatial_shape, roi_size):
        if roi > size:
            raise ValueError(f"sub-volumes of {tuple(roi_size)} do not fit in a volume of {tuple(spatial_shape)}.")
        offset = (size % roi) // 2
        axes.append(range(offset, size - roi + 1, roi))
    return np.array(list(itertools.product(*axes)), dtype=np.int64).reshape(-1, len(spatial_shape))


def subvolume_starts(
    spatial_shape: Sequence[int],
    roi_size: Sequence[int],
    num_samples: int,
    rng: np.random.Generator,
    sigmas: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """The grid, then Gaussian-centred cubes (as in training) until there are ``num_samples`` in all."""
    grid = grid_starts(spatial_shape, roi_size)
    extra = max(int(num_samples) - len(grid), 0)
    return np.concatenate([grid, gaussian_crop_starts(spatial_shape, roi_size, extra, rng, sigmas)])


HEAD_OFFSETS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (-1, 0, 0),
    (1, 0, 0),
    (0, -1, 0),
    (0, 1, 0),
    (0, 0, -1),
    (0, 0, 1),
)
"""Voxel offset predicted by each head: the patch centre, then its face neighbours −/+ along each array axis."""


def extract_patches(image: torch.Tensor, centres: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``N×C×p³`` patches of a ``C×X×Y×Z`` image around ``N×3`` voxel centres; zeros outside the volume."""
    half = patch_size // 2
    padded = F.pad(image, (half,) * 6)
    offsets = torch.arange(patch_size, device=image.device)
    ix, iy, iz = (centres[:, axis, None] + offsets for axis in range(3))  # the padding shifts by +half
    return padded[:, ix[:, :, None, None], iy[:, None, :, None], iz[:, None, None, :]].movedim(0, 1)
