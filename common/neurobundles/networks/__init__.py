from .brainchop import load_pretrained, meshnet_from_brainchop, meshnet_kwargs, read_conv_weights
from .meshnet import MeshNet, receptive_field
from .unet import BaselineUNet
from .unet3d import UNet3D

__all__ = [
    "BaselineUNet",
    "MeshNet",
    "UNet3D",
    "load_pretrained",
    "meshnet_from_brainchop",
    "meshnet_kwargs",
    "read_conv_weights",
    "receptive_field",
]
