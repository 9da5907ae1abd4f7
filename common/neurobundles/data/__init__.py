from .distributed import ShardedCacheDataset
from .folders import image_datalist, is_image_file, is_output_file, unique_ids
from .freesurfer import check_pair, freesurfer_datalist
from .iseg import FindT2d, iseg_datalist, iseg_inputs, iseg_split, iseg_subject
from .mindboggle import MINDBOGGLE_IMAGE, MINDBOGGLE_LABEL, mindboggle_datalist
from .prefetch import PrefetchDataLoader
from .splits import SPLITS, held_out, save_split, split_datalist
from .subvolumes import SubVolumeDataset

__all__ = [
    "MINDBOGGLE_IMAGE",
    "MINDBOGGLE_LABEL",
    "SPLITS",
    "FindT2d",
    "PrefetchDataLoader",
    "ShardedCacheDataset",
    "SubVolumeDataset",
    "check_pair",
    "freesurfer_datalist",
    "held_out",
    "image_datalist",
    "is_image_file",
    "is_output_file",
    "iseg_datalist",
    "iseg_inputs",
    "iseg_split",
    "iseg_subject",
    "mindboggle_datalist",
    "save_split",
    "split_datalist",
    "unique_ids",
]
