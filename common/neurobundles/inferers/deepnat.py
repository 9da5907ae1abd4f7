"""DeepNAT inference: seven-head votes, the two-stage hierarchy and a 3D fully connected CRF.

Every voxel receives up to seven predictions: from the patch centred on it (centre head) and from the patches
centred on its six face neighbours (their neighbour heads). Without a CRF its label is the *weighted majority
vote* of those predictions; the weights default to 2 for the centre head and 1 for each neighbour head — the
paper finds the centre task the most accurate, and with these weights the centre prediction wins ties against
one neighbour yet three agreeing neighbours overrule it. Remaining ties go to the class with the larger
weighted sum of probabilities (the *soft vote*), which is also the CRF's unary term.

The hierarchy runs stage 1 (foreground/background) at every brain-mask voxel, then stage 2 (the structures)
at the voxels stage 1 calls foreground and a ``stage2_margin``-voxel rim around them (so those voxels receive
all seven stage-2 votes and the CRF can move borders); stage 2 may still call a voxel background.

The CRF is Krähenbühl & Koltun's fully connected model in 3D (mean-field inference, Potts compatibility):
a smoothness kernel ``w_s·exp(−|p_i−p_j|²/2θγ²)`` and an appearance kernel
``w_a·exp(−|p_i−p_j|²/2θα² − |I_i−I_j|²/2θβ²)``. MONAI's ``CRF`` block needs MONAI's compiled extension
(absent from the PyPI wheel) and the PyPI package SimpleCRF 0.2.1.1 ships only a source distribution that does
not build against NumPy 2 (``NPY_IN_ARRAY``), so :class:`DenseCRF` is plain PyTorch (CPU and GPU alike). The
smoothness kernel is exact (separable Gaussian); the appearance kernel is approximated by three 1D bilateral
passes (Pham & van Vliet's separable bilateral filter), both truncated at ``truncate`` σ. Each label is filtered
only in the box where its probability exceeds ``eps``, so small structures cost little.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from scipy import ndimage
from torch import nn

from neurobundles.networks.deepnat import HEAD_OFFSETS, DeepNAT, DeepNATCascade, dense_logits, patch_logits

__all__ = ["DEFAULT_HEAD_WEIGHTS", "DeepNATInferer", "DenseCRF", "HeadVotes", "hierarchy_probabilities"]

DEFAULT_HEAD_WEIGHTS: tuple[float, ...] = (2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
"""Vote weights of the seven heads (centre first, then −/+ along each axis as in ``HEAD_OFFSETS``)."""


class HeadVotes:
    """Collects the heads' predictions for the voxels of a region and votes.

    Args:
        region: ``X×Y×Z`` bool, the voxels that take part (predictions pointing elsewhere are dropped).
        num_classes: classes per head.
        weights: vote weight per head.
    """

    def __init__(self, region: torch.Tensor, num_classes: int, weights: Sequence[float] = DEFAULT_HEAD_WEIGHTS):
        self.region = region.bool()
        self.shape = tuple(region.shape)
        self.voxels = torch.nonzero(self.region)
        n = len(self.voxels)
        self.index = torch.full(self.shape, n, dtype=torch.long, device=region.device)
        """Row of each region voxel; ``n`` (a sink row, dropped) elsewhere."""
        self.index[self.region] = torch.arange(n, device=region.device)
        self.num_classes = num_classes
        self.weights = [float(w) for w in weights]
        self._soft = torch.zeros((n + 1, num_classes), device=region.device)
        self._hard = torch.zeros((n + 1, num_classes), device=region.device)

    @property
    def soft(self) -> torch.Tensor:
        """Weighted sum of the probabilities each region voxel received (``n×K``)."""
        return self._soft[:-1]

    @property
    def hard(self) -> torch.Tensor:
        """Weighted count of the heads that chose each class, per region voxel (``n×K``)."""
        return self._hard[:-1]

    def add(self, centres: torch.Tensor, logits: torch.Tensor) -> None:
        """Add the predictions ``logits`` (``N×K×H``) of the patches centred at ``centres`` (``N×3``)."""
        if logits.shape[2] > len(self.weights):
            raise ValueError(f"{logits.shape[2]} heads but only {len(self.weights)} vote weights.")
        probabilities = torch.softmax(logits.float().transpose(1, 2), dim=2).contiguous()  # N×H×K
        winners = logits.max(dim=1).indices  # N×H
        bounds = torch.tensor(self.shape, device=centres.device)
        sink = len(self.voxels)
        for head in range(logits.shape[2]):
            target = centres + torch.tensor(HEAD_OFFSETS[head], device=centres.device)
            inside = ((target >= 0) & (target < bounds)).all(1)
            target = torch.minimum(target.clamp_min(0), bounds - 1)
            rows = torch.where(inside, self.index[target[:, 0], target[:, 1], target[:, 2]], sink)
            weight = self.weights[head]
            self._soft.index_add_(0, rows, probabilities[:, head], alpha=weight)
            flat = rows * self.num_classes + winners[:, head]
            self._hard.view(-1).index_add_(0, flat, torch.full_like(flat, weight, dtype=self._hard.dtype))

    def probabilities(self) -> torch.Tensor:
        """Soft vote per region voxel (``n×K``, rows sum to 1; uniform where no prediction arrived)."""
        total = self.soft.sum(1, keepdim=True)
        return torch.where(total > 0, self.soft / total.clamp_min(1e-12), 1.0 / self.num_classes)

    def labels(self) -> torch.Tensor:
        """Weighted majority vote per region voxel (``n``), ties to the larger soft vote."""
        best = self.hard.max(1, keepdim=True).values
        tied = self.hard >= best - 1e-6
        return torch.where(tied, self.soft, torch.full_like(self.soft, -1.0)).max(1).indices

    def scatter(self, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Region values (``n`` or ``n×K``) as a volume (``X×Y×Z`` or ``K×X×Y×Z``), ``fill`` elsewhere."""
        if values.ndim == 1:
            out = torch.full(self.shape, fill, dtype=values.dtype, device=values.device)
            out[self.region] = values
            return out
        out = torch.full((values.shape[1], *self.shape), fill, dtype=values.dtype, device=values.device)
        out[:, self.region] = values.T
        return out


