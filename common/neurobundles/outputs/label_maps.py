"""Write label maps in the input's own grid and header, with a per-label volume table beside them."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Hashable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from neurobundles.atomic import atomic_save, atomic_write_text, ensure_writable_dir
from neurobundles.filenames import image_stem
from neurobundles.labels import LabelTable

__all__ = [
    "PLAUSIBLE_BRAIN_CM3",
    "TOTAL_BRAIN",
    "SaveSegmentationd",
    "brain_volume",
    "label_volumes",
    "save_label_map",
    "volumes_csv",
]

logger = logging.getLogger(__name__)

TOTAL_BRAIN = "EstimatedTotalBrainVolume"
PLAUSIBLE_BRAIN_CM3 = (800.0, 2200.0)
"""Adult brain volumes outside this range mean the input is probably not a head T1 (or the model failed)."""


def label_volumes(labels: np.ndarray, affine: np.ndarray, names: Mapping[int, str]) -> list[dict]:
    """One row per named non-background label: id, name, voxel count and volume in mm³."""
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))
    flat = labels.reshape(-1)
    if flat.min(initial=0) >= 0 and flat.max(initial=0) < 32768:  # label ids: count, don't sort (2× faster at 256³)
        counts = np.bincount(flat.astype(_label_dtype(flat)))
        found = {int(value): int(counts[value]) for value in np.flatnonzero(counts)}
    else:
        values, counts = np.unique(flat.astype(np.int64), return_counts=True)
        found = dict(zip(values.tolist(), counts.tolist()))
    rows = []
    for label, name in sorted(names.items()):
        if label != 0:
            voxels = found.get(label, 0)
            rows.append({"label": label, "name": name, "voxels": voxels, "volume_mm3": round(voxels * voxel_mm3, 3)})
    return rows


def brain_volume(rows: list[dict], brain_values: set[int]) -> dict:
    """The ``EstimatedTotalBrainVolume`` row: sum over brain labels (no CSF or ventricles)."""
    voxels = sum(row["voxels"] for row in rows if row["label"] in brain_values)
    volume = sum(row["volume_mm3"] for row in rows if row["label"] in brain_values)
    return {"label": "", "name": TOTAL_BRAIN, "voxels": voxels, "volume_mm3": round(volume, 3)}


def volumes_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["label", "name", "voxels", "volume_mm3"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _label_dtype(labels: np.ndarray) -> type:
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
    data = labels.astype(_label_dtype(labels))
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


class SaveSegmentationd(MapTransform):
    """Write each prediction as ``<id>_<postfix><ext>`` plus ``<id>_volumes.csv`` in ``output_dir``.

    The prediction must already be back in the input's grid (after ``Invertd``); its source file is
    read from the tensor's ``filename_or_obj`` meta, and ``id_key`` in the data (if present) names
    the outputs, else the source file's stem. The volume table ends with an
    ``EstimatedTotalBrainVolume`` row; a total outside ``plausible_brain_cm3`` is logged as a warning
    (a CT, a non-brain image or a failed segmentation) and kept in ``data["warnings"]``.
    The rows are also left in ``data["volumes"]`` for cohort tables.

    Args:
        keys: prediction key(s), one label channel each.
        output_dir: folder for the outputs (created; must be writable).
        table: the bundle's :class:`~neurobundles.labels.LabelTable` (names, brain labels).
        output_postfix: appended to the id.
        output_ext: ``.nii.gz`` (default), ``.nii`` or ``.mgz``.
        id_key: data key holding a unique name per input.
        plausible_brain_cm3: (low, high) brain volume outside which the run warns.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        table: LabelTable,
        output_postfix: str = "seg",
        output_ext: str = ".nii.gz",
        id_key: str = "id",
        plausible_brain_cm3: tuple[float, float] = PLAUSIBLE_BRAIN_CM3,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.table = table
        self.names = table.names()
        self.brain_values = table.brain_values()
        self.output_postfix = output_postfix
        self.output_ext = output_ext if output_ext.startswith(".") else f".{output_ext}"
        self.id_key = id_key
        self.plausible_brain_cm3 = plausible_brain_cm3

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        ensure_writable_dir(self.output_dir)
        for key in self.key_iterator(d):
            prediction = d[key]
            source = prediction.meta["filename_or_obj"]
            ident = str(d.get(self.id_key) or image_stem(source))
            labels = np.asarray(prediction.detach().cpu())[0]
            reference = nib.load(str(source))
            target = self.output_dir / f"{ident}_{self.output_postfix}{self.output_ext}"
            path = save_label_map(labels, reference, target)
            rows = label_volumes(labels, reference.affine, self.names)
            total = brain_volume(rows, self.brain_values)
            atomic_write_text(self.output_dir / f"{ident}_volumes.csv", volumes_csv([*rows, total]))
            d["volumes"] = [*rows, total]
            d["warnings"] = self._check_brain_volume(source, total["volume_mm3"] / 1000.0)
            logger.info("%s → %s", source, path)
        return d

    def _check_brain_volume(self, source: str, cm3: float) -> list[str]:
        low, high = self.plausible_brain_cm3
        if low <= cm3 <= high:
            return []
        message = (
            f"{source}: estimated brain volume {cm3:.0f} cm³ is outside the plausible {low:.0f}–{high:.0f} cm³; "
            "check that the input is a T1-weighted head MRI and look at the QC picture"
        )
        logger.warning(message)
        return [message]
