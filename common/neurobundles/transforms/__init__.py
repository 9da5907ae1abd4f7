from .conform import Conform, Conformd, conform_affine
from .fraction_crop import RandForegroundFractionCrop, RandForegroundFractionCropd
from .grids import MatchGrid, MatchGridd
from .hemispheres import ClassesToLabels, ClassesToLabelsd, left_hemisphere_mask
from .intensity import ConformIntensity, ConformIntensityd, robust_range
from .io import LoadVolume, LoadVolumed, check_volume
from .iseg import (
    ClassesToISegLabels,
    ClassesToISegLabelsd,
    ISegIntensityd,
    ISegLabelsToClasses,
    ISegLabelsToClassesd,
    NonZeroMaskd,
    iseg_intensity,
)
from .labels import ArgMax, ArgMaxd, KeepLargestComponent, KeepLargestComponentd, MapLabels, MapLabelsd
from .sampling import RandGaussianCrop, RandGaussianCropd
from .slices import (
    InputIntensity,
    InputIntensityd,
    SliceMajor,
    SliceMajord,
    SliceMinMax,
    SliceMinMaxd,
    VoxelSpacingd,
    WholeTumour,
    WholeTumourd,
)

__all__ = [
    "ArgMax",
    "ArgMaxd",
    "ClassesToISegLabels",
    "ClassesToISegLabelsd",
    "ClassesToLabels",
    "ClassesToLabelsd",
    "Conform",
    "ConformIntensity",
    "ConformIntensityd",
    "Conformd",
    "ISegIntensityd",
    "ISegLabelsToClasses",
    "ISegLabelsToClassesd",
    "InputIntensity",
    "InputIntensityd",
    "KeepLargestComponent",
    "KeepLargestComponentd",
    "LoadVolume",
    "LoadVolumed",
    "MapLabels",
    "MapLabelsd",
    "MatchGrid",
    "MatchGridd",
    "NonZeroMaskd",
    "RandForegroundFractionCrop",
    "RandForegroundFractionCropd",
    "RandGaussianCrop",
    "RandGaussianCropd",
    "SliceMajor",
    "SliceMajord",
    "SliceMinMax",
    "SliceMinMaxd",
    "VoxelSpacingd",
    "WholeTumour",
    "WholeTumourd",
    "check_volume",
    "conform_affine",
    "iseg_intensity",
    "left_hemisphere_mask",
    "robust_range",
]
