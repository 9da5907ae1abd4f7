from .folders import image_datalist, is_image_file, unique_ids
from .freesurfer import check_pair, freesurfer_datalist
from .prefetch import PrefetchDataLoader

__all__ = ["PrefetchDataLoader", "check_pair", "freesurfer_datalist", "image_datalist", "is_image_file", "unique_ids"]
