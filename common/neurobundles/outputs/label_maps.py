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

__all__ = ["SaveSegmentationd", "image_stem", "label_volumes", "save_label_map", "volumes_csv"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh", ".img", ".hdr", ".img.gz")


def image_stem(path: str | Path) -> str:
    """File name without its (possibly double) image extension: ``sub-01_T1w.nii.gz`` → ``sub-01_T1w``."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def label_volumes(labels: np.ndarray, affine: np.ndarray, names: Mapping[int, str]) -> list[dict]:
    """One row per named non-background label: id, name, voxel count and volume in mm³."""
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))
    counts = np.bincount(labels.reshape(-1).astype(np.int64), minlength=max(names) + 1)
    return [
        {
            "label": label,
            "name": name,
            "voxels": int(counts[label]),
            "volume_mm3": round(float(counts[label]) * voxel_mm3, 3),
        }
        for label, name in sorted(names.items())
        if label != 0
    ]


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
    the outputs, else the source file's stem.

    Args:
        keys: prediction key(s), one label channel each.
        output_dir: folder for the outputs (created; must be writable).
        label_names: label value → name (a bundle's ``channel_def``); sets the rows of the table.
        output_postfix: appended to the id.
        output_ext: ``.nii.gz`` (default), ``.nii`` or ``.mgz``.
        id_key: data key holding a unique name per input.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        label_names: Mapping[str | int, str],
        output_postfix: str = "seg",
        output_ext: str = ".nii.gz",
        id_key: str = "id",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.label_names = {int(k): str(v) for k, v in label_names.items()}
        self.output_postfix = output_postfix
        self.output_ext = output_ext if output_ext.startswith(".") else f".{output_ext}"
        self.id_key = id_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        ensure_writable_dir(self.output_dir)
        for key in self.key_iterator(d):
            prediction = d[key]
            source = prediction.meta["filename_or_obj"]
            ident = str(d.get(self.id_key) or image_stem(source))
            labels = np.asarray(prediction.detach().cpu())[0]
            reference = nib.load(str(source))
            path = save_label_map(
                labels, reference, self.output_dir / f"{ident}_{self.output_postfix}{self.output_ext}"
            )
            rows = label_volumes(labels, reference.affine, self.label_names)
            atomic_write_text(self.output_dir / f"{ident}_volumes.csv", volumes_csv(rows))
            logger.info("%s → %s", source, path)
        return d
