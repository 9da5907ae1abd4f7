"""BYOL self-supervised pre-training from PyTorch/MONAI pieces, 2D view augmentations, and a linear probe.

BYOL (Grill et al. 2020): an online encoder + projector + predictor learns to predict the projection of another
view made by a target encoder + projector, whose weights are an exponential moving average (EMA) of the online
ones; loss ``2 - 2·cos(q, z')``, symmetrised over the two views. Sizes follow the MTNeuro reference: projector and
predictor are Linear(4096) → BatchNorm → ReLU → Linear(256, no bias); EMA momentum from 0.99 to 1 on a cosine.

Augmentations. The paper's BYOL used only random crops half the width and height of the (2× downsampled,
128²) tile, then the reference's normalisation (mean 0.4894, std 0.1238 on [0, 1] images); that is the default
of :func:`byol_augmentation`. Flips, 90° rotations, intensity jitter, Gaussian blur and random resized crops (the
usual BYOL set) are MONAI transforms that can be switched on; they were not in the paper's runs.

The linear probe freezes the encoder, embeds the images once (``eval`` mode, so identical on every epoch), then
trains one linear layer with cross-entropy; this equals training ``Linear`` on top of the frozen network when no
augmentation is used, as in the reference evaluation, at a fraction of the cost.

MYOW / MYOW-m (view mining across samples) are not implemented.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    MapTransform,
    NormalizeIntensity,
    RandFlip,
    RandGaussianSmooth,
    Randomizable,
    RandRotate90,
    RandScaleCrop,
    RandScaleIntensity,
    RandShiftIntensity,
    RandSpatialCrop,
    Resize,
)
from torch import nn

__all__ = [
    "BYOL",
    "XRAY_MEAN",
    "XRAY_STD",
    "BYOLIteration",
    "MLPHead",
    "TwoViewsd",
    "byol_augmentation",
    "byol_loss",
    "byol_train_step",
    "cosine_momentum",
    "embed_images",
    "probe_accuracy",
    "train_linear_probe",
]

XRAY_MEAN = 0.4894
XRAY_STD = 0.1238


class MLPHead(nn.Sequential):
    """Projector/predictor: Linear → BatchNorm1d → ReLU → Linear (no bias).

    Args:
        in_channels: input features.
        hidden_channels: hidden width (BYOL: 4096).
        out_channels: output features (MTNeuro reference: 256).
    """

    def __init__(self, in_channels: int, hidden_channels: int = 4096, out_channels: int = 256) -> None:
        super().__init__(
            nn.Linear(in_channels, hidden_channels),
            nn.BatchNorm1d(hidden_channels),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_channels, out_channels, bias=False),
        )


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``2 - 2·mean cos(prediction, target)``, the normalised squared distance; no gradient into ``target``."""
    return 2 - 2 * F.cosine_similarity(prediction, target.detach(), dim=-1).mean()


def cosine_momentum(step: int, total_steps: int, base_momentum: float = 0.99) -> float:
    """EMA momentum rising from ``base_momentum`` at step 0 to 1 at ``total_steps`` on a cosine (BYOL)."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1 - (1 - base_momentum) * (math.cos(math.pi * progress) + 1) / 2


class BYOL(nn.Module):
    """Online encoder/projector/predictor and their EMA target; ``forward(view1, view2)`` returns the loss.

    Args:
        encoder: maps images to ``[B, embedding_dim]`` (e.g. ``ResNetClassifier(...).encoder``); it is trained in
            place and is the network kept after pre-training.
        embedding_dim: encoder output size.
        projection_dim: projector and predictor output size.
        hidden_dim: projector and predictor hidden width.
    """

    def __init__(self, encoder: nn.Module, embedding_dim: int, projection_dim: int = 256, hidden_dim: int = 4096):
        super().__init__()
        self.online_encoder = encoder
        self.online_projector = MLPHead(embedding_dim, hidden_dim, projection_dim)
        self.predictor = MLPHead(projection_dim, hidden_dim, projection_dim)
        self.target_encoder = copy.deepcopy(encoder)
        self.target_projector = copy.deepcopy(self.online_projector)
        for param in self._target_parameters():
            param.requires_grad_(False)

    def _target_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.target_encoder.parameters()
        yield from self.target_projector.parameters()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (online encoder, projector, predictor)."""
        modules = (self.online_encoder, self.online_projector, self.predictor)
        return [p for m in modules for p in m.parameters()]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Online encoder representation (what linear probes and readouts use)."""
        return self.online_encoder(x)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        q1 = self.predictor(self.online_projector(self.online_encoder(view1)))
        q2 = self.predictor(self.online_projector(self.online_encoder(view2)))
        with torch.no_grad():
            z1 = self.target_projector(self.target_encoder(view1))
            z2 = self.target_projector(self.target_encoder(view2))
        return byol_loss(q1, z2) + byol_loss(q2, z1)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """``target ← momentum·target + (1 - momentum)·online`` for encoder and projector weights."""
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}.")
        pairs = ((self.online_encoder, self.target_encoder), (self.online_projector, self.target_projector))
        for online, target in pairs:
            for p_online, p_target in zip(online.parameters(), target.parameters()):
                p_target.mul_(momentum).add_(p_online.detach(), alpha=1 - momentum)


def byol_train_step(
    model: BYOL, optimizer: torch.optim.Optimizer, view1: torch.Tensor, view2: torch.Tensor, momentum: float
) -> float:
    """One optimisation step on a pair of view batches, then the EMA update; returns the loss."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = model(view1, view2)
    loss.backward()
    optimizer.step()
    model.update_target(momentum)
    return float(loss.detach())


