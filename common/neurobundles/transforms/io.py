"""Load one 3D MRI and refuse, with a specific message, anything that cannot be segmented.

:func:`check_image_file` reads only the header (for checking a whole cohort before any work);
:class:`LoadVolume` reads the voxels and checks them too; :class:`LoadVolumed` also records plausibility
warnings (voxels coarser than the models' 1 mm, an image that looks like a label map).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform, Transform

from neurobundles.errors import InvalidImageError
from neurobundles.plausibility import MAX_VOXEL_MM, WARN_VOXEL_MM, add_warning, label_map_message, voxel_sizes

__all__ = ["LoadVolume", "LoadVolumed", "check_affine", "check_image_file", "check_volume"]


def check_affine(affine: np.ndarray, source: str, max_voxel_mm: float | None = MAX_VOXEL_MM) -> np.ndarray:
    """Voxel sizes of a usable voxel-to-world ``affine``; :class:`InvalidImageError` for a zero, singular or
    non-finite one, or voxels coarser than ``max_voxel_mm`` (None: no limit)."""
    matrix = np.asarray(affine, dtype=np.float64)
    if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:3, :3])) < 1e-6:
        raise InvalidImageError(
            f"{source}: its voxel-to-world affine is zero, singular or not finite, so voxel sizes and orientation are "
            "unknown; fix the header (e.g. `fslorient -copyqform2sform`, or re-export from the scanner's DICOM)."
        )
    sizes = voxel_sizes(matrix)
    if max_voxel_mm is not None and sizes.max() > max_voxel_mm:
        raise InvalidImageError(
            f"{source}: voxels of {' × '.join(f'{s:.3g}' for s in sizes)} mm are far coarser than the 1 mm the models "
            f"were trained on (limit {max_voxel_mm:g} mm), so the labels and volumes would be unreliable; use a "
            "higher-resolution scan, or raise the limit (--max_voxel_mm) to segment it anyway."
        )
    return sizes


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise InvalidImageError(f"{path}: no such file.")
    if path.stat().st_size == 0:
        raise InvalidImageError(f"{path}: the file is empty (0 bytes); re-export or re-download it.")


def _unreadable(path: Path, error: Exception) -> InvalidImageError:
    """The error for a file nibabel cannot read (it raises many types for damaged or foreign files)."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return InvalidImageError(
        f"{path}: cannot be read as a NIfTI/MGH/Analyze image ({reason}); the file may be truncated or in "
        "another format."
    )


def check_image_file(path: str | Path, max_voxel_mm: float | None = MAX_VOXEL_MM) -> None:
    """Refuse a file from its header alone: missing, empty, unreadable header, not one 3D volume, bad affine."""
    path = Path(path)
    _check_exists(path)
    try:
        header = nib.load(str(path))
    except Exception as error:
        raise _unreadable(path, error) from error
    shape = tuple(int(s) for s in header.shape)
    spatial, extra = shape[:3], shape[3:]
    if len(shape) < 3 or min(spatial) < 2:
        raise InvalidImageError(
            f"{path}: is {len([s for s in shape if s > 1])}D with shape {shape}; a 3D volume is needed."
        )
    if int(np.prod(extra)) > 1:
        raise InvalidImageError(
            f"{path}: is 4D with {int(np.prod(extra))} volumes of shape {spatial}; segment one volume at a time "
            "(extract it first, e.g. `fslroi in.nii.gz out.nii.gz 0 1`)."
        )
    check_affine(header.affine, str(path), max_voxel_mm)


def check_volume(image: torch.Tensor, source: str) -> None:
    """Raise :class:`InvalidImageError` unless ``image`` (C, X, Y, Z) is one finite, non-constant volume."""
    spatial = tuple(image.shape[1:])
    if len(spatial) != 3 or min(spatial) < 2:
        kind = f"{len([s for s in spatial if s > 1])}D"
        raise InvalidImageError(f"{source}: is {kind} with shape {spatial}; a 3D volume is needed.")
    if image.shape[0] != 1:
        raise InvalidImageError(
            f"{source}: is 4D with {image.shape[0]} volumes of shape {spatial}; segment one volume at a time "
            "(extract it first, e.g. `fslroi in.nii.gz out.nii.gz 0 1`)."
        )
    values = image.as_tensor() if isinstance(image, MetaTensor) else image
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise InvalidImageError(f"{source}: contains {bad} NaN or infinite voxels; fix or mask them before segmenting.")
    low, high = float(values.min()), float(values.max())
    if low == high:
        raise InvalidImageError(
            f"{source}: every voxel equals {low:g}; the image is empty and there is nothing to segment."
        )


class LoadVolume(Transform):
    """Read a NIfTI/MGH/Analyze image as a channel-first float32 :class:`~monai.data.MetaTensor`.

    Uses MONAI's :class:`~monai.transforms.LoadImage` with nibabel (affine in RAS world space) and then
    :func:`check_volume` and :func:`check_affine`; unreadable, empty, truncated, coarse or misplaced images
    raise :class:`InvalidImageError`.

    Args:
        max_voxel_mm: longest voxel edge accepted (None: no limit).
    """

    def __init__(self, max_voxel_mm: float | None = MAX_VOXEL_MM) -> None:
        self.loader = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True, dtype=np.float32)
        self.max_voxel_mm = max_voxel_mm

    def __call__(self, filename: str | Path) -> MetaTensor:
        path = Path(filename)
        _check_exists(path)
        try:
            image = self.loader(str(path))
        except Exception as error:  # nibabel/zlib raise many types for damaged files
            raise _unreadable(path, error) from error
        check_volume(image, str(path))
        check_affine(image.affine.numpy(), str(path), self.max_voxel_mm)
        return image


class LoadVolumed(MapTransform):
    """Dictionary version of :class:`LoadVolume`; also records plausibility warnings in ``data["warnings"]``.

    Args:
        keys: image key(s).
        max_voxel_mm: longest voxel edge accepted (None: no limit).
        warn_voxel_mm: longest voxel edge accepted without a warning.
    """

    def __init__(
        self,
        keys: KeysCollection,
        max_voxel_mm: float | None = MAX_VOXEL_MM,
        warn_voxel_mm: float = WARN_VOXEL_MM,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadVolume(max_voxel_mm)
        self.warn_voxel_mm = warn_voxel_mm

    def __call__(self, data: Mapping[Hashable, str]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            source = str(d[key])
            image = self.loader(d[key])
            d[key] = image
            sizes = voxel_sizes(image.affine.numpy())
            if sizes.max() > self.warn_voxel_mm:
                add_warning(
                    d,
                    f"{source}: voxels of {' × '.join(f'{s:.3g}' for s in sizes)} mm are coarser than the 1 mm the "
                    "models were trained on; labels and volumes are less reliable",
                )
            message = label_map_message(image.as_tensor().numpy(), source)
            if message:
                add_warning(d, message)
        return d
