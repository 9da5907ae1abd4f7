"""Volumes per label in mm³, the estimated total brain volume, and the plausibility check on it."""

from __future__ import annotations

import csv
import io
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from neurobundles.labels import LabelTable
from neurobundles.plausibility import add_warning

from .label_maps import smallest_label_dtype

__all__ = [
    "PLAUSIBLE_BRAIN_CM3",
    "TOTAL_BRAIN",
    "LabelVolumesd",
    "brain_volume",
    "label_volumes",
    "read_volumes_csv",
    "volumes_csv",
]

TOTAL_BRAIN = "EstimatedTotalBrainVolume"
PLAUSIBLE_BRAIN_CM3 = (800.0, 2200.0)
"""Adult brain volumes outside this range mean the input is probably not a head T1 (or the model failed)."""


def label_volumes(labels: np.ndarray, affine: np.ndarray, names: Mapping[int, str]) -> list[dict]:
    """One row per named non-background label: id, name, voxel count and volume in mm³."""
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))
    flat = labels.reshape(-1)
    if flat.min(initial=0) >= 0 and flat.max(initial=0) < 32768:  # label ids: count, don't sort (2× faster at 256³)
        counts = np.bincount(flat.astype(smallest_label_dtype(flat)))
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


class LabelVolumesd(MapTransform):
    """Volume rows of each label map (in its own grid, after ``Invertd``) into ``data["volumes"]``.

    The rows end with an ``EstimatedTotalBrainVolume`` row; an empty segmentation or a total outside
    ``plausible_brain_cm3`` (a CT, a non-brain image, a failed segmentation) is recorded as a warning.

    Args:
        keys: label map key(s).
        table: the bundle's :class:`~neurobundles.labels.LabelTable` (names, brain labels).
        plausible_brain_cm3: (low, high) brain volume outside which the subject gets a warning.
    """

    def __init__(
        self,
        keys: KeysCollection,
        table: LabelTable,
        plausible_brain_cm3: tuple[float, float] = PLAUSIBLE_BRAIN_CM3,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.names = table.names()
        self.brain_values = table.brain_values()
        self.plausible_brain_cm3 = plausible_brain_cm3

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            labels = d[key]
            source = str(labels.meta.get("filename_or_obj", "")) if hasattr(labels, "meta") else ""
            values = np.asarray(labels.detach().cpu())[0]
            rows = label_volumes(values, np.asarray(labels.affine), self.names)
            total = brain_volume(rows, self.brain_values)
            d["volumes"] = [*rows, total]
            if not any(row["voxels"] for row in rows):
                add_warning(d, f"{source}: the segmentation is empty (no structure found); look at the QC picture")
                continue
            low, high = self.plausible_brain_cm3
            cm3 = total["volume_mm3"] / 1000.0
            if not low <= cm3 <= high:
                add_warning(
                    d,
                    f"{source}: estimated brain volume {cm3:.0f} cm³ is outside the plausible {low:.0f}–{high:.0f} "
                    "cm³; check that the input is a T1-weighted head MRI and look at the QC picture",
                )
        return d


def read_volumes_csv(path: str | Path) -> list[dict]:
    """Rows of a ``<id>_volumes.csv`` as written by :func:`volumes_csv`."""
    with Path(path).open() as stream:
        return list(csv.DictReader(stream))