class BYOLIteration:
    """``iteration_update`` for MONAI's ``SupervisedTrainer`` with ``network`` a :class:`BYOL`.

    Reads the two views from the batch, steps ``engine.optimizer`` and sets the EMA momentum from the engine's
    iteration on :func:`cosine_momentum`.

    Args:
        view_keys: batch keys of the two views (see :class:`TwoViewsd`).
        base_momentum: EMA momentum at the first iteration.
    """

    def __init__(self, view_keys: Sequence[str] = ("view1", "view2"), base_momentum: float = 0.99) -> None:
        self.view_keys = tuple(view_keys)
        self.base_momentum = base_momentum

    def __call__(self, engine: Any, batchdata: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        device = engine.state.device
        view1, view2 = (batchdata[k].to(device, non_blocking=engine.non_blocking) for k in self.view_keys)
        total = engine.state.max_epochs * engine.state.epoch_length
        momentum = cosine_momentum(engine.state.iteration - 1, total, self.base_momentum)
        loss = byol_train_step(engine.network, engine.optimizer, view1, view2, momentum)
        return {"loss": torch.tensor(loss), "momentum": momentum}


def byol_augmentation(
    roi_size: Sequence[int] = (64, 64),
    resized_crop_scale: float | None = None,
    flips: bool = False,
    rotate90: bool = False,
    intensity: float = 0.0,
    blur_prob: float = 0.0,
    normalize: bool = True,
) -> Compose:
    """Random view of one ``[C, H, W]`` image in [0, 1]; defaults are the paper's (half-size random crop only).

    Args:
        roi_size: output view size (paper: half the tile, 64² of a 128² tile).
        resized_crop_scale: if set, crop a random fraction in ``[scale, 1]`` of each side and resize to
            ``roi_size`` (random resized crop) instead of the fixed-size crop.
        flips: random flips along each axis (p = 0.5 each).
        rotate90: random multiples of 90° (p = 0.5).
        intensity: jitter strength: intensities scaled by ``1 ± intensity`` and shifted by ``± intensity``
            (p = 0.8 each); 0 for none.
        blur_prob: probability of a Gaussian blur with σ in [0.1, 2] pixels; 0 for none.
        normalize: subtract :data:`XRAY_MEAN` and divide by :data:`XRAY_STD` (the reference's normalisation).
    """
    roi = [int(s) for s in roi_size]
    transforms: list[Callable] = []
    if resized_crop_scale is None:
        transforms.append(RandSpatialCrop(roi, random_size=False))
    else:
        transforms += [RandScaleCrop(resized_crop_scale, max_roi_scale=1.0, random_size=True), Resize(roi)]
    if flips:
        transforms += [RandFlip(prob=0.5, spatial_axis=0), RandFlip(prob=0.5, spatial_axis=1)]
    if rotate90:
        transforms.append(RandRotate90(prob=0.5, max_k=3))
    if intensity > 0:
        transforms += [RandScaleIntensity(intensity, prob=0.8), RandShiftIntensity(intensity, prob=0.8)]
    if blur_prob > 0:
        transforms.append(RandGaussianSmooth(sigma_x=(0.1, 2.0), sigma_y=(0.1, 2.0), prob=blur_prob))
    if normalize:
        transforms.append(NormalizeIntensity(subtrahend=XRAY_MEAN, divisor=XRAY_STD))
    return Compose(transforms)


class TwoViewsd(Randomizable, MapTransform):
    """Adds two independently augmented views of ``keys`` (one key) under ``view_keys``.

    The two views use separate copies of ``augmentation`` seeded from this transform's ``R``, so they differ and
    ``set_determinism``/``set_random_state`` make them reproducible.

    Args:
        keys: the image key.
        augmentation: array transform making one view (default :func:`byol_augmentation`).
        view_keys: names of the two views.
        allow_missing_keys: skip a missing key.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        augmentation: Callable | None = None,
        view_keys: Sequence[str] = ("view1", "view2"),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1 or len(view_keys) != 2:
            raise ValueError(f"TwoViewsd takes one key and two view keys, got {self.keys} and {tuple(view_keys)}.")
        augmentation = augmentation if augmentation is not None else byol_augmentation()
        self.augmentations = (augmentation, copy.deepcopy(augmentation))
        self.view_keys = tuple(view_keys)
        self.set_random_state(seed=0)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> TwoViewsd:
        super().set_random_state(seed, state)
        for augmentation in self.augmentations:
            if isinstance(augmentation, Randomizable):
                augmentation.set_random_state(seed=int(self.R.randint(2**31 - 1)))
        return self

    def randomize(self, data: Any = None) -> None:
        pass  # each view's transform draws its own parameters

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            for name, augmentation in zip(self.view_keys, self.augmentations):
                d[name] = augmentation(d[key])
        return d


@torch.no_grad()
def embed_images(
    encoder: nn.Module,
    images: torch.Tensor | np.ndarray,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Frozen-encoder embeddings ``[N, D]`` (float32) of images ``[N, C, H, W]``, in ``eval`` mode.

    Uses ``encoder.embed`` when the module has one (``ResNetClassifier``, ``BYOL``), else ``encoder(x)``.
    """
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    images = torch.as_tensor(images)
    was_training = encoder.training
    encoder.eval()
    embed = getattr(encoder, "embed", encoder)
    try:
        chunks = [embed(images[i : i + batch_size].to(device).float()).cpu() for i in range(0, len(images), batch_size)]
    finally:
        encoder.train(was_training)
    return torch.cat(chunks).numpy().astype(np.float32, copy=False)


def train_linear_probe(
    embeddings: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    num_classes: int,
    epochs: int = 100,
    lr: float = 0.03,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[nn.Linear, list[float]]:
    """Train a linear classifier on frozen embeddings with SGD and cross-entropy.

    Args:
        embeddings: ``[N, D]`` features from :func:`embed_images`.
        labels: ``[N]`` class indices.
        num_classes: number of classes.
        epochs: passes over the data (paper: 100).
        lr: SGD learning rate (paper: 0.03).
        batch_size: mini-batch size (paper: 256).
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        generator: source of the shuffling and of the layer's initial weights.

    Returns:
        the trained layer and the mean training loss of each epoch.
    """
    x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"embeddings must be [N, D] with one label each, got {tuple(x.shape)} and {tuple(y.shape)}.")
    probe = nn.Linear(x.shape[1], num_classes)
    bound = 1 / math.sqrt(x.shape[1])
    with torch.no_grad():
        probe.weight.copy_(torch.rand(probe.weight.shape, generator=generator) * 2 * bound - bound)
        probe.bias.zero_()
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    history = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(probe(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(x))
    return probe, history


@torch.no_grad()
def probe_accuracy(
    probe: nn.Module, embeddings: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, num_classes: int
) -> tuple[float, np.ndarray]:
    """Accuracy and confusion matrix (rows: true class, columns: predicted) of a probe on embeddings."""
    x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
    y = np.asarray(labels).astype(np.int64)
    predicted = probe(x).argmax(dim=1).numpy()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)
    return float((predicted == y).mean()), confusion
