from neurobundles.atomic import atomic_path, atomic_save, atomic_write_text, ensure_writable_dir

from .label_maps import (
    PLAUSIBLE_BRAIN_CM3,
    TOTAL_BRAIN,
    SaveSegmentationd,
    brain_volume,
    label_volumes,
    save_label_map,
    volumes_csv,
)
from .qc import SaveQCPreviewd, qc_figure

__all__ = [
    "PLAUSIBLE_BRAIN_CM3",
    "TOTAL_BRAIN",
    "SaveQCPreviewd",
    "SaveSegmentationd",
    "atomic_path",
    "atomic_save",
    "atomic_write_text",
    "brain_volume",
    "ensure_writable_dir",
    "label_volumes",
    "qc_figure",
    "save_label_map",
    "volumes_csv",
]
