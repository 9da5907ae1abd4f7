from .brain_crop import BrainCropInferer, brain_box
from .deepnat import DeepNATInferer, DenseCRF
from .full_volume import FullVolumeInferer
from .majority_vote import MajorityVoteInferer
from .patches import NonOverlappingPatchInferer

__all__ = [
    "BrainCropInferer",
    "DeepNATInferer",
    "DenseCRF",
    "FullVolumeInferer",
    "MajorityVoteInferer",
    "NonOverlappingPatchInferer",
    "brain_box",
]
