from .brainchop import load_pretrained, meshnet_from_brainchop, meshnet_kwargs, read_conv_weights
from .deepnat import DeepNAT, DeepNATCascade, keep_trained_stages
from .meshnet import MeshNet, receptive_field
from .mtneuro_unet import MTNeuroUNet
from .segnet import SEED_CHANNELS, SEED_CONVS, SegNet, encoder_parameters, freeze_encoder, min_input_size
from .smp import build_network
from .unet import BaselineUNet
from .unet3d import UNet3D

__all__ = [
    "SEED_CHANNELS",
    "SEED_CONVS",
    "BaselineUNet",
    "DeepNAT",
    "DeepNATCascade",
    "MTNeuroUNet",
    "MeshNet",
    "SegNet",
    "UNet3D",
    "build_network",
    "encoder_parameters",
    "freeze_encoder",
    "keep_trained_stages",
    "load_pretrained",
    "meshnet_from_brainchop",
    "meshnet_kwargs",
    "min_input_size",
    "read_conv_weights",
    "receptive_field",
]
