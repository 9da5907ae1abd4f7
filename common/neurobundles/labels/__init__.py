from .freesurfer import (
    CEREBRAL_CORTEX_IDS,
    GREY_MATTER_IDS,
    WHITE_MATTER_IDS,
    LutEntry,
    read_lut,
    tissue_map,
)

__all__ = ["CEREBRAL_CORTEX_IDS", "GREY_MATTER_IDS", "WHITE_MATTER_IDS", "LutEntry", "read_lut", "tissue_map"]
