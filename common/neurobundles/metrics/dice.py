"""Segmentation metrics computed from label maps directly, without one-hot volumes.

One-hot tensors for 104 classes at 256³ take 7 GB each; a joint histogram of (prediction, truth)
gives every class's Dice in one pass over the voxels.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["confusion_matrix", "dice_per_class"]


Labels = torch.Tensor | np.ndarray


def _as_int_array(labels: Labels) -> np.ndarray:
    values = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    return np.rint(values).astype(np.int64).reshape(-1)


def confusion_matrix(prediction: Labels, truth: Labels, num_classes: int) -> np.ndarray:
    """``[truth, prediction]`` voxel counts for class indices in ``0..num_classes-1``."""
    pred, true = _as_int_array(prediction), _as_int_array(truth)
    if pred.shape != true.shape:
        raise ValueError(f"prediction has {pred.size} voxels, truth {true.size}; they must share a grid.")
    for name, values in (("prediction", pred), ("truth", true)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} holds class indices outside 0..{num_classes - 1}.")
    joint = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return joint.reshape(num_classes, num_classes)


def dice_per_class(prediction: Labels, truth: Labels, num_classes: int) -> np.ndarray:
    """Dice of every class (background included at index 0); NaN where a class is in neither map."""
    matrix = confusion_matrix(prediction, truth, num_classes).astype(np.float64)
    overlap = np.diag(matrix)
    sizes = matrix.sum(axis=0) + matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes > 0, 2 * overlap / sizes, np.nan)
