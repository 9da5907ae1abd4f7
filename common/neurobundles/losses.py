"""Losses that take MONAI's channel-first label maps (``B×1×…`` class indices) as targets."""

from __future__ import annotations

import torch
from monai.data import MetaTensor
from torch import nn

__all__ = ["CrossEntropyLoss"]


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """PyTorch's cross-entropy, accepting ``B×1×…`` targets of any dtype (MONAI keeps the channel axis).

    MONAI's ``DiceCELoss`` accepts such targets too but always computes the Dice term (with one-hot
    targets), which plain cross-entropy training does not need.
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if isinstance(target, MetaTensor):
            target = target.as_tensor()
        if isinstance(input, MetaTensor):
            input = input.as_tensor()
        if target.ndim == input.ndim and target.shape[1] == 1:
            target = target[:, 0]
        return super().forward(input, target.long())
