"""MedicalZooPytorch's non-overlapping patch inference: pad to a multiple of the patch, tile, run, fold back, crop.

MedicalZoo (``non_overlap_padding``) pads each spatial axis to the next multiple of the patch size, splitting
the padding between both ends (the odd voxel at the start), with the value of the volume's first voxel; cuts
the padded volume into non-overlapping patches (``unfold``), runs the network on each, puts the outputs back
in place and crops the padding off. Here the tiling, batching and folding back are MONAI's ``PatchInferer``
with a ``SlidingWindowSplitter`` (no overlap) and an ``AvgMerger`` (every voxel written once, divided by one:
exact). The padding is done here because ``AvgMerger`` cannot place patches that start before the volume.

The first voxel's value is taken per channel (MedicalZoo takes channel 0's for all channels, which differs
only where contrasts have different background values after normalisation). Overlapping inference, this
project's default, needs no code of ours: MONAI ``SlidingWindowInferer(roi_size, overlap=0.5, mode="gaussian")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import AvgMerger, Inferer, PatchInferer, SlidingWindowSplitter
from torch import nn

__all__ = ["NonOverlappingPatchInferer", "centred_padding"]


def centred_padding(spatial_shape: Sequence[int], patch_size: Sequence[int]) -> list[tuple[int, int]]:
    """``(before, after)`` per axis reaching the next multiple of the patch, the odd voxel before (as MedicalZoo)."""
    pads = []
    for size, patch in zip(spatial_shape, patch_size):
        extra = -int(size) % int(patch)
        pads.append((extra // 2 + int(size) % 2 * (extra % 2), extra // 2))
    return pads


class NonOverlappingPatchInferer(Inferer):
    """Run ``network`` on non-overlapping patches tiling the padded input and return the folded-back output.

    Args:
        roi_size: patch size (MedicalZoo uses its training crop size; a multiple of 16 for ``UNet3D``).
        sw_batch_size: patches per forward pass.
        pad_value: value of the padding: ``"corner"`` (each channel's value at the first voxel, MedicalZoo's
            choice: the background of a skull-stripped, normalised scan) or a number.
    """

    def __init__(self, roi_size: Sequence[int] | int = 64, sw_batch_size: int = 4, pad_value: float | str = "corner"):
        super().__init__()
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be at least 1, got {sw_batch_size}.")
        if isinstance(pad_value, str) and pad_value != "corner":
            raise ValueError(f"pad_value must be 'corner' or a number, got {pad_value!r}.")
        self.roi_size, self.sw_batch_size, self.pad_value = roi_size, int(sw_batch_size), pad_value

    def __call__(self, inputs: torch.Tensor, network: nn.Module | Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        spatial = tuple(inputs.shape[2:])
        roi = (self.roi_size,) * len(spatial) if isinstance(self.roi_size, int) else tuple(self.roi_size)
        if len(roi) != len(spatial):
            raise ValueError(f"roi_size {roi} and the input's spatial shape {spatial} differ in length.")
        pads = centred_padding(spatial, roi)
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        if self.pad_value == "corner":
            fill = plain[(slice(None), slice(None)) + (0,) * len(spatial)]
        else:
            fill = torch.full(plain.shape[:2], float(self.pad_value), dtype=plain.dtype, device=plain.device)
        padded_shape = tuple(s + before + after for s, (before, after) in zip(spatial, pads))
        padded = fill.reshape(*plain.shape[:2], *(1,) * len(spatial)).expand(*plain.shape[:2], *padded_shape).clone()
        inside = tuple(slice(before, before + s) for s, (before, _) in zip(spatial, pads))
        padded[(slice(None), slice(None), *inside)] = plain
        patcher = PatchInferer(
            splitter=SlidingWindowSplitter(roi, overlap=0, pad_mode=None),
            merger_cls=AvgMerger,
            batch_size=self.sw_batch_size,
            device=plain.device,
        )
        output = patcher(padded, network, *args, **kwargs)
        output = output[(slice(None), slice(None), *inside)]
        if isinstance(inputs, MetaTensor):
            return MetaTensor(output, meta=inputs.meta)
        return output
