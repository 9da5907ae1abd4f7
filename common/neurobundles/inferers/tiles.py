"""Run an image classifier over every tile of an input: the tiles travel as channels, the logits come back per tile."""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer
from torch import nn

__all__ = ["TileClassifierInferer"]


class TileClassifierInferer(Inferer):
    """``[B, N, H, W]`` (N single-channel tiles per input) → classifier logits ``[B, C, N]``.

    The tiles of one input (a cutout cut into tiles by ``neurobundles.data.TileCutoutd``) are stacked as the
    channels of one item, so MONAI's per-item transforms and the cohort engine see one input; this runs the network
    on them ``batch_size`` tiles at a time. Classes come first in the output, as channels in MONAI, so
    ``Activationsd(softmax=True)`` normalises over the classes of each tile.

    Args:
        batch_size: tiles per forward pass.
    """

    def __init__(self, batch_size: int = 256) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.batch_size = batch_size

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        if inputs.ndim != 4:
            raise ValueError(f"tile stacks are [B, N, H, W], got shape {tuple(inputs.shape)}.")
        outputs = []
        for item in inputs:
            tiles = item.unsqueeze(1)  # [N, 1, H, W]
            step = self.batch_size
            logits = [network(tiles[i : i + step], *args, **kwargs) for i in range(0, len(tiles), step)]
            outputs.append(torch.cat(logits).transpose(0, 1))  # [C, N]
        return torch.stack(outputs)
