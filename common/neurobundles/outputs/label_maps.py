"""Write label maps in the input's own grid and header, in NIfTI or FreeSurfer's format."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from neurobundles.atomic import atomic_save
from neurobundles.errors import reported

__all__ = ["LABEL_MAP_EXTENSIONS", "check_output_ext", "save_label_map", "smallest_label_dtype"]

LABEL_MAP_EXTENSIONS = (".nii.gz", ".nii", ".mgz", ".mgh")
"""File formats label maps are written in."""


@reported
def check_output_ext(ext: str) -> str:
    """``ext`` with its leading dot, or a ``ValueError`` naming the formats there are (before any work)."""
    normalised = ext if ext.startswith(".") else f".{ext}"
    if normalised.lower() not in LABEL_MAP_EXTENSIONS:
        raise ValueError(
            f"output extension {ext!r} is not a label-map format; use one of {', '.join(LABEL_MAP_EXTENSIONS)}."
        )
    return normalised.lower()


def smallest_label_dtype(labels: np.ndarray) -> type:
    """The smallest integer type that holds the (non-negative) label ids of ``labels``."""
    return np.uint8 if labels.max(initial=0) < 256 else np.int16 if labels.max() < 32768 else np.int32


def save_label_map(
    labels: np.ndarray, reference: str | Path | nib.spatialimages.SpatialImage, target: str | Path
) -> Path:
    """Save ``labels`` (in ``reference``'s voxel grid) atomically with ``reference``'s geometry.

    NIfTI output copies the reference NIfTI header (orientation codes, units, descrip) and marks the
    image as a label map (intent ``NIFTI_INTENT_LABEL``); ``.mgz``/``.mgh`` output writes FreeSurfer's format.
    """
    source = reference if isinstance(reference, nib.spatialimages.SpatialImage) else nib.load(str(reference))
    if tuple(labels.shape) != tuple(source.shape[:3]):
        raise ValueError(f"label map shape {labels.shape} differs from {reference} shape {source.shape[:3]}.")
    target = Path(target)
    data = labels.astype(smallest_label_dtype(labels))
    if target.name.endswith((".mgz", ".mgh")):
        image = nib.MGHImage(data.astype(np.int32) if data.dtype == np.int16 else data, source.affine)
    else:
        header = source.header.copy() if isinstance(source, nib.Nifti1Image) else None
        image = nib.Nifti1Image(data, source.affine, header)
        image.header.set_data_dtype(data.dtype)
        image.header.set_slope_inter(1.0, 0.0)
        image.header.set_intent("label")
        image.header["cal_min"], image.header["cal_max"] = 0, int(data.max(initial=0))
        image.header["descrip"] = b"neurobundles label map"
        if header is None:
            image.set_qform(source.affine, code=1)
            image.set_sform(source.affine, code=1)
    atomic_save(target, lambda tmp: nib.save(image, str(tmp)))
    return target
