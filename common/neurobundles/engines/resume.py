"""Training that survives being killed: checkpoints every N iterations, and a run that resumes from the last one.

MONAI's ``CheckpointSaver(save_interval=N, epoch_level=False)`` writes ``checkpoint_iteration=<i>.pt`` holding the
network, the optimiser and the trainer's state (iteration, epoch) every N iterations. :class:`ResumeTraining` (a
MONAI ``CheckpointLoader``) finds the newest of them when the trainer starts and loads it, so a run started again
with the same command continues at the iteration after the checkpoint instead of starting over: ignite restores
the epoch from the iteration and runs only what is left of that epoch. A checkpoint cut short by the kill (MONAI
writes them in place) is skipped for the one before it. :class:`KeyMetricSaver` is MONAI's ``CheckpointSaver``
whose memory of the best validation score travels in those checkpoints, so a resumed run does not replace the
best ``model.pt`` with a worse one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.handlers import CheckpointLoader, CheckpointSaver

__all__ = ["INTERVAL_CHECKPOINT", "KeyMetricSaver", "ResumeTraining", "checkpoint_iteration", "interval_checkpoints"]

logger = logging.getLogger("neurobundles.training")

INTERVAL_CHECKPOINT = re.compile(r"^(?:.+_)?checkpoint_iteration=(\d+)\.pt$")
"""File names of MONAI's iteration-interval checkpoints (``checkpoint_iteration=<i>.pt``, optionally prefixed)."""


def interval_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of the interval checkpoints in ``folder``, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = INTERVAL_CHECKPOINT.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


class ResumeTraining(CheckpointLoader):
    """Load the newest interval checkpoint of ``ckpt_dir`` into ``load_dict`` when the trainer starts.

    With ``resume`` False, or no checkpoint, training starts from the beginning; starting over removes the old
    interval checkpoints first, so that a later resume cannot pick up a checkpoint of the earlier run.

    Args:
        ckpt_dir: where ``CheckpointSaver`` writes ``checkpoint_iteration=<i>.pt``.
        load_dict: the objects saved in them (``{"model": network, "optimizer": ..., "trainer": trainer, ...}``).
        resume: continue from the newest checkpoint (True) or start over (False).
        sampler: a sampler with ``set_epoch`` (``VolumeBlockSampler``); it is told each epoch's number, so the
            slices of a resumed epoch are shuffled as that epoch's, not as the first one's.
        map_location: passed to ``torch.load`` (default: the CPU; ``load_state_dict`` moves tensors).
    """

    def __init__(
        self,
        ckpt_dir: str | Path,
        load_dict: Mapping[str, Any],
        resume: bool = True,
        sampler: Any = None,
        map_location: Any = "cpu",
    ) -> None:
        super().__init__(load_path=str(ckpt_dir), load_dict=dict(load_dict), map_location=map_location)
        self.ckpt_dir = Path(ckpt_dir)
        self.resume = bool(resume)
        self.sampler = sampler
        self.loaded: Path | None = None
        """The checkpoint the run resumed from (None: it started from the beginning)."""
        self.logger = logger

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.sampler.set_epoch(e.state.epoch - 1))

    def __call__(self, engine: Engine) -> None:
        found = interval_checkpoints(self.ckpt_dir)
        if not self.resume:
            for _, path in found:
                path.unlink(missing_ok=True)
            if found:
                self.logger.info("starting over: removed %d checkpoint(s) of an earlier run", len(found))
            return
        for iteration, path in found:
            try:
                checkpoint = torch.load(str(path), map_location=self.map_location, weights_only=True)
            except Exception as error:  # cut short by the kill: torch/pickle raise several types
                self.logger.warning("%s cannot be read (%s); trying the checkpoint before it", path.name, error)
                continue
            self._restore(engine, checkpoint, path)
            self.load_path, self.loaded = str(path), path
            for older, old_path in found:
                if older < iteration:
                    old_path.unlink(missing_ok=True)
            self.logger.info(
                "resumed from %s: %d iterations done, continuing epoch %d of %d (resume=False starts over)",
                path,
                engine.state.iteration,
                engine.state.epoch + 1,
                engine.state.max_epochs,
            )
            return
        if found:
            self.logger.warning("no readable checkpoint in %s; training starts from the beginning", self.ckpt_dir)

    def _restore(self, engine: Engine, checkpoint: Mapping[str, Any], path: Path) -> None:
        """MONAI's ``CheckpointLoader`` restore (the run's ``max_epochs`` kept), with an actionable error."""
        missing = [key for key in self.load_dict if key not in checkpoint]
        max_epochs = engine.state.max_epochs
        try:
            if missing:
                raise KeyError(f"it holds no {', '.join(missing)}")
            Checkpoint.load_objects(to_load=self.load_dict, checkpoint=dict(checkpoint), strict=True)
        except (KeyError, RuntimeError, ValueError) as error:
            raise RuntimeError(
                f"{path}: cannot resume from this checkpoint ({str(error).splitlines()[0]}); it was written by "
                "another configuration (network, optimiser or data). Pass --resume false to start over, or "
                "--ckpt_dir another folder."
            ) from error
        if max_epochs is not None and engine.state.epoch > max_epochs:
            raise RuntimeError(
                f"{path}: the checkpoint is at epoch {engine.state.epoch}, beyond max_epochs {max_epochs}; raise "
                "--max_epochs to train further, or pass --resume false to start over."
            )
        engine.state.max_epochs = max_epochs


class KeyMetricSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` whose key-metric memory (the best score and its file) can be checkpointed.

    Put it in the ``save_dict`` of the interval checkpoints and the ``load_dict`` of :class:`ResumeTraining`: a
    resumed run then keeps ``model.pt`` until validation beats the best score of the run it continues.
    """

    def state_dict(self) -> dict[str, Any]:
        if self._key_metric_checkpoint is None:
            return {"_saved": []}
        return self._key_metric_checkpoint.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if self._key_metric_checkpoint is not None:
            self._key_metric_checkpoint.load_state_dict(dict(state_dict))


def checkpoint_iteration(path: str | Path) -> int:
    """The trainer iteration stored in an interval checkpoint (for reports and tests)."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return int(state["trainer"]["iteration"])
