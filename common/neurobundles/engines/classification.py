"""Engines and handlers for image-level classifiers: accuracy and confusion reports, and cohort runs over tiles.

:class:`ClassificationReport` collects the predictions of an evaluation (one image per item, or a batch of them)
and writes, atomically: ``accuracy.json`` (accuracy, balanced accuracy, recall and precision per class, counts),
``confusion_matrix.csv`` and ``confusion_matrix.png`` (rows true, columns predicted) and ``predictions.csv`` (one
row per image: its id and the ``extra_keys`` the items carry, the true and predicted class, the class
probabilities). The accuracies also go into the engine's metrics, for TensorBoard and the training log.

:class:`ClassificationCohort` is the segmentation :class:`~neurobundles.engines.Cohort` for inputs classified tile
by tile (``neurobundles.outputs.SaveTileClassesd`` writes each input's table and summary): the same sharding,
resuming, failure isolation and ``failures.csv``, with ``regions.csv`` (tiles per class for every input) as the
cohort table instead of a volume table, no header checks of medical image formats and no QC contact sheets.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from neurobundles.atomic import atomic_write_text
from neurobundles.metrics import confusion_matrix
from neurobundles.outputs import read_summaries
from neurobundles.outputs.classification import class_counts_table, confusion_matrix_csv, save_confusion_matrix_png

from .cohort import FAILURE_KEY, Cohort

__all__ = ["CLASS_COUNTS", "ClassificationCohort", "ClassificationReport", "classification_scores"]

logger = logging.getLogger("neurobundles.evaluation")

CLASS_COUNTS = "regions.csv"


def classification_scores(matrix: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy (mean recall over the classes present), recall and precision per class."""
    counts = np.asarray(matrix, dtype=np.float64)
    truth, predicted, hits = counts.sum(axis=1), counts.sum(axis=0), np.diag(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(truth > 0, hits / truth, np.nan)
        precision = np.where(predicted > 0, hits / predicted, np.nan)
    present = truth > 0
    return {
        "accuracy": float(hits.sum() / counts.sum()) if counts.sum() else float("nan"),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "recall": {n: (None if np.isnan(v) else float(v)) for n, v in zip(class_names, recall)},
        "precision": {n: (None if np.isnan(v) else float(v)) for n, v in zip(class_names, precision)},
        "images": int(counts.sum()),
        "per_class": {n: int(t) for n, t in zip(class_names, truth)},
    }


def _per_image(value: Any, count: int) -> bool:
    return isinstance(value, (list, tuple, torch.Tensor, np.ndarray)) and len(value) == count


def _images(output: Any, batch: Any) -> list[dict[str, Any]]:
    """One dictionary per image of an evaluator iteration, whether its output is batched or decollated."""
    if isinstance(output, Mapping):  # decollate=False: one dictionary of batched values
        count = len(output["pred"])
        merged = {**(batch if isinstance(batch, Mapping) else {}), **output}
        return [{k: (v[i] if _per_image(v, count) else v) for k, v in merged.items()} for i in range(count)]
    items = output if isinstance(output, list) else [output]
    batches = batch if isinstance(batch, list) else [batch if isinstance(batch, Mapping) else {}] * len(items)
    return [{**source, **item} for item, source in zip(items, batches) if FAILURE_KEY not in item]


def _value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class ClassificationReport:
    """Write the accuracy, the confusion matrix and every prediction of an evaluation (see the module docstring).

    Args:
        output_dir: folder for the reports.
        class_names: class names in index order (or ``{index: name}``).
        pred_key: key of the logits or probabilities ``[C]`` (per image) in the evaluator's output.
        label_key: key of the true class index.
        id_key: key naming each image.
        extra_keys: item keys copied into ``predictions.csv`` when present.
        prefix: prefix of the accuracies put into ``engine.state.metrics``.
        title: shown above the confusion matrix picture.
    """

    def __init__(
        self,
        output_dir: str | Path,
        class_names: Sequence[str] | Mapping[Any, str],
        pred_key: str = "pred",
        label_key: str = "label",
        id_key: str = "id",
        extra_keys: Sequence[str] = ("cube_set", "cube_region", "z", "y", "x"),
        prefix: str = "",
        title: str = "",
    ) -> None:
        if isinstance(class_names, Mapping):
            class_names = [str(name) for _, name in sorted((int(k), v) for k, v in class_names.items())]
        self.output_dir, self.class_names = Path(output_dir), [str(n) for n in class_names]
        self.pred_key, self.label_key, self.id_key = pred_key, label_key, id_key
        self.extra_keys, self.prefix, self.title = list(extra_keys), prefix, title
        self.records: list[dict[str, Any]] = []
        self.scores: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.records.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        for image in _images(engine.state.output, engine.state.batch):
            scores = torch.as_tensor(image[self.pred_key]).detach().float().reshape(-1).cpu()
            is_distribution = bool(torch.all(scores >= 0)) and abs(float(scores.sum()) - 1) < 1e-4
            probabilities = scores if is_distribution else scores.softmax(0)
            record = {"id": _value(image.get(self.id_key, len(self.records)))}
            record.update({key: _value(image.get(key)) for key in self.extra_keys})
            record["label"] = int(torch.as_tensor(image[self.label_key]).reshape(-1)[0])
            record["predicted"] = int(probabilities.argmax())
            record["probabilities"] = probabilities.tolist()
            self.records.append(record)

    def confusion(self) -> np.ndarray:
        truth = [r["label"] for r in self.records]
        predicted = [r["predicted"] for r in self.records]
        return confusion_matrix(np.asarray(predicted), np.asarray(truth), len(self.class_names))

    def _write(self, engine: Engine) -> None:
        if not self.records:
            return
        matrix = self.confusion()
        self.scores = classification_scores(matrix, self.class_names)
        engine.state.metrics[f"{self.prefix}accuracy"] = self.scores["accuracy"]
        engine.state.metrics[f"{self.prefix}balanced_accuracy"] = self.scores["balanced_accuracy"]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        report = {**self.scores, "classes": self.class_names, "confusion_matrix": matrix.tolist()}
        atomic_write_text(self.output_dir / "accuracy.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(self.output_dir / "confusion_matrix.csv", confusion_matrix_csv(matrix, self.class_names))
        save_confusion_matrix_png(self.output_dir / "confusion_matrix.png", matrix, self.class_names, self.title)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        extras = [key for key in self.extra_keys if any(r.get(key) is not None for r in self.records)]
        writer.writerow(["id", *extras, "label", "predicted", *(f"p_{n}" for n in self.class_names)])
        for r in self.records:
            writer.writerow([r["id"], *(r.get(k, "") for k in extras), self.class_names[r["label"]],
                             self.class_names[r["predicted"]], *(f"{p:.6f}" for p in r["probabilities"])])  # fmt: skip
        atomic_write_text(self.output_dir / "predictions.csv", buffer.getvalue())
        logger.info(
            "%saccuracy %.4f, balanced accuracy %.4f over %d images (%s)",
            f"{self.title}: " if self.title else "",
            self.scores["accuracy"],
            self.scores["balanced_accuracy"],
            self.scores["images"],
            self.output_dir,
        )


class ClassificationCohort(Cohort):
    """A :class:`~neurobundles.engines.Cohort` whose inputs are classified tile by tile (see the module docstring).

    Args:
        datalist: ``[{"image": path, "id": name}, ...]``.
        output_dir: the output folder.
        class_names: class names in index order (or ``{index: name}``), for ``regions.csv``.
        overwrite: classify every input again, even those whose outputs are complete.
        rank, world_size: this process's shard (default: from ``torch.distributed`` when initialised).
    """

    def __init__(
        self,
        datalist: Sequence[Mapping[str, Any]],
        output_dir: str | Path,
        class_names: Sequence[str] | Mapping[Any, str],
        overwrite: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(
            datalist,
            output_dir,
            overwrite=overwrite,
            check_inputs=False,  # the loader checks cutout files itself; failures are recorded per input
            max_voxel_mm=None,
            contact_sheets=False,
            rank=rank,
            world_size=world_size,
        )
        if isinstance(class_names, Mapping):
            class_names = [str(name) for _, name in sorted((int(k), v) for k, v in class_names.items())]
        self.class_names = [str(n) for n in class_names]

    def _write_volumes(self) -> None:
        """The cohort table of a classification run: tiles per class of every complete input."""
        self._last_table = time.monotonic()
        summaries = [s for s in read_summaries(self.output_dir) if "counts" in s]
        if summaries:
            atomic_write_text(self.output_dir / CLASS_COUNTS, class_counts_table(summaries, self.class_names))
