from .folders import image_datalist, is_image_file, unique_ids
from .freesurfer import check_pair, freesurfer_datalist

__all__ = ["check_pair", "freesurfer_datalist", "image_datalist", "is_image_file", "unique_ids"]
