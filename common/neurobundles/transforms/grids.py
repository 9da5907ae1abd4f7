"""Bring a second contrast onto the grid of the first (T2 onto T1), or refuse, with a message naming both files.

Multi-contrast networks stack their inputs as channels, so every contrast must lie on one voxel grid.
iSeg-2017 ships T1 and T2 already on one grid, which passes through untouched. Otherwise ``policy="resample"``
resamples the moving image onto the reference through both headers' affines (MONAI's ``ResampleToMatch``);
this aligns scans of one session, not scans needing registration, so images whose fields of view barely
overlap are refused either way. ``policy="refuse"`` refuses any difference.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, ResampleToMatch, Transform

from neurobundles.errors import InvalidImageError

__all__ = ["GRID_POLICIES", "MatchGrid", "MatchGridd", "fov_overlap", "same_grid"]

GRID_POLICIES = ("resample", "refuse")
logger = logging.getLogger(__name__)


def _affine(image: torch.Tensor) -> np.ndarray:
    affine = image.affine if isinstance(image, MetaTensor) else torch.eye(4)
    return np.asarray(affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)


def _name(image: torch.Tensor, default: str) -> str:
    return str(image.meta.get("filename_or_obj", default)) if isinstance(image, MetaTensor) else default


def same_grid(image: torch.Tensor, reference: torch.Tensor, atol: float = 1e-3) -> bool:
    """Whether two channel-first images share spatial shape and affine."""
    return tuple(image.shape[1:]) == tuple(reference.shape[1:]) and bool(
        np.allclose(_affine(image), _affine(reference), atol=atol)
    )


def fov_overlap(image: torch.Tensor, reference: torch.Tensor, points: int = 9) -> float:
    """Share of a ``points``-per-axis lattice over the reference's field of view that falls inside ``image``'s."""
    shape_ref, shape_img = np.asarray(reference.shape[1:]), np.asarray(image.shape[1:])
    axes = [np.linspace(0, n - 1, points) for n in shape_ref]
    lattice = np.array(list(itertools.product(*axes)), dtype=np.float64)
    world = np.c_[lattice, np.ones(len(lattice))] @ _affine(reference).T
    voxels = (world @ np.linalg.inv(_affine(image)).T)[:, : len(shape_img)]
    inside = ((voxels >= -0.5) & (voxels <= shape_img - 0.5)).all(axis=1)
    return float(inside.mean())


class MatchGrid(Transform):
    """Return ``image`` on ``reference``'s grid: unchanged when the grids agree, else resampled or refused.

    Args:
        policy: ``"resample"`` (through the affines, MONAI ``ResampleToMatch``) or ``"refuse"``.
        mode: interpolation when resampling (``"bilinear"`` for images, ``"nearest"`` for label maps).
        min_overlap: smallest share of the reference's field of view the image must cover to be resampled.
        atol: tolerance on the affines' entries (mm) for "the same grid".
    """

    def __init__(self, policy: str = "resample", mode: str = "bilinear", min_overlap: float = 0.5, atol: float = 1e-3):
        if policy not in GRID_POLICIES:
            raise ValueError(f"policy must be one of {GRID_POLICIES}, got {policy!r}.")
        self.policy, self.mode, self.min_overlap, self.atol = policy, mode, float(min_overlap), float(atol)

    def __call__(self, image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if same_grid(image, reference, self.atol):
            return image
        moving, fixed = _name(image, "the image"), _name(reference, "the reference image")
        sizes = np.sqrt((_affine(image)[:3, :3] ** 2).sum(0)), np.sqrt((_affine(reference)[:3, :3] ** 2).sum(0))
        described = (
            f"{moving}: grid {tuple(image.shape[1:])} at {np.round(sizes[0], 3).tolist()} mm differs from "
            f"{fixed}'s {tuple(reference.shape[1:])} at {np.round(sizes[1], 3).tolist()} mm"
        )
        if self.policy == "refuse":
            raise InvalidImageError(
                f"{described} (shape or affine); the contrasts must be co-registered on one grid. Resample it "
                "onto the reference first (e.g. FSL flirt -applyxfm -usesqform, ANTs, mri_vol2vol) or let the "
                "bundle resample it (t2_grid='resample')."
            )
        overlap = fov_overlap(image, reference)
        if overlap < self.min_overlap:
            raise InvalidImageError(
                f"{described}, and covers only {overlap:.0%} of its field of view: the two scans are not in one "
                "space (different sessions or orientations?). Register them first; resampling cannot align them."
            )
        logger.warning("%s; resampling it onto that grid (%s interpolation).", described, self.mode)
        return ResampleToMatch(mode=self.mode, padding_mode="zeros")(image, img_dst=reference)


class MatchGridd(MapTransform):
    """Dictionary version of :class:`MatchGrid`: each of ``keys`` onto the grid of ``reference_key``."""

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str = "image",
        policy: str = "resample",
        mode: str = "bilinear",
        min_overlap: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key
        self.transform = MatchGrid(policy, mode, min_overlap)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], d[self.reference_key])
        return d
