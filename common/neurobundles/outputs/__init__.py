from neurobundles.atomic import atomic_path, atomic_save, atomic_write_text, ensure_writable_dir

from .label_maps import SaveSegmentationd, image_stem, label_volumes, save_label_map, volumes_csv

__all__ = [
    "SaveSegmentationd",
    "atomic_path",
    "atomic_save",
    "atomic_write_text",
    "ensure_writable_dir",
    "image_stem",
    "label_volumes",
    "save_label_map",
    "volumes_csv",
]
