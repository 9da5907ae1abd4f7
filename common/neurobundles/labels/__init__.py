from .freesurfer import (
    CEREBRAL_CORTEX_IDS,
    GREY_MATTER_IDS,
    WHITE_MATTER_IDS,
    LutEntry,
    read_lut,
    tissue_map,
)
from .table import NON_BRAIN_IDS, LabelTable, write_lut

__all__ = [
    "CEREBRAL_CORTEX_IDS",
    "GREY_MATTER_IDS",
    "NON_BRAIN_IDS",
    "WHITE_MATTER_IDS",
    "LabelTable",
    "LutEntry",
    "read_lut",
    "tissue_map",
    "write_lut",
]
