"""The device a bundle runs on when the user names none: CUDA, else Apple's MPS, else the CPU.

MRISeg was written for Apple silicon (MPS) with CUDA and the CPU as alternatives; its configs choose with
``"device": "$neurobundles.zoo.auto_device()"`` and ``--device`` (or MONAI Label) overrides it. On MPS, operations
PyTorch has not ported yet (``max_unpool2d`` in older releases) fall back to the CPU only when
``PYTORCH_ENABLE_MPS_FALLBACK=1`` is set before PyTorch starts; :func:`auto_device` says so when it picks MPS
without it.
"""

from __future__ import annotations

import logging
import os

import torch

__all__ = ["DEVICE_ORDER", "auto_device"]

logger = logging.getLogger(__name__)

DEVICE_ORDER = ("cuda", "mps", "cpu")
"""Device types in order of preference."""


def _available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        backend = getattr(torch.backends, "mps", None)
        return bool(backend is not None and backend.is_available())
    return kind == "cpu"


def auto_device(order: tuple[str, ...] | list[str] = DEVICE_ORDER, index: int | None = None) -> torch.device:
    """The first available device type of ``order`` (default CUDA, MPS, CPU).

    Args:
        order: device types in order of preference.
        index: CUDA device index (default: the ``LOCAL_RANK`` of a ``torchrun`` process, else 0).
    """
    unknown = [kind for kind in order if kind not in DEVICE_ORDER]
    if unknown or not order:
        raise ValueError(f"device types must be among {', '.join(DEVICE_ORDER)}, got {list(order)}.")
    for kind in order:
        if not _available(kind):
            continue
        if kind == "cuda":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) if index is None else index)
        if kind == "mps" and os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK") != "1":
            logger.info("using MPS; set PYTORCH_ENABLE_MPS_FALLBACK=1 if an operation is missing there")
        return torch.device(kind)
    raise RuntimeError(f"none of the device types {', '.join(order)} is available here.")
