"""MeshNet: a stack of dilated 3D convolutions at full resolution (Fedorov et al., 2017).

Every layer keeps the input grid, so the receptive field grows only through dilation and the
network stays tiny (tens of thousands of parameters) while segmenting a whole 256³ volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn

__all__ = ["MeshNet", "receptive_field"]


class MeshNet(nn.Module):
    """Dilated fully convolutional network with one block per dilation.

    Each block is ``conv(k, dilation d, padding d·(k-1)/2) → [norm] → act → [dropout]`` (``features``)
    and a final 1×1×1 convolution (``head``) maps to ``out_channels`` logits.

    Args:
        spatial_dims: number of spatial dimensions (3 for volumes).
        in_channels: input channels.
        out_channels: number of classes.
        channels: feature channels, one int for every block or a sequence with one entry per block.
        dilations: dilation of each block; its length sets the depth.
        kernel_size: odd kernel size of the dilated convolutions.
        act: activation name or ``(name, kwargs)`` as understood by MONAI (``"relu"``, ``"elu"``, ``"gelu"``).
        norm: optional normalisation, e.g. ``"batch"`` or ``("group", {"num_groups": 15, "affine": False})``.
        dropout: dropout probability after each activation (0 disables it).
        bias: whether the dilated convolutions carry a bias (the final one always does unless
            ``final_bias`` is False).
        final_bias: bias of the final 1×1×1 convolution.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 3,
        channels: int | Sequence[int] = 21,
        dilations: Sequence[int] = (1, 1, 1, 2, 4, 8, 1),
        kernel_size: int = 3,
        act: str | tuple = "relu",
        norm: str | tuple | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        final_bias: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the grid, got {kernel_size}.")
        widths = [channels] * len(dilations) if isinstance(channels, int) else list(channels)
        if len(widths) != len(dilations):
            raise ValueError(f"channels has {len(widths)} entries but dilations has {len(dilations)}.")
        self.dilations = tuple(int(d) for d in dilations)
        self.kernel_size = kernel_size
        blocks: list[nn.Module] = []
        previous = in_channels
        for width, dilation in zip(widths, self.dilations):
            blocks.append(
                Convolution(
                    spatial_dims,
                    previous,
                    width,
                    kernel_size=kernel_size,
                    dilation=dilation,
                    padding=dilation * (kernel_size - 1) // 2,
                    act=act,
                    norm=norm,
                    dropout=dropout or None,
                    bias=bias,
                    adn_ordering="NAD",
                )
            )
            previous = width
        self.features = nn.Sequential(*blocks)
        """The dilated blocks: everything before the classifier."""
        self.head = Convolution(spatial_dims, previous, out_channels, kernel_size=1, bias=final_bias, conv_only=True)
        """The final 1×1×1 convolution to class logits (pointwise, so it can run in chunks)."""
        self.head_slab = 32
        """Slices per call of the classifier on CPU (see :meth:`classify`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """The 1×1×1 classifier; on CPU a matrix product over channels, ``head_slab`` slices at a time.

        PyTorch's CPU convolution in the default memory layout crashes (segmentation fault, PyTorch 2.13) on a
        1×1×1 convolution with 50 or more outputs over a whole 256³ volume, the shape the wide bundles declare.
        Slabs written into one output keep every step small, and ``einsum`` is 4× faster than that convolution.
        """
        if features.device.type != "cpu" or features.shape[2] <= self.head_slab:
            return self.head(features)
        conv = self.head.conv
        weight = conv.weight.reshape(conv.weight.shape[0], conv.weight.shape[1]).to(features.dtype)
        shape = [features.shape[0], weight.shape[0], features.shape[2], features.shape[3], features.shape[4]]
        out = features.new_empty(shape)
        for start in range(0, features.shape[2], self.head_slab):
            part = torch.einsum("oc,bcdhw->bodhw", weight, features[:, :, start : start + self.head_slab])
            out[:, :, start : start + self.head_slab] = part
        bias = conv.bias
        if bias is not None:
            out += bias.to(out.dtype).view(1, -1, 1, 1, 1)
        return out


def receptive_field(dilations: Sequence[int], kernel_size: int = 3) -> int:
    """Width in voxels of the region that influences one output voxel."""
    return 1 + (kernel_size - 1) * sum(dilations)
