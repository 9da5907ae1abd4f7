"""Load one 3D MRI and refuse, with a specific message, anything that cannot be segmented."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform, Transform

from neurobundles.errors import InvalidImageError

__all__ = ["LoadVolume", "LoadVolumed", "check_volume"]


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
    :func:`check_volume`; unreadable, empty or truncated files raise :class:`InvalidImageError`.
    """

    def __init__(self) -> None:
        self.loader = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True, dtype=np.float32)

    def __call__(self, filename: str | Path) -> MetaTensor:
        path = Path(filename)
        if not path.is_file():
            raise InvalidImageError(f"{path}: no such file.")
        if path.stat().st_size == 0:
            raise InvalidImageError(f"{path}: the file is empty (0 bytes); re-export or re-download it.")
        try:
            image = self.loader(str(path))
        except Exception as error:  # nibabel/zlib raise many types for damaged files
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise InvalidImageError(
                f"{path}: cannot be read as a NIfTI/MGH image ({reason}); "
                "the file may be truncated or in another format."
            ) from error
        check_volume(image, str(path))
        return image


class LoadVolumed(MapTransform):
    """Dictionary version of :class:`LoadVolume`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadVolume()

    def __call__(self, data: Mapping[Hashable, str]) -> dict[Hashable, MetaTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
