"""One constructor for the MTNeuro Task 2 baselines: the package's U-Net, or a segmentation-models-pytorch model.

``build_network("mtneuro_unet", ...)`` is :class:`~neurobundles.networks.mtneuro_unet.MTNeuroUNet` (2D or 3D, no
extra dependency). The other names are the 2D architectures of segmentation-models-pytorch (smp) that MTNeuro
compared: ``unet``, ``unetplusplus``, ``manet``, ``linknet``, ``fpn``, ``pspnet``, ``pan``, ``deeplabv3plus``
(and ``deeplabv3``, ``upernet``). smp is imported only when one of them is asked for: it needs torchvision,
which this package's main environment leaves out, so install it where you train them
(``pip install segmentation-models-pytorch==0.6.0``, which brings torchvision and timm).

Encoders: any smp encoder name; MTNeuro's Table 2 used ``efficientnet-b7`` with ImageNet weights, its released
configs ``resnet18``. ``encoder_weights=None`` (the default) starts from random weights and needs no network;
``encoder_weights="imagenet"`` downloads the encoder's ImageNet weights on first use (from the Hugging Face hub or
the encoder's own URL, into ``$TORCH_HOME``/``$HF_HOME``), and smp adapts the first convolution to one input
channel by summing its RGB kernels. smp models take inputs whose sides are multiples of 32 (256 × 256 slices are).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from .mtneuro_unet import MTNeuroUNet

__all__ = ["ARCHITECTURES", "SMP_ARCHITECTURES", "build_network"]

SMP_ARCHITECTURES = {
    "unet": "Unet",
    "unetplusplus": "UnetPlusPlus",
    "manet": "MAnet",
    "linknet": "Linknet",
    "fpn": "FPN",
    "pspnet": "PSPNet",
    "pan": "PAN",
    "deeplabv3": "DeepLabV3",
    "deeplabv3plus": "DeepLabV3Plus",
    "upernet": "UPerNet",
}
"""Lower-case name → segmentation-models-pytorch class (MTNeuro compared the first eight)."""

ARCHITECTURES = ("mtneuro_unet", *SMP_ARCHITECTURES)

SMP_INSTALL = "pip install segmentation-models-pytorch==0.6.0"


def _smp() -> Any:
    try:
        import segmentation_models_pytorch
    except ImportError as error:
        raise ImportError(
            f"architecture needs segmentation-models-pytorch, which is not installed ({error}). Install it with "
            f"`{SMP_INSTALL}` (it brings torchvision and timm; keep it out of an environment that must not have "
            "torchvision), or use architecture 'mtneuro_unet'."
        ) from error
    return segmentation_models_pytorch


def build_network(
    architecture: str = "mtneuro_unet",
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 3,
    channels: Sequence[int] = (32, 64, 128, 256),
    encoder_name: str = "resnet18",
    encoder_weights: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A Task 2 network by name (see the module docstring).

    Args:
        architecture: ``"mtneuro_unet"`` or an smp architecture (:data:`SMP_ARCHITECTURES`), case-insensitive.
        spatial_dims: 2 or 3; the smp architectures are 2D only.
        in_channels: input channels.
        out_channels: classes.
        channels: features per level of ``mtneuro_unet`` (ignored by smp models).
        encoder_name: smp encoder (ignored by ``mtneuro_unet``).
        encoder_weights: smp encoder weights: ``None`` (random, offline) or ``"imagenet"`` (downloaded).
        kwargs: passed to the chosen class (``act``, ``norm``, ``dropout`` of ``mtneuro_unet``; e.g.
            ``decoder_channels`` of an smp model).
    """
    name = str(architecture).lower()
    if name == "mtneuro_unet":
        return MTNeuroUNet(spatial_dims, in_channels, out_channels, channels=channels, **kwargs)
    if name not in SMP_ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}.")
    if spatial_dims != 2:
        raise ValueError(
            f"{architecture!r} is a 2D segmentation-models-pytorch model; for spatial_dims {spatial_dims} use "
            "'mtneuro_unet'."
        )
    smp = _smp()
    return smp.create_model(
        SMP_ARCHITECTURES[name],
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        in_channels=in_channels,
        classes=out_channels,
        **kwargs,
    )
