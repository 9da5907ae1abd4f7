"""Segment a volume from sub-volumes: a grid of cubes plus Gaussian-centred ones, and a vote per voxel.

This is MeshNet's published inference for networks trained on sub-volumes (Fedorov et al.; Catalyst.Neuro):
every non-overlapping cube of a centred grid, then cubes drawn like the training crops until there are
``num_samples``; each cube is segmented on its own (argmax), and each voxel takes the class most cubes gave
it. Ties and voxels no cube reached are background. Votes are counted on the device, cubes run in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from torch import nn

from neurobundles.inferers.full_volume import FullVolumeInferer
from neurobundles.subvolumes import crop_sigmas, subvolume_starts

__all__ = ["MajorityVoteInferer"]


class MajorityVoteInferer(Inferer):
    """Per-voxel majority vote of sub-volume segmentations; returns class indices ``B×1×…`` (float32).

    Args:
        roi_size: sub-volume size (the training crop size, 38³ in the recipe).
        num_samples: sub-volumes per volume: the grid (216 for 38³ in 256³), then Gaussian draws up to this number.
        sigma: σ of the Gaussian draws in voxels (default 64), or ``covariance`` (σ²) instead.
        covariance: see ``sigma``.
        sw_batch_size: sub-volumes per forward pass.
        seed: seed of the Gaussian draws, so a volume always gets the same sub-volumes.
        amp: autocast to ``amp_dtype`` (``None``: on CUDA only).
        amp_dtype: ``"float16"`` or ``"bfloat16"``.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int = 38,
        num_samples: int = 512,
        sigma: float | Sequence[float] | None = None,
        covariance: float | Sequence[float] | None = None,
        sw_batch_size: int = 16,
        seed: int = 0,
        amp: bool | None = None,
        amp_dtype: str = "float16",
    ) -> None:
        super().__init__()
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be at least 1, got {sw_batch_size}.")
        self.roi_size = roi_size
        self.num_samples = num_samples
        self.sigma, self.covariance = sigma, covariance
        self.sw_batch_size = sw_batch_size
        self.seed = seed
        self.batch_inferer = FullVolumeInferer(amp=amp, amp_dtype=amp_dtype)
        """Runs each batch of cubes with the device's fastest path (the compiled kernel on CPU)."""

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        values = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        if values.ndim != 5:
            raise ValueError(f"MajorityVoteInferer expects B×C×X×Y×Z inputs, got shape {tuple(values.shape)}.")
        spatial = tuple(values.shape[2:])
        roi = (self.roi_size,) * 3 if isinstance(self.roi_size, int) else tuple(int(r) for r in self.roi_size)
        sigmas = crop_sigmas(self.sigma, self.covariance, 3)
        starts = subvolume_starts(spatial, roi, self.num_samples, np.random.default_rng(self.seed), sigmas)
        out = torch.stack([self._vote(volume, starts, roi, network, *args, **kwargs) for volume in values])
        if isinstance(inputs, MetaTensor):
            return MetaTensor(out, meta=inputs.meta, applied_operations=inputs.applied_operations)
        return out

    def _vote(
        self,
        volume: torch.Tensor,
        starts: np.ndarray,
        roi: tuple[int, ...],
        network: nn.Module,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Class indices ``1×X×Y×Z`` of one ``C×X×Y×Z`` volume."""
        device, spatial = volume.device, volume.shape[1:]
        offsets = [torch.arange(r, device=device) for r in roi]
        votes: torch.Tensor | None = None
        for first in range(0, len(starts), self.sw_batch_size):
            chunk = torch.as_tensor(starts[first : first + self.sw_batch_size], device=device)
            ix, iy, iz = (chunk[:, axis, None] + offsets[axis] for axis in range(3))  # (b, roi) each
            ix, iy, iz = ix[:, :, None, None], iy[:, None, :, None], iz[:, None, None, :]
            patches = volume[:, ix, iy, iz].movedim(0, 1)  # C×b×r×r×r → b×C×r×r×r
            with torch.no_grad():
                logits = self.batch_inferer(patches, network, *args, **kwargs)
            classes = logits.max(dim=1).indices  # b×r×r×r; Tensor.max avoids argmax's slow strided CPU path
            if votes is None:
                counts = logits.shape[1] * int(np.prod(spatial))
                dtype = torch.int16 if len(starts) < torch.iinfo(torch.int16).max else torch.int32
                votes = torch.zeros(counts, dtype=dtype, device=device)
            voxel = (ix * spatial[1] + iy) * spatial[2] + iz  # b×r×r×r flat voxel index
            flat = (classes * int(np.prod(spatial)) + voxel).reshape(-1)
            votes.index_add_(0, flat, torch.ones_like(flat, dtype=votes.dtype))
        if votes is None:
            return torch.zeros((1, *spatial), dtype=torch.float32, device=device)
        return _winner(votes.view(-1, *spatial))


def _winner(votes: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """``1×X×Y×Z`` class with the most votes; background where classes tie or no vote was cast.

    Runs ``chunk`` slices at a time so the ``K×…`` comparison never exists in full.
    """
    out = torch.zeros((1, *votes.shape[1:]), dtype=torch.float32, device=votes.device)
    for start in range(0, votes.shape[1], chunk):
        part = votes[:, start : start + chunk]
        best, label = part.max(dim=0)
        unique = (part == best).sum(dim=0) == 1
        out[0, start : start + chunk] = torch.where(unique & (best > 0), label, 0).float()
    return out
