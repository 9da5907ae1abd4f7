"""The intensity half of conforming: robust rescale to 0–255 as FreeSurfer/FastSurfer do.

brainchop's CLI applies it to every input (even already conformed ones) before its quantile
normalisation, so reproducing its results needs it; MONAI's percentile scaling does the rest.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils.type_conversion import convert_to_dst_type

__all__ = ["ConformIntensity", "ConformIntensityd", "robust_range"]


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
