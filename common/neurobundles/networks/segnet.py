"""SegNet (Badrinarayanan et al., 2017) as MRISeg trains it on BraTS slices: a VGG16-like encoder whose
max-pooling indices drive the decoder's max-unpooling.

The seed's configuration (``SegNet()``) has 13 encoder convolutions (64, 64 | 128, 128 | 256 × 3 | 512 × 3 |
512 × 3), kernel 5 with padding 2, batch norm with momentum 0.5 and ReLU after every convolution, five 2 × 2
max-poolings that keep their indices, and a mirrored decoder: each level un-pools, then runs as many
convolutions as its encoder twin, the last one narrowing to the next level's width. For a 240² slice the
pooled sizes are 120, 60, 30, 15, 7, so the first un-pooling must restore 15 × 15 from 7 × 7; every
un-pooling here is given the size its pooling saw, so any input of at least 32 pixels per side is restored
exactly (no padding or cropping needed).

Differences from the seed's code, on purpose: the last convolution gives logits (no batch norm, ReLU and
sigmoid after it; the seed's ReLU-then-sigmoid could never output less than 0.5), so the loss is
``BCEWithLogitsLoss`` on logits and the sigmoid belongs to post-processing. 81,745,409 parameters for
3 input channels and 1 output (the seed's count less the two of its final 1-channel batch norm); the 5 × 5
kernels make it about 2.8 times VGG16-SegNet's 3 × 3 version. Trained with ``pos_weight`` w, the loss-optimal
mask is ``logits > ln w`` (sigmoid above w / (1 + w), 0.96 for the seed's 25): at logit 0 the weighting inflates
the mask (on the test's overfit run, Dice 0.85–0.95 at ln 25 against 0.76–0.90 at 0).

Scripting works (``torch.jit.script``): the pooling indices and sizes travel in typed lists, and the
un-pooling's ``output_size`` is a ``List[int]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

__all__ = [
    "SEED_CHANNELS",
    "SEED_CONVS",
    "MaxUnpool",
    "SegNet",
    "encoder_parameters",
    "freeze_encoder",
    "min_input_size",
]

SEED_CHANNELS = (64, 128, 256, 512, 512)
"""Widths of the five levels in the seed (VGG16's)."""

SEED_CONVS = (2, 2, 3, 3, 3)
"""Convolutions per level in the seed (VGG16's 13)."""

_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


class MaxUnpool(nn.Module):
    """2 × 2 (× 2) max-unpooling to a given size, through the functional form.

    ``nn.MaxUnpool2d`` fails ``torch.jit.script`` in PyTorch 2.13 (an internal ``isIntList`` assertion on its
    stored sizes); the functional call with explicit lists scripts and gives the same result.
    """

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor, indices: torch.Tensor, output_size: list[int]) -> torch.Tensor:
        if self.spatial_dims == 1:
            return F.max_unpool1d(x, indices, [2], [2], [0], output_size=output_size)
        if self.spatial_dims == 2:
            return F.max_unpool2d(x, indices, [2, 2], [2, 2], [0, 0], output_size=output_size)
        return F.max_unpool3d(x, indices, [2, 2, 2], [2, 2, 2], [0, 0, 0], output_size=output_size)


def min_input_size(levels: int = 5) -> int:
    """Smallest side a SegNet with ``levels`` poolings accepts: each pooling halves, the deepest needs 1 pixel."""
    return 2**levels


