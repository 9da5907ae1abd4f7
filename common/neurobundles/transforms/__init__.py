from .brain_mask import MASK_SOURCES, BrainMaskd, solid_mask
from .conform import Conform, Conformd, conform_affine
from .coordinates import CoordinateMapsd
from .fraction_crop import RandForegroundFractionCrop, RandForegroundFractionCropd
from .grids import MatchGrid, MatchGridd
from .hemispheres import ClassesToLabels, ClassesToLabelsd, left_hemisphere_mask
from .intensity import ConformIntensity, ConformIntensityd, MaskPercentileScaled, robust_range
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
from .patch_sampling import RandDeepNATPatchesd
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
    "MASK_SOURCES",
    "ArgMax",
    "ArgMaxd",
    "BrainMaskd",
    "ClassesToISegLabels",
    "ClassesToISegLabelsd",
    "ClassesToLabels",
    "ClassesToLabelsd",
    "Conform",
    "ConformIntensity",
    "ConformIntensityd",
    "Conformd",
    "CoordinateMapsd",
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
    "MaskPercentileScaled",
    "MatchGrid",
    "MatchGridd",
    "NonZeroMaskd",
    "RandDeepNATPatchesd",
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
    "solid_mask",
]
