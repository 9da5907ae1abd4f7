"""Pieces of the training loop: the loss on MONAI label maps, progress and curves per epoch, checkpoints."""

from __future__ import annotations

import csv
import logging
import re

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, LrScheduleHandler, StatsHandler, ValidationHandler

from neurobundles.engines import EpochProgress, FallbackCheckpoint, TrainingCurves, handlers_for_rank
from neurobundles.errors import WeightsUnavailableError
from neurobundles.losses import CrossEntropyLoss
from neurobundles.zoo import trained_checkpoint


def test_cross_entropy_takes_channel_first_label_maps():
    logits = torch.randn(2, 4, 3, 3, 3)
    labels = torch.randint(0, 4, (2, 1, 3, 3, 3))
    expected = torch.nn.functional.cross_entropy(logits, labels[:, 0])
    assert torch.allclose(CrossEntropyLoss()(logits, labels.to(torch.uint8)), expected)


def _trainer(losses_per_epoch, evaluator=None, metric_per_epoch=None):
    """An ignite engine that reports the given losses and, if given, an evaluator with one metric per epoch."""
    epochs = len(losses_per_epoch)

    def step(engine, batch):
        return [{"loss": torch.tensor(losses_per_epoch[engine.state.epoch - 1][engine.state.iteration % 2])}]

    trainer = Engine(step)
    if evaluator is not None:

        @trainer.on(Events.EPOCH_COMPLETED)
        def validate(engine):  # what ValidationHandler does: run the evaluator with the trainer's epoch
            evaluator.state.epoch = engine.state.epoch
            evaluator.state.metrics["val_mean_dice"] = metric_per_epoch[engine.state.epoch - 1]

    return trainer, epochs


def _evaluator():
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.epoch = 0
    return evaluator


def test_training_curves_are_written_every_epoch(tmp_path):
    evaluator = _evaluator()
    trainer, epochs = _trainer([(1.0, 3.0), (0.5, 1.5)], evaluator, [0.25, 0.5])
    curves = TrainingCurves(tmp_path / "eval", evaluator=evaluator)
    curves.attach(trainer)
    pictures = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda _: pictures.append((tmp_path / "eval" / "training_curves.png").read_bytes())
    )
    trainer.run([0, 1], max_epochs=epochs)
    rows = list(csv.DictReader((tmp_path / "eval" / "training_log.csv").open()))
    assert [(r["epoch"], float(r["loss"]), float(r["val_mean_dice"])) for r in rows] == [
        ("1", 2.0, 0.25),
        ("2", 1.0, 0.5),
    ]
    assert len(pictures) == 2 and all(p.startswith(b"\x89PNG") for p in pictures) and pictures[0] != pictures[1]


def test_epochs_without_validation_leave_the_metric_empty(tmp_path):
    evaluator = _evaluator()
    trainer, epochs = _trainer([(1.0, 1.0), (1.0, 1.0)])
    TrainingCurves(tmp_path, evaluator=evaluator).attach(trainer)
    trainer.run([0, 1], max_epochs=epochs)
    rows = list(csv.DictReader((tmp_path / "training_log.csv").open()))
    assert [r["val_mean_dice"] for r in rows] == ["", ""]


def test_progress_line_per_epoch_reports_loss_metric_best_and_time_left(caplog):
    evaluator = _evaluator()
    trainer, epochs = _trainer([(1.0, 3.0), (0.5, 1.5), (0.2, 0.2)], evaluator, [0.3, 0.6, 0.4])
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.02)
    EpochProgress(evaluator=evaluator, optimizer=optimizer).attach(trainer)
    with caplog.at_level(logging.INFO, logger="neurobundles.training"):
        trainer.run([0, 1], max_epochs=epochs)
    lines = [r.getMessage() for r in caplog.records if r.name == "neurobundles.training"]
    assert len(lines) == 3
    assert re.fullmatch(
        r"epoch 3/3, loss 0\.2000, val_mean_dice 0\.4000, best 0\.6000 at epoch 2, lr 0\.02, [\d.]+ s, about 0 s left",
        lines[-1],
    )


def _network():
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, 2, 1)


def test_final_weights_are_saved_when_validation_never_ran(tmp_path):
    network, evaluator = _network(), _evaluator()
    evaluator.state.best_metric_epoch = -1
    trainer = Engine(lambda engine, batch: None)
    FallbackCheckpoint(tmp_path / "models", network, evaluator).attach(trainer)
    trainer.run([0], max_epochs=1)
    saved = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in network.state_dict().items())


def test_best_validated_checkpoint_is_not_replaced(tmp_path):
    evaluator = _evaluator()
    evaluator.state.best_metric_epoch = 3
    trainer = Engine(lambda engine, batch: None)
    FallbackCheckpoint(tmp_path, _network(), evaluator).attach(trainer)
    trainer.run([0], max_epochs=1)
    assert not (tmp_path / "model.pt").exists()


def test_other_ranks_keep_only_the_handlers_every_rank_must_run():
    network = _network()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    handlers = [
        CheckpointLoader(load_path="x.pt", load_dict={"model": network}),
        LrScheduleHandler(torch.optim.lr_scheduler.StepLR(optimizer, 1)),
        ValidationHandler(interval=1, validator=None),
        StatsHandler(),
        FallbackCheckpoint(".", network),
    ]
    assert handlers_for_rank(handlers, 0) == handlers
    assert handlers_for_rank(handlers, 1) == handlers[:3]


def test_untrained_bundle_says_how_to_train_it(tmp_path):
    with pytest.raises(WeightsUnavailableError, match=r"no trained weights; my_bundle publishes none\. Train first: "):
        trained_checkpoint(tmp_path / "my_bundle")


def test_trained_weights_are_found_in_models(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"x")
    assert trained_checkpoint(tmp_path) == str(tmp_path / "models" / "model.pt")
