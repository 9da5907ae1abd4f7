"""Volumes of lesion masks (a tumour, a lesion class) in mm³, with the brain volume of the skull-stripped input.

A lesion model's label map says nothing about the brain around it, so :class:`LesionVolumesd` measures the brain
on the input instead: BraTS images are skull-stripped with a background of exactly 0, so their non-zero voxels are
the brain (CSF included). That total (``EstimatedTotalBrainVolume``, the cohort table's first column) doubles as a
check: far outside the plausible adult range, the input is probably not skull-stripped — the model never saw a
skull — and the subject carries a warning. So does a mask with no lesion at all.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from neurobundles.labels import LabelTable
from neurobundles.plausibility import add_warning

from .volumes import PLAUSIBLE_BRAIN_CM3, TOTAL_BRAIN, label_volumes

__all__ = ["LesionVolumesd", "nonzero_volume"]


def nonzero_volume(image: torch.Tensor) -> dict:
    """The ``EstimatedTotalBrainVolume`` row of a skull-stripped (C, X, Y, Z) image: voxels non-zero in any channel."""
    values = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
    voxels = int((values != 0).any(dim=0).sum())
    affine = np.asarray(image.affine) if hasattr(image, "affine") else np.eye(4)
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    return {"label": "", "name": TOTAL_BRAIN, "voxels": voxels, "volume_mm3": round(voxels * voxel_mm3, 3)}


class LesionVolumesd(MapTransform):
    """Volume rows of each lesion label map (in its own grid, after ``Invertd``) into ``data["volumes"]``.

    One row per non-background label of ``table`` (voxels, mm³), then the brain row from ``brain_key``'s non-zero
    voxels (none when ``brain_key`` is None: inputs that are not skull-stripped).

    Args:
        keys: label map key(s).
        table: the bundle's :class:`~neurobundles.labels.LabelTable` (label names).
        brain_key: a skull-stripped intensity image in the input's own grid (e.g. one sequence kept for the QC
            picture), or None.
        plausible_brain_cm3: (low, high) brain volume outside which the subject gets a warning.
        warn_empty: warn when no lesion is found.
    """

    def __init__(
        self,
        keys: KeysCollection,
        table: LabelTable,
        brain_key: str | None = None,
        plausible_brain_cm3: tuple[float, float] = PLAUSIBLE_BRAIN_CM3,
        warn_empty: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.names = table.names()
        self.brain_key = brain_key
        self.plausible_brain_cm3 = plausible_brain_cm3
        self.warn_empty = warn_empty

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            labels = d[key]
            source = str(labels.meta.get("filename_or_obj", "")) if hasattr(labels, "meta") else ""
            values = np.asarray(labels.detach().cpu())[0]
            rows = label_volumes(values.astype(np.int64), np.asarray(labels.affine), self.names)
            if self.brain_key is not None and self.brain_key in d:
                total = nonzero_volume(d[self.brain_key])
                rows.append(total)
                low, high = self.plausible_brain_cm3
                cm3 = total["volume_mm3"] / 1000.0
                if not low <= cm3 <= high:
                    add_warning(
                        d,
                        f"{source}: the input's non-zero voxels measure {cm3:.0f} cm³, outside the plausible brain "
                        f"volume of {low:.0f}–{high:.0f} cm³; the model expects skull-stripped images (background 0, "
                        "as in BraTS): skull-strip the input and look at the QC picture",
                    )
            d["volumes"] = rows
            if self.warn_empty and not any(row["voxels"] for row in rows if row["label"] != ""):
                add_warning(d, f"{source}: no lesion found (the mask is empty); look at the QC picture")
        return d
