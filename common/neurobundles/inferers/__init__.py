from .brain_crop import BrainCropInferer, brain_box
from .full_volume import FullVolumeInferer

__all__ = ["BrainCropInferer", "FullVolumeInferer", "brain_box"]
