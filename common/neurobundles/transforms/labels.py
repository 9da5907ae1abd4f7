"""Label-map remapping: FreeSurfer ids to class indices (and back) through a lookup table."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils.type_conversion import convert_to_dst_type
from scipy import ndimage

__all__ = ["ArgMax", "ArgMaxd", "KeepLargestComponent", "KeepLargestComponentd", "MapLabels", "MapLabelsd"]


class MapLabels(Transform):
    """Replace every label value through ``mapping``; values not in it become ``default``.

    A lookup table makes this one indexing pass over the volume, where MONAI's ``MapLabelValue``
    makes one pass per label (about a hundred for aparc+aseg).
    """

    def __init__(self, mapping: Mapping[int, int], default: int = 0) -> None:
        if not mapping:
            raise ValueError("mapping is empty.")
        if min(mapping) < 0:
            raise ValueError("label values must be non-negative.")
        self.table = np.full(max(mapping) + 1, default, dtype=np.int64)
        for source, target in mapping.items():
            self.table[int(source)] = int(target)
        self.default = default

    def __call__(self, labels: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        values = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        ids = np.rint(values).astype(np.int64)
        inside = (ids >= 0) & (ids < self.table.size)
        out = np.full(ids.shape, self.default, dtype=np.int64)
        out[inside] = self.table[ids[inside]]
        return convert_to_dst_type(out, labels, dtype=labels.dtype)[0]


class MapLabelsd(MapTransform):
    """Dictionary version of :class:`MapLabels`."""

    def __init__(
        self, keys: KeysCollection, mapping: Mapping[int, int], default: int = 0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = MapLabels(mapping, default)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class ArgMax(Transform):
    """Class index per voxel from channel-first logits; a single-channel input is taken as labels already.

    Same result as MONAI's ``AsDiscrete(argmax=True)`` (first maximum wins) but 10× faster on CPU:
    ``Tensor.max(dim)`` reduces across channels in one pass where ``torch.argmax`` takes a slow strided
    path (1.9 s vs 0.2 s for 3×256³ on 2 cores). Passing single-channel inputs through lets one
    postprocessing serve inferers that already return labels (``FullVolumeInferer(argmax=True)``).
    """

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[0] == 1:
            return logits
        return logits.max(dim=0, keepdim=True).indices.to(torch.float32)


class ArgMaxd(MapTransform):
    """Dictionary version of :class:`ArgMax`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ArgMax()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class KeepLargestComponent(Transform):
    """Clear every foreground voxel outside the largest connected component of all labels taken together.

    The same result as MONAI's ``KeepLargestConnectedComponent(independent=False)``, about 4× faster on
    a 256³ label map on CPU (0.35 s vs 1.35 s, measured with scipy's labelling against MONAI's default
    path), which matters when the network itself takes a few seconds.

    Args:
        connectivity: 1, 2 or 3: neighbours share a face, an edge, or a corner (3 = 26-connected).
    """

    def __init__(self, connectivity: int = 3) -> None:
        if connectivity not in (1, 2, 3):
            raise ValueError(f"connectivity must be 1, 2 or 3, got {connectivity}.")
        self.structure = ndimage.generate_binary_structure(3, connectivity)

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.ndim != 4 or labels.shape[0] != 1:
            raise ValueError(f"expected a channel-first label map (1, X, Y, Z), got shape {tuple(labels.shape)}.")
        foreground = labels[0].detach().cpu().numpy() != 0
        components, count = ndimage.label(foreground, structure=self.structure)
        if count <= 1:
            return labels
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        keep = torch.from_numpy(components == sizes.argmax()).to(labels.device)
        return labels * keep[None].to(labels.dtype)


class KeepLargestComponentd(MapTransform):
    """Dictionary version of :class:`KeepLargestComponent`."""

    def __init__(self, keys: KeysCollection, connectivity: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = KeepLargestComponent(connectivity)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d
