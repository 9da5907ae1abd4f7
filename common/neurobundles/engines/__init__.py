"""Ignite engines and handlers the bundles use: progress, cohort tables and Dice reports at inference; curves and
checkpoints in training."""

from .evaluation import CohortVolumes, DiceReport, VolumeProgress
from .training import EpochProgress, FallbackCheckpoint, TrainingCurves, handlers_for_rank

__all__ = [
    "CohortVolumes",
    "DiceReport",
    "EpochProgress",
    "FallbackCheckpoint",
    "TrainingCurves",
    "VolumeProgress",
    "handlers_for_rank",
]
