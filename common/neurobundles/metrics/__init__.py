"""Segmentation metrics computed from label maps directly: Dice from a confusion matrix, pixel scores as
segmentation-models-pytorch defines them (MTNeuro)."""

from .dice import confusion_matrix, dice_per_class

__all__ = ["confusion_matrix", "dice_per_class"]
