"""Ignite handlers shared by the bundles."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ignite.engine import Engine, Events

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
        batch = engine.state.batch
        items = batch if isinstance(batch, list) else [batch]
        sources = [str(item["image"].meta.get("filename_or_obj", "?")) for item in items if "image" in item]
        self.logger.info(
            "[%d/%d] %s (%.1f s)",
            engine.state.iteration,
            engine.state.epoch_length,
            ", ".join(sources),
            now - self._last,
        )
        self._last = now


class DiceReport:
    """Write per-case and mean Dice per class (``dice.csv``, ``dice.json``) after an evaluation run.

    Reads the per-image, per-class values MONAI's ``MeanDice`` handler keeps in
    ``engine.state.metric_details`` (computed without background).

    Args:
        output_dir: folder for the reports.
        label_names: class index → name (a bundle's ``channel_def``).
        metric: name of the ``MeanDice`` metric in the evaluator.
        id_key: batch key naming each case.
    """

    def __init__(self, output_dir: str, label_names: dict, metric: str = "val_mean_dice", id_key: str = "id") -> None:
        self.output_dir = output_dir
        self.names = [name for index, name in sorted((int(k), v) for k, v in label_names.items()) if index != 0]
        self.metric = metric
        self.id_key = id_key
        self.ids: list[str] = []
        self.logger = logging.getLogger("neurobundles.evaluation")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.ids.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect_ids)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _collect_ids(self, engine: Engine) -> None:
        batch = engine.state.batch
        items = batch if isinstance(batch, list) else [batch]
        self.ids.extend(str(item.get(self.id_key, len(self.ids))) for item in items)

    def _write(self, engine: Engine) -> None:
        from neurobundles.outputs import atomic_write_text

        details = engine.state.metric_details[self.metric]
        scores = [[float(v) for v in row] for row in details.reshape(len(self.ids), -1).cpu()]
        per_class = {name: sum(r[i] for r in scores) / len(scores) for i, name in enumerate(self.names)}
        summary = {
            "metric": "dice",
            "mean": sum(per_class.values()) / len(per_class),
            "per_class": per_class,
            "cases": {case: dict(zip(self.names, row)) for case, row in zip(self.ids, scores)},
        }
        out = Path(self.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "dice.json", json.dumps(summary, indent=2) + "\n")
        lines = ["id," + ",".join(self.names) + ",mean"]
        lines += [
            f"{case}," + ",".join(f"{v:.4f}" for v in row) + f",{sum(row) / len(row):.4f}"
            for case, row in zip(self.ids, scores)
        ]
        atomic_write_text(out / "dice.csv", "\n".join(lines) + "\n")
        self.logger.info(
            "Dice per class: %s; mean %.4f", ", ".join(f"{k} {v:.4f}" for k, v in per_class.items()), summary["mean"]
        )
