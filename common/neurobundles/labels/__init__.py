from .freesurfer import (
    CEREBRAL_CORTEX_IDS,
    DKT31_IDS,
    GREY_MATTER_IDS,
    WHITE_MATTER_IDS,
    LutEntry,
    dkt31_map,
    read_lut,
    tissue_map,
)
from .table import NON_BRAIN_IDS, LabelTable, write_lut
from .tissues import TissueLabelTable

__all__ = [
    "CEREBRAL_CORTEX_IDS",
    "DKT31_IDS",
    "GREY_MATTER_IDS",
    "NON_BRAIN_IDS",
    "WHITE_MATTER_IDS",
    "LabelTable",
    "LutEntry",
    "TissueLabelTable",
    "dkt31_map",
    "read_lut",
    "tissue_map",
    "write_lut",
]
