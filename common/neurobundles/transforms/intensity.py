"""Intensity normalisations MONAI lacks.

:class:`ConformIntensity` is the intensity half of conforming: robust rescale to 0–255 as FreeSurfer/FastSurfer
do. brainchop's CLI applies it to every input (even already conformed ones) before its quantile normalisation,
so reproducing its results needs it; MONAI's percentile scaling does the rest. :class:`MaskPercentileScaled`
divides by a percentile taken inside a brain mask (the patch networks' normalisation), so skull, scalp and
background never set the scale.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils.type_conversion import convert_to_dst_type

__all__ = ["ConformIntensity", "ConformIntensityd", "MaskPercentileScaled", "robust_range"]


def robust_range(values: np.ndarray, upper_quantile: float = 0.98, bins: int = 1000) -> tuple[float, float]:
    """``(minimum, upper)`` where ``upper`` is the ``upper_quantile`` of the non-zero voxels.

    The quantile is read off a ``bins``-bin histogram of the whole range (upper bin edge), the
    way FastSurfer's conform finds its scale, so it is fast and insensitive to a few bright voxels.
    """
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return low, high
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    nonzero = int(np.count_nonzero(values))
    target = values.size - int((1.0 - upper_quantile) * nonzero)
    index = int(np.searchsorted(np.cumsum(counts), target))
    return low, float(edges[min(index + 1, bins)])


class ConformIntensity(Transform):
    """Map ``[minimum, robust upper]`` to ``[0, 255]``, clip, and round to integers (as uint8 values).

    Args:
        upper_quantile: quantile of the non-zero voxels mapped to 255 (brainchop's CLI: 0.98).
        bins: histogram bins used to find it.
    """

    def __init__(self, upper_quantile: float = 0.98, bins: int = 1000) -> None:
        self.upper_quantile = upper_quantile
        self.bins = bins

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        values = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        low, high = robust_range(values, self.upper_quantile, self.bins)
        scale = 255.0 / (high - low) if high > low else 1.0
        out = values.astype(np.float32)  # one 256³ buffer, updated in place: fresh ones cost page faults
        out -= low
        out *= scale
        np.clip(out, 0.0, 255.0, out=out)
        np.rint(out, out=out)
        return convert_to_dst_type(out, img)[0]


class ConformIntensityd(MapTransform):
    """Dictionary version of :class:`ConformIntensity`."""

    def __init__(
        self, keys: KeysCollection, upper_quantile: float = 0.98, bins: int = 1000, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ConformIntensity(upper_quantile, bins)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class MaskPercentileScaled(MapTransform):
    """Divide each image under ``keys`` by its ``percentile`` inside ``mask_key``'s mask, then clip to ``clip``.

    With the defaults (99th percentile, clip 0..1.2) white matter lands near 1 on any scanner's scale, and the
    brightest 1 % (vessels, fat at the mask's edge) cannot stretch the range.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "mask",
        percentile: float = 99.0,
        clip: tuple[float, float] = (0.0, 1.2),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key, self.percentile, self.clip = mask_key, float(percentile), (float(clip[0]), float(clip[1]))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        inside = torch.as_tensor(d[self.mask_key])[0] > 0
        for key in self.key_iterator(d):
            image = d[key]
            values = torch.as_tensor(image, dtype=torch.float32)
            scale = float(np.percentile(values[0][inside].numpy(), self.percentile)) if inside.any() else 0.0
            if not scale > 0:
                raise ValueError(f"{key!r}: the {self.percentile:g}th percentile inside the brain mask is {scale:g}.")
            out = (values / scale).clamp(*self.clip)
            d[key] = convert_to_dst_type(out, image, dtype=torch.float32)[0]
        return d
