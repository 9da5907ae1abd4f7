"""Ignite handlers for the bundles' ``train.json``: a progress line and curves per epoch, and the checkpoint
MONAI Label expects when it trains without validation data.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, LrScheduleHandler, ValidationHandler
from torch import nn

from neurobundles.atomic import atomic_path, atomic_save, atomic_write_text

__all__ = ["EpochProgress", "FallbackCheckpoint", "TrainingCurves", "handlers_for_rank"]

_EVERY_RANK = (CheckpointLoader, LrScheduleHandler, ValidationHandler)


def _loss(output: Any) -> float:
    """The batch loss from a ``SupervisedTrainer`` output (one dict, or the decollated list of dicts)."""
    first = output[0] if isinstance(output, (list, tuple)) else output
    return float(first["loss"])


class _EpochHistory:
    """Mean loss, validation metric, last learning rate and seconds of every epoch of the trainer it is attached to."""

    def __init__(
        self, evaluator: Engine | None = None, metric_name: str = "val_mean_dice", optimizer: Any = None
    ) -> None:
        self.evaluator, self.metric_name, self.optimizer = evaluator, metric_name, optimizer
        self.rows: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._start = 0.0
        self._lr: float | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: self._losses.append(_loss(e.state.output)))
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, _: Engine) -> None:
        self.rows.clear()

    def _epoch_started(self, _: Engine) -> None:
        self._losses.clear()
        self._start = time.perf_counter()

    def _iteration_started(self, _: Engine) -> None:
        """The learning rate the step uses (schedulers step after each iteration, so read it before)."""
        if self.optimizer is not None:
            self._lr = float(self.optimizer.param_groups[0]["lr"])

    def _metric(self, engine: Engine) -> float | None:
        """The evaluator's metric if it ran for this epoch (it is skipped between intervals or without data)."""
        if self.evaluator is None or self.evaluator.state.epoch != engine.state.epoch:
            return None
        value = self.evaluator.state.metrics.get(self.metric_name)
        return None if value is None else float(value)

    def _epoch_completed(self, engine: Engine) -> None:
        self.rows.append(
            {
                "epoch": engine.state.epoch,
                "loss": sum(self._losses) / max(len(self._losses), 1),
                self.metric_name: self._metric(engine),
                "lr": self._lr,
                "seconds": time.perf_counter() - self._start,
            }
        )
        self.epoch_completed(engine)

    def epoch_completed(self, engine: Engine) -> None:
        raise NotImplementedError


class EpochProgress(_EpochHistory):
    """Log one line per epoch: loss, validation metric (and the best so far), learning rate, time and time left.

    Args:
        evaluator: the validation engine whose ``metric_name`` to report.
        metric_name: the evaluator's key metric.
        optimizer: to report the learning rate.
        name: logger name.
    """

    def __init__(
        self,
        evaluator: Engine | None = None,
        metric_name: str = "val_mean_dice",
        optimizer: Any = None,
        name: str = "neurobundles.training",
    ) -> None:
        super().__init__(evaluator, metric_name, optimizer)
        self.logger = logging.getLogger(name)

    def epoch_completed(self, engine: Engine) -> None:
        row = self.rows[-1]
        parts = [f"epoch {row['epoch']}/{engine.state.max_epochs}", f"loss {row['loss']:.4f}"]
        if row[self.metric_name] is not None:
            parts.append(f"{self.metric_name} {row[self.metric_name]:.4f}")
            best = max((r for r in self.rows if r[self.metric_name] is not None), key=lambda r: r[self.metric_name])
            parts.append(f"best {best[self.metric_name]:.4f} at epoch {best['epoch']}")
        if row["lr"] is not None:
            parts.append(f"lr {row['lr']:.3g}")
        mean_seconds = sum(r["seconds"] for r in self.rows) / len(self.rows)
        left = (engine.state.max_epochs - row["epoch"]) * mean_seconds
        parts.append(f"{row['seconds']:.1f} s, about {_duration(left)} left")
        self.logger.info(", ".join(parts))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class TrainingCurves(_EpochHistory):
    """Rewrite ``training_log.csv`` and ``training_curves.png`` (loss and validation metric per epoch) each epoch.

    Both files are replaced atomically, so they can be watched while training runs.

    Args:
        output_dir: folder for the files (the bundle's ``output_dir``, beside the TensorBoard logs).
        evaluator: the validation engine whose ``metric_name`` to plot.
        metric_name: the evaluator's key metric.
        optimizer: to log the learning rate.
        filename: name of the picture.
        log_filename: name of the table.
    """

    def __init__(
        self,
        output_dir: str | Path,
        evaluator: Engine | None = None,
        metric_name: str = "val_mean_dice",
        optimizer: Any = None,
        filename: str = "training_curves.png",
        log_filename: str = "training_log.csv",
    ) -> None:
        super().__init__(evaluator, metric_name, optimizer)
        self.output_dir = Path(output_dir)
        self.filename, self.log_filename = filename, log_filename

    def epoch_completed(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in self.rows)
        atomic_write_text(self.output_dir / self.log_filename, buffer.getvalue())
        atomic_save(self.output_dir / self.filename, self._plot)

    def _plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
        from matplotlib.ticker import MaxNLocator

        epochs = [row["epoch"] for row in self.rows]
        figure, loss_axis = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        loss_axis.plot(epochs, [row["loss"] for row in self.rows], "o-", color="tab:blue", label="training loss")
        loss_axis.set_xlabel("epoch")
        loss_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        loss_axis.set_ylabel("training loss", color="tab:blue")
        validated = [row for row in self.rows if row[self.metric_name] is not None]
        if validated:
            metric_axis = loss_axis.twinx()
            values = [row[self.metric_name] for row in validated]
            metric_axis.plot([row["epoch"] for row in validated], values, "s-", color="tab:red")
            metric_axis.set_ylabel(self.metric_name.replace("_", " "), color="tab:red")
            metric_axis.set_ylim(0.0, 1.0)
        loss_axis.set_title(f"training curves, epoch {epochs[-1]}")
        figure.tight_layout()
        figure.savefig(path, format="png")
        plt.close(figure)


class FallbackCheckpoint:
    """Save the final weights as ``filename`` when validation never produced a best checkpoint.

    ``validate#handlers`` keep the best validated weights in ``models/model.pt``; when there is no validation
    data (MONAI Label trains with ``val_split`` 0) nothing would be written, so this writes the last weights.

    Args:
        save_dir: the checkpoint folder.
        network: the trained network (DDP-wrapped or not).
        evaluator: the validation engine; its ``best_metric_epoch`` stays -1 until it validates once.
        filename: the checkpoint file name.
    """

    def __init__(
        self, save_dir: str | Path, network: nn.Module, evaluator: Engine | None = None, filename: str = "model.pt"
    ) -> None:
        self.path = Path(save_dir) / filename
        self.network, self.evaluator = network, evaluator

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _completed(self, _: Engine) -> None:
        if self.evaluator is not None and getattr(self.evaluator.state, "best_metric_epoch", -1) > 0:
            return
        network = self.network.module if hasattr(self.network, "module") else self.network
        state = {key: value.detach().cpu() for key, value in network.state_dict().items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)


def handlers_for_rank(handlers: Sequence[Any], rank: int) -> list[Any]:
    """The training handlers a ``torchrun`` process attaches: all on rank 0; elsewhere only those every rank must
    run (loading a checkpoint, stepping the learning rate, validating, whose metric gathers from every rank)."""
    return list(handlers) if rank == 0 else [h for h in handlers if isinstance(h, _EVERY_RANK)]
