from . import miccai2012, mtneuro
from .brats import (
    BRATS_LABELS,
    BRATS_MODALITIES,
    SEED_MODALITIES,
    BratsSequencesd,
    brats_datalist,
    brats_inputs,
    brats_split,
)
from .cutouts import LoadCutoutd, cutout_datalist
from .distributed import ShardedCacheDataset
from .folders import image_datalist, is_image_file, is_output_file, unique_ids
from .freesurfer import check_pair, freesurfer_datalist
from .iseg import FindT2d, iseg_datalist, iseg_inputs, iseg_split, iseg_subject, require_training_data
from .masks import mask_datalist
from .miccai2012 import StructureClassesd, deepnat_datalist, deepnat_inputs
from .mindboggle import MINDBOGGLE_IMAGE, MINDBOGGLE_LABEL, mindboggle_datalist
from .mtneuro import MTNeuroDataset, mtneuro_augmentation
from .prefetch import PrefetchDataLoader
from .slices import SliceDataset, VolumeBlockSampler, min_across_ranks
from .splits import SPLITS, held_out, save_split, split_datalist
from .subvolumes import SubVolumeDataset

__all__ = [
    "BRATS_LABELS",
    "BRATS_MODALITIES",
    "MINDBOGGLE_IMAGE",
    "MINDBOGGLE_LABEL",
    "SEED_MODALITIES",
    "SPLITS",
    "BratsSequencesd",
    "FindT2d",
    "LoadCutoutd",
    "MTNeuroDataset",
    "PrefetchDataLoader",
    "ShardedCacheDataset",
    "SliceDataset",
    "StructureClassesd",
    "SubVolumeDataset",
    "VolumeBlockSampler",
    "brats_datalist",
    "brats_inputs",
    "brats_split",
    "check_pair",
    "cutout_datalist",
    "deepnat_datalist",
    "deepnat_inputs",
    "freesurfer_datalist",
    "held_out",
    "image_datalist",
    "is_image_file",
    "is_output_file",
    "iseg_datalist",
    "iseg_inputs",
    "iseg_split",
    "iseg_subject",
    "mask_datalist",
    "miccai2012",
    "min_across_ranks",
    "mindboggle_datalist",
    "mtneuro",
    "mtneuro_augmentation",
    "require_training_data",
    "save_split",
    "split_datalist",
    "unique_ids",
]
