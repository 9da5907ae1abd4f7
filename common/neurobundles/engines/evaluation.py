"""Ignite handlers of inference and evaluation runs: a progress line per volume, Dice reports."""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
from ignite.engine import Engine, Events

from neurobundles.atomic import atomic_write_text
from neurobundles.metrics import dice_per_class

from .cohort import FAILURE_KEY

__all__ = ["DiceReport", "VolumeProgress"]


class VolumeProgress:
    """Log one line per volume: position, source file and seconds since the previous volume.

    Args:
        name: logger name (bundles configure ``neurobundles`` loggers in ``logging.conf``).
    """

    def __init__(self, name: str = "neurobundles.progress") -> None:
        self.logger = logging.getLogger(name)
        self._last = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)

    def _started(self, engine: Engine) -> None:
        self._last = time.perf_counter()
        self.logger.info("segmenting %s volume(s)", engine.state.epoch_length)

    def _completed(self, engine: Engine) -> None:
        now = time.perf_counter()
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        failed = [item for item in outputs if isinstance(item, dict) and FAILURE_KEY in item]
        batch = engine.state.batch
        items = batch if isinstance(batch, list) else [batch]
        sources = [_source(item) for item in items if isinstance(item, dict) and "image" in item]
        self.logger.info(
            "[%d/%d] %s (%.1f s)%s",
            engine.state.iteration,
            engine.state.epoch_length,
            ", ".join(sources),
            now - self._last,
            " FAILED" if failed else "",
        )
        self._last = now


def _source(item: dict) -> str:
    image = item["image"]
    if hasattr(image, "meta"):
        return str(image.meta.get("filename_or_obj", "?"))
    return ", ".join(map(str, image)) if isinstance(image, (list, tuple)) else str(image)


class DiceReport:
    """Dice per case and class from class-index predictions and labels; ``dice.csv`` and ``dice.json``.

    Computed with :func:`neurobundles.metrics.dice_per_class` (no one-hot volumes, so 104 classes at
    256³ fit in memory). A class absent from both maps of a case has no Dice and is left out of
    that case's mean; ``engine.state.metrics["mean_dice"]`` holds the mean over cases and classes.

    Args:
        output_dir: folder for the reports.
        label_names: class index → name (a bundle's ``channel_def``); class 0 is background and not scored.
        pred_key, label_key: keys of the class-index maps in the evaluator's output.
        id_key: key naming each case.
    """

    def __init__(
        self, output_dir: str, label_names: dict, pred_key: str = "pred", label_key: str = "label", id_key: str = "id"
    ) -> None:
        self.output_dir = Path(output_dir)
        self.names = [name for _, name in sorted((int(k), v) for k, v in label_names.items())]
        self.pred_key, self.label_key, self.id_key = pred_key, label_key, id_key
        self.cases: dict[str, list[float]] = {}
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
            scores = dice_per_class(item[self.pred_key], item[self.label_key], len(self.names))
            self.cases[str(batch.get(self.id_key, len(self.cases)))] = scores[1:].tolist()

    def _write(self, engine: Engine) -> None:
        table = np.array(list(self.cases.values()), dtype=np.float64).reshape(len(self.cases), -1)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # classes absent from every case stay NaN
            per_class = np.nanmean(table, axis=0)
            per_case = np.nanmean(table, axis=1)
        names = self.names[1:]
        mean = float(np.nanmean(per_class))
        engine.state.metrics["mean_dice"] = mean
        summary = {
            "metric": "dice",
            "mean": mean,
            "per_class": {n: _finite(v) for n, v in zip(names, per_class)},
            "cases": {case: {n: _finite(v) for n, v in zip(names, row)} for case, row in zip(self.cases, table)},
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.output_dir / "dice.json", json.dumps(summary, indent=2) + "\n")
        lines = ["id," + ",".join(names) + ",mean"]
        lines += [
            f"{case}," + ",".join("" if np.isnan(v) else f"{v:.4f}" for v in row) + f",{mean_case:.4f}"
            for case, row, mean_case in zip(self.cases, table, per_case)
        ]
        atomic_write_text(self.output_dir / "dice.csv", "\n".join(lines) + "\n")
        shown = ", ".join(f"{n} {v:.3f}" for n, v in zip(names, per_class) if not np.isnan(v))
        self.logger.info("Dice per class: %s; mean %.4f", shown if len(names) <= 20 else f"{len(names)} classes", mean)


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
