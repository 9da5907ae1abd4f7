from .distributed import ShardedCacheDataset
from .folders import image_datalist, is_image_file, is_output_file, unique_ids
from .freesurfer import check_pair, freesurfer_datalist
from .mindboggle import MINDBOGGLE_IMAGE, MINDBOGGLE_LABEL, mindboggle_datalist
from .prefetch import PrefetchDataLoader
from .splits import SPLITS, held_out, save_split, split_datalist

__all__ = [
    "MINDBOGGLE_IMAGE",
    "MINDBOGGLE_LABEL",
    "SPLITS",
    "PrefetchDataLoader",
    "ShardedCacheDataset",
    "check_pair",
    "freesurfer_datalist",
    "held_out",
    "image_datalist",
    "is_image_file",
    "is_output_file",
    "mindboggle_datalist",
    "save_split",
    "split_datalist",
    "unique_ids",
]
