from .brainchop import load_pretrained, meshnet_from_brainchop, meshnet_kwargs, read_conv_weights
from .meshnet import MeshNet, receptive_field
from .unet import BaselineUNet

__all__ = [
    "BaselineUNet",
    "MeshNet",
    "load_pretrained",
    "meshnet_from_brainchop",
    "meshnet_kwargs",
    "read_conv_weights",
    "receptive_field",
]
