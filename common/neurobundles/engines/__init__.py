"""Ignite engines and handlers the bundles use: cohort runs, progress and Dice reports at inference; curves and
checkpoints in training."""

from .cohort import FAILURE_KEY, Cohort, CohortDataset, CohortEvaluator, CohortFailedError, init_distributed
from .evaluation import DiceReport, VolumeProgress
from .patches import PatchCoordinatesBatch, centre_head
from .previews import SlicePreview
from .reports import ClassScalars, MetricsReport
from .resume import KeyMetricSaver, ResumeTraining, interval_checkpoints
from .training import EpochProgress, FallbackCheckpoint, TrainingCurves, handlers_for_rank

__all__ = [
    "FAILURE_KEY",
    "ClassScalars",
    "Cohort",
    "CohortDataset",
    "CohortEvaluator",
    "CohortFailedError",
    "DiceReport",
    "EpochProgress",
    "FallbackCheckpoint",
    "KeyMetricSaver",
    "MetricsReport",
    "PatchCoordinatesBatch",
    "ResumeTraining",
    "SlicePreview",
    "TrainingCurves",
    "VolumeProgress",
    "centre_head",
    "handlers_for_rank",
    "init_distributed",
    "interval_checkpoints",
]
