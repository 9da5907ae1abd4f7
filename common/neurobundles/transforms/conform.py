"""FreeSurfer-style conforming: resample any 3D MRI onto a 256³, 1 mm, LIA grid, and back.

The conformed grid keeps the centre of the input's field of view (FreeSurfer's ``c_ras``), which
is what ``mri_convert --conform`` does, so an already conformed image is left untouched.
The resampling itself is MONAI's :class:`~monai.transforms.SpatialResample`, which records the
operation so :meth:`Conform.inverse` (and :class:`~monai.transforms.Invertd`) can map outputs back
onto the input's own grid.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, SpatialResample
from monai.utils import GridSampleMode

__all__ = ["Conform", "Conformd", "conform_affine"]


def conform_affine(
    affine: np.ndarray | torch.Tensor,
    spatial_shape: Sequence[int],
    size: int = 256,
    voxel_size: float = 1.0,
    orientation: str = "LIA",
) -> np.ndarray:
    """Voxel-to-RAS affine of the conformed grid for an image with ``affine`` and ``spatial_shape``.

    The result is axis aligned in ``orientation`` with isotropic ``voxel_size`` and its voxel
    ``size // 2`` sits where the input's voxel ``shape / 2`` is (FreeSurfer's centre convention).
    """
    affine = np.asarray(affine, dtype=np.float64)
    centre = affine[:3, :3] @ (np.asarray(spatial_shape, dtype=np.float64) / 2.0) + affine[:3, 3]
    axes = nib.orientations.axcodes2ornt(tuple(orientation))
    rotation = np.zeros((3, 3))
    for voxel_axis, (world_axis, sign) in enumerate(axes):
        rotation[int(world_axis), voxel_axis] = sign * voxel_size
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = centre - rotation @ np.full(3, size / 2.0)
    return out


class Conform(InvertibleTransform):
    """Resample a channel-first 3D :class:`~monai.data.MetaTensor` onto the conformed grid.

    Args:
        size: edge length of the cubic output grid in voxels.
        voxel_size: isotropic output spacing in mm.
        orientation: output axis codes (FreeSurfer uses ``"LIA"``).
        mode: interpolation, ``"bilinear"`` (trilinear in 3D) for images, ``"nearest"`` for labels.
        padding_mode: value outside the input field of view (``"zeros"`` like FreeSurfer).
    """

    backend = SpatialResample.backend

    def __init__(
        self,
        size: int = 256,
        voxel_size: float = 1.0,
        orientation: str = "LIA",
        mode: str = GridSampleMode.BILINEAR,
        padding_mode: str = "zeros",
    ) -> None:
        self.size = size
        self.voxel_size = voxel_size
        self.orientation = orientation
        self.resampler = SpatialResample(mode=mode, padding_mode=padding_mode)

    def __call__(self, img: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        if not isinstance(img, MetaTensor):
            raise TypeError("Conform needs a MetaTensor with an affine (load images with LoadImage/LoadVolume).")
        if img.ndim != 4:
            raise ValueError(f"Conform expects a channel-first 3D image (C, X, Y, Z), got shape {tuple(img.shape)}.")
        target = conform_affine(img.affine, img.shape[1:], self.size, self.voxel_size, self.orientation)
        return self.resampler(
            img, dst_affine=torch.as_tensor(target, dtype=torch.float64), spatial_size=(self.size,) * 3, mode=mode
        )

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        return self.resampler.inverse(data)


class Conformd(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`Conform`; ``mode`` may differ per key (e.g. images vs labels)."""

    backend = Conform.backend

    def __init__(
        self,
        keys: KeysCollection,
        size: int = 256,
        voxel_size: float = 1.0,
        orientation: str = "LIA",
        mode: str | Sequence[str] = GridSampleMode.BILINEAR,
        padding_mode: str = "zeros",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.conform = Conform(size, voxel_size, orientation, padding_mode=padding_mode)
        modes = [mode] * len(self.keys) if isinstance(mode, str) else list(mode)
        if len(modes) != len(self.keys):
            raise ValueError(f"mode has {len(modes)} entries for {len(self.keys)} keys.")
        self.modes = dict(zip(self.keys, modes))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.conform(d[key], mode=self.modes[key])
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.conform.inverse(d[key])
        return d
