"""2D ResNet encoder with a dropout + linear classifier head (MTNeuro Task 1), and mixup.

The encoder is MONAI's ``ResNet`` (no torchvision), configured as the MTNeuro reference's "X-ray" ResNet-18: a
3×3 stride-1 stem without max-pooling (the reference replaces torchvision's 7×7 stride-2 stem and drops the
max-pool), projection shortcuts without bias, global average pooling to a 512-dimensional embedding. MONAI's
``resnet18(num_classes=...)`` alone has no ``embed`` step and no head dropout (the paper's supervised baseline uses
20 % dropout), hence this small wrapper: ``embed(x)`` is the frozen-encoder representation used by linear probes
and the Task 3 readout, ``forward(x)`` the logits.

Mixup is MONAI's ``MixUp`` in spirit, written here because that transform needs a fixed batch size (the last,
smaller batch of an epoch fails), mixes every sample, and draws from numpy; the paper sweeps the probability of
applying mixup (0.01–0.7), and the reference draws the mixing weight uniformly from (0, 0.5) per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.engines.utils import PrepareBatch, default_prepare_batch
from monai.networks.nets import ResNet
from torch import nn

__all__ = ["MixupPrepareBatch", "ResNetClassifier", "mixup"]


class ResNetClassifier(nn.Module):
    """MONAI ``ResNet`` encoder (basic blocks) + dropout + linear classifier.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        out_channels: number of classes.
        layers: residual blocks per stage; (2, 2, 2, 2) is ResNet-18.
        channels: widths of the four stages; the last is the embedding size.
        conv1_kernel_size: stem kernel size (reference: 3; torchvision: 7).
        conv1_stride: stem stride (reference: 1; torchvision: 2).
        no_max_pool: drop the max-pool after the stem (reference: True).
        dropout: dropout probability before the classifier (paper: 0.2).
        act: activation, as understood by MONAI.
        norm: normalisation, as understood by MONAI.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 4,
        layers: Sequence[int] = (2, 2, 2, 2),
        channels: Sequence[int] = (64, 128, 256, 512),
        conv1_kernel_size: int = 3,
        conv1_stride: int = 1,
        no_max_pool: bool = True,
        dropout: float = 0.2,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(channels) != 4:
            raise ValueError(f"layers and channels need 4 stages each, got {tuple(layers)} and {tuple(channels)}.")
        self.encoder = ResNet(
            block="basic",
            layers=[int(n) for n in layers],
            block_inplanes=[int(c) for c in channels],
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_size=conv1_kernel_size,
            conv1_t_stride=conv1_stride,
            no_max_pool=no_max_pool,
            shortcut_type="B",
            bias_downsample=False,
            feed_forward=False,
            act=act,
            norm=norm,
        )
        self.embedding_dim = int(channels[-1])
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.embedding_dim, out_channels)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled encoder features ``[B, embedding_dim]``."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(x)))


def mixup(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    prob: float = 1.0,
    lam_range: tuple[float, float] = (0.0, 0.5),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each sample with a random partner of the batch: ``x' = (1-λ)x_i + λx_j``, same ``λ`` for the targets.

    Each sample is mixed with probability ``prob`` (otherwise ``λ = 0``); ``λ`` is uniform in ``lam_range`` and the
    partner ``j`` comes from one random permutation of the batch. All randomness is drawn from ``generator``
    (a CPU ``torch.Generator``), so a seeded generator gives the same mixing on any device.

    Args:
        images: ``[B, C, ...]`` floating-point batch.
        labels: ``[B]`` class indices, or ``[B, num_classes]`` probabilities (already mixed targets mix again).
        num_classes: number of classes of the soft targets.
        prob: probability of mixing each sample.
        lam_range: range of the partner's weight ``λ``.
        generator: source of randomness; ``None`` uses torch's global generator.

    Returns:
        mixed images and soft targets ``[B, num_classes]`` (for ``CrossEntropyLoss`` with probability targets).
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}.")
    low, high = (float(v) for v in lam_range)
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"lam_range must satisfy 0 <= low <= high <= 1, got {lam_range}.")
    batch = images.shape[0]
    if labels.ndim == 1:
        targets = F.one_hot(labels.long(), num_classes).to(images.dtype)
    elif labels.shape == (batch, num_classes):
        targets = labels.to(images.dtype)
    else:
        raise ValueError(f"labels must be [B] indices or [B, {num_classes}] probabilities, got {tuple(labels.shape)}.")
    perm = torch.randperm(batch, generator=generator)
    lam = torch.rand(batch, generator=generator, dtype=torch.float64) * (high - low) + low
    applied = torch.rand(batch, generator=generator, dtype=torch.float64) < prob
    lam = torch.where(applied, lam, torch.zeros_like(lam)).to(device=images.device, dtype=images.dtype)
    perm = perm.to(images.device)
    shape = (batch,) + (1,) * (images.ndim - 1)
    mixed = (1 - lam).view(shape) * images + lam.view(shape) * images[perm]
    mixed_targets = (1 - lam)[:, None] * targets + lam[:, None] * targets[perm]
    return mixed, mixed_targets


class MixupPrepareBatch(PrepareBatch):
    """``prepare_batch`` for MONAI's ``SupervisedTrainer``: the default image/label batch, then :func:`mixup`.

    The loss must accept probability targets (``torch.nn.CrossEntropyLoss`` does).

    Args:
        num_classes: number of classes.
        prob: probability of mixing each sample (paper sweep: 0.01, 0.1, 0.3, 0.5, 0.7).
        lam_range: range of the partner's weight.
        seed: seed of this batch preparer's own generator.
    """

    def __init__(
        self, num_classes: int, prob: float = 0.5, lam_range: tuple[float, float] = (0.0, 0.5), seed: int = 0
    ) -> None:
        self.num_classes = num_classes
        self.prob = prob
        self.lam_range = lam_range
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        if labels is None:
            raise ValueError("mixup needs labels in the batch (key 'label').")
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        return mixup(images, labels, self.num_classes, self.prob, self.lam_range, self.generator)
