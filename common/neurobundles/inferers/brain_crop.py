"""Segment only the brain's bounding box, found by a brain-extraction network run first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import generate_spatial_bounding_box
from torch import nn

from .full_volume import FullVolumeInferer

__all__ = ["BrainCropInferer", "brain_box"]


def brain_box(mask: torch.Tensor, margin: int) -> tuple[slice, ...] | None:
    """Slices of the bounding box of a 3D boolean ``mask`` grown by ``margin`` voxels, or None if empty.

    MONAI's ``generate_spatial_bounding_box`` finds the box; this only clips it to the volume.
    """
    if not bool(mask.any()):
        return None
    start, end = generate_spatial_bounding_box(mask[None], margin=margin)
    return tuple(slice(max(low, 0), min(high, size)) for low, high, size in zip(start, end, mask.shape))


class BrainCropInferer(Inferer):
    """Run ``mask_network`` on the whole volume, then the bundle's network on the brain's box only.

    The segmentation outside the box is background. MeshNet is fully convolutional, so the crop is
    exact away from its borders; ``margin`` keeps the borders in non-brain tissue. Returns class
    indices (``B×1×…``) like ``FullVolumeInferer(argmax=True)``.

    Args:
        mask_network: brain-extraction network whose class 1 is brain (e.g. ``meshnet_hcp_brainmask``'s),
            fed the same preprocessed image; or a function returning it, called on first use, so a config that
            merely defines this inferer loads nothing.
        margin: voxels added around the brain's bounding box.
        mask_outside: also set every voxel outside the brain mask to background, which removes labels
            a model puts on scalp or skull (brainchop's web app does this for some models).
        inferer: runs ``network``; default :class:`FullVolumeInferer` with ``argmax=True``.
        mask_inferer: runs ``mask_network`` (default: ``inferer``); its own, so that it uses the paths
            measured for the brain-extraction bundle.
    """

    def __init__(
        self,
        mask_network: nn.Module | Callable[[], nn.Module],
        margin: int = 8,
        mask_outside: bool = False,
        inferer: Inferer | None = None,
        mask_inferer: Inferer | None = None,
    ) -> None:
        super().__init__()
        self._mask_network = mask_network
        self.margin = margin
        self.mask_outside = mask_outside
        self.inferer = inferer or FullVolumeInferer(argmax=True)
        self.mask_inferer = mask_inferer or self.inferer

    @property
    def mask_network(self) -> nn.Module:
        if not isinstance(self._mask_network, nn.Module):
            self._mask_network = self._mask_network()
        return self._mask_network.eval()

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        brain = self.mask_inferer(inputs, self.mask_network) > 0
        values = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        out = torch.zeros((values.shape[0], 1, *values.shape[2:]), dtype=torch.float32, device=values.device)
        for item in range(values.shape[0]):
            box = brain_box(brain[item, 0], self.margin)
            if box is None:
                continue
            crop = values[item : item + 1, :, box[0], box[1], box[2]]
            labels = self.inferer(crop, network, *args, **kwargs)
            if labels.shape[1] != 1:
                raise ValueError("BrainCropInferer needs an inner inferer that returns class indices (argmax=True).")
            out[item, :, box[0], box[1], box[2]] = labels[0]
        if self.mask_outside:
            out[~brain] = 0
        if isinstance(inputs, MetaTensor):
            return MetaTensor(out, meta=inputs.meta, applied_operations=inputs.applied_operations)
        return out
