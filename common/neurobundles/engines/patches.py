"""Training a patch network with a second input: DeepNAT's patches arrive with their centre's coordinates.

MONAI's engines feed ``network(inputs, *args)``; :class:`PatchCoordinatesBatch` turns each batch of patch
samples into ``(patches, targets, (coords,), {})`` so the coordinates reach the network's second argument, and
:func:`centre_head` scores the centre head's predictions (the paper's main task) with any ignite metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.handlers import from_engine

__all__ = ["PatchCoordinatesBatch", "centre_head"]


class PatchCoordinatesBatch:
    """``prepare_batch`` of patch samples ``{image_key, coords_key, label_key}``: coordinates as an extra input."""

    def __init__(self, image_key: str = "image", coords_key: str = "coords", label_key: str = "label") -> None:
        self.image_key, self.coords_key, self.label_key = image_key, coords_key, label_key

    def __call__(
        self, batch: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor], dict]:
        def move(key: str) -> torch.Tensor:
            return torch.as_tensor(batch[key]).to(device=device, non_blocking=non_blocking, **kwargs)

        return move(self.image_key), move(self.label_key), (move(self.coords_key).float(),), {}


def _stacked(values: Any) -> torch.Tensor:
    return torch.stack(list(values)) if isinstance(values, Sequence) else torch.as_tensor(values)


def centre_head(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits B×K, targets B)`` of the centre head from an engine's output (batched or decollated)."""
    pred, label = from_engine(["pred", "label"])(output)
    return _stacked(pred)[..., 0], _stacked(label)[..., 0].long()
