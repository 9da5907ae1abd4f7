"""The brain mask a patch network such as DeepNAT works inside, from a file, the image's zero background or a network.

DeepNAT (like the paper) labels voxels inside a brain mask. A user's T1 comes either skull-stripped (the brain is
the non-zero voxels), with a mask beside it (``<image>_mask.nii.gz``, e.g. FreeSurfer's ``brainmask.mgz`` made
binary) or as a whole head. :class:`BrainMaskd` takes the mask from whichever the item offers; for a whole head
it runs a brain-extraction network (the zoo's ``meshnet_hcp_brainmask``) on a conformed copy of the image and
resamples its mask back onto the image's own grid, so nothing else in the pipeline leaves that grid.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform, ScaleIntensityRangePercentiles, SpatialResample
from scipy import ndimage
from torch import nn

from neurobundles.errors import InvalidImageError
from neurobundles.filenames import MASK_SUFFIX, beside

from .conform import Conform
from .intensity import ConformIntensity

__all__ = ["MASK_SOURCES", "BrainMaskd", "solid_mask"]

MASK_SOURCES = ("auto", "file", "nonzero", "model")
"""Where :class:`BrainMaskd` takes the mask from (``auto``: the item's mask file if it has one, else the model)."""


def solid_mask(inside: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean volume with its holes filled."""
    labels, count = ndimage.label(inside, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return inside.astype(bool)
    largest = np.argmax(np.bincount(labels.reshape(-1))[1:]) + 1
    return ndimage.binary_fill_holes(labels == largest)


class BrainMaskd(MapTransform):
    """Add a brain mask ``1×X×Y×Z`` (float 0/1, the image's metadata) under ``mask_key``.

    Sources: ``"file"`` reads the path the item holds under ``mask_key``, else ``<image><suffix>.nii(.gz)``
    beside the image (MONAI Label hands over the image alone); the mask must lie on the image's grid;
    ``"nonzero"`` takes the non-zero voxels of a skull-stripped image; ``"model"`` runs ``network`` (class 1 =
    brain, fed the image conformed to 256³ 1 mm with ``meshnet_hcp_brainmask``'s intensity preprocessing);
    ``"auto"`` uses the item's file when given, else the model. Each mask keeps its largest component, holes
    filled; an empty mask is an error naming the image.

    Args:
        keys: the image key (one key; its first channel is used).
        mask_key: where the mask goes (and where ``"file"`` finds the path).
        suffix: file name suffix of a brain mask beside its image.
        source: one of :data:`MASK_SOURCES`.
        network: the brain-extraction network, or a function returning it (called on first use, so a config
            that never needs it loads nothing). Needed for ``"model"`` and ``"auto"``.
        device: device of the network's forward pass.
        inferer: runs the network and returns class indices (``B×1×…``), e.g. the brain-extraction bundle's
            ``FullVolumeInferer(argmax=True)`` (its fast CPU paths); default a plain forward pass and argmax.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "mask",
        source: str = "auto",
        network: nn.Module | Callable[[], nn.Module] | None = None,
        device: str | torch.device = "cpu",
        suffix: str = MASK_SUFFIX,
        inferer: Callable[[torch.Tensor, nn.Module], torch.Tensor] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if source not in MASK_SOURCES:
            raise ValueError(f"brain mask source must be one of {MASK_SOURCES}, got {source!r}.")
        if len(self.keys) != 1:
            raise ValueError(f"BrainMaskd reads one image key, got {list(self.keys)}.")
        self.mask_key, self.source, self._network, self.device = mask_key, source, network, torch.device(device)
        self.suffix, self.inferer = suffix, inferer

    @property
    def network(self) -> nn.Module:
        if self._network is None:
            raise ValueError("brain mask source 'model' needs a brain-extraction network (network=...).")
        if not isinstance(self._network, nn.Module):
            self._network = self._network()
        return self._network.eval()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            source = str(image.meta.get("filename_or_obj", key)) if isinstance(image, MetaTensor) else str(key)
            given = d.get(self.mask_key)
            if not isinstance(given, str) and self.source in ("auto", "file"):
                given = beside(source, self.suffix)
            if self.source == "file" or (self.source == "auto" and isinstance(given, str)):
                inside = self._from_file(given, image, source)
            elif self.source == "nonzero":
                inside = np.asarray(image[0].detach().cpu()) > 0
            else:
                inside = self._from_network(image)
            inside = solid_mask(inside)
            if not inside.any():
                raise InvalidImageError(
                    f"{source}: the brain mask ({self.source}) is empty; check the image, or give a mask file "
                    f"(item key {self.mask_key!r}) or another brain mask source."
                )
            mask = torch.from_numpy(inside[None].astype(np.float32))
            d[self.mask_key] = MetaTensor(mask, meta=dict(image.meta)) if isinstance(image, MetaTensor) else mask
        return d

    def _from_file(self, path: Any, image: torch.Tensor, source: str) -> np.ndarray:
        if not isinstance(path, str):
            raise InvalidImageError(
                f"{source}: no brain mask file; give one as '{self.mask_key}' in the datalist (or "
                f"<image>_mask.nii.gz beside the image), or choose brain mask source 'nonzero' or 'model'."
            )
        try:
            mask = LoadImage(image_only=True, ensure_channel_first=True)(path)
        except Exception as error:
            raise InvalidImageError(f"{path}: cannot read the brain mask ({error}).") from error
        same_shape = tuple(mask.shape[1:]) == tuple(image.shape[1:])
        affine = getattr(image, "affine", None)
        if not same_shape or (affine is not None and not np.allclose(mask.affine, affine, atol=1e-3)):
            raise InvalidImageError(
                f"{path}: the brain mask's grid {tuple(mask.shape[1:])} differs from {source}'s "
                f"{tuple(image.shape[1:])} (shape or affine); resample it onto the image first."
            )
        return np.asarray(mask[0]) > 0

    @torch.no_grad()
    def _from_network(self, image: torch.Tensor) -> np.ndarray:
        if not isinstance(image, MetaTensor):
            raise TypeError("brain mask source 'model' needs a MetaTensor image (load it with LoadVolumed).")
        conformed = Conform()(MetaTensor(image[:1].as_tensor().float(), affine=image.affine))
        conformed = ConformIntensity(upper_quantile=0.98)(conformed)
        conformed = ScaleIntensityRangePercentiles(2, 98, 0.0, 1.0, clip=True)(conformed)
        batch = conformed[None].as_tensor().to(self.device)
        if self.inferer is not None:
            labels = self.inferer(batch, self.network)[0].cpu()
        else:
            labels = self.network(batch).argmax(dim=1, keepdim=True)[0].cpu()
        grid = MetaTensor(solid_mask(np.asarray(labels[0]) > 0)[None].astype(np.float32), affine=conformed.affine)
        back = SpatialResample(mode="nearest", padding_mode="zeros")(
            grid, dst_affine=image.affine, spatial_size=tuple(image.shape[1:])
        )
        return np.asarray(back[0]) > 0.5
