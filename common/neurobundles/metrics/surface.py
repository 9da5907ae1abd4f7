"""The iSeg-2017 challenge's metrics per tissue: Dice, modified Hausdorff distance and average surface distance.

Computed from class-index label maps, one binary mask per class at a time (no one-hot volumes), with MONAI's
surface-distance machinery: ``monai.metrics.utils.get_edge_surface_distance(pred == c, truth == c,
distance_metric="euclidean", spacing=spacing, symmetric=True)`` finds each mask's border voxels (the voxels an
erosion removes) and the Euclidean distance, in mm, from every border voxel of one mask to the nearest of the
other's. From the two directed distance sets d(P→T) and d(T→P):

- **dice** — 2|P∩T| / (|P|+|T|), from one confusion matrix (:func:`neurobundles.metrics.dice_per_class`);
- **mhd** — modified Hausdorff distance: max(q(d(P→T)), q(d(T→P))) with q the ``mhd_percentile`` (95 by
  default) percentile, linear interpolation; equal to MONAI ``compute_hausdorff_distance(pred_onehot,
  truth_onehot, include_background=True, percentile=95, directed=False, spacing=spacing)``;
- **hd** — the plain (100th percentile) Hausdorff distance, MONAI's function with ``percentile=None``;
- **asd** — average surface distance ½(mean d(P→T) + mean d(T→P)): the mean of MONAI
  ``compute_average_surface_distance(pred, truth, symmetric=False)`` and the same with the arguments swapped.
  MONAI's ``symmetric=True`` instead averages the pooled distances (weighting the mask with the longer border
  more); that value is returned as **assd**.

The iSeg-2017 papers name the metrics DICE, MHD and ASD; the organisers' evaluation code is not public here, so
both the 95th-percentile ("modified", robust to outliers) and the maximum Hausdorff distance are reported.
Distances are NaN for a class absent from both maps and infinite when it is absent from one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance

from .dice import dice_per_class

__all__ = ["ISEG_TISSUES", "iseg_metrics", "spacing_of", "surface_metrics"]

ISEG_TISSUES = {1: "CSF", 2: "GM", 3: "WM"}
"""Classes the challenge scores, by index."""

Labels = torch.Tensor | np.ndarray


def _label_map(labels: Labels, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(labels.detach().cpu() if isinstance(labels, torch.Tensor) else np.asarray(labels))
    tensor = tensor.as_subclass(torch.Tensor)
    while tensor.ndim > 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3:
        raise ValueError(
            f"{name}: expected a 3D class-index label map (optionally with leading axes of 1), got shape "
            f"{tuple(labels.shape)}; take the argmax of logits or one-hot maps first."
        )
    return torch.round(tensor).to(torch.int64)


def spacing_of(affine: torch.Tensor | np.ndarray) -> tuple[float, ...]:
    """Voxel size in mm along each axis of a 4×4 affine (the column norms)."""
    matrix = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    return tuple(float(s) for s in np.sqrt((matrix[:3, :3] ** 2).sum(axis=0)))


def surface_metrics(
    prediction: Labels,
    truth: Labels,
    classes: Sequence[int] = tuple(ISEG_TISSUES),
    spacing: Sequence[float] | float | None = None,
    mhd_percentile: float = 95.0,
) -> dict[int, dict[str, float]]:
    """``{class: {"dice", "mhd", "hd", "asd", "assd"}}`` for each of ``classes`` (see the module's description).

    Args:
        prediction: class-index label map, shape (X, Y, Z) with optional leading axes of 1.
        truth: reference label map on the same grid.
        classes: class indices to score (iSeg: 1 CSF, 2 GM, 3 WM).
        spacing: voxel size in mm (one value or one per axis); default 1 mm. See :func:`spacing_of`.
        mhd_percentile: percentile of the modified Hausdorff distance.
    """
    pred, true = _label_map(prediction, "prediction"), _label_map(truth, "truth")
    if pred.shape != true.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and truth {tuple(true.shape)} must share a grid.")
    if not 0 <= mhd_percentile <= 100:
        raise ValueError(f"mhd_percentile must be in [0, 100], got {mhd_percentile}.")
    dice = dice_per_class(pred, true, max(int(pred.max()), int(true.max()), *classes) + 1)
    results: dict[int, dict[str, float]] = {}
    for c in classes:
        p, t = pred == c, true == c
        entry = {"dice": float(dice[c])}
        if not p.any() and not t.any():
            results[c] = entry | dict.fromkeys(("mhd", "hd", "asd", "assd"), float("nan"))
            continue
        if not p.any() or not t.any():
            results[c] = entry | dict.fromkeys(("mhd", "hd", "asd", "assd"), float("inf"))
            continue
        _, (to_truth, to_pred), _ = get_edge_surface_distance(
            p, t, distance_metric="euclidean", spacing=spacing, symmetric=True, class_index=c
        )
        d_pt, d_tp = (d.detach().cpu().numpy().astype(np.float64) for d in (to_truth, to_pred))
        entry["mhd"] = float(max(np.percentile(d_pt, mhd_percentile), np.percentile(d_tp, mhd_percentile)))
        entry["hd"] = float(max(d_pt.max(), d_tp.max()))
        entry["asd"] = float((d_pt.mean() + d_tp.mean()) / 2)
        entry["assd"] = float(np.concatenate([d_pt, d_tp]).mean())
        results[c] = entry
    return results


def iseg_metrics(
    prediction: Labels,
    truth: Labels,
    spacing: Sequence[float] | float | None = None,
    names: Mapping[int, str] = ISEG_TISSUES,
    mhd_percentile: float = 95.0,
) -> dict[str, float]:
    """Flat ``{"dice_CSF": …, "mhd_CSF": …, "hd_CSF": …, "asd_CSF": …, "assd_CSF": …, …}`` plus means over tissues.

    One row of a per-subject CSV; ``mean_dice`` etc. average the tissues (NaN-aware).
    """
    per_class = surface_metrics(prediction, truth, tuple(names), spacing, mhd_percentile)
    row: dict[str, float] = {}
    for c, name in names.items():
        for metric, value in per_class[c].items():
            row[f"{metric}_{name}"] = value
    for metric in ("dice", "mhd", "hd", "asd", "assd"):
        values = np.array([per_class[c][metric] for c in names], dtype=np.float64)
        known = values[~np.isnan(values)]
        row[f"mean_{metric}"] = float(known.mean()) if known.size else float("nan")
    return row
