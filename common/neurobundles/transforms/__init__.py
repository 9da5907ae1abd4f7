from .conform import Conform, Conformd, conform_affine
from .hemispheres import ClassesToLabels, ClassesToLabelsd, left_hemisphere_mask
from .intensity import ConformIntensity, ConformIntensityd, robust_range
from .io import LoadVolume, LoadVolumed, check_volume
from .labels import ArgMax, ArgMaxd, MapLabels, MapLabelsd

__all__ = [
    "ArgMax",
    "ArgMaxd",
    "ClassesToLabels",
    "ClassesToLabelsd",
    "Conform",
    "ConformIntensity",
    "ConformIntensityd",
    "Conformd",
    "LoadVolume",
    "LoadVolumed",
    "MapLabels",
    "MapLabelsd",
    "check_volume",
    "conform_affine",
    "left_hemisphere_mask",
    "robust_range",
]