def hierarchy_probabilities(
    mask: torch.Tensor, stage1: torch.Tensor, stage2: torch.Tensor, stage2_region: torch.Tensor
) -> torch.Tensor:
    """The cascade's class probabilities ``26×X×Y×Z``: P(c) = P₁(fg)·P₂(c), P(bg) = P₁(bg) + P₁(fg)·P₂(bg).

    ``stage1`` is ``2×X×Y×Z`` (inside ``mask``), ``stage2`` ``26×X×Y×Z`` (inside ``stage2_region``); where stage 2
    did not run, the foreground share is spread evenly over the 25 structures. Outside the mask: background.
    """
    classes = stage2.shape[0]
    foreground = stage1[1]
    spread = torch.where(stage2_region[None], stage2, 1.0 / (classes - 1))
    spread[0] = torch.where(stage2_region, stage2[0], 0.0)
    out = foreground[None] * spread
    out[0] += stage1[0]
    out[:, ~mask] = 0.0
    out[0][~mask] = 1.0
    return out


class DeepNATInferer(Inferer):
    """DeepNAT segmentation of whole volumes; returns class indices ``B×1×X×Y×Z`` (float32).

    ``inputs`` are ``B×(C+6+1)×X×Y×Z``: the image's ``C`` channels, the six coordinate maps and the brain mask
    (MONAI ``ConcatItemsd(["image", "coords", "mask"])``). ``network`` is a :class:`DeepNATCascade` (both stages)
    or a single :class:`DeepNAT` (one stage: its vote over its own classes, inside the mask).

    Args:
        mode: ``"dense"`` (:func:`dense_logits`, seconds) or ``"patch"`` (cut every patch: the reference).
        head_weights: vote weight per head (default :data:`DEFAULT_HEAD_WEIGHTS`).
        crf: a :class:`DenseCRF` to run on the cascade's probabilities, or ``None`` (weighted vote only).
        both: with a CRF, return two channels: the vote's labels and the CRF's.
        stage2_margin: voxels around stage 1's foreground where stage 2 also runs.
        slab: slab thickness of the dense evaluation (memory ∝ slab).
        group: slices along the first axis whose predictions are voted at once (bounds the logits' memory).
        batch_size: patches per forward pass in ``"patch"`` mode.
        compute_dtype: ``None`` (float32) or ``"bfloat16"``/``"float16"`` for the dense evaluation.
    """

    def __init__(
        self,
        mode: str = "dense",
        head_weights: Sequence[float] = DEFAULT_HEAD_WEIGHTS,
        crf: DenseCRF | None = None,
        both: bool = False,
        stage2_margin: int = 1,
        slab: int = 32,
        group: int = 64,
        batch_size: int = 256,
        compute_dtype: str | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("dense", "patch"):
            raise ValueError(f"mode must be 'dense' or 'patch', got {mode!r}.")
        self.mode, self.head_weights, self.crf, self.both = mode, tuple(head_weights), crf, both
        self.stage2_margin, self.slab, self.group = int(stage2_margin), int(slab), max(int(group), 1)
        self.batch_size, self.compute_dtype = int(batch_size), compute_dtype

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        values = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        stages = (network.stage1, network.stage2) if isinstance(network, DeepNATCascade) else (network,)
        first = stages[0]
        if not isinstance(first, DeepNAT):
            raise TypeError(f"DeepNATInferer runs a DeepNAT or DeepNATCascade, got {type(network).__name__}.")
        expected = first.in_channels + first.coord_channels + 1
        if values.ndim != 5 or values.shape[1] != expected:
            raise ValueError(
                f"inputs must be B×{expected}×X×Y×Z (image {first.in_channels}, coordinates {first.coord_channels}, "
                f"brain mask 1), got {tuple(values.shape)}."
            )
        was_training = [stage.training for stage in stages]
        for stage in stages:
            stage.eval()
        try:
            out = torch.stack([self._segment(volume, stages) for volume in values])
        finally:
            for stage, mode in zip(stages, was_training):
                stage.train(mode)
        if isinstance(inputs, MetaTensor):
            return MetaTensor(out, meta=inputs.meta, applied_operations=inputs.applied_operations)
        return out

    def _votes(
        self, network: DeepNAT, image: torch.Tensor, coords: torch.Tensor | None, region: torch.Tensor
    ) -> HeadVotes:
        """Predictions of ``network`` at every voxel of ``region``, voted over ``region``."""
        votes = HeadVotes(region, network.out_channels, self.head_weights)
        centres = votes.voxels
        if len(centres) == 0:
            return votes
        axis0 = centres[:, 0]
        for start in range(int(axis0.min()), int(axis0.max()) + 1, self.group):
            rows = torch.nonzero((axis0 >= start) & (axis0 < start + self.group)).squeeze(1)
            if len(rows) == 0:
                continue
            if self.mode == "dense":
                logits = dense_logits(
                    network, image, coords, centres[rows], slab=self.slab, compute_dtype=self.compute_dtype
                )
            else:
                logits = patch_logits(network, image, coords, centres[rows], batch_size=self.batch_size)
            votes.add(centres[rows], logits)
        return votes

    @torch.no_grad()
    def _segment(self, volume: torch.Tensor, stages: tuple[DeepNAT, ...]) -> torch.Tensor:
        """Class indices ``1×X×Y×Z`` (or ``2×…`` with ``both``) of one ``(C+6+1)×X×Y×Z`` input."""
        net = stages[0]
        image = volume[: net.in_channels]
        coords = volume[net.in_channels : net.in_channels + net.coord_channels] if net.coord_channels else None
        mask = volume[-1] > 0
        first = self._votes(net, image, coords, mask)
        labels = first.scatter(first.labels().to(torch.float32))
        if len(stages) == 1:
            probabilities = first.scatter(first.probabilities()) if self.crf is not None else None
            if probabilities is not None:
                probabilities[0][~mask] = 1.0
        else:
            foreground = labels > 0
            region = foreground
            if self.stage2_margin > 0 and foreground.any():
                grown = ndimage.binary_dilation(foreground.cpu().numpy(), iterations=self.stage2_margin)
                region = torch.from_numpy(grown).to(mask.device) & mask
            second = self._votes(stages[1], image, coords, region)
            structure = second.scatter(second.labels().to(torch.float32))
            labels = torch.where(foreground, structure, 0.0)
            probabilities = None
            if self.crf is not None:
                probabilities = hierarchy_probabilities(
                    mask, first.scatter(first.probabilities()), second.scatter(second.probabilities()), region
                )
        if self.crf is None:
            return labels[None]
        refined = self.crf.labels(probabilities, image[0], mask)
        return torch.stack([labels, refined]) if self.both else refined[None]


class DenseCRF:
    """Mean-field inference of a 3D fully connected CRF with Gaussian kernels and Potts compatibility.

    Energy ``Σ ψ_u(x_i) + Σ_{i<j} [x_i ≠ x_j]·(w_a·k_a(i, j) + w_s·k_s(i, j))``; the unary is ``−log P`` of the
    given probabilities. Each kernel is normalised symmetrically (``n_i k_ij n_j`` with ``n_i = (Σ_j k_ij)^−½``,
    the default of Krähenbühl & Koltun's implementation), so a weight is the most a kernel can add to a label's
    score — comparable with the unary's log-probabilities whatever the kernel's reach. Intensities are rescaled so
    that the 1st–99th percentile inside the mask spans 0..1; ``intensity_sigma`` is in those units. Spatial
    sigmas are in millimetres.

    Defaults (ours; the paper does not give its values): smoothness ``w_s = 2``, ``θγ = 1`` mm; appearance
    ``w_a = 3``, ``θα = 3`` mm, ``θβ = 0.1`` (about a third of the grey/white contrast, so tissue borders stop
    the appearance kernel while noise within a tissue does not); 5 iterations. With normalised kernels a voxel
    predicted with probability 0.9 against 0.05 (log-ratio 2.9) is overruled only when more than about 60 % of
    its weighted neighbourhood disagrees: isolated errors go, borders stay. Stronger weights (Krähenbühl &
    Koltun's 3 and 10) erode thin structures such as the cortex of an average brain.

    Args:
        iterations: mean-field iterations.
        smoothness_weight: ``w_s``.
        smoothness_sigma: ``θγ`` in mm.
        appearance_weight: ``w_a``.
        appearance_sigma: ``θα`` in mm.
        intensity_sigma: ``θβ`` in rescaled intensity units.
        truncate: kernels are cut at this many σ.
        eps: a label is filtered only where its probability exceeds this (plus the kernel's reach).
    """

    def __init__(
        self,
        iterations: int = 5,
        smoothness_weight: float = 2.0,
        smoothness_sigma: float = 1.0,
        appearance_weight: float = 3.0,
        appearance_sigma: float = 3.0,
        intensity_sigma: float = 0.1,
        truncate: float = 3.0,
        eps: float = 1e-4,
    ) -> None:
        self.iterations = int(iterations)
        self.smoothness_weight, self.smoothness_sigma = float(smoothness_weight), float(smoothness_sigma)
        self.appearance_weight, self.appearance_sigma = float(appearance_weight), float(appearance_sigma)
        self.intensity_sigma, self.truncate, self.eps = float(intensity_sigma), float(truncate), float(eps)

    def labels(
        self,
        probabilities: torch.Tensor,
        image: torch.Tensor,
        mask: torch.Tensor | None = None,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> torch.Tensor:
        """Class indices ``X×Y×Z`` (float32) after mean field; background outside ``mask``."""
        full = torch.zeros(probabilities.shape[1:], dtype=torch.float32, device=probabilities.device)
        if mask is None:
            mask = torch.ones(probabilities.shape[1:], dtype=torch.bool, device=probabilities.device)
        if not mask.any():
            return full
        points = torch.nonzero(mask)
        low, high = points.min(0).values.tolist(), (points.max(0).values + 1).tolist()
        box = tuple(slice(a, b) for a, b in zip(low, high))
        q = self(probabilities[(slice(None), *box)], image[box], mask[box], spacing)
        full[box] = torch.where(mask[box], q.max(0).indices.to(torch.float32), 0.0)
        return full

    def __call__(
        self,
        probabilities: torch.Tensor,
        image: torch.Tensor,
        mask: torch.Tensor | None = None,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> torch.Tensor:
        """Marginals ``K×X×Y×Z`` after mean field from ``probabilities`` (``K×X×Y×Z``) and intensities ``X×Y×Z``."""
        if probabilities.ndim != 4 or tuple(image.shape) != tuple(probabilities.shape[1:]):
            raise ValueError(
                f"probabilities must be K×X×Y×Z and image X×Y×Z on the same grid, got "
                f"{tuple(probabilities.shape)} and {tuple(image.shape)}."
            )
        intensity = self._rescale(image.float(), mask)
        spacing = [float(s) for s in spacing]
        smooth_taps = [self._taps(self.smoothness_sigma / s) for s in spacing]
        weights = [
            self._pairs(intensity, axis, self._taps(self.appearance_sigma / s)) for axis, s in enumerate(spacing)
        ]
        reach = [max(len(a), len(b)) for a, b in zip(smooth_taps, weights)]
        # each voxel's kernel weights (self excluded) sum to one: a message is a weighted mean of marginals
        ones = torch.ones_like(intensity)
        smooth_norm = (self._filter(ones, smooth_taps) - 1).clamp_min(1e-6).reciprocal()
        appearance_norm = (self._filter(ones, weights) - 1).clamp_min(1e-6).reciprocal()
        unary = -torch.log(probabilities.float().clamp_min(1e-8))
        q = torch.softmax(-unary, dim=0)
        for _ in range(self.iterations):
            message = torch.zeros_like(q)
            for label in range(q.shape[0]):
                box = self._box(q[label] > self.eps, reach)
                if box is None:
                    continue
                values = q[label][box]
                crops = [
                    [w[self._crop(box, axis, t)] for t, w in enumerate(pairs, 1)] for axis, pairs in enumerate(weights)
                ]
                message[label][box] = self.smoothness_weight * self._message(values, smooth_norm[box], smooth_taps)
                message[label][box] += self.appearance_weight * self._message(values, appearance_norm[box], crops)
            q = torch.softmax(message - unary, dim=0)
        return q

    def _message(self, values: torch.Tensor, norm: torch.Tensor, taps: Sequence[Sequence]) -> torch.Tensor:
        """``Σ_{j≠i} k_ij Q_j / Σ_{j≠i} k_ij``: the normalised kernel applied to one label's marginals."""
        return norm * (self._filter(values, taps) - values)

    def _rescale(self, image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        inside = image[mask] if mask is not None and mask.any() else image.reshape(-1)
        sample = inside[:: max(1, inside.numel() // 1_000_000)]
        low, high = torch.quantile(sample, torch.tensor([0.01, 0.99], device=image.device)).tolist()
        return (image - low) / max(high - low, 1e-6)

    def _taps(self, sigma: float) -> list[float]:
        """``exp(−t²/2σ²)`` for t = 1..⌈truncate·σ⌉ (the centre tap is 1)."""
        reach = int(np.ceil(self.truncate * sigma))
        return [float(np.exp(-(t**2) / (2 * sigma**2))) for t in range(1, reach + 1)]

    def _pairs(self, intensity: torch.Tensor, axis: int, taps: list[float]) -> list[torch.Tensor]:
        """Appearance weight between voxel ``i`` and ``i + t`` along ``axis``, for each tap ``t``."""
        n = intensity.shape[axis]
        out = []
        for t, spatial in enumerate(taps, 1):
            if t >= n:
                break
            difference = intensity.narrow(axis, t, n - t) - intensity.narrow(axis, 0, n - t)
            out.append(spatial * torch.exp(-(difference**2) / (2 * self.intensity_sigma**2)))
        return out

    @staticmethod
    def _box(support: torch.Tensor, reach: Sequence[int]) -> tuple[slice, ...] | None:
        if not support.any():
            return None
        box = []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            present = torch.nonzero(support.any(dim=other)).squeeze(1)
            low = max(int(present[0]) - reach[axis], 0)
            high = min(int(present[-1]) + 1 + reach[axis], support.shape[axis])
            box.append(slice(low, high))
        return tuple(box)

    @staticmethod
    def _crop(box: tuple[slice, ...], axis: int, t: int) -> tuple[slice, ...]:
        """The part of a pair-weight map (shorter by ``t`` along ``axis``) that lies within ``box``."""
        out = list(box)
        out[axis] = slice(box[axis].start, max(box[axis].stop - t, box[axis].start))
        return tuple(out)

    @staticmethod
    def _filter(values: torch.Tensor, taps: Sequence[Sequence[float | torch.Tensor]]) -> torch.Tensor:
        """Three 1D passes ``out_i = x_i + Σ_t w_t(i)·(x_{i+t} + x_{i−t})`` (weights symmetric in the pair)."""
        out = values
        for axis in range(3):
            x = out
            out = x.clone()
            n = x.shape[axis]
            for t, weight in enumerate(taps[axis], 1):
                if t >= n:
                    break
                out.narrow(axis, 0, n - t).add_(weight * x.narrow(axis, t, n - t))
                out.narrow(axis, t, n - t).add_(weight * x.narrow(axis, 0, n - t))
        return out
