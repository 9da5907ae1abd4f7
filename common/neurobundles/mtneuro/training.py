"""Task 1 training glue the bundle's configs call: the BYOL learning-rate schedule and the linear probe.

The linear probe (``configs/linear_probe.json``) freezes the encoder pre-trained with BYOL, embeds the training
images once, trains one linear layer on the embeddings (:func:`neurobundles.networks.byol.train_linear_probe`) and
writes it into the classifier's head, so the saved ``models/model.pt`` is a complete ``ResNetClassifier`` that
``evaluate.json`` and ``inference.json`` use like a supervised one. The head's dropout is inactive at evaluation,
so the probe's predictions are the classifier's.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from torch import nn

from neurobundles.atomic import atomic_path, atomic_write_text
from neurobundles.networks.byol import embed_images, train_linear_probe

__all__ = ["fit_linear_probe", "warmup_cosine"]

logger = logging.getLogger("neurobundles.training")


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor for ``torch.optim.lr_scheduler.LambdaLR``: linear warm-up from ~0 to 1 over
    ``warmup_steps``, then a cosine down to 0 at ``total_steps`` (the BYOL schedule)."""
    warmup_steps, total_steps = max(0, int(warmup_steps)), max(1, int(total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _embed(network: nn.Module, items: Sequence[Mapping[str, Any]], transform: Callable | None, batch_size: int,
           device: torch.device) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    loader = DataLoader(Dataset(list(items), transform), batch_size=batch_size, shuffle=False, num_workers=0)
    embeddings, labels = [], []
    for batch in loader:
        embeddings.append(embed_images(network, torch.as_tensor(batch["image"]), batch_size, device))
        labels.append(np.asarray(torch.as_tensor(batch["label"])).reshape(-1))
    return np.concatenate(embeddings), np.concatenate(labels)


def fit_linear_probe(
    network: nn.Module,
    items: Sequence[Mapping[str, Any]],
    transform: Callable | None,
    ckpt_path: str | Path,
    num_classes: int,
    epochs: int = 100,
    learning_rate: float = 0.03,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log_file: str | Path | None = None,
) -> list[float]:
    """Train a linear probe on the frozen encoder of ``network`` and save the whole classifier to ``ckpt_path``.

    Args:
        network: a ``ResNetClassifier`` whose encoder holds the pre-trained weights (``encoder``, ``classifier``).
        items: training items (``image``, ``label``), e.g. ``task1_datalist(..., quadrant_images=True)``.
        transform: the preprocessing of an item (as at evaluation, no augmentation).
        ckpt_path: where to write the classifier's state dict (atomically).
        num_classes: number of classes.
        epochs, learning_rate, batch_size, momentum, weight_decay: SGD on the probe (paper: 100, 0.03, 256).
        seed: seed of the probe's initial weights and shuffling.
        device: device of the embedding pass.
        log_file: CSV of the mean training loss per epoch (optional).

    Returns:
        the mean training loss of each epoch.
    """
    device = torch.device(device)
    network = network.to(device)
    for parameter in network.encoder.parameters():
        parameter.requires_grad_(False)
    embeddings, labels = _embed(network.encoder, items, transform, batch_size, device)
    logger.info("linear probe: %d embeddings of %d dimensions", *embeddings.shape)
    generator = torch.Generator().manual_seed(int(seed))
    probe, history = train_linear_probe(
        embeddings, labels, num_classes, epochs, learning_rate, batch_size, momentum, weight_decay, generator
    )
    with torch.no_grad():
        network.classifier.weight.copy_(probe.weight.to(device))
        network.classifier.bias.copy_(probe.bias.to(device))
    accuracy = float((probe(torch.as_tensor(embeddings)).argmax(1).numpy() == labels).mean())
    logger.info("linear probe: training loss %.4f → %.4f, training accuracy %.4f", history[0], history[-1], accuracy)
    path = Path(ckpt_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu() for key, value in network.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    if log_file is not None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["epoch", "loss"])
        writer.writerows((i + 1, f"{loss:.6f}") for i, loss in enumerate(history))
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(log_file, buffer.getvalue())
    return history
