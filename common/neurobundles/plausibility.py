"""Is an input plausible for models trained on 1 mm T1 MRI? Checks, and the warnings a subject carries.

A subject's warnings travel in its data dictionary under ``"warnings"`` as one `` | ``-separated string (so
MONAI's collation and decollation keep it intact) and end up in the log, its summary and the cohort table.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, MutableMapping

import numpy as np

__all__ = [
    "MAX_VOXEL_MM",
    "WARNINGS_KEY",
    "WARN_VOXEL_MM",
    "add_warning",
    "label_map_message",
    "voxel_sizes",
    "warnings_of",
]

logger = logging.getLogger("neurobundles.plausibility")

WARNINGS_KEY = "warnings"

WARN_VOXEL_MM = 1.5
"""Voxel edges longer than this get a warning: the models were trained on 1 mm data."""

MAX_VOXEL_MM = 5.0
"""Voxel edges longer than this are refused unless the limit is raised (a 10 mm head gives a brain of 2183 cm³
where the same head at 1 mm gives 1253 cm³); clinical scans with 5 mm slices still run, with a warning."""


def warnings_of(data: Mapping[Hashable, object]) -> list[str]:
    """The warnings recorded so far for a subject."""
    text = data.get(WARNINGS_KEY) or ""
    if isinstance(text, (list, tuple)):  # a collated batch of one
        text = " | ".join(str(t) for t in text if t)
    return [part for part in str(text).split(" | ") if part]


def add_warning(data: MutableMapping[Hashable, object], message: str) -> None:
    """Record ``message`` for the subject and log it."""
    logger.warning(message)
    data[WARNINGS_KEY] = " | ".join([*warnings_of(data), message])


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths in mm from a voxel-to-world affine."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def label_map_message(values: np.ndarray, source: str) -> str | None:
    """A warning when ``values`` look like a label map (few distinct whole numbers, sparse over their range).

    A T1 stored as integers fills its range densely (t1_crop: ~250 values in 0–255); FreeSurfer's ``aseg``
    has ~45 values spread over 0–255, ``aparc+aseg`` ~110 over 0–2035, a mask 2.
    """
    sample = values.reshape(-1)[:: max(1, values.size // 2_000_000)]
    if not np.array_equal(sample, np.round(sample)):
        return None
    low, high = float(sample.min()), float(sample.max())
    if high - low > 1_000_000:
        return None
    distinct = np.count_nonzero(np.bincount((sample - low).astype(np.int64)))
    if distinct <= 16 or (distinct <= 400 and distinct / (high - low + 1) < 0.5):
        return (
            f"{source}: looks like a label map, not an MRI ({distinct} distinct whole-number values spread over "
            f"{low:g}–{high:g}); segment the T1 image instead"
        )
    return None