class SegNet(nn.Module):
    """Encoder–decoder with pooling indices: ``encoder`` (conv blocks + max-pool) then ``decoder`` (max-unpool +
    conv blocks), ending in a convolution to ``out_channels`` logits.

    Args:
        spatial_dims: number of spatial dimensions (2 for slices; 1 and 3 also work).
        in_channels: input channels (3 for T1, T2, FLAIR; 4 with T1ce).
        out_channels: output logits (1 for a binary mask).
        channels: width of each level, shallow to deep; its length is the number of poolings.
        convs: convolutions per level, one int for every level or one per level.
        kernel_size: odd kernel of every convolution; padding keeps the size.
        act: activation after each normalisation, as understood by MONAI.
        norm: normalisation after each convolution, as understood by MONAI; the seed's batch norm has
            momentum 0.5 (PyTorch's default is 0.1).
        dropout: dropout probability in every block (the seed has none).
        bias: whether the convolutions carry a bias (the seed's do, although batch norm follows them).
        frozen_levels: encoder levels to build frozen (see :func:`freeze_encoder`), for transfer learning: the
            network is frozen before any optimiser or ``DistributedDataParallel`` wraps it, whatever the config order.
        two_class_threshold: None (training) outputs the ``out_channels`` logits z. A number t (``out_channels`` 1)
            outputs two channels ``[t, z]`` instead, with the same weights: their argmax is the mask ``z > t`` and
            their softmax's second channel is ``sigmoid(z - t)``, so label-map tools (MONAI Label, the Model Zoo's
            checks, argmax post-processing) see background and tumour as two classes cut at the bundle's threshold.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        channels: Sequence[int] = SEED_CHANNELS,
        convs: int | Sequence[int] = SEED_CONVS,
        kernel_size: int = 5,
        act: str | tuple = "relu",
        norm: str | tuple = ("batch", {"momentum": 0.5}),
        dropout: float = 0.0,
        bias: bool = True,
        frozen_levels: int = 0,
        two_class_threshold: float | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in _POOL:
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if two_class_threshold is not None and out_channels != 1:
            raise ValueError(f"two_class_threshold needs out_channels=1 (one logit), got {out_channels}.")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd so that padding keeps the size, got {kernel_size}.")
        widths = [int(c) for c in channels]
        counts = [int(convs)] * len(widths) if isinstance(convs, int) else [int(c) for c in convs]
        if not widths or len(counts) != len(widths) or min(counts) < 1:
            raise ValueError(
                f"channels {tuple(widths)} and convs {tuple(counts)} need one entry (>= 1 convolution) per level."
            )
        self.spatial_dims = spatial_dims
        self.levels = len(widths)
        self.min_size = min_input_size(self.levels)

        def block(cin: int, cout: int, conv_only: bool = False) -> Convolution:
            return Convolution(
                spatial_dims,
                cin,
                cout,
                kernel_size=kernel_size,
                padding=kernel_size // 2,
                act=None if conv_only else act,
                norm=None if conv_only else norm,
                dropout=None if conv_only or not dropout else dropout,
                bias=bias or conv_only,
                conv_only=conv_only,
                adn_ordering="NDA",
            )

        encoder: list[nn.Module] = []
        previous = in_channels
        for width, count in zip(widths, counts):
            layers = []
            for _ in range(count):
                layers.append(block(previous, width))
                previous = width
            encoder.append(nn.Sequential(*layers))
        self.encoder = nn.ModuleList(encoder)
        """One ``nn.Sequential`` of conv blocks per level, shallow to deep (pooling follows each)."""

        decoder: list[nn.Module] = []
        for level in reversed(range(self.levels)):
            width, count = widths[level], counts[level]
            target = widths[level - 1] if level > 0 else out_channels
            layers = [block(width, width) for _ in range(count - 1)]
            layers.append(block(width, target, conv_only=level == 0))
            decoder.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(decoder)
        """One ``nn.Sequential`` per level, deep to shallow (un-pooling precedes each); the last ends in logits."""

        self.pool = _POOL[spatial_dims](kernel_size=2, stride=2, return_indices=True)
        self.unpool = MaxUnpool(spatial_dims)
        self.two_classes = two_class_threshold is not None
        self.threshold = float(two_class_threshold) if two_class_threshold is not None else 0.0
        self.frozen_levels = 0
        """Encoder levels kept frozen (weights and batch-norm statistics) by :func:`freeze_encoder`."""
        if frozen_levels:
            freeze_encoder(self, True, frozen_levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        smallest = min(x.shape[2:])
        if smallest < self.min_size:
            raise ValueError(
                "SegNet input side "
                + str(smallest)
                + " is too small: "
                + str(self.levels)
                + " poolings need at least "
                + str(self.min_size)
                + " pixels per side; pad the input."
            )
        indices: list[torch.Tensor] = []
        sizes: list[list[int]] = []
        for level in self.encoder:
            x = level(x)
            sizes.append(list(x.shape[2:]))
            x, index = self.pool(x)
            indices.append(index)
        depth = len(indices)
        for i, level in enumerate(self.decoder):
            x = self.unpool(x, indices[depth - 1 - i], output_size=sizes[depth - 1 - i])
            x = level(x)
        if self.two_classes:
            return torch.cat([torch.full_like(x, self.threshold), x], dim=1)
        return x

    def train(self, mode: bool = True) -> SegNet:
        """Switch train/eval mode, keeping frozen encoder levels in eval mode (their batch-norm statistics fixed)."""
        super().train(mode)
        for level in self.encoder[: self.frozen_levels]:
            level.eval()
        return self


def encoder_parameters(network: SegNet, levels: int | None = None) -> list[nn.Parameter]:
    """Parameters of the first ``levels`` encoder levels (all of them by default)."""
    chosen = network.encoder if levels is None else network.encoder[:levels]
    return [p for level in chosen for p in level.parameters()]


def freeze_encoder(network: SegNet, freeze: bool = True, levels: int | None = None) -> SegNet:
    """Freeze (or unfreeze) the encoder for transfer learning; returns ``network`` so configs can chain it.

    Frozen levels stop receiving gradients (``requires_grad=False``, so optimisers skip them) and stay in eval
    mode even under ``network.train()``: their batch-norm running statistics, learnt on BraTS, do not drift
    towards the new task's. The decoder always trains. Build the optimiser from
    ``[p for p in network.parameters() if p.requires_grad]`` to leave the frozen weights out of it entirely.

    Args:
        network: a :class:`SegNet`.
        freeze: True to freeze, False to make every encoder level trainable again.
        levels: how many encoder levels, from the input, to freeze; default all of them.
    """
    if not isinstance(network, SegNet):
        raise TypeError(f"freeze_encoder needs a SegNet, got {type(network).__name__}.")
    count = network.levels if levels is None else int(levels)
    if not 0 <= count <= network.levels:
        raise ValueError(f"levels must be between 0 and {network.levels}, got {levels}.")
    for param in network.parameters():
        param.requires_grad_(True)
    network.frozen_levels = count if freeze else 0
    for param in encoder_parameters(network, network.frozen_levels):
        param.requires_grad_(False)
    network.train(network.training)
    return network
