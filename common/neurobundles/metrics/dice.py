"""Segmentation metrics computed from label maps directly, without one-hot volumes.

One-hot tensors for 104 classes at 256³ take 7 GB each; a joint histogram of (prediction, truth)
gives every class's Dice in one pass over the voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["class_dice", "confusion_matrix", "dice_per_class"]


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


def class_dice(
    prediction: Labels, truth: Labels, names: Sequence[str], spacing: Sequence[float] | None = None
) -> dict[str, float]:
    """One report row: ``dice_<name>`` for classes 1.. (``names[0]`` is the background) and ``mean_dice`` over
    the classes present in either map. ``spacing`` is accepted for :class:`~neurobundles.engines.MetricsReport`
    and unused (Dice does not depend on it)."""
    dice = dice_per_class(prediction, truth, len(names))[1:]
    row = {f"dice_{name}": float(value) for name, value in zip(names[1:], dice)}
    known = dice[~np.isnan(dice)]
    row["mean_dice"] = float(known.mean()) if known.size else float("nan")
    return row
