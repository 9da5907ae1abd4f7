"""The U-Net of the MTNeuro Task 2 baselines (2D and 3D), built from MONAI ``Convolution`` blocks.

MTNeuro's ``UNet(n_blocks=4, start_filters=32, activation="relu", normalization="batch", conv_mode="same",
up_mode="transposed")``: four encoder levels of 32-64-128-256 features, each two 3×3(×3) convolutions followed by
ReLU and *then* batch norm, with 2× max-pooling between levels; three decoder levels, each a 2×2(×2) stride-2
transposed convolution halving the features (then ReLU, batch norm), concatenation with the encoder's features and
two convolutions (ReLU, batch norm); a final 1×1(×1) convolution. Weights start Xavier-uniform, biases zero.

Parameters: 2D 1,928,355 (3 classes) / 1,928,388 (4 classes); 3D 5,603,043 / 5,603,076. MTNeuro's module reports
43,232 more (1,971,587 for 2D 3-class): each decoder level also registers a 1×1 convolution that only its
interpolating up-modes use. :func:`convert_mtneuro_state_dict` maps MTNeuro's checkpoints onto this module (those
unused tensors dropped, 3D kernels reordered to this package's axes); with the same weights both give identical
outputs, in training and evaluation mode.

MONAI's nets differ: ``UNet`` downsamples with strided (residual) convolutions, ``BasicUNet`` pools four times and
puts batch norm before the activation, ``DynUNet`` uses strided convolutions — none can be configured to this one,
so it is assembled from MONAI's ``Convolution`` (``adn_ordering="AND"``: activation, then norm, then dropout).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import nn

__all__ = ["MTNeuroUNet", "convert_mtneuro_state_dict"]


def _conv(spatial_dims: int, in_channels: int, out_channels: int, act, norm, dropout) -> Convolution:
    return Convolution(
        spatial_dims, in_channels, out_channels, kernel_size=3, act=act, norm=norm, dropout=dropout, adn_ordering="AND"
    )


class _Up(nn.Module):
    """Transposed convolution (halving the features), concatenation with the skip, two convolutions."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, act, norm, dropout) -> None:
        super().__init__()
        self.up = Convolution(
            spatial_dims, in_channels, out_channels, strides=2, kernel_size=2, act=act, norm=norm, dropout=dropout,
            adn_ordering="AND", is_transposed=True, padding=0, output_padding=0,
        )  # fmt: skip
        self.conv_1 = _conv(spatial_dims, 2 * out_channels, out_channels, act, norm, dropout)
        self.conv_2 = _conv(spatial_dims, out_channels, out_channels, act, norm, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_2(self.conv_1(torch.cat([self.up(x), skip], dim=1)))


class MTNeuroUNet(nn.Module):
    """MTNeuro's U-Net baseline: four levels, max-pooling, transposed-convolution upsampling, conv→ReLU→BN.

    Input sizes must be divisible by ``2 ** (len(channels) - 1)`` (8 for four levels: 256×256 slices and 8-slice
    volumes are); MTNeuro's model would silently return a smaller map otherwise.

    Args:
        spatial_dims: 2 for slices ``[B, 1, Y, X]``, 3 for volumes ``[B, 1, Y, X, Z]``.
        in_channels: input channels.
        out_channels: number of classes.
        channels: features per level, shallow to deep (MTNeuro: ``start_filters · 2**level`` for 4 blocks).
        act: activation, as understood by MONAI.
        norm: normalisation, as understood by MONAI (applied after the activation, as in MTNeuro).
        dropout: dropout probability after each normalisation (MTNeuro: none).
        xavier_init: MTNeuro's initialisation (Xavier-uniform weights, zero biases) instead of PyTorch's default.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 3,
        channels: Sequence[int] = (32, 64, 128, 256),
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        dropout: float | None = None,
        xavier_init: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        channels = [int(c) for c in channels]
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 levels, got {channels}.")
        self.spatial_dims = spatial_dims
        self.divisor = 2 ** (len(channels) - 1)
        self.encoder = nn.ModuleList()
        previous = in_channels
        for width in channels:
            self.encoder.append(
                nn.Sequential(
                    _conv(spatial_dims, previous, width, act, norm, dropout),
                    _conv(spatial_dims, width, width, act, norm, dropout),
                )
            )
            previous = width
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        self.decoder = nn.ModuleList(
            _Up(spatial_dims, deep, shallow, act, norm, dropout)
            for deep, shallow in zip(channels[:0:-1], channels[-2::-1])
        )
        self.final_conv = Convolution(spatial_dims, channels[0], out_channels, kernel_size=1, conv_only=True)
        if xavier_init:
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                    nn.init.xavier_uniform_(module.weight)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for size in x.shape[2:]:  # a loop, not any(...): TorchScript (ckpt_export) compiles this forward
            if size % self.divisor != 0:
                raise ValueError(
                    f"input size {x.shape[2:]} is not divisible by {self.divisor}; pad it, e.g. with "
                    f"monai.transforms.DivisiblePad(k={self.divisor})."
                )
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.final_conv(x)


_RENAMES = (
    (r"down_blocks\.(\d+)\.conv([12])\.", lambda m: f"encoder.{m[1]}.{int(m[2]) - 1}.conv."),
    (r"down_blocks\.(\d+)\.norm([12])\.", lambda m: f"encoder.{m[1]}.{int(m[2]) - 1}.adn.N."),
    (r"up_blocks\.(\d+)\.up\.", lambda m: f"decoder.{m[1]}.up.conv."),
    (r"up_blocks\.(\d+)\.norm0\.", lambda m: f"decoder.{m[1]}.up.adn.N."),
    (r"up_blocks\.(\d+)\.conv([12])\.", lambda m: f"decoder.{m[1]}.conv_{m[2]}.conv."),
    (r"up_blocks\.(\d+)\.norm([12])\.", lambda m: f"decoder.{m[1]}.conv_{m[2]}.adn.N."),
    (r"conv_final\.", lambda m: "final_conv.conv."),
)


def convert_mtneuro_state_dict(state: Mapping[str, torch.Tensor], spatial_dims: int = 2) -> dict[str, torch.Tensor]:
    """Rename the tensors of an MTNeuro ``UNet`` checkpoint for :class:`MTNeuroUNet` (``up_mode="transposed"``).

    The decoder's unused 1×1 convolutions (``up_blocks.*.conv0``) are dropped; any other unknown key is an error.
    MTNeuro's 3D loader fed volumes as ``[1, z, x, y]`` (its 2D slices are ``[1, y, x]``, as here); for
    ``spatial_dims=3`` the kernels are reordered to this module's ``[1, y, x, z]``.
    """
    converted = {}
    for key, value in state.items():
        if re.match(r"up_blocks\.\d+\.conv0\.", key):
            continue
        for pattern, target in _RENAMES:
            match = re.match(pattern, key)
            if match:
                if spatial_dims == 3 and value.ndim == 5:  # [out, in, z, x, y] -> [out, in, y, x, z]
                    value = value.permute(0, 1, 4, 3, 2).contiguous()
                converted[target(match) + key[match.end() :]] = value
                break
        else:
            raise KeyError(f"{key!r} is not a tensor of MTNeuro's UNet (n_blocks=4, up_mode='transposed').")
    return converted
