from .brain_crop import BrainCropInferer, brain_box
from .full_volume import FullVolumeInferer
from .majority_vote import MajorityVoteInferer

__all__ = [
    "BrainCropInferer",
    "FullVolumeInferer",
    "MajorityVoteInferer",
    "brain_box",
]
