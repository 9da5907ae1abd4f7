"""Everything a run writes: label maps in the input's grid, volume tables, QC pictures, the cohort's tables."""

from .analyze import SaveAnalyzeLabelsd
from .cohort import FAILURES, VOLUMES, cohort_table, failures_table, read_failures
from .cutouts import FRACTIONS, SaveCutoutSegmentationd, write_fractions
from .label_maps import LABEL_MAP_EXTENSIONS, check_output_ext, save_label_map, smallest_label_dtype
from .lesions import LesionVolumesd, nonzero_volume
from .qc import QC_KEY, RenderQCd, qc_figure, visible_colors, write_contact_sheets
from .subject import SUMMARY_SUFFIX, SaveSegmentationd, clean_stale_temporaries, is_complete, read_summaries, safe_id
from .volumes import (
    PLAUSIBLE_BRAIN_CM3,
    TOTAL_BRAIN,
    LabelVolumesd,
    brain_volume,
    label_volumes,
    read_volumes_csv,
    volumes_csv,
)

__all__ = [
    "FAILURES",
    "FRACTIONS",
    "LABEL_MAP_EXTENSIONS",
    "PLAUSIBLE_BRAIN_CM3",
    "QC_KEY",
    "SUMMARY_SUFFIX",
    "TOTAL_BRAIN",
    "VOLUMES",
    "LabelVolumesd",
    "LesionVolumesd",
    "RenderQCd",
    "SaveAnalyzeLabelsd",
    "SaveCutoutSegmentationd",
    "SaveSegmentationd",
    "brain_volume",
    "check_output_ext",
    "clean_stale_temporaries",
    "cohort_table",
    "failures_table",
    "is_complete",
    "label_volumes",
    "nonzero_volume",
    "qc_figure",
    "read_failures",
    "read_summaries",
    "read_volumes_csv",
    "safe_id",
    "save_label_map",
    "smallest_label_dtype",
    "visible_colors",
    "volumes_csv",
    "write_contact_sheets",
    "write_fractions",
]
