"""The U-Net the MeshNet papers and Catalyst.Neuro compare against, built from MONAI's ``BasicUNet`` blocks.

Two conv–BN–ReLU per level, 64-128-256-512 features, three max-poolings and trilinear up-sampling (no
transposed convolutions): 23.35 M parameters for 3 classes. MONAI's ``BasicUNet`` always pools four times
and its ``UNet`` uses strided and transposed convolutions, so neither can be configured to this network;
its building blocks (``TwoConv``, ``Down``, ``UpCat``) are used as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets.basic_unet import Down, TwoConv, UpCat
from torch import nn

__all__ = ["BaselineUNet"]


class BaselineUNet(nn.Module):
    """3-level U-Net: encoder ``TwoConv`` + three ``Down``, decoder three ``UpCat``, then a 1×1×1 convolution.

    Each decoder level up-samples (trilinear, ``align_corners=True``) without reducing channels, concatenates
    the encoder features and applies two convolutions to that level's width. Odd sizes (38 → 19 → 9 → 4) are
    handled by ``UpCat``'s padding, so the 38³ training sub-volumes work as they are.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        out_channels: number of classes.
        features: widths of the four levels, shallow to deep.
        act: activation, as understood by MONAI.
        norm: normalisation, as understood by MONAI.
        dropout: dropout probability in every convolution block.
        bias: whether the convolutions carry a bias.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 3,
        features: Sequence[int] = (64, 128, 256, 512),
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if len(features) != 4:
            raise ValueError(f"features needs the widths of 4 levels, got {tuple(features)}.")
        f0, f1, f2, f3 = (int(f) for f in features)
        self.conv_0 = TwoConv(spatial_dims, in_channels, f0, act, norm, bias, dropout)
        self.down_1 = Down(spatial_dims, f0, f1, act, norm, bias, dropout)
        self.down_2 = Down(spatial_dims, f1, f2, act, norm, bias, dropout)
        self.down_3 = Down(spatial_dims, f2, f3, act, norm, bias, dropout)
        up = {"upsample": "nontrainable", "pre_conv": None, "interp_mode": "linear", "halves": False}
        self.upcat_3 = UpCat(spatial_dims, f3, f2, f2, act, norm, bias, dropout, **up)
        self.upcat_2 = UpCat(spatial_dims, f2, f1, f1, act, norm, bias, dropout, **up)
        self.upcat_1 = UpCat(spatial_dims, f1, f0, f0, act, norm, bias, dropout, **up)
        self.final_conv = Convolution(spatial_dims, f0, out_channels, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        u2 = self.upcat_3(x3, x2)
        u1 = self.upcat_2(u2, x1)
        return self.final_conv(self.upcat_1(u1, x0))
