"""Tell left from right: fit the mid-sagittal plane of a brain mask and split labels across it.

Models with merged hemispheres (``Hippocampus`` rather than ``Left-/Right-Hippocampus``) need this to
write FreeSurfer ids. The plane is fitted to the centres of all lines of brain voxels along the
grid's left–right axis (weighted least squares, x = a + b·y + c·z), so it follows a head that is
shifted or tilted. Measured on fsaverage's aparc+aseg: 99.98 % of left/right voxels on the correct
side as acquired, 98 % with the head turned 10° and 95.5 % at 15° (the centres of slanted chords
drift from the symmetry plane); principal-axis and iterated fits were tried and did worse on the
aligned head, where real scans are.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils.type_conversion import convert_to_dst_type

from neurobundles.labels import LabelTable

__all__ = ["ClassesToLabels", "ClassesToLabelsd", "left_hemisphere_mask"]


def left_hemisphere_mask(brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Boolean volume, True in the subject's left half, for a 3D ``brain`` mask on an axis-aligned grid."""
    axis = int(np.argmax(np.abs(np.asarray(affine)[0, :3])))  # voxel axis along world x (RAS: + is right)
    toward_right = np.sign(np.asarray(affine)[0, axis])
    mask = np.moveaxis(brain.astype(bool), axis, 0)
    counts = mask.sum(axis=0, dtype=np.float64)
    if counts.sum() == 0:
        raise ValueError("cannot find the mid-sagittal plane of an empty brain mask.")
    positions = np.arange(mask.shape[0], dtype=np.float64)
    centres = np.tensordot(positions, mask, axes=(0, 0)) / np.maximum(counts, 1)
    v, w = np.nonzero(counts)
    weights = np.sqrt(counts[v, w])
    design = np.stack([np.ones_like(v), v, w], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design * weights[:, None], centres[v, w] * weights, rcond=None)
    plane = coef[0] + coef[1] * np.arange(mask.shape[1])[:, None] + coef[2] * np.arange(mask.shape[2])[None, :]
    left = (positions[:, None, None] - plane[None]) * toward_right < 0
    return np.moveaxis(left, 0, axis)


class ClassesToLabels(Transform):
    """Turn class indices into the label values of a :class:`~neurobundles.labels.LabelTable`.

    Classes written as a left/right pair are split with :func:`left_hemisphere_mask` of the
    non-background voxels; use it on an axis-aligned grid (the conformed one) before inverting. An empty
    prediction (an under-trained model, a scan without a head) gives an empty label map.
    """

    def __init__(self, table: LabelTable) -> None:
        self.table = table
        # float32 holds every FreeSurfer id exactly; looking up straight into it from int16 indices keeps
        # the 256³ temporaries small, whose first-touch page faults otherwise cost more than the lookup
        self.lookup = np.array([values[0] for values in table.class_values], dtype=np.float32)
        self.right = {index: values[1] for index, values in enumerate(table.class_values) if len(values) == 2}

    def __call__(self, classes: torch.Tensor) -> torch.Tensor:
        values = classes.detach().cpu().numpy() if isinstance(classes, torch.Tensor) else np.asarray(classes)
        if values.size and not (values.min() > -0.5 and values.max() < len(self.lookup) - 0.5):  # NaN fails too
            raise ValueError(f"class index outside 0..{len(self.lookup) - 1} for table {self.table.lut_path}.")
        indices = np.rint(values).astype(np.int16 if len(self.lookup) <= np.iinfo(np.int16).max else np.int64)
        out = self.lookup[indices]
        if self.right and bool((indices > 0).any()):  # an empty prediction has no hemispheres to split
            affine = classes.affine.numpy() if isinstance(classes, MetaTensor) else np.eye(4)
            right_side = ~left_hemisphere_mask(indices[0] > 0, affine)[None]
            for index, right_value in self.right.items():
                out[(indices == index) & right_side] = right_value
        return convert_to_dst_type(out, classes)[0]


class ClassesToLabelsd(MapTransform):
    """Dictionary version of :class:`ClassesToLabels`."""

    def __init__(self, keys: KeysCollection, table: LabelTable, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ClassesToLabels(table)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d
