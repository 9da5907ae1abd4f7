"""Segmentation metrics computed from label maps directly: Dice from a confusion matrix, pixel scores as
segmentation-models-pytorch defines them (MTNeuro), surface distances per class (iSeg-2017), whole-tumour scores
with BraTS's rules for empty masks."""

from .dice import class_dice, confusion_matrix, dice_per_class
from .surface import ISEG_TISSUES, iseg_metrics, spacing_of, surface_metrics
from .tumour import empty_distance, mean_metrics, whole_tumour_metrics

__all__ = [
    "ISEG_TISSUES",
    "class_dice",
    "confusion_matrix",
    "dice_per_class",
    "empty_distance",
    "iseg_metrics",
    "mean_metrics",
    "spacing_of",
    "surface_metrics",
    "whole_tumour_metrics",
]
