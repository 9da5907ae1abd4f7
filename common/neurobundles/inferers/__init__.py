from .full_volume import FullVolumeInferer

__all__ = ["FullVolumeInferer"]
