from .conform import Conform, Conformd, conform_affine
from .hemispheres import ClassesToLabels, ClassesToLabelsd, left_hemisphere_mask
from .intensity import ConformIntensity, ConformIntensityd, robust_range
from .io import LoadVolume, LoadVolumed, check_volume
from .labels import ArgMax, ArgMaxd, KeepLargestComponent, KeepLargestComponentd, MapLabels, MapLabelsd
from .sampling import RandGaussianCrop, RandGaussianCropd

__all__ = [
    "ArgMax",
    "ArgMaxd",
    "ClassesToLabels",
    "ClassesToLabelsd",
    "Conform",
    "ConformIntensity",
    "ConformIntensityd",
    "Conformd",
    "KeepLargestComponent",
    "KeepLargestComponentd",
    "LoadVolume",
    "LoadVolumed",
    "MapLabels",
    "MapLabelsd",
    "RandGaussianCrop",
    "RandGaussianCropd",
    "check_volume",
    "conform_affine",
    "left_hemisphere_mask",
    "robust_range",
]
