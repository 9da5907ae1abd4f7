"""Ignite handlers for metrics beyond Dice: a per-case table of any metric function, and per-class curves.

:class:`MetricsReport` scores each evaluated case with a function of (prediction, reference, voxel spacing)
returning named numbers — for iSeg-2017 :func:`neurobundles.metrics.iseg_metrics` (Dice, modified
Hausdorff distance, average surface distance per tissue) — and writes ``<name>.csv`` (a row per case and a
mean row) and ``<name>.json``, atomically, and puts the means into the engine's metrics so that MONAI's
``TensorBoardStatsHandler`` placed after it logs them. :class:`ClassScalars` splits a per-class metric (MONAI
``MeanDice(reduction="mean_batch")``) into one scalar per class, so TensorBoard and the training log draw one
curve per class.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from neurobundles.atomic import atomic_write_text

from .cohort import FAILURE_KEY

__all__ = ["ClassScalars", "MetricsReport", "voxel_spacing"]


def voxel_spacing(image: Any) -> tuple[float, ...] | None:
    """Voxel size in mm along each axis of a MetaTensor (the column norms of its affine), else None."""
    affine = getattr(image, "affine", None)
    if affine is None:
        return None
    matrix = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    if matrix.ndim == 3:
        matrix = matrix[0]
    return tuple(float(s) for s in np.sqrt((matrix[:3, :3] ** 2).sum(axis=0)))


def _text(value: float) -> str:
    return "" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.4f}")


def _json(value: float) -> float | str | None:
    return None if math.isnan(value) else ("inf" if math.isinf(value) else float(value))


class MetricsReport:
    """Score each case with ``metric_fn`` and write ``<name>.csv`` and ``<name>.json`` in ``output_dir``.

    ``metric_fn(prediction, reference, spacing=...)`` gets the class-index maps of one case and the voxel size
    (from the prediction's affine) and returns ``{column: value}``. Means over cases skip NaN (a class absent
    from both maps) and are infinite when a case is (a class missing from one map); they are added to
    ``engine.state.metrics`` under ``prefix + column``.

    Args:
        output_dir: folder for the reports.
        metric_fn: the per-case metric function.
        name: file name stem of the reports.
        prefix: prefix of the engine metrics (and TensorBoard tags).
        pred_key, label_key: keys of the class-index maps in the evaluator's output.
        id_key: key naming each case.
        summary: columns to log in one line at the end (default: every column).
    """

    def __init__(
        self,
        output_dir: str | Path,
        metric_fn: Callable[..., Mapping[str, float]],
        name: str = "metrics",
        prefix: str = "",
        pred_key: str = "pred",
        label_key: str = "label",
        id_key: str = "id",
        summary: Sequence[str] | None = None,
    ) -> None:
        self.output_dir, self.metric_fn, self.name, self.prefix = Path(output_dir), metric_fn, name, prefix
        self.pred_key, self.label_key, self.id_key = pred_key, label_key, id_key
        self.summary = None if summary is None else list(summary)
        self.cases: dict[str, dict[str, float]] = {}
        self.logger = logging.getLogger("neurobundles.evaluation")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.cases.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._score)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _score(self, engine: Engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        batches = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
        for item, batch in zip(outputs, batches):
            if FAILURE_KEY in item:
                continue  # recorded in failures.csv by the cohort
            prediction = item[self.pred_key]
            row = self.metric_fn(prediction, item[self.label_key], spacing=voxel_spacing(prediction))
            self.cases[str(batch.get(self.id_key, len(self.cases)))] = {k: float(v) for k, v in row.items()}

    def means(self) -> dict[str, float]:
        columns = list(next(iter(self.cases.values()))) if self.cases else []
        table = np.array([[row[c] for c in columns] for row in self.cases.values()], dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column NaN in every case stays NaN
            return {c: float(np.nanmean(table[:, i])) for i, c in enumerate(columns)}

    def _write(self, engine: Engine) -> None:
        if not self.cases:
            return
        means = self.means()
        for column, value in means.items():
            engine.state.metrics[self.prefix + column] = value
        self.output_dir.mkdir(parents=True, exist_ok=True)
        report = {
            "mean": {c: _json(v) for c, v in means.items()},
            "cases": {case: {c: _json(v) for c, v in row.items()} for case, row in self.cases.items()},
        }
        atomic_write_text(self.output_dir / f"{self.name}.json", json.dumps(report, indent=2) + "\n")
        lines = ["id," + ",".join(means)]
        lines += [f"{case}," + ",".join(_text(v) for v in row.values()) for case, row in self.cases.items()]
        lines.append("mean," + ",".join(_text(v) for v in means.values()))
        atomic_write_text(self.output_dir / f"{self.name}.csv", "\n".join(lines) + "\n")
        shown = [c for c in (self.summary or means) if c in means]
        self.logger.info(
            "%s over %d case(s): %s", self.name, len(self.cases), ", ".join(f"{c} {means[c]:.4g}" for c in shown)
        )


class ClassScalars:
    """Split the per-class metric ``metric_name`` of an engine into scalars ``<metric_name>_<class name>``.

    Attach it after the metric (MONAI attaches metrics when the engine is built) and before the
    ``TensorBoardStatsHandler``, which logs scalars only.

    Args:
        metric_name: a metric whose value holds one number per class.
        names: the class names, in the metric's order (e.g. without background).
    """

    def __init__(self, metric_name: str, names: Sequence[str]) -> None:
        self.metric_name, self.names = metric_name, list(names)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._split)

    def _split(self, engine: Engine) -> None:
        value = engine.state.metrics.get(self.metric_name)
        if value is None:
            return
        values = torch.as_tensor(value).reshape(-1).tolist()
        if len(values) != len(self.names):
            raise ValueError(
                f"{self.metric_name} has {len(values)} values but {len(self.names)} class names were given "
                f"({', '.join(self.names)})."
            )
        for name, number in zip(self.names, values):
            engine.state.metrics[f"{self.metric_name}_{name}"] = float(number)
