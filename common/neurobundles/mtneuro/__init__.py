"""MTNeuro science pieces: Task 1 region labels, ROI settings and data, Task 3 semantic features and linear readouts.

``readout`` (scikit-learn) is imported on use: ``neurobundles.mtneuro.readout``.
"""

from .features import FEATURE_TITLES, FEATURES, feature_matrix, semantic_features
from .regions import (
    DEFAULT_TASK1_CONFIG,
    REGIONS,
    ROI_LABEL_GROUPS,
    CutoutBox,
    Task1Config,
    Tile,
    TileRegion,
    TileRegiond,
    load_task1_config,
    quadrants,
    roi_mode,
    tile_region,
    tile_regions,
)
from .task1 import (
    Task3Data,
    box_cutouts,
    label_report,
    prefetch_task1,
    resolve_config,
    task1_datalist,
    task1_images,
    task3_data,
)
from .training import fit_linear_probe, warmup_cosine

__all__ = [
    "DEFAULT_TASK1_CONFIG",
    "FEATURES",
    "FEATURE_TITLES",
    "REGIONS",
    "ROI_LABEL_GROUPS",
    "CutoutBox",
    "Task1Config",
    "Task3Data",
    "Tile",
    "TileRegion",
    "TileRegiond",
    "box_cutouts",
    "feature_matrix",
    "fit_linear_probe",
    "label_report",
    "load_task1_config",
    "prefetch_task1",
    "quadrants",
    "resolve_config",
    "roi_mode",
    "semantic_features",
    "task1_datalist",
    "task1_images",
    "task3_data",
    "tile_region",
    "tile_regions",
    "warmup_cosine",
]
