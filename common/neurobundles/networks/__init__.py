from .brainchop import load_pretrained, meshnet_from_brainchop, meshnet_kwargs, read_conv_weights
from .meshnet import MeshNet, receptive_field

__all__ = [
    "MeshNet",
    "load_pretrained",
    "meshnet_from_brainchop",
    "meshnet_kwargs",
    "read_conv_weights",
    "receptive_field",
]
