"""MedicalZooPytorch's ``UNet3D``: an Isensee-style residual U-Net with summed segmentation layers, from MONAI blocks.

The design (Isensee et al., BraTS 2017, as coded in MedicalZooPytorch ``lib/medzoo/Unet3D.py``):

- **context pathway**, five levels of ``f, 2f, 4f, 8f, 16f`` features (``f = init_filters``, 8 in MedicalZoo):
  a 3×3×3 convolution (stride 2 from level 2 on) followed by a residual *context module*: pre-activation
  (instance norm → leaky ReLU → 3×3×3 conv), channel dropout (``Dropout3d``, p = 0.6), the same again, plus the
  input of the module. Level 1's module has no normalisation inside. MedicalZoo applies *one* convolution
  twice in the modules of levels 2–5 (shared weights); ``share_context_weights=False`` gives them two, as in
  Isensee's paper.
- **localisation pathway**: nearest-neighbour up-sampling inside norm → act → up → 3×3×3 conv → norm → act blocks,
  concatenation with the context features, a 3×3×3 conv → norm → act, then a 1×1×1 conv halving the features.
- **segmentation layers** (Isensee's "deep supervision"): 1×1×1 convolutions to classes at 1/4 and 1/2
  resolution are up-sampled and summed into the full-resolution output. The network returns one tensor of
  logits; the intermediate layers are not separate outputs.

All convolutions are bias-free; instance norm has no affine parameters; leaky ReLU slope 0.01 (PyTorch's
defaults, which MedicalZoo uses). Input sizes must be multiples of 16 (four stride-2 convolutions).

The forward pass is written so that TorchScript compiles it (``torch.jit.script``; MONAI's ``ckpt_export``):
each level is a small module and loops run over module lists, never index them with a variable.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import ADN, Convolution, UpSample
from monai.networks.layers.factories import Dropout
from torch import nn

__all__ = ["UNet3D"]

LEAKY_RELU = ("leakyrelu", {"negative_slope": 0.01})
INSTANCE_NORM = ("instance", {"affine": False})


class _ContextModule(nn.Module):
    """Residual context module: ``second(dropout(first(x))) + x`` (``first`` and ``second`` may be one module)."""

    def __init__(self, first: nn.Module, second: nn.Module, dropout: nn.Module) -> None:
        super().__init__()
        self.first, self.second, self.dropout = first, second, dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.dropout(self.first(x))) + x


class _ContextLevel(nn.Module):
    """Levels 2–5 of the context pathway: strided convolution, context module, then norm → act (not at level 5)."""

    def __init__(self, down: nn.Module, context: _ContextModule, post: nn.Module) -> None:
        super().__init__()
        self.down, self.context, self.post = down, context, post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.context(self.down(x)))


class _LocalisationLevel(nn.Module):
    """One level of the localisation pathway: concatenate the skip, convolve, halve the features, go up."""

    def __init__(self, localise: nn.Module, reduce: nn.Module, up: nn.Module) -> None:
        super().__init__()
        self.localise, self.reduce, self.up = localise, reduce, up

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.localise(torch.cat([x, skip], dim=1))
        return features, self.up(self.reduce(features))


class UNet3D(nn.Module):
    """MedicalZooPytorch's 3D U-Net (Isensee-style residual context modules, summed segmentation layers).

    Args:
        spatial_dims: number of spatial dimensions (MedicalZoo's network is 3D).
        in_channels: input channels (2 for iSeg's T1 + T2).
        out_channels: number of classes (4 for iSeg: background, CSF, GM, WM).
        init_filters: features of the first level (MedicalZoo's ``base_n_filter``, 8); level ``k`` has
            ``init_filters * 2**(k-1)``.
        dropout: channel-dropout probability inside the context modules (MedicalZoo: 0.6).
        act: activation, as understood by MONAI (default leaky ReLU, slope 0.01).
        norm: normalisation, as understood by MONAI (default instance norm without affine parameters).
        share_context_weights: reuse one convolution for both convolutions of the context modules of
            levels 2–5, as MedicalZoo's code does (True), or give each its own (Isensee et al.).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 2,
        out_channels: int = 4,
        init_filters: int = 8,
        dropout: float = 0.6,
        act: str | tuple = LEAKY_RELU,
        norm: str | tuple = INSTANCE_NORM,
        share_context_weights: bool = True,
    ) -> None:
        super().__init__()
        if init_filters < 1:
            raise ValueError(f"init_filters must be at least 1, got {init_filters}.")
        self.spatial_dims = spatial_dims
        self.multiple = 16
        f = [int(init_filters) * 2**level for level in range(5)]
        drop = Dropout[Dropout.DROPOUT, spatial_dims](p=float(dropout))
        upsample = UpSample(
            spatial_dims, scale_factor=2, mode="nontrainable", pre_conv=None, interp_mode="nearest", align_corners=None
        )
        self.upsample = upsample

        def conv(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> Convolution:
            return Convolution(
                spatial_dims, c_in, c_out, strides=stride, kernel_size=kernel, bias=False, conv_only=True
            )

        def norm_act(channels: int) -> ADN:
            return ADN("NA", in_channels=channels, act=act, norm=norm, norm_dim=spatial_dims)

        def pre_activated(channels: int) -> nn.Sequential:  # norm → act → conv
            return nn.Sequential(norm_act(channels), conv(channels, channels))

        def conv_norm_act(c_in: int, c_out: int) -> Convolution:
            return Convolution(
                spatial_dims, c_in, c_out, kernel_size=3, act=act, norm=norm, bias=False, adn_ordering="NA"
            )

        def up_block(c_in: int, c_out: int) -> nn.Sequential:  # norm → act → up ×2 → conv → norm → act
            return nn.Sequential(norm_act(c_in), upsample, conv_norm_act(c_in, c_out))

        # context pathway. Level 1: conv, then a residual module without normalisation (act → conv, twice)
        self.conv_1 = conv(in_channels, f[0])
        activation = ADN("A", act=act)
        self.context_1 = _ContextModule(
            nn.Sequential(activation, conv(f[0], f[0])), nn.Sequential(activation, conv(f[0], f[0])), drop
        )
        self.skip_1 = ADN("A", act=act)
        self.norm_1 = norm_act(f[0])
        levels = []
        for level in range(1, 5):
            first = pre_activated(f[level])
            second = first if share_context_weights else pre_activated(f[level])
            post = norm_act(f[level]) if level < 4 else nn.Identity()
            levels.append(
                _ContextLevel(conv(f[level - 1], f[level], stride=2), _ContextModule(first, second, drop), post)
            )
        self.context = nn.ModuleList(levels)
        # localisation pathway: the bottleneck goes up, then three levels of (concat, conv, 1×1, up), then the last
        self.up_0 = nn.Sequential(up_block(f[4], f[3]), conv(f[3], f[3], kernel=1), norm_act(f[3]))
        self.localisation = nn.ModuleList(
            [
                _LocalisationLevel(
                    conv_norm_act(2 * f[level], 2 * f[level]),
                    conv(2 * f[level], f[level], kernel=1),
                    up_block(f[level], f[level - 1]),
                )
                for level in (3, 2, 1)
            ]
        )
        self.localise_1 = conv_norm_act(2 * f[0], 2 * f[0])
        # segmentation layers at 1/4, 1/2 and full resolution
        self.segment_4 = conv(2 * f[2], out_channels, kernel=1)
        self.segment_2 = conv(2 * f[1], out_channels, kernel=1)
        self.segment_1 = conv(2 * f[0], out_channels, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for size in x.shape[2:]:
            if size % self.multiple != 0:
                raise ValueError(
                    "UNet3D needs spatial sizes that are multiples of 16 (four stride-2 levels), got "
                    + str(list(x.shape[2:]))
                    + "; pad the input or use a sliding-window inferer with such a roi_size."
                )
        out = self.conv_1(x)
        out = self.context_1(out)
        skips = [self.skip_1(out)]
        out = self.norm_1(out)
        for level in self.context:  # levels 2 to 5; the outputs of 2 to 4 are the skips
            out = level(out)
            skips.append(out)
        out = self.up_0(out)
        segmentations: list[torch.Tensor] = []
        for step, level in enumerate(self.localisation):  # 1/8, 1/4, 1/2 resolution; the last two feed segmentations
            features, out = level(out, skips[3 - step])
            if step > 0:
                segmentations.append(features)
        out = self.localise_1(torch.cat([out, skips[0]], dim=1))
        summed = self.upsample(self.segment_4(segmentations[0])) + self.segment_2(segmentations[1])
        return self.segment_1(out) + self.upsample(summed)
