"""Whole-tumour metrics of one case — Dice, 95 % Hausdorff distance, sensitivity, specificity — from MONAI's
``DiceMetric``, ``HausdorffDistanceMetric(percentile=95)`` and ``ConfusionMatrixMetric``, with BraTS's rules
for empty masks.

Empty masks (a case without tumour, or a prediction of none) make these metrics undefined; the BraTS
evaluation (CBICA's, written down for the 2021 challenge) decides Dice and HD95, and we do the same:

========================  ======  ===============  ===========  ===========
truth / prediction        Dice    HD95             sensitivity  specificity
========================  ======  ===============  ===========  ===========
both empty                1       0                NaN          computed
truth empty, prediction   0       grid diagonal    NaN          computed
prediction empty, truth   0       grid diagonal    0            computed
========================  ======  ===============  ===========  ===========

The grid diagonal is the volume's extent in mm, ``sqrt(Σ (size · spacing)²)``: 373.13 mm for BraTS's
240 × 240 × 155 grid of 1 mm, the value BraTS assigns. Sensitivity, TP / (TP + FN), has no denominator when the
truth is empty, so it is NaN (not a guess of 0 or 1), and :func:`mean_metrics` averages each metric over the
cases where it is defined and says over how many. Specificity, TN / (TN + FP), counts every voxel of the
volume, background included, as BraTS does; it is close to 1 for any plausible segmentation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import ConfusionMatrixMetric, DiceMetric, HausdorffDistanceMetric

__all__ = ["METRICS", "empty_distance", "mean_metrics", "whole_tumour_metrics"]

METRICS = ("dice", "hd95", "sensitivity", "specificity")
"""Names of the per-case metrics, in CSV column order."""


def _mask(volume: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """Non-zero voxels of a (H, W, D), (1, H, W, D) or (1, 1, H, W, D) volume, as a (1, 1, H, W, D) float mask."""
    tensor = torch.as_tensor(np.asarray(volume) if not isinstance(volume, torch.Tensor) else volume.detach())
    tensor = tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor
    while tensor.ndim > 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3:
        raise ValueError(f"{name} has shape {tuple(volume.shape)}; give one 3D mask (H, W, D), optionally (1, ...).")
    return (tensor != 0).float()[None, None].cpu()


def empty_distance(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The HD95 given when one mask is empty: the grid's diagonal in mm (373.13 for BraTS)."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def whole_tumour_metrics(
    prediction: torch.Tensor | np.ndarray,
    truth: torch.Tensor | np.ndarray,
    spacing: Sequence[float] | None = None,
) -> dict[str, float]:
    """``{"dice", "hd95", "sensitivity", "specificity"}`` of one case's whole-tumour masks.

    Args:
        prediction: the predicted mask; non-zero voxels are tumour (threshold probabilities first).
        truth: the reference; non-zero voxels are tumour, so a raw BraTS label map (1, 2, 4) works as it is.
        spacing: voxel size in mm for HD95; default the truth's (a MONAI ``MetaTensor``), else 1 mm.
    """
    if spacing is None:
        pixdim = getattr(truth, "pixdim", None)
        spacing = [float(s) for s in pixdim[:3]] if pixdim is not None else [1.0, 1.0, 1.0]
    spacing = [float(s) for s in spacing]  # MONAI refuses a sequence mixing ints and floats
    y_pred, y = _mask(prediction, "prediction"), _mask(truth, "truth")
    if y_pred.shape != y.shape:
        raise ValueError(f"prediction {tuple(y_pred.shape[2:])} and truth {tuple(y.shape[2:])} differ in shape.")
    dice = float(DiceMetric(include_background=True, reduction="none", ignore_empty=False)(y_pred, y).item())
    matrix = ConfusionMatrixMetric(
        include_background=True, metric_name=("sensitivity", "specificity"), compute_sample=True, reduction="none"
    )
    matrix(y_pred, y)
    sensitivity, specificity = (float(m.item()) for m in matrix.aggregate())
    pred_empty, truth_empty = not bool(y_pred.any()), not bool(y.any())
    if pred_empty and truth_empty:
        hd95 = 0.0
    elif pred_empty or truth_empty:
        hd95 = empty_distance(y.shape[2:], spacing)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
            metric = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
            hd95 = float(metric(y_pred, y, spacing=spacing).item())
    if truth_empty:
        sensitivity = math.nan
    return {"dice": dice, "hd95": hd95, "sensitivity": sensitivity, "specificity": specificity}


def mean_metrics(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over the cases where it is defined (NaN skipped), and ``<metric>_cases``: how many."""
    out: dict[str, float] = {}
    for name in METRICS:
        values = np.asarray([row[name] for row in rows if name in row], dtype=np.float64)
        defined = values[~np.isnan(values)]
        out[name] = float(defined.mean()) if defined.size else math.nan
        out[f"{name}_cases"] = int(defined.size)
    return out
